"""The ``mlops`` command line: a verb for every magic, for terminals and CI.

Each verb parses its options, reads its data files (:mod:`~mlops_magics.cli.inputs`), calls one function of
:mod:`mlops_magics.api` (the one the magic calls) and prints the result as text or ``--json``
(:mod:`~mlops_magics.cli.output`). One module per family of verbs, as in :mod:`mlops_magics.api`.
``mlops --help`` lists the verbs and the two magics whose verb has another name (:data:`RENAMED`).

Exit status: 0 on success, 1 when a check the verb is about failed (``validate``, ``onnx`` parity,
``score-script --test``, ``registry check``), 2 for a user error (the message goes to stderr), 130 when
interrupted (``logs --follow`` stopped with Ctrl-C exits 0).
"""

from __future__ import annotations

from mlops_magics.cli.app import RENAMED, build_parser, main, run, verb_for, verb_names

__all__ = ["RENAMED", "build_parser", "main", "run", "verb_for", "verb_names"]

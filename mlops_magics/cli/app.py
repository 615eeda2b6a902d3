"""The ``mlops`` parser, the magic each verb stands for, and the entry point."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from mlops_magics.cli import authoring, deployments, edge, endpoints, fpga, images, models, monitoring, quality
from mlops_magics.cli.output import JSON_OPTION, Verbs, passed, show
from mlops_magics.errors import MlopsError

#: Magics whose verb is not their name with '-' for '_': ``%load_model`` binds a notebook variable, which a
#: terminal does not have, so its verb copies the verified files out instead.
RENAMED = {"delete_model": "delete", "load_model": "export"}

EPILOG = """\
Every magic has a verb of the same name ('-' for '_'): %score_script is 'mlops score-script'. Except:
  %delete_model -> mlops delete
  %load_model   -> mlops export (a terminal has no variable to bind: copy the verified files out)
A terminal has files, not notebook variables: 'mlops register' takes a PATH; data options (--data, --labels,
call's DATA) read .json, .csv (header row) or .npy files, or '-' for JSON on standard input; cell magics take
their cell from --file. No --widget (models, deployments) or --refresh (monitor: use watch -n 5 mlops monitor S).
--json prints any result as JSON (before or after the verb).

Exit status: 0 success; 1 a check the verb is about failed (validate, onnx parity, score-script --test,
registry check); 2 a user error (the message on standard error); 130 interrupted (logs --follow: 0).
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mlops``."""
    return _build()[0]


def _build() -> tuple[argparse.ArgumentParser, Verbs]:
    parser = argparse.ArgumentParser(prog="mlops", description="mlops-magics from the command line: a verb for "
                                     "every magic, for terminals and CI.", epilog=EPILOG, parents=[JSON_OPTION],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = Verbs(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    for family in (models, authoring, images, deployments, endpoints, edge, quality, monitoring, fpga):
        family.add_verbs(verbs)
    return parser, verbs


def verb_for(magic: str) -> str:
    """The ``mlops`` verb of a magic: its name with '-' for '_', or its :data:`RENAMED` verb."""
    return RENAMED.get(magic, magic.replace("_", "-"))


def verb_names() -> list[str]:
    """Every top-level verb of ``mlops``."""
    return sorted(_build()[1].names)


def run(args: argparse.Namespace) -> Any:
    """Carry out one parsed command; return what to show.

    Raises:
        MlopsError: what the API raised.
    """
    return args.handler(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mlops``: parse, call one API function, print the result.

    Returns:
        The exit status: 0 success, 1 a failed check (the result says ok/passed false), 2 a user error (an
        :class:`~mlops_magics.errors.MlopsError`, its message on standard error), 130 interrupted.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or bad usage (2, argparse's message on stderr): returned, not raised
        return exc.code if isinstance(exc.code, int) else 2
    try:
        result = run(args)
        show(result, getattr(args, "json", False))
    except MlopsError as exc:
        print(f"mlops: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mlops: interrupted", file=sys.stderr)
        return 130
    return 0 if passed(result) else 1

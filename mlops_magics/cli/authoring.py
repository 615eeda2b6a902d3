"""Verbs of authoring: score-script (the entry script, its assets, a trial run) and environment.

What the cell magics take from their cell, these take from a file (``--file``; ``-`` reads standard input).
"""

from __future__ import annotations

import argparse
from typing import Any

from mlops_magics import api
from mlops_magics.cli.inputs import ACCEPTED, read_body, read_text
from mlops_magics.cli.output import Status, Verbs
from mlops_magics.errors import InvalidInputError


def _score_script(args: argparse.Namespace) -> Any:
    if args.asset and not args.file:
        raise InvalidInputError("--asset goes with the script it serves: add --file score.py.")
    if args.sample is not None and not args.test:
        raise InvalidInputError(f"--sample {args.sample} is what --test sends: add --test.")
    sample = read_body(args.sample) if args.sample is not None else None
    if args.file:
        if args.file == "-":
            saved = api.set_score_script(args.ref, read_text(args.file, "--file"), assets=args.asset)
        else:
            saved = api.set_score_script(args.ref, file=args.file, assets=args.asset)
        return api.try_score_script(args.ref, sample=sample) if args.test else saved
    if args.test:
        return api.try_score_script(args.ref, sample=sample)
    if args.generate:
        source = api.generate_score_script(args.ref)
        return Status(source.rstrip("\n"), {"model": args.ref, "source": source, "generated": True})
    source, generated = api.entry_script(args.ref)
    head = f"# {'generated default (no script saved yet)' if generated else 'saved'} entry script for {args.ref}"
    return Status(f"{head}\n{source.rstrip()}", {"model": args.ref, "source": source, "generated": generated})


def _environment(args: argparse.Namespace) -> Any:
    text = read_text(args.file, "--file") if args.file else None
    return api.set_environment(args.ref, text, from_kernel=args.from_kernel, write_to=args.write)


def add_verbs(verbs: Verbs) -> None:
    """Add this family's verbs."""
    p = verbs.add("score-script", _score_script,
                  "Save a file as the model's entry script (checked, not run here), test it, show it, or print a "
                  "generated default. Without options: the script a deployment would use.")
    p.add_argument("ref", help="NAME (every version), NAME:VERSION or NAME@ALIAS (one version).")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--file", "-f", metavar="FILE", help="The entry script to save (init() and run(data); "
                                                              "'-': standard input).")
    source.add_argument("--generate", action="store_true",
                        help="Print a default entry script for the model, ready to edit and save with --file.")
    p.add_argument("--asset", action="append", default=[], metavar="PATH",
                   help="With --file: a file or folder the script needs, copied beside it in deployments; repeatable.")
    p.add_argument("--test", action="store_true",
                   help="Run init() and run(sample) in a clean process, the model laid out as deployed, with the "
                        "registered input example (or --sample); exit 1 when it fails.")
    p.add_argument("--sample", metavar="DATA",
                   help=f"With --test: the input to send instead of the registered example: {ACCEPTED}; or inline "
                        "JSON, e.g. '[[5.1, 3.5, 1.4, 0.2]]'.")

    p = verbs.add("environment", _environment, "Set the environment deployments install: a conda YAML or "
                                               "requirements file, or --from-kernel.")
    p.add_argument("ref", help="NAME (every version) or NAME:VERSION / NAME@ALIAS (one version).")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", "-f", metavar="FILE", help="conda YAML (env.yml) or pip lines (requirements.txt); "
                                                              "'-': standard input.")
    source.add_argument("--from-kernel", action="store_true",
                        help="Build it from what the entry script and the flavor import, pinned to the versions "
                             "installed beside mlops.")
    p.add_argument("--write", metavar="DIR", help="Also write conda.yaml and requirements.txt into DIR.")

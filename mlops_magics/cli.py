"""The ``mlops`` command line: the magics' verbs for terminals and CI.

Exit status: 0 on success, 2 for a user error (the message goes to stderr), 1 for anything else
(``mlops registry check``: 1 when it found an error).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlops_magics import api, flavors
from mlops_magics.errors import MlopsError
from mlops_magics.payloads import version_json
from mlops_magics.registry import ModelVersion, maintenance, trust
from mlops_magics.registry.cards import version_row


def _show(result: Any, as_json: bool) -> None:
    if isinstance(result, dict):
        print(json.dumps(result, indent=2) if as_json else "\n".join(f"{k:12} {v}" for k, v in result.items()))
    elif as_json:
        if isinstance(result, ModelVersion):
            print(json.dumps(version_json(result), indent=2))
        else:
            print(json.dumps([version_json(v) for v in result], indent=2))
    elif isinstance(result, ModelVersion):
        for key, value in version_row(result).items():
            print(f"{key:12} {value}")
        print(f"{'sha256':12} {result.sha256}")
        print(f"{'trust':12} {trust.status(result)}")
    else:
        print(repr(result))


def _export(ref: str, output: str) -> str:
    version = api.export_model(ref, output)
    return f"Exported {version.ref} ({len(version.files)} file(s), exactly as registered, sha256 verified) to {output}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mlops``."""
    parser = argparse.ArgumentParser(prog="mlops", description="mlops-magics from the command line: the registry "
                                                               "and what deployments collected.")
    parser.add_argument("--json", action="store_true", help="Print results as JSON.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("register", help="Register a file or folder as the next version of a model.")
    p.add_argument("path", help="File or folder to register.")
    p.add_argument("--name", "-n", required=True, help="Model name.")
    p.add_argument("--tag", "-t", action="append", default=[], metavar="KEY=VALUE", help="Tag; repeatable.")
    p.add_argument("--description", "-d", default="", help="Free-text description.")
    p.add_argument("--alias", "-a", help="Point this alias at the new version.")
    p.add_argument("--flavor", choices=sorted(flavors.FLAVORS), help="Flavor (default: from the file suffix).")
    p.add_argument("--trust", action="store_true", help="You know where the file comes from: trust it to be loaded "
                                                         "(a pickle is refused at load and deploy until trusted).")

    p = sub.add_parser("trust", help="Trust a version to be loaded and deployed (recorded: who and when).")
    p.add_argument("ref", help="NAME:VERSION.")
    p.add_argument("--revoke", action="store_true", help="Withdraw the trust.")

    p = sub.add_parser("models", help="List model versions.")
    p.add_argument("--name", "-n", metavar="GLOB", help="Name glob, e.g. 'iris*'.")
    p.add_argument("--tag", "-t", action="append", default=[], metavar="KEY[=VALUE]", help="Tag filter; repeatable.")
    p.add_argument("--latest", "-l", action="store_true", help="Only the newest version of each model.")

    p = sub.add_parser("model", help="Show one version.")
    p.add_argument("ref", help="NAME, NAME:VERSION or NAME@ALIAS.")
    p.add_argument("--as-of", metavar="DATE", help="Resolve aliases/latest as on this date.")

    p = sub.add_parser("alias", help="Point an alias at a version, or remove it.")
    p.add_argument("ref", help="NAME:VERSION (NAME with --remove).")
    p.add_argument("alias", help="Alias name.")
    p.add_argument("--remove", action="store_true", help="Remove the alias.")

    p = sub.add_parser("tag", help="Set or remove tags of a version.")
    p.add_argument("ref", help="NAME:VERSION.")
    p.add_argument("tags", nargs="*", metavar="KEY=VALUE", help="Tags to set.")
    p.add_argument("--remove", "-r", action="append", default=[], metavar="KEY", help="Key to remove; repeatable.")

    p = sub.add_parser("delete", help="Delete one version (refused while deployed).")
    p.add_argument("ref", help="NAME:VERSION.")

    p = sub.add_parser("export", help="Copy a version's verified files to a folder.")
    p.add_argument("ref", help="NAME, NAME:VERSION or NAME@ALIAS.")
    p.add_argument("output", help="Empty or new folder.")

    p = sub.add_parser("keys", help="A service's primary and secondary keys (deployed with --auth).")
    p.add_argument("service", help="The service.")
    p.add_argument("--regenerate", choices=["primary", "secondary"],
                   help="Replace this key with a new one; the other stays valid.")

    p = sub.add_parser("registry", help="Back up, restore, check or rebuild the registry itself.")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    v = verbs.add_parser("backup", help="Copy the database (online: consistent while others write).")
    v.add_argument("path", help="New file, or a folder to put registry-<UTC time>.db in.")
    v = verbs.add_parser("restore", help="Put a backup in place of the database (the old file is kept aside).")
    v.add_argument("backup", help="A file made by 'mlops registry backup'.")
    v.add_argument("--force", action="store_true", help="Replace a healthy database too.")
    v = verbs.add_parser("check", help="Check the database and every artifact's files; exit 1 on an error.")
    v.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="Print the report as JSON.")
    verbs.add_parser("rebuild", help="Re-create a missing, empty or damaged database from its WAL or the "
                                     "artifact store's manifests (never replaces a healthy one).")

    p = sub.add_parser("collected", help="What a deployment collected (--collect), as CSV.")
    p.add_argument("service", help="The service.")
    p.add_argument("--since", help="Only records from this long ago on: 90s, 30m, 1h, 2d.")
    p.add_argument("--limit", type=int, help="Only the newest N requests.")
    p.add_argument("--designation", help="What the entry script's ModelDataCollector collected instead.")
    p.add_argument("--output", "-o", metavar="FILE", help="Write the CSV here (default: standard output).")

    p = sub.add_parser("monitor", help="A deployment's traffic, latency, errors, accuracy and drift, as text.")
    p.add_argument("service", help="The service.")
    p.add_argument("--baseline", metavar="NAME:VERSION", help="Compare with this version's input example.")
    p.add_argument("--since", help="Only what was collected from this long ago on.")
    return parser


def run(args: argparse.Namespace) -> Any:
    """Carry out one parsed command; return what to show (or a status line)."""
    if args.command == "register":
        return api.register(name=args.name, path=args.path, tags=args.tag, description=args.description,
                            alias=args.alias, flavor=args.flavor, trust=args.trust)
    if args.command == "trust":
        return api.trust_model(args.ref, revoke=args.revoke)
    if args.command == "models":
        return api.list_models(args.name, args.tag, latest=args.latest)
    if args.command == "model":
        return api.get_model(args.ref, as_of=args.as_of)
    if args.command == "alias":
        if args.remove:
            api.remove_alias(args.ref.split(":")[0], args.alias)
            return f"Removed alias {args.alias!r}."
        return api.set_alias(args.ref, args.alias)
    if args.command == "tag":
        return api.tag_model(args.ref, args.tags, remove=args.remove)
    if args.command == "delete":
        return f"Deleted {api.delete_model(args.ref).ref}."
    if args.command == "export":
        return _export(args.ref, args.output)
    if args.command == "keys":
        found = api.keys(args.service, regenerate=args.regenerate)
        return {"service": found.service, "primary": found.primary, "secondary": found.secondary}

    if args.command == "registry":
        if args.verb == "backup":
            return api.backup_registry(args.path)
        if args.verb == "restore":
            return api.restore_registry(args.backup, force=args.force)
        if args.verb == "check":
            return api.check_registry()
        return api.rebuild_registry()
    if args.command in ("collected", "monitor"):
        if args.command == "monitor":
            return repr(api.monitor(args.service, baseline=args.baseline, since=args.since))
        frame = api.collected(args.service, since=args.since, limit=args.limit, designation=args.designation)
        print(frame.attrs["stats"], file=sys.stderr)
        text = frame.to_csv(index=False)
        if not args.output:
            return text.rstrip("\n")
        Path(args.output).write_text(text)
        return f"Wrote {len(frame):,} rows to {args.output}."
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mlops``."""
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except MlopsError as exc:
        print(f"mlops: {exc}", file=sys.stderr)
        return 2
    if isinstance(result, str):
        print(result)
    elif isinstance(result, maintenance.REPORTS):
        print(json.dumps(result.as_dict(), indent=2) if args.json else repr(result))
    else:
        _show(result, args.json)
    return 0 if getattr(result, "ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())

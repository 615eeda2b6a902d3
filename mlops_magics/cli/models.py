"""Verbs of the registry: register, trust, models, model, compare, alias, tag, delete, export, and the registry's upkeep
(``mlops registry backup|restore|check|rebuild``)."""

from __future__ import annotations

import argparse
from typing import Any

from mlops_magics import api, flavors
from mlops_magics.cli.output import Status, Verbs
from mlops_magics.errors import InvalidInputError


def _register(args: argparse.Namespace) -> Any:
    return api.register(name=args.name, path=args.path, tags=args.tag, description=args.description,
                        alias=args.alias, flavor=args.flavor, derived_from=args.derived_from, trust=args.trust,
                        metrics=args.metric)


def _trust(args: argparse.Namespace) -> Any:
    return api.trust_model(args.ref, revoke=args.revoke)


def _models(args: argparse.Namespace) -> Any:
    return api.list_models(args.name, args.tag, latest=args.latest)


def _model(args: argparse.Namespace) -> Any:
    return api.get_model(args.ref, as_of=args.as_of)


def _compare(args: argparse.Namespace) -> Any:
    return api.compare_models(args.refs)


def _alias(args: argparse.Namespace) -> Any:
    if args.history:
        return api.alias_history(args.ref, args.alias)
    if not args.alias:
        raise InvalidInputError("Name the alias: mlops alias NAME:VERSION ALIAS (or --history to list moves).")
    if args.remove:
        name = api.remove_alias(args.ref, args.alias)
        return Status(f"Removed alias {args.alias!r} from {name}.", {"name": name, "alias": args.alias})
    return api.set_alias(args.ref, args.alias, require_validation=args.require_validation)


def _tag(args: argparse.Namespace) -> Any:
    if not args.tags and not args.remove:
        raise InvalidInputError("Nothing to do: give KEY=VALUE tags to set and/or --remove KEY.")
    return api.tag_model(args.ref, args.tags, remove=args.remove)


def _delete(args: argparse.Namespace) -> Any:
    gone = api.delete_model(args.ref)
    return Status(str(gone), gone.version)


def _export(args: argparse.Namespace) -> Any:
    version = api.export_model(args.ref, args.output)
    return Status(f"Exported {version.ref} ({len(version.files)} file(s), exactly as registered, sha256 verified) "
                  f"to {args.output}", version)


def _backup(args: argparse.Namespace) -> Any:
    return api.backup_registry(args.path)


def _restore(args: argparse.Namespace) -> Any:
    return api.restore_registry(args.backup, force=args.force)


def _check(args: argparse.Namespace) -> Any:
    return api.check_registry()


def _rebuild(args: argparse.Namespace) -> Any:
    return api.rebuild_registry()


def add_verbs(verbs: Verbs) -> None:
    """Add this family's verbs."""
    p = verbs.add("register", _register, "Register a file or folder as the next version of a model (%register "
                                         "--path).")
    p.add_argument("path", help="File or folder to register.")
    p.add_argument("--name", "-n", required=True, help="Model name.")
    p.add_argument("--tag", "-t", action="append", default=[], metavar="KEY=VALUE", help="Tag; repeatable.")
    p.add_argument("--metric", "-m", action="append", default=[], metavar="KEY=NUMBER",
                   help="A metric you measured, e.g. accuracy=0.97; repeatable (part of the version).")
    p.add_argument("--description", "-d", default="", help="Free-text description.")
    p.add_argument("--alias", "-a", help="Point this alias at the new version.")
    p.add_argument("--flavor", choices=sorted(flavors.FLAVORS), help="Flavor (default: from the file suffix).")
    p.add_argument("--derived-from", metavar="NAME:VERSION", help="Record that this version was made from another.")
    p.add_argument("--trust", action="store_true", help="You know where the file comes from: trust it to be loaded "
                                                         "(a pickle is refused at load and deploy until trusted).")

    p = verbs.add("trust", _trust, "Trust a version to be loaded and deployed (recorded: who and when).")
    p.add_argument("ref", help="NAME:VERSION.")
    p.add_argument("--revoke", action="store_true", help="Withdraw the trust.")

    p = verbs.add("models", _models, "List model versions.")
    p.add_argument("--name", "-n", metavar="GLOB", help="Name glob, e.g. 'iris*'.")
    p.add_argument("--tag", "-t", action="append", default=[], metavar="KEY[=VALUE]", help="Tag filter; repeatable.")
    p.add_argument("--latest", "-l", action="store_true", help="Only the newest version of each model.")

    p = verbs.add("model", _model, "Show one version.")
    p.add_argument("ref", help="NAME, NAME:VERSION or NAME@ALIAS.")
    p.add_argument("--as-of", metavar="DATE", help="Resolve aliases/latest as on this date.")

    p = verbs.add("compare", _compare, "Compare versions side by side: metrics, signature diff, validation and "
                                       "profile results, size, latency.")
    p.add_argument("refs", nargs="+", metavar="REF", help="Two or more: NAME, NAME:VERSION or NAME@ALIAS (the others "
                                                          "are compared with the first).")

    p = verbs.add("alias", _alias, "Point an alias at a version, remove it, or show the alias history.")
    p.add_argument("ref", help="NAME:VERSION (NAME with --remove or --history).")
    p.add_argument("alias", nargs="?", help="Alias name (with --history: only this alias's moves).")
    p.add_argument("--remove", action="store_true", help="Remove the alias.")
    p.add_argument("--history", action="store_true", help="Show every move of the model's aliases.")
    p.add_argument("--require-validation", action="store_true",
                   help="Gate the alias: from now on it only points at versions whose last validation passed.")

    p = verbs.add("tag", _tag, "Set or remove tags of a version.")
    p.add_argument("ref", help="NAME:VERSION.")
    p.add_argument("tags", nargs="*", metavar="KEY=VALUE", help="Tags to set.")
    p.add_argument("--remove", "-r", action="append", default=[], metavar="KEY", help="Key to remove; repeatable.")

    p = verbs.add("delete", _delete, "Delete one version, refused while deployed (%delete_model).")
    p.add_argument("ref", help="NAME:VERSION.")

    p = verbs.add("export", _export, "Copy a version's verified files to a folder (%load_model in a terminal).")
    p.add_argument("ref", help="NAME, NAME:VERSION or NAME@ALIAS.")
    p.add_argument("output", help="Empty or new folder.")

    group = verbs.group("registry", "Back up, restore, check or rebuild the registry itself.")
    p = group.add("backup", _backup, "Copy the database (online: consistent while others write).")
    p.add_argument("path", help="New file, or a folder to put registry-<UTC time>.db in.")
    p = group.add("restore", _restore, "Put a backup in place of the database (the old file is kept aside).")
    p.add_argument("backup", help="A file made by 'mlops registry backup'.")
    p.add_argument("--force", action="store_true", help="Replace a healthy database too.")
    group.add("check", _check, "Check the database and every artifact's files; exit 1 on an error.")
    group.add("rebuild", _rebuild, "Re-create a missing, empty or damaged database from its WAL or the artifact "
                                  "store's manifests (never replaces a healthy one).")

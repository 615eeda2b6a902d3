"""What the verbs print: results as text (their ``__repr__``, tables as the magics show them) or JSON, progress
lines on standard error, and the exit status a result means."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

from mlops_magics.packaging.engine import BuildStep
from mlops_magics.payloads import deployment_json, version_json
from mlops_magics.registry import Deployment, ModelVersion, trust
from mlops_magics.registry.cards import version_row

#: The ``--json`` option every verb has (also accepted before the verb: ``mlops --json models``).
JSON_OPTION = argparse.ArgumentParser(add_help=False)
JSON_OPTION.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="Print the result as JSON (DataFrames as records).")


@dataclasses.dataclass(frozen=True)
class Status:
    """A verb's answer for people (``text``), what ``--json`` prints instead (``data``), and whether the check
    the verb is about passed (``ok``: False exits 1)."""

    text: str
    data: Any = None
    ok: bool = True


class Parsers(Protocol):
    """Where verbs are added: what ``ArgumentParser.add_subparsers()`` returns."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A new verb's parser."""


class Verbs:
    """Adds verbs, each with its handler and the ``--json`` option."""

    def __init__(self, parsers: Parsers) -> None:
        self.parsers = parsers
        #: The verbs added, in order.
        self.names: list[str] = []

    def add(self, name: str, handler: Any, help: str) -> argparse.ArgumentParser:
        """A verb ``name`` whose parsed arguments go to ``handler(args)``, which returns what to print."""
        self.names.append(name)
        parser = self.parsers.add_parser(name, help=help.replace("%", "%%"), description=help,
                                         parents=[JSON_OPTION])
        parser.set_defaults(handler=handler)
        return parser

    def group(self, name: str, help: str) -> Verbs:
        """A verb made of verbs (``mlops registry check``)."""
        self.names.append(name)
        parser = self.parsers.add_parser(name, help=help.replace("%", "%%"), description=help)
        return Verbs(parser.add_subparsers(dest="verb", required=True, metavar="VERB"))


def is_frame(value: Any) -> bool:
    """Whether ``value`` is a pandas DataFrame (without importing pandas)."""
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(value, pd.DataFrame)


def to_json(value: Any) -> Any:
    """``value`` as plain JSON data: versions and deployments as :mod:`mlops_magics.payloads` gives them,
    reports by their ``as_dict()``, DataFrames as records, other dataclasses field by field."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, ModelVersion):
        return version_json(value)
    if isinstance(value, Deployment):
        return deployment_json(value)
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, (pd.DataFrame, pd.Series)):
        if isinstance(value, pd.DataFrame) and not isinstance(value.index, pd.RangeIndex):
            value = value.reset_index()
        return json.loads(value.to_json(orient="records" if isinstance(value, pd.DataFrame) else "index",
                                        date_format="iso", date_unit="us"))
    if callable(getattr(value, "as_dict", None)):
        return to_json(value.as_dict())
    if callable(getattr(value, "tolist", None)):  # NumPy arrays and scalars
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not f.name.startswith("_")}
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dict__"):
        return {k: to_json(v) for k, v in vars(value).items() if not k.startswith("_")}
    return str(value)


def as_text(value: Any) -> str:
    """``value`` for people: a version's fields, a DataFrame as CSV, a mapping as ``key value`` lines, plain
    lists as JSON, anything else by its ``__repr__``."""
    if isinstance(value, str):
        return value
    if isinstance(value, ModelVersion):
        fields = {**version_row(value), "sha256": value.sha256, "trust": trust.status(value)}
        return "\n".join(f"{key:12} {field}" for key, field in fields.items())
    if is_frame(value):
        return str(value.to_csv(index=False)).rstrip("\n")
    if type(value) is dict:
        return "\n".join(f"{k:12} {v if isinstance(v, str) else json.dumps(to_json(v))}" for k, v in value.items())
    if type(value) is list:
        return json.dumps(to_json(value), indent=2)
    return repr(value)


def show(result: Any, as_json: bool) -> None:
    """Print a verb's result on standard output (nothing for None)."""
    if isinstance(result, Status):
        result = result.data if as_json else result.text
    if as_json:
        print(json.dumps(to_json(result), indent=2))
    elif result is not None and not (isinstance(result, str) and not result):
        print(as_text(result))


def passed(result: Any) -> bool:
    """False when the result is a check that failed (``ok`` or ``passed`` false): the verb exits 1."""
    return getattr(result, "ok", True) is not False and getattr(result, "passed", True) is not False


class BuildLines:
    """Prints an image build's progress on standard error: a line per step (``full_log``: every output line)."""

    def __init__(self, full_log: bool = False) -> None:
        self.full_log = full_log
        self.step = 0

    def __call__(self, step: BuildStep) -> None:
        if step.number != self.step:
            self.step = step.number
            cached = " (cached)" if step.cached else ""
            print(f"Step {step.number}/{step.total}{cached}: {step.instruction}", file=sys.stderr, flush=True)
        elif self.full_log and step.line:
            print(f"  {step.line}", file=sys.stderr, flush=True)


def step_line(what: str, done: int, total: int) -> None:
    """Prints long work's progress on standard error: ``[done/total] what``."""
    print(f"[{done}/{total}] {what}", file=sys.stderr, flush=True)

"""Aliases: moving one (every move recorded in its history), and the gate that keeps it on validated versions."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlops_magics.errors import ConflictError
from mlops_magics.registry.db import Database
from mlops_magics.registry.operations import stored_validation_problem
from mlops_magics.registry.records import AliasEvent
from mlops_magics.registry.refs import check_name, no_model

if TYPE_CHECKING:
    import sqlite_utils


def point_alias(db: sqlite_utils.Database, name: str, alias: str, version: int | None, now: str, user: str) -> None:
    """Point ``name@alias`` at ``version`` (None: remove it) and record the move; call inside a write.

    Raises:
        ConflictError: the alias is gated and the version has not passed its validation.
    """
    if version is None:
        db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", [name, alias])
    else:
        check_gate(db, name, alias, version)
        db.execute(
            "INSERT INTO aliases (name, alias, version, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
            [name, alias, version, now],
        )
    db.execute(
        "INSERT INTO alias_history (name, alias, version, at, by) VALUES (?, ?, ?, ?, ?)",
        [name, alias, version, now, user],
    )


def check_gate(db: sqlite_utils.Database, name: str, alias: str, version: int) -> None:
    """Refuse to point a gated alias at a version without a passed validation.

    Raises:
        ConflictError: the alias is gated and ``name:version`` did not pass (or never had) a validation.
    """
    if db.execute("SELECT 1 FROM alias_gates WHERE name = ? AND alias = ?", [name, alias]).fetchone() is None:
        return
    problem = stored_validation_problem(db, name, version)
    if problem:
        raise ConflictError(f"{name}@{alias} requires a passed validation, and {name}:{version} {problem}. "
                            + what_passes_the_gate(db, name, alias, version, problem))


def what_passes_the_gate(db: sqlite_utils.Database, name: str, alias: str, version: int, problem: str) -> str:
    """What must change for ``name@alias`` to move: validate a version that never was; for one that failed (a
    verdict that validating it again on the same data repeats), a version that passes, naming those that did."""
    if problem == "has never been validated":
        return (f"Validate it first: %validate {name}:{version} --data X --labels y --metric 'accuracy>=0.9', then "
                "move the alias.")
    passed = [int(v) for (v,) in db.execute(
        "SELECT version FROM reports WHERE name = ? AND kind = 'validation' AND json_extract(body, '$.passed') "
        "ORDER BY version", [name])]
    others = (f" Versions that passed: {', '.join(f'{name}:{v}' for v in passed[-5:])} (%alias {name}:{passed[-1]} "
              f"{alias})." if passed else "")
    return (f"Validating {name}:{version} again on the same data gives the same verdict: the alias needs a version "
            f"that passes. Register a better model and validate it, then move the alias.{others}")


def alias_history(database: Database, name: str, alias: str | None = None) -> list[AliasEvent]:
    """Every move of the model's aliases (or of one alias), oldest first (see :meth:`Registry.alias_history`)."""
    sql = "SELECT name, alias, version, at, by FROM alias_history WHERE name = ?"
    params: list[Any] = [check_name(name)]
    if alias is not None:
        sql += " AND alias = ?"
        params.append(alias)
    with database.read() as db:
        if db.execute("SELECT 1 FROM models WHERE name = ?", [name]).fetchone() is None:
            raise no_model(db, name)
        return [
            AliasEvent(r["name"], r["alias"], r["version"], datetime.fromisoformat(r["at"]), r["by"])
            for r in db.query(sql + " ORDER BY at, id", params)
        ]

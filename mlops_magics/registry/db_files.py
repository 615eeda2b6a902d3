"""The registry database as files: what state one is in (read only), and putting a new one in place.

Nothing here opens the registry the usual way (which refuses a missing or damaged database): these read
the files directly, so that backups, restores, checks and rebuilds work when the registry cannot be opened.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from mlops_magics import config
from mlops_magics.display import human_size
from mlops_magics.registry import forget_registry
from mlops_magics.registry.disk import fsync_path


def home_folder(home: Path | str | None) -> Path:
    """The registry folder ``home`` names (default ``$MLOPS_HOME``), resolved."""
    return Path(home).expanduser().resolve() if home is not None else config.mlops_home()


def utc_label() -> str:
    """The current UTC time as a label for file names (``20240131T120000Z``)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True)
class DatabaseState:
    """What a registry database file holds, as far as can be told without changing it."""

    path: Path
    state: str  #: 'missing', 'empty', 'unreadable', 'damaged', 'no schema' or 'healthy'
    detail: str = ""
    size: int = 0
    schema_version: int = 0
    versions: int = 0

    @property
    def healthy(self) -> bool:
        """True if the file is a registry database that passed SQLite's integrity check."""
        return self.state == "healthy"

    def describe(self) -> str:
        """One line: the file, its size, schema and check result."""
        if self.state in ("missing", "empty"):
            return f"{self.path} is {self.state}"
        facts = human_size(self.size) + (
            f", schema {self.schema_version}, {self.versions} version(s)" if self.healthy else "")
        return f"{self.path} ({facts}): {self.state}" + (f" ({self.detail})" if self.detail else "")


def read_only(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    """A read-only connection to the database file at ``path``."""
    return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, isolation_level=None, timeout=timeout)


def inspect_database(path: Path, *, full: bool = True) -> DatabaseState:
    """Tell what state the database at ``path`` is in, reading it only.

    A missing or empty file is never opened with SQLite: opening an empty file beside a
    write-ahead log would discard the log.

    Args:
        full: run ``PRAGMA integrity_check`` (reads every page) rather than ``quick_check``.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return DatabaseState(path, "missing")
    if size == 0:
        return DatabaseState(path, "empty")
    try:
        conn = read_only(path)
    except sqlite3.Error as exc:
        return DatabaseState(path, "unreadable", str(exc), size)
    try:
        try:
            rows = [str(r[0]) for r in conn.execute(f"PRAGMA {'integrity_check' if full else 'quick_check'}")]
        except sqlite3.DatabaseError as exc:
            return DatabaseState(path, "unreadable" if "not a database" in str(exc) else "damaged", str(exc), size)
        if rows != ["ok"]:
            return DatabaseState(path, "damaged", "; ".join(rows[:5]) + (" ..." if len(rows) > 5 else ""), size)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "_migrations" not in tables or "versions" not in tables:
                return DatabaseState(path, "no schema", "it is an SQLite file, not a registry", size)
            schema = int(conn.execute("SELECT coalesce(max(id), 0) FROM _migrations").fetchone()[0])
            versions = int(conn.execute("SELECT count(*) FROM versions").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            return DatabaseState(path, "damaged", str(exc), size)
        return DatabaseState(path, "healthy", "", size, schema, versions)
    finally:
        conn.close()


def move_aside(db_path: Path, label: str) -> tuple[Path, ...]:
    """Rename the database and its -wal/-shm files to ``<name>.<label>-<UTC time>[-wal|-shm]``; never delete them.

    The log keeps its place beside the file it belongs to, so SQLite opens the set kept aside whole.
    """
    aside = db_path.with_name(f"{db_path.name}.{label}-{utc_label()}")
    moved = []
    for suffix in ("", "-wal", "-shm"):
        current = db_path.with_name(db_path.name + suffix)
        if current.exists():
            target = aside.with_name(aside.name + suffix)
            os.rename(current, target)
            moved.append(target)
    if moved:
        fsync_path(db_path.parent)
    return tuple(moved)


def install(new: Path, db_path: Path, label: str) -> tuple[Path, ...]:
    """Put the database file ``new`` in place of ``db_path``, whose files are kept aside (see :func:`move_aside`).

    Returns:
        The files kept aside.
    """
    fsync_path(new)
    move = move_aside(db_path, label)
    os.rename(new, db_path)
    fsync_path(db_path.parent)
    forget_registry(db_path.parent)
    return move


def versions_in(conn: sqlite3.Connection) -> set[tuple[str, int]]:
    """(name, version) of every version a registry database holds."""
    return {(str(n), int(v)) for n, v in conn.execute("SELECT name, version FROM versions")}

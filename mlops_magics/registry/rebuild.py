"""Re-creating a lost registry database: from its write-ahead log when that holds it whole, else from the
manifests the artifact store keeps per version."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlops_magics.errors import ConflictError, IntegrityError, MlopsError
from mlops_magics.registry.artifacts import ArtifactStore, manifest_digest
from mlops_magics.registry.db import DB_FILE, JSON_COLUMNS
from mlops_magics.registry.db_files import home_folder, inspect_database, install, versions_in
from mlops_magics.registry.disk import storage_error
from mlops_magics.registry.migrations import MIGRATIONS
from mlops_magics.registry.records import ArtifactFile
from mlops_magics.registry.refs import MAX_VERSION, check_name


@dataclass(frozen=True)
class RebuildReport:
    """What :func:`rebuild` re-created, from what, and what it kept aside."""

    source: str  #: 'write-ahead log' or 'manifests'
    versions: int
    models: int
    kept_aside: tuple[Path, ...]
    problems: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {"source": self.source, "versions": self.versions, "models": self.models,
                "kept_aside": [str(p) for p in self.kept_aside], "problems": list(self.problems)}

    def __repr__(self) -> str:
        aside = f" Kept aside: {', '.join(map(str, self.kept_aside))}." if self.kept_aside else ""
        lost = ("" if self.source != "manifests" else
                " Aliases, deployments, endpoints, inference configurations and reports are not in manifests: "
                "set them again.")
        issues = "".join(f"\n  {p}" for p in self.problems)
        return (f"Rebuilt the registry database from its {self.source}: {self.versions} version(s) of "
                f"{self.models} model(s).{aside}{lost}{issues}")


def rebuild(*, home: Path | str | None = None) -> RebuildReport:
    """Re-create a missing, empty or damaged registry database.

    From the write-ahead log (``registry.db-wal``) when the database file is missing or empty and
    the log holds the whole database (it passes the integrity check); otherwise from the manifest
    the artifact store keeps for every version (name, version, flavor, options, files, tags,
    signature, lineage, who registered it and when). Numbering continues after the highest number
    ever seen. The old files are kept aside (``registry.db.<state>-<UTC time>``), never deleted.
    Run it while nothing else uses the registry.

    Raises:
        ConflictError: the database is healthy: rebuild never replaces one (move it aside first).
    """
    folder = home_folder(home)
    db_path = folder / DB_FILE
    state = inspect_database(db_path)
    if state.healthy:
        raise ConflictError(
            f"The registry database {db_path} is healthy (it passed its integrity check; {state.versions} "
            "version(s)): rebuild only replaces a missing, empty or damaged one, and refuses to overwrite it. To "
            f"re-create it from the manifests anyway, move it aside first (mv {db_path} {db_path}.old)."
        )
    store = ArtifactStore(folder / "artifacts")
    staged = db_path.with_name(f".{DB_FILE}.rebuild-{os.getpid()}")
    staged.unlink(missing_ok=True)
    wal = db_path.with_name(DB_FILE + "-wal")
    problems: list[str] = []
    try:
        source = "write-ahead log"
        if state.state not in ("missing", "empty") or not wal.exists() or not _from_wal(wal, staged, problems):
            source = "manifests"
            staged.unlink(missing_ok=True)
            _from_manifests(store, staged, problems)
        with contextlib.closing(sqlite3.connect(staged)) as conn:
            versions = len(versions_in(conn))
            models = int(conn.execute("SELECT count(DISTINCT name) FROM versions").fetchone()[0])
        moved = install(staged, db_path, state.state.replace(" ", "-"))
    except OSError as exc:
        staged.unlink(missing_ok=True)
        raise storage_error(exc, "Rebuilding the registry database", db_path) or exc from exc
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return RebuildReport(source, versions, models, moved, tuple(problems))


def _from_wal(wal: Path, target: Path, problems: list[str]) -> bool:
    """Re-create the database from a write-ahead log alone, if it holds every page; False if it does not."""
    header = wal.read_bytes()[:32]
    page_size = int.from_bytes(header[8:12], "big") if len(header) == 32 else 0
    if header[:4] not in (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83") or page_size not in {
            1 << n for n in range(9, 17)}:
        problems.append(f"{wal} is not a write-ahead log: rebuilt from the manifests instead.")
        return False
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".wal-") as work:
        replay = Path(work) / DB_FILE
        with contextlib.closing(sqlite3.connect(replay, isolation_level=None)) as empty:
            empty.execute(f"PRAGMA page_size={page_size}")
            empty.execute("PRAGMA journal_mode=WAL")  # an empty database whose pages all come from the log
        shutil.copyfile(wal, replay.with_name(DB_FILE + "-wal"))
        state = inspect_database(replay)
        if not state.healthy:
            problems.append(f"{wal} does not hold the whole database ({state.state}: {state.detail or 'no schema'}): "
                            "rebuilt from the manifests instead.")
            return False
        with contextlib.closing(sqlite3.connect(replay)) as logged, \
                contextlib.closing(sqlite3.connect(target, isolation_level=None)) as copy:
            logged.backup(copy)
            copy.execute("PRAGMA journal_mode=WAL")
    return True


def _from_manifests(store: ArtifactStore, target: Path, problems: list[str]) -> None:
    import sqlite_utils

    conn = sqlite3.connect(target, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        db = sqlite_utils.Database(conn, execute_plugins=False)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE _migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
        now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        for number, name, apply in MIGRATIONS:
            apply(db)
            conn.execute("INSERT INTO _migrations VALUES (?, ?, ?)", [number, name, now])
        columns = [r[1] for r in conn.execute("PRAGMA table_info(versions)")]
        models: dict[str, tuple[int, str]] = {}
        for name, version, deleted, path in store.manifest_files():
            last, created = models.get(name, (0, now))
            try:
                body = store.read_manifest(path)
                check_name(str(body["name"]))
                if not 0 < int(body["version"]) <= MAX_VERSION:
                    raise ValueError(f"version {body['version']!r} out of range")
            except (MlopsError, KeyError, ValueError) as exc:
                problems.append(f"skipped {path}: {exc}")
                continue
            name, version = str(body["name"]), int(body["version"])
            if deleted:
                models[name] = (max(last, version), created)
                continue
            try:
                row = _version_row(body, columns)
                files = tuple(ArtifactFile(*f) for f in json.loads(row["files"]))
                if manifest_digest(files) != row["sha256"]:
                    raise ValueError("its files do not match its digest")
                conn.execute("INSERT OR IGNORE INTO models (name, last_version, created_at) VALUES (?, 0, ?)",
                             [name, row["created_at"]])
                conn.execute(f"INSERT INTO versions ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                             list(row.values()))
                for key, value in json.loads(row["tags"]).items():
                    conn.execute("INSERT INTO tags (name, version, key, value) VALUES (?, ?, ?, ?)",
                                 [name, version, key, value])
            except (sqlite3.Error, KeyError, TypeError, ValueError) as exc:
                problems.append(f"skipped {path}: {exc}")
                continue
            models[name] = (max(last, version), min(created, row["created_at"]))
            try:
                store.verify(row["sha256"], files)
            except IntegrityError as exc:
                problems.append(f"{name}:{version} restored, but its artifact is damaged: {exc}")
        for name, (last, created) in models.items():
            conn.execute("INSERT INTO models (name, last_version, created_at) VALUES (?, ?, ?) ON CONFLICT(name) "
                         "DO UPDATE SET last_version = excluded.last_version", [name, last, created])
        conn.execute("COMMIT")
    finally:
        conn.close()


def _version_row(body: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """The ``versions`` row a manifest describes, in the columns this schema has."""
    row = {column: body[column] for column in columns if column in body}
    row["files"] = [[f["path"], int(f["size"]), f["sha256"]] for f in body["files"]]
    row["tags"] = dict(sorted((body.get("tags") or {}).items()))
    for column in JSON_COLUMNS:  # encoded as Registry.add_version encodes them
        if column not in row:
            continue
        if row[column] is None and column in ("signature", "input_example"):
            continue
        value = {} if row[column] is None else row[column]
        row[column] = json.dumps(value, sort_keys=column in ("signature", "lineage", "flavor_options"))
    for required in ("name", "version", "flavor", "sha256", "size", "created_at", "created_by"):
        if required not in row:
            raise KeyError(required)
    return row


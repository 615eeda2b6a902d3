"""Keeping a registry safe: online backups, restores, checks, and re-creating a lost database.

None of these open the registry the usual way (which refuses a missing or damaged database):
they read the files directly, so they work when the registry cannot be opened.

- :func:`backup` copies the database with SQLite's online backup API, in one step: a consistent
  snapshot even while other processes write (WAL readers do not block writers).
- :func:`restore` puts a backup in place, keeping the file it replaces aside.
- :func:`check` runs ``PRAGMA integrity_check`` and checks every artifact against the files its
  version (or inference assets) records, and every manifest against the database.
- :func:`rebuild` re-creates a missing, empty or damaged database: from its write-ahead log when
  that holds the whole database, else from the manifests the artifact store keeps per version.
  It refuses to replace a healthy database.

The artifact store is not part of a backup: its blobs are immutable and named by content; copy
``$MLOPS_HOME/artifacts`` with the database for a full copy.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_magics import config
from mlops_magics.display import human_size
from mlops_magics.errors import (
    ConflictError,
    IntegrityError,
    InvalidInputError,
    MlopsError,
    NotFoundError,
    RegistryDamagedError,
)
from mlops_magics.registry.artifacts import ArtifactStore, manifest_digest
from mlops_magics.registry.db import DB_FILE
from mlops_magics.registry.db_files import (
    DatabaseState,
    home_folder,
    inspect_database,
    install,
    read_only,
    utc_label,
    versions_in,
)
from mlops_magics.registry.disk import fsync_path, storage_error
from mlops_magics.registry.rebuild import RebuildReport, rebuild
from mlops_magics.registry.records import ArtifactFile

__all__ = ["REPORTS", "BackupReport", "CheckReport", "DatabaseState", "Problem", "RebuildReport", "RestoreReport",
           "backup", "check", "inspect_database", "rebuild", "restore"]


# -- backup and restore ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupReport:
    """Where a backup went and what it holds."""

    path: Path
    size: int
    schema_version: int
    versions: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {"path": str(self.path), "size": self.size, "schema_version": self.schema_version,
                "versions": self.versions, "seconds": round(self.seconds, 3)}

    def __repr__(self) -> str:
        return (f"Backed up the registry database ({self.versions} version(s), schema {self.schema_version}, "
                f"{human_size(self.size)}) to {self.path} in {self.seconds:.2f} s; its integrity check passed.")


def backup(target: Path | str, *, home: Path | str | None = None) -> BackupReport:
    """Copy the registry database to ``target`` with SQLite's online backup API.

    The copy is one consistent snapshot even while other processes write. It is checked
    (``integrity_check``) and only then given its name: a failed backup leaves no file.

    Args:
        target: a new file, or an existing folder (the file is named ``registry-<UTC time>.db`` in it).
        home: the registry folder (default ``$MLOPS_HOME``).

    Raises:
        NotFoundError: there is no registry database to back up.
        ConflictError: ``target`` exists (a backup never overwrites a file).
        RegistryDamagedError: the database is damaged (a backup of it would be too).
        StorageError: the disk refused the copy.
    """
    started = time.monotonic()
    db_path = home_folder(home) / DB_FILE
    state = inspect_database(db_path, full=False)
    if state.state in ("missing", "empty"):
        raise NotFoundError(f"There is no registry database to back up: {db_path} is {state.state}.")
    if not state.healthy:
        raise RegistryDamagedError(f"Not backing up {state.describe()}: a copy would be damaged too. "
                                   "See `mlops registry check`.")
    path = Path(target).expanduser()
    if path.is_dir():
        path = path / f"registry-{utc_label()}.db"
    if path.exists():
        raise ConflictError(f"{path} exists: a backup never overwrites a file. Choose a new name (or a folder).")
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        source = read_only(db_path, config.lock_timeout())
        try:
            copy = sqlite3.connect(partial, isolation_level=None)
            try:
                source.backup(copy)  # every page in one step: one snapshot, however busy the writers are
                copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                rows = [str(r[0]) for r in copy.execute("PRAGMA integrity_check")]
                schema = int(copy.execute("SELECT coalesce(max(id), 0) FROM _migrations").fetchone()[0])
                versions = int(copy.execute("SELECT count(*) FROM versions").fetchone()[0])
            finally:
                copy.close()
        finally:
            source.close()
        if rows != ["ok"]:
            raise RegistryDamagedError(f"The backup copy failed its integrity check ({'; '.join(rows[:3])}).")
        fsync_path(partial)
        os.rename(partial, path)
        fsync_path(path.parent)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise storage_error(exc, f"Backing up to {path}", path) or exc from exc
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise MlopsError(f"Backing up {db_path} to {path} failed: {exc}.") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return BackupReport(path, path.stat().st_size, schema, versions, time.monotonic() - started)


@dataclass(frozen=True)
class RestoreReport:
    """What a restore put in place and what it kept aside."""

    source: Path
    versions: int
    kept_aside: tuple[Path, ...]
    newer_manifests: int

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {"source": str(self.source), "versions": self.versions,
                "kept_aside": [str(p) for p in self.kept_aside], "newer_manifests": self.newer_manifests}

    def __repr__(self) -> str:
        aside = f" The file(s) it replaced: {', '.join(map(str, self.kept_aside))}." if self.kept_aside else ""
        newer = (f" {self.newer_manifests} version(s) registered after the backup are not in it: their artifacts "
                 "and manifests stay in the store, and their numbers are not handed out again."
                 if self.newer_manifests else "")
        return f"Restored the registry database from {self.source} ({self.versions} version(s)).{aside}{newer}"


def restore(source: Path | str, *, home: Path | str | None = None, force: bool = False) -> RestoreReport:
    """Put a backup in place of the registry database (the file it replaces is kept aside, never deleted).

    Stop the kernels, servers and deployments that use the registry first: a process that has it
    open keeps writing to the replaced file. Version numbers stay unique: numbering continues after
    the highest number the artifact store has seen, so versions registered after the backup never
    see their numbers handed out again.

    Args:
        source: a file made by :func:`backup`.
        force: replace a healthy database (without it, only a missing, empty or damaged one).

    Raises:
        NotFoundError / InvalidInputError: ``source`` is missing, or not a healthy registry database.
        ConflictError: the current database is healthy and ``force`` was not given.
    """
    folder = home_folder(home)
    db_path = folder / DB_FILE
    path = Path(source).expanduser().resolve()
    wanted = inspect_database(path)
    if wanted.state == "missing":
        raise NotFoundError(f"No backup at {str(source)!r}.")
    if not wanted.healthy:
        raise InvalidInputError(f"Not restoring {wanted.describe()}: it is not a healthy registry database.")
    current = inspect_database(db_path, full=False)
    if current.healthy and not force:
        raise ConflictError(
            f"The registry database {db_path} is healthy ({current.versions} version(s)); restoring {path} "
            f"({wanted.versions} version(s)) would replace it. Add --force (force=True) to replace it anyway; it is "
            "kept aside, not deleted."
        )
    staged = db_path.with_name(f".{DB_FILE}.restore-{os.getpid()}")
    try:
        with contextlib.closing(read_only(path)) as backup_conn, \
                contextlib.closing(sqlite3.connect(staged)) as copy:
            backup_conn.backup(copy)
            copy.execute("PRAGMA journal_mode=WAL")
            restored = versions_in(copy)
        moved = install(staged, db_path, "replaced" if current.healthy else current.state.replace(" ", "-"))
    except OSError as exc:
        staged.unlink(missing_ok=True)
        raise storage_error(exc, f"Restoring {path}", db_path) or exc from exc
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    store = ArtifactStore(folder / "artifacts")
    newer = sum(1 for name, version, deleted, _ in store.manifest_files()
                if not deleted and (name, version) not in restored)
    return RestoreReport(path, len(restored), moved, newer)


# -- check --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing :func:`check` found: an error (data at risk) or a warning (worth knowing)."""

    severity: str
    subject: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """The problem as JSON-ready values."""
        return {"severity": self.severity, "subject": self.subject, "message": self.message}


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check` found; ``ok`` when there is no error."""

    home: Path
    database: DatabaseState
    versions: int
    manifests: int
    artifacts: int
    artifact_bytes: int
    problems: tuple[Problem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True if nothing is at risk (warnings allowed)."""
        return not any(p.severity == "error" for p in self.problems)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        db = self.database
        return {
            "ok": self.ok,
            "home": str(self.home),
            "database": {"path": str(db.path), "state": db.state, "detail": db.detail, "size": db.size,
                         "schema_version": db.schema_version, "versions": db.versions},
            "versions": self.versions,
            "manifests": self.manifests,
            "artifacts": self.artifacts,
            "artifact_bytes": self.artifact_bytes,
            "problems": [p.as_dict() for p in self.problems],
        }

    def __repr__(self) -> str:
        errors = sum(p.severity == "error" for p in self.problems)
        warnings = len(self.problems) - errors
        verdict = "OK" if not self.problems else f"{errors} error(s), {warnings} warning(s)"
        lines = [
            f"Registry {self.home}: {verdict}",
            f"  database   {self.database.describe()}",
            f"  store      {self.artifacts} artifact(s), {human_size(self.artifact_bytes)}, checked file by file; "
            f"{self.manifests} version manifest(s)",
        ]
        lines += [f"  {p.severity:<8}   {p.subject}: {p.message}" for p in self.problems]
        return "\n".join(lines)


def check(*, home: Path | str | None = None) -> CheckReport:
    """Check the registry: the database (``PRAGMA integrity_check``), every artifact against its files, every manifest.

    An artifact passes when its folder holds exactly the files recorded for it (no more, no fewer),
    each with its recorded size and sha256. Reads only; hashes every file, so it takes about as long
    as reading the store.

    Returns:
        A report: ``ok`` is False when something is at risk (errors); warnings name what is merely odd.
    """
    folder = home_folder(home)
    store = ArtifactStore(folder / "artifacts")
    db_state = inspect_database(folder / DB_FILE)
    problems: list[Problem] = []

    def problem(severity: str, subject: str, message: str) -> None:
        problems.append(Problem(severity, subject, message))

    in_db: dict[tuple[str, int], tuple[str, tuple[ArtifactFile, ...]]] = {}
    uses: dict[str, tuple[str, tuple[ArtifactFile, ...]]] = {}
    if db_state.state in ("missing", "empty") and store.holds_anything():
        problem("error", "database", f"{db_state.path} is {db_state.state} while the store holds artifacts: "
                                     "restore a backup or run `mlops registry rebuild`.")
    elif db_state.state in ("unreadable", "damaged", "no schema"):
        problem("error", "database", f"{db_state.describe()}. Restore a backup (`mlops registry restore BACKUP`) "
                                     "or re-create it with `mlops registry rebuild`.")
    if db_state.state in ("healthy", "damaged"):
        try:
            with contextlib.closing(read_only(db_state.path)) as conn:
                for name, version, digest, files in conn.execute("SELECT name, version, sha256, files FROM versions"):
                    recorded = tuple(ArtifactFile(*f) for f in json.loads(files))
                    in_db[str(name), int(version)] = (str(digest), recorded)
                    uses.setdefault(str(digest), (f"{name}:{version}", recorded))
                for name, version, assets in conn.execute(
                        "SELECT name, version, assets FROM inference_configs WHERE assets IS NOT NULL"):
                    body = json.loads(assets)
                    uses.setdefault(str(body["sha256"]), (
                        f"assets of {name}" + (f":{version}" if version else ""),
                        tuple(ArtifactFile(*f) for f in body["files"])))
        except (sqlite3.Error, ValueError, KeyError, TypeError) as exc:
            problem("error", "database", f"reading the versions failed: {exc}")
    manifests = 0
    for name, version, deleted, path in store.manifest_files():
        if deleted:
            if (name, version) in in_db:
                problem("warning", f"{name}:{version}", f"its manifest is marked deleted ({path}) but the database "
                                                        "holds the version.")
            continue
        manifests += 1
        try:
            body = store.read_manifest(path)
            recorded = tuple(ArtifactFile(f["path"], int(f["size"]), f["sha256"]) for f in body["files"])
            digest = str(body["sha256"])
        except (IntegrityError, KeyError, TypeError, ValueError) as exc:
            problem("error", str(path), f"unreadable manifest: {exc}")
            continue
        known = in_db.get((name, version))
        if known is None:
            if db_state.healthy:
                problem("warning", f"{name}:{version}",
                        f"has a manifest ({path}) but is not in the database (registered after the backup it was "
                        "restored from?). Its number is not handed out again; move the database aside and run "
                        "`mlops registry rebuild` to get it back.")
            uses.setdefault(digest, (f"{name}:{version}", recorded))
        elif known[0] != digest or manifest_digest(known[1]) != manifest_digest(recorded):
            problem("error", f"{name}:{version}", f"its manifest ({path}) and the database disagree about its "
                                                  "files: one of them was modified outside mlops-magics.")
    if db_state.healthy and store.manifests_complete():
        for name, version in sorted(set(in_db) - {(n, v) for n, v, d, _ in store.manifest_files() if not d}):
            problem("warning", f"{name}:{version}", "has no manifest: `mlops registry rebuild` could not restore it.")
    size = 0
    for digest, (subject, recorded) in sorted(uses.items()):
        try:
            store.verify(digest, recorded)
            size += sum(f.size for f in recorded)
        except IntegrityError as exc:
            problem("error", subject, str(exc))
    stored = store.digests()
    if db_state.healthy:
        for digest in sorted(set(stored) - set(uses)):
            problem("warning", f"artifact {digest[:16]}...", f"{store.path(digest)} is used by no version: left by a "
                                                             "write that did not finish, or by a deleted version.")
    if store.needs_recovery():
        problem("warning", "store", "a writer died while writing; the next open of the registry cleans up after it.")
    return CheckReport(folder, db_state, len(in_db), manifests, len(stored), size, tuple(problems))


#: The report types of this module (each has ``as_dict()`` and a text ``repr``).
REPORTS = (BackupReport, RestoreReport, CheckReport, RebuildReport)

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
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
from mlops_magics.registry.disk import fsync_path, storage_error
from mlops_magics.registry.records import ArtifactFile
from mlops_magics.registry.refs import MAX_VERSION, check_name
from mlops_magics.registry.store import DB_FILE

_JSON_COLUMNS = ("files", "tags", "signature", "input_example", "lineage", "flavor_options")


def _home(home: Path | str | None) -> Path:
    return Path(home).expanduser().resolve() if home is not None else config.mlops_home()


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


# -- what state a database file is in -------------------------------------------------------------


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


def _read_only(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
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
        conn = _read_only(path)
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
    db_path = _home(home) / DB_FILE
    state = inspect_database(db_path, full=False)
    if state.state in ("missing", "empty"):
        raise NotFoundError(f"There is no registry database to back up: {db_path} is {state.state}.")
    if not state.healthy:
        raise RegistryDamagedError(f"Not backing up {state.describe()}: a copy would be damaged too. "
                                   "See `mlops registry check`.")
    path = Path(target).expanduser()
    if path.is_dir():
        path = path / f"registry-{_stamp()}.db"
    if path.exists():
        raise ConflictError(f"{path} exists: a backup never overwrites a file. Choose a new name (or a folder).")
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        source = _read_only(db_path, config.lock_timeout())
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


def _move_aside(db_path: Path, label: str) -> tuple[Path, ...]:
    """Rename the database and its -wal/-shm files to ``<name>.<label>-<UTC time>[-wal|-shm]``; never delete them.

    The log keeps its place beside the file it belongs to, so SQLite opens the set kept aside whole.
    """
    aside = db_path.with_name(f"{db_path.name}.{label}-{_stamp()}")
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


def _install(new: Path, db_path: Path, label: str) -> tuple[Path, ...]:
    fsync_path(new)
    moved = _move_aside(db_path, label)
    os.rename(new, db_path)
    fsync_path(db_path.parent)
    from mlops_magics import registry

    registry.forget_registry(db_path.parent)
    return moved


def _versions_in(conn: sqlite3.Connection) -> set[tuple[str, int]]:
    return {(str(n), int(v)) for n, v in conn.execute("SELECT name, version FROM versions")}


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
    folder = _home(home)
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
        with contextlib.closing(_read_only(path)) as backup_conn, \
                contextlib.closing(sqlite3.connect(staged)) as copy:
            backup_conn.backup(copy)
            copy.execute("PRAGMA journal_mode=WAL")
            restored = _versions_in(copy)
        moved = _install(staged, db_path, "replaced" if current.healthy else current.state.replace(" ", "-"))
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
    folder = _home(home)
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
            with contextlib.closing(_read_only(db_state.path)) as conn:
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


# -- rebuild ---------------------------------------------------------------------------------------


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
                " Aliases, deployments, inference configurations and reports are not in manifests: set them again.")
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
    folder = _home(home)
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
            versions = len(_versions_in(conn))
            models = int(conn.execute("SELECT count(DISTINCT name) FROM versions").fetchone()[0])
        moved = _install(staged, db_path, state.state.replace(" ", "-"))
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

    from mlops_magics.registry.migrations import MIGRATIONS

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
    for column in _JSON_COLUMNS:  # encoded as Registry.add_version encodes them
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


#: The report types of this module (each has ``as_dict()`` and a text ``repr``).
REPORTS = (BackupReport, RestoreReport, CheckReport, RebuildReport)

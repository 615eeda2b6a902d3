"""The embedded registry: one SQLite database plus the artifact store under ``$MLOPS_HOME``."""

from __future__ import annotations

import difflib
import fcntl
import getpass
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mlops_magics import config
from mlops_magics.errors import (
    ConflictError,
    InvalidInputError,
    MlopsError,
    NotFoundError,
    RegistryDamagedError,
    RegistryLockedError,
    SchemaVersionError,
    StorageError,
)
from mlops_magics.registry.artifacts import ArtifactStore, StagedArtifact
from mlops_magics.registry.disk import free_space, storage_error
from mlops_magics.registry.journals import Journal
from mlops_magics.registry.migrations import MIGRATIONS, SCHEMA_VERSION
from mlops_magics.registry.records import (
    AliasEvent,
    ArtifactFile,
    Deployment,
    Image,
    InferenceConfig,
    Lineage,
    ModelVersion,
    ModelVersionList,
    frozen_mapping,
)
from mlops_magics.registry.refs import ModelRef, check_alias, check_name, check_tag, parse_ref
from mlops_magics.registry.secrets import KeyStore

if TYPE_CHECKING:
    import sqlite_utils

log = logging.getLogger(__name__)

DB_FILE = "registry.db"

# Tags are kept twice on purpose: the ``tags`` table (indexed, for searching) and a JSON copy on
# the version row (for listing 10,000 versions without a join). Both change in one transaction.
# In the order of ModelVersion's fields.
_VERSION_COLUMNS = (
    "name, version, flavor, framework, framework_version, sha256, size, description, created_by, created_at, "
    "files, tags, signature, input_example, lineage, flavor_options, origin, origin_path, trusted_at, trusted_by"
)
_VERSION_SELECT = f"SELECT {_VERSION_COLUMNS} FROM versions v"
_TAGS_JSON = (
    "(SELECT json_group_object(key, value) FROM "
    "(SELECT key, value FROM tags WHERE name = ? AND version = ? ORDER BY key))"
)
#: Columns of ``versions`` that hold JSON text (decoded in manifests).
_JSON_COLUMNS = ("files", "tags", "signature", "input_example", "lineage", "flavor_options")

# SQLite's primary result codes (https://sqlite.org/rescode.html).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT = 5, 6, 8, 10, 11
_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 13, 14, 26
_SQLITE_READONLY_DBMOVED = _SQLITE_READONLY | 4 << 8  # an extended code: the file was renamed or deleted
_CODE_WORDS = (("locked", _SQLITE_LOCKED), ("busy", _SQLITE_BUSY), ("readonly", _SQLITE_READONLY),
               ("disk is full", _SQLITE_FULL), ("malformed", _SQLITE_CORRUPT), ("not a database", _SQLITE_NOTADB),
               ("disk i/o error", _SQLITE_IOERR), ("unable to open", _SQLITE_CANTOPEN))


class _Keep:
    """The type of :data:`KEEP`."""


#: Leave a field as it is (``Registry.set_inference``).
KEEP = _Keep()


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def _stamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def current_user() -> str:
    """The login name of whoever runs this process ('unknown' when there is none)."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "unknown"


def _sqlite_code(error: sqlite3.Error) -> int:
    """SQLite's primary result code for an error (0 when it cannot be told)."""
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF
    text = str(error).lower()
    return next((number for words, number in _CODE_WORDS if words in text), 0)


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file: it changes when the file is replaced; None when there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _reraise(error: BaseException, translated: BaseException) -> NoReturn:
    if translated is error:
        raise error
    raise translated from error


def _quick_check(db: sqlite_utils.Database) -> str | None:
    """None if SQLite's quick_check passes, else what it found."""
    try:
        rows = [str(r[0]) for r in db.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if rows == ["ok"] else "; ".join(rows[:3])


def _immutable(path: Path) -> bool:
    """True if ``path`` carries the immutable attribute (chattr +i; Linux only)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        flags = bytearray(8)
        fcntl.ioctl(fd, 0x80086601, flags)  # FS_IOC_GETFLAGS
        return bool(int.from_bytes(flags[:4], "little") & 0x10)  # FS_IMMUTABLE_FL
    except OSError:
        return False
    finally:
        os.close(fd)


def _why_read_only(path: Path) -> str:
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return "its filesystem is mounted read-only"
    except OSError:
        pass
    for candidate in (path, path.parent):
        if _immutable(candidate):
            return f"{candidate} is immutable (chattr +i)"
    if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        return "this user may not write it or its folder"
    return "SQLite opened it read-only"


class _Transaction:
    """What one write transaction does beside the database: its journal, what to undo, what to finish."""

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store
        self._journal: Journal | None = None
        self._undo: list[Callable[[], None]] = []
        self._after: list[Callable[[], None]] = []

    def journal(self) -> Journal:
        """This transaction's journal, created on first use."""
        if self._journal is None:
            self._journal = self._store.open_journal()
        return self._journal

    def on_rollback(self, step: Callable[[], None]) -> None:
        """Run ``step`` if the transaction does not commit (steps run last first)."""
        self._undo.append(step)

    def after_commit(self, step: Callable[[], None]) -> None:
        """Run ``step`` once the transaction committed."""
        self._after.append(step)

    def undo(self) -> None:
        """The transaction rolled back: undo its changes to the store."""
        self._settle(reversed(self._undo), "undoing a write that did not commit")

    def commit(self) -> None:
        """The transaction committed: finish its changes to the store."""
        self._settle(iter(self._after), "finishing a committed write")

    def _settle(self, steps: Iterator[Callable[[], None]], doing: str) -> None:
        settled = True
        for step in steps:
            try:
                step()
            except Exception:  # the journal is kept: the next open finishes the job
                log.warning("artifact store %s: %s failed; the next open recovers it", self._store.root, doing,
                            exc_info=True)
                settled = False
        if self._journal is not None:
            self._journal.close(keep=not settled)


class _RecoveryView:
    """What recovery reads from the database (see :class:`mlops_magics.artifacts.RecoveryView`)."""

    def __init__(self, registry: Registry, db: sqlite_utils.Database) -> None:
        self._registry = registry
        self._db = db

    def has_version(self, name: str, version: int) -> bool:
        return self._db.execute(
            "SELECT 1 FROM versions WHERE name = ? AND version = ?", [name, version]).fetchone() is not None

    def manifest_body(self, name: str, version: int) -> dict[str, Any] | None:
        return self._registry._manifest_body(self._db, name, version)

    def referenced(self) -> set[str]:
        return self._registry._referenced(self._db)


class Registry:
    """A model registry stored under one folder.

    Safe to share between threads (each thread gets its own SQLite connection) and between
    processes (writes take SQLite's write lock; versions are allocated inside it).

    Args:
        home: the registry folder; default ``$MLOPS_HOME`` or ``~/.mlops``.
        lock_timeout: seconds to wait for another writer; default ``$MLOPS_LOCK_TIMEOUT`` or 30.
    """

    def __init__(self, home: Path | str | None = None, *, lock_timeout: float | None = None) -> None:
        self.home = Path(home).expanduser().resolve() if home is not None else config.mlops_home()
        self.lock_timeout = config.lock_timeout() if lock_timeout is None else lock_timeout
        self.db_path = self.home / DB_FILE
        self._local = threading.local()
        self._setup_lock = threading.Lock()
        self._ready = False
        self.home.mkdir(parents=True, exist_ok=True)
        self.artifacts = ArtifactStore(self.home / "artifacts")
        self.keys = KeyStore(self.home)
        self.db  # noqa: B018 - open now so that schema and lock errors surface at construction

    def __repr__(self) -> str:
        return f"<Registry {self.home}>"

    def close(self) -> None:
        """Close this thread's connection (the next use opens a new one)."""
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is not None:
            self._local.db = None
            db.conn.close()

    # -- connection and transactions -------------------------------------------------------

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection, opened (and the schema brought up to date) on first use.

        Raises:
            RegistryDamagedError: the database is missing, empty or damaged while the artifact store
                holds artifacts; the message says how to restore it.
            RegistryLockedError / SchemaVersionError / StorageError: see :meth:`write`.
        """
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is not None:
            if self._local.identity == _identity(self.db_path):
                return db
            # The file was replaced (restored, rebuilt) or deleted since this connection opened it: writing on
            # would go to the old file. Open the one there is now, checked as at first.
            log.warning("registry %s: %s was replaced or removed; opening it again", self.home, self.db_path)
            self.close()
            with self._setup_lock:
                self._ready = False
        with self._setup_lock:
            if not self._ready:
                self._refuse_lost_database()
        db = self._connect()
        identity = _identity(self.db_path)
        try:
            with self._setup_lock:
                if not self._ready:
                    self._refuse_foreign_database(db)
                    self._migrate(db)
                    self._complete_manifests(db)
                    self._recover(db)
                    self._ready = True
        except sqlite3.Error as exc:
            db.conn.close()
            raise self._database_error(exc, "Opening the registry") from exc
        except BaseException:
            db.conn.close()
            raise
        self._local.db, self._local.identity = db, identity
        return db

    def _connect(self) -> sqlite_utils.Database:
        import sqlite_utils

        try:
            conn = sqlite3.connect(self.db_path, timeout=self.lock_timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            if _sqlite_code(exc) == _SQLITE_NOTADB:
                raise RegistryDamagedError(
                    f"{self.db_path} is not a usable registry database ({exc}). Nothing was changed. "
                    + self._restore_hint()
                ) from exc
            raise self._database_error(exc, "Opening the registry") from exc
        return sqlite_utils.Database(conn, execute_plugins=False)

    def _restore_hint(self) -> str:
        return (
            "Restore it from a backup (`mlops registry restore BACKUP`; backups are made with `mlops registry "
            "backup PATH`), or re-create it from the artifact store's manifests with `mlops registry rebuild` (it "
            f"keeps the old file aside). To start a new, empty registry instead, move {self.home} aside or point "
            "MLOPS_HOME at another folder."
        )

    def _refuse_lost_database(self) -> None:
        """Refuse to open a missing or empty database beside a store that holds artifacts (it would start over)."""
        try:
            size: int | None = self.db_path.stat().st_size
        except FileNotFoundError:
            size = None
        if size:
            return
        wal = self.db_path.with_name(self.db_path.name + "-wal")
        wal_size = wal.stat().st_size if wal.exists() else 0
        if not wal_size and not self.artifacts.holds_anything():
            return  # a new registry
        raise RegistryDamagedError(self._lost_message("is missing" if size is None else "is empty (0 bytes)",
                                                      wal if wal_size else None))

    def _refuse_foreign_database(self, db: sqlite_utils.Database) -> None:
        if self._schema_version(db) == 0 and self.artifacts.holds_anything():
            raise RegistryDamagedError(self._lost_message("holds no registry (no schema, no version)", None))

    def _lost_message(self, state: str, wal: Path | None) -> str:
        artifacts = len(self.artifacts.digests())
        manifests = sum(1 for *_, deleted, _ in self.artifacts.manifest_files() if not deleted)
        from mlops_magics.display import human_size

        kept = f"{artifacts} artifact(s) in {self.artifacts.blobs} and the manifests of {manifests} version(s) remain"
        if wal is not None:
            kept += f", and its write-ahead log {wal} ({human_size(wal.stat().st_size)}) may still hold its pages"
        source = "the write-ahead log if it is whole, else from the artifact store's manifests" if wal else (
            "the artifact store's manifests")
        return (
            f"The registry database {self.db_path} {state}, but {kept}. Opening it would start an empty registry over "
            "them and hand their version numbers out again, so it is refused; nothing was changed. Restore the "
            f"database: from a backup (`mlops registry restore BACKUP`), or re-create it from {source} with `mlops "
            f"registry rebuild`. Keep {self.home} as it is until then. To start a new, empty registry instead, move "
            "that folder aside."
        )

    def _locked_error(self) -> RegistryLockedError:
        return RegistryLockedError(
            f"The registry {self.db_path} is locked by another process: waited {self.lock_timeout:g} s "
            "for its write lock. Retry when the other writer is done, or raise MLOPS_LOCK_TIMEOUT "
            "(seconds)."
        )

    def _database_error(self, exc: sqlite3.Error, doing: str) -> MlopsError:
        """One clear error for what SQLite answered: locked, read-only, full, damaged, I/O error."""
        code = _sqlite_code(exc)
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return self._locked_error()
        nothing = "Nothing was changed."
        if getattr(exc, "sqlite_errorcode", None) == _SQLITE_READONLY_DBMOVED:
            return ConflictError(
                f"{doing} failed: the registry database {self.db_path} was replaced (restored or rebuilt) after this "
                f"process opened it. {nothing} Open the registry again (restart the kernel, or make a new Registry)."
            )
        if code == _SQLITE_READONLY:
            return StorageError(
                f"{doing} failed: the registry database {self.db_path} is read-only ({_why_read_only(self.db_path)}). "
                f"{nothing} Reading still works. To write, make it writable (chmod u+w, chattr -i, or remount its "
                "filesystem read-write), or set MLOPS_HOME to a writable folder."
            )
        free = free_space(self.home)
        if code == _SQLITE_FULL or (code == _SQLITE_IOERR and free is not None and free < 1 << 20):
            from mlops_magics.display import human_size

            left = "" if free is None else f" ({human_size(free)} free)"
            return StorageError(
                f"{doing} failed: the disk holding {self.db_path} is full{left}. {nothing} Free some space (or set "
                "MLOPS_HOME to a folder on a bigger disk) and retry."
            )
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return RegistryDamagedError(
                f"{doing} failed: the registry database {self.db_path} is damaged ({exc}). {nothing} See what is "
                f"affected with `mlops registry check`. {self._restore_hint()}"
            )
        if code == _SQLITE_IOERR:
            return StorageError(
                f"{doing} failed: the disk reported an I/O error on {self.db_path} ({exc}). {nothing} Check the disk "
                "(dmesg), then run `mlops registry check`."
            )
        if code == _SQLITE_CANTOPEN:
            return StorageError(
                f"{doing} failed: SQLite cannot open {self.db_path} ({exc}). Check that {self.home} exists and that "
                "this user may read and write it, or set MLOPS_HOME to another folder."
            )
        return MlopsError(f"{doing} failed: the registry database {self.db_path} answered: {exc}.")

    def _translated(self, exc: BaseException, doing: str) -> BaseException:
        """The MlopsError to raise for a database or disk error (``exc`` itself for anything else)."""
        if type(exc) in (sqlite3.OperationalError, sqlite3.DatabaseError):
            return self._database_error(exc, doing)  # type: ignore[arg-type]
        if isinstance(exc, OSError):
            return storage_error(exc, doing, exc.filename or self.home) or exc
        return exc

    def write(self) -> AbstractContextManager[sqlite_utils.Database]:
        """A write transaction (``BEGIN IMMEDIATE``): all or nothing, one writer at a time.

        What the transaction changes in the artifact store is journaled first and undone if it does
        not commit (see :mod:`mlops_magics.artifacts`).

        Raises:
            RegistryLockedError: another process held the write lock past the lock timeout.
            StorageError: the disk is full or read-only, or the database file is; nothing was changed.
            RegistryDamagedError: the database is corrupted.
        """
        return self._write(self.db)

    @contextmanager
    def _write(self, db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
        doing = f"Writing to the registry {self.home}"
        if getattr(self._local, "transaction", None) is not None:
            raise AssertionError("nested registry write transaction")
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            _reraise(exc, self._translated(exc, doing))
        transaction = _Transaction(self.artifacts)
        self._local.transaction = transaction
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - rolled back, undone, then raised again
            self._local.transaction = None
            try:
                db.conn.rollback()
            except sqlite3.Error:
                log.warning("registry %s: rollback failed", self.db_path, exc_info=True)
            transaction.undo()
            _reraise(exc, self._translated(exc, doing))
        self._local.transaction = None
        transaction.commit()

    def _transaction(self) -> _Transaction:
        transaction: _Transaction | None = getattr(self._local, "transaction", None)
        if transaction is None:
            raise AssertionError("outside a registry write transaction")
        return transaction

    @contextmanager
    def read(self) -> Iterator[sqlite_utils.Database]:
        """A read transaction: every query inside sees the same snapshot.

        Raises:
            RegistryDamagedError: the database is corrupted.
            StorageError: the disk failed (I/O error).
        """
        db = self.db
        try:
            db.execute("BEGIN")
            yield db
        except sqlite3.Error as exc:
            _reraise(exc, self._translated(exc, f"Reading the registry {self.home}"))
        finally:
            db.conn.rollback()

    def change_stamp(self) -> tuple[int, int]:
        """A value that changes whenever the database changes, written by this thread's connection or any
        other, in any process (SQLite's ``data_version`` and this connection's ``total_changes``). Cheap: two
        reads of connection state, no query of the tables. Compare stamps taken on the same thread."""
        db = self.db
        try:
            (data_version,) = db.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error as exc:
            _reraise(exc, self._translated(exc, f"Reading the registry {self.home}"))
        return int(data_version), int(db.conn.total_changes)

    def _schema_version(self, db: sqlite_utils.Database) -> int:
        if not db["_migrations"].exists():
            return 0
        return int(db.execute("SELECT coalesce(max(id), 0) FROM _migrations").fetchone()[0])

    def _migrate(self, db: sqlite_utils.Database) -> None:
        found = self._schema_version(db)
        if found > SCHEMA_VERSION:
            from mlops_magics import __version__

            raise SchemaVersionError(
                f"The registry {self.db_path} has schema version {found}, written by a newer "
                f"mlops-magics; this one ({__version__}) knows schema versions up to {SCHEMA_VERSION}. "
                "Upgrade mlops-magics (pip install -U mlops-magics), or set MLOPS_HOME to another folder."
            )
        if found == SCHEMA_VERSION:
            return
        with self._write(db):
            db.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "applied_at TEXT NOT NULL)"
            )
            done = self._schema_version(db)  # another process may have migrated meanwhile
            for number, name, apply in MIGRATIONS:
                if number > done:
                    apply(db)
                    db.table("_migrations").insert({"id": number, "name": name, "applied_at": _stamp(utcnow())})
                    log.info("registry %s: applied migration %d (%s)", self.db_path, number, name)

    def _recover(self, db: sqlite_utils.Database) -> None:
        if not self.artifacts.needs_recovery():
            return
        try:
            with self._write(db):
                problem = _quick_check(db)
                if problem is not None:
                    raise RegistryDamagedError(
                        f"The registry {self.home} needs recovery (a writer died), but its database "
                        f"{self.db_path} fails its check ({problem}), so nothing in the artifact store is touched. "
                        f"Run `mlops registry check` to see what is affected. {self._restore_hint()}"
                    )
                actions = self.artifacts.recover(_RecoveryView(self, db))
        except StorageError as exc:
            log.warning("registry %s: recovery postponed: %s", self.home, exc)
            return
        for action in actions:
            log.warning("registry %s: %s", self.home, action)

    def _complete_manifests(self, db: sqlite_utils.Database) -> None:
        """Write the manifest of every version that has none (registries made before manifests were kept)."""
        if self.artifacts.manifests_complete():
            return
        try:
            with self._write(db):
                written = [
                    self.artifacts.write_manifest(self._manifest_body(db, name, version) or {}, new=True, sync=False)
                    for name, version in db.execute("SELECT name, version FROM versions").fetchall()
                    if not self.artifacts.has_manifest(name, version)
                ]
                self.artifacts.sync_manifests(written)  # once, at the end: an fsync each would take minutes
                for name, last in db.execute(
                    "SELECT name, last_version FROM models m WHERE last_version > 0 AND NOT EXISTS "
                    "(SELECT 1 FROM versions v WHERE v.name = m.name AND v.version = m.last_version)"
                ).fetchall():
                    if self.artifacts.high_water(name) < last:  # its newest number was deleted: keep it counted
                        self.artifacts.write_tombstone(name, last)
                self.artifacts.mark_manifests_complete()
        except StorageError as exc:
            log.info("registry %s: manifests not written (%s)", self.home, exc)

    def _manifest_body(self, db: sqlite_utils.Database, name: str, version: int) -> dict[str, Any] | None:
        """Everything about a version the database holds, as its manifest records it."""
        cursor = db.execute("SELECT * FROM versions WHERE name = ? AND version = ?", [name, version])
        row = cursor.fetchone()
        if row is None:
            return None
        body: dict[str, Any] = dict(zip([c[0] for c in cursor.description], row, strict=True))
        for column in _JSON_COLUMNS:
            if isinstance(body.get(column), str):
                body[column] = json.loads(body[column])
        body["files"] = [{"path": p, "size": size, "sha256": sha} for p, size, sha in body.get("files") or []]
        return body

    def _sync_manifest(self, name: str, version: int) -> None:
        """Rewrite a version's manifest from the database once the current transaction commits."""
        transaction = self._transaction()
        transaction.journal().record(("sync", name, str(version)))

        def sync() -> None:
            body = self._manifest_body(self.db, name, version)
            if body is not None:
                self.artifacts.write_manifest(body)

        transaction.after_commit(sync)

    def _referenced(self, db: sqlite_utils.Database) -> set[str]:
        """Every artifact digest something uses: model versions and inference assets."""
        return {row[0] for row in db.execute(
            "SELECT sha256 FROM versions UNION SELECT json_extract(assets, '$.sha256') FROM inference_configs "
            "WHERE assets IS NOT NULL"
        )}

    # -- reading ---------------------------------------------------------------------------

    def _to_version(self, row: tuple[Any, ...], aliases: tuple[str, ...]) -> ModelVersion:
        (name, version, flavor, framework, framework_version, sha256, size, description, created_by,
         created_text, files, tags, signature, example, lineage, options, origin, origin_path, trusted_text,
         trusted_by) = row
        return ModelVersion(name, version, flavor, framework, framework_version, sha256, size, description,
                            created_by, created_text, files, tags, signature, example, lineage, options,
                            aliases, self.artifacts.blobs, origin, origin_path, trusted_text, trusted_by)

    def _aliases_by_version(
        self, db: sqlite_utils.Database, name: str | None = None
    ) -> dict[tuple[str, int], tuple[str, ...]]:
        found: dict[tuple[str, int], tuple[str, ...]] = {}
        sql = "SELECT name, version, alias FROM aliases" + (" WHERE name = ?" if name else "") + " ORDER BY alias"
        for model, version, alias in db.execute(sql, [name] if name else []):
            found[model, version] = (*found.get((model, version), ()), alias)
        return found

    def _names(self, db: sqlite_utils.Database) -> list[str]:
        return [r[0] for r in db.execute("SELECT DISTINCT name FROM versions ORDER BY name")]

    def _no_model(self, db: sqlite_utils.Database, name: str) -> NotFoundError:
        names = self._names(db)
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listed = ", ".join(repr(n) for n in names[:20]) + (" ..." if len(names) > 20 else "")
        where = f"Registered: {listed}." if names else "The registry is empty."
        return NotFoundError(
            f"No model named {name!r}.{hint} {where} Register it with %register VAR --name {name}."
        )

    def _resolve(self, db: sqlite_utils.Database, ref: ModelRef, as_of: datetime | None) -> int:
        """The version number ``ref`` names (at ``as_of`` for aliases and latest)."""
        latest = db.execute("SELECT max(version) FROM versions WHERE name = ?", [ref.name]).fetchone()[0]
        if latest is None:
            raise self._no_model(db, ref.name)
        if ref.version is not None:
            if db.execute(
                "SELECT 1 FROM versions WHERE name = ? AND version = ?", [ref.name, ref.version]
            ).fetchone() is None:
                versions = [r[0] for r in db.execute(
                    "SELECT version FROM versions WHERE name = ? ORDER BY version", [ref.name]
                )]
                raise NotFoundError(
                    f"Model {ref.name!r} has no version {ref.version}. "
                    f"Versions: {_ranges(versions)} (latest {latest})."
                )
            return ref.version
        if ref.alias is not None:
            return self._resolve_alias(db, ref.name, ref.alias, as_of)
        if as_of is None:
            return int(latest)
        then = db.execute(
            "SELECT max(version) FROM versions WHERE name = ? AND created_at <= ?", [ref.name, _stamp(as_of)]
        ).fetchone()[0]
        if then is None:
            raise NotFoundError(f"Model {ref.name!r} had no version yet on {_stamp(as_of)}.")
        return int(then)

    def _resolve_alias(self, db: sqlite_utils.Database, name: str, alias: str, as_of: datetime | None) -> int:
        if as_of is None:
            row = db.execute("SELECT version FROM aliases WHERE name = ? AND alias = ?", [name, alias]).fetchone()
        else:
            row = db.execute(
                "SELECT version FROM alias_history WHERE name = ? AND alias = ? AND at <= ? "
                "ORDER BY at DESC, id DESC LIMIT 1",
                [name, alias, _stamp(as_of)],
            ).fetchone()
        if row is not None and row[0] is not None:
            return int(row[0])
        current = db.execute(
            "SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias", [name]
        ).fetchall()
        known = ", ".join(f"{a} -> {v}" for a, v in current) or "none"
        when = f" on {_stamp(as_of)}" if as_of else ""
        raise NotFoundError(
            f"Model {name!r} has no alias {alias!r}{when}. Aliases: {known}. "
            f"Set it with %alias {name}:VERSION {alias}."
        )

    def _version(self, db: sqlite_utils.Database, name: str, version: int) -> ModelVersion:
        row = db.execute(_VERSION_SELECT + " WHERE v.name = ? AND v.version = ?", [name, version]).fetchone()
        if row is None:
            raise NotFoundError(f"Model {name!r} has no version {version}.")
        return self._to_version(row, self._aliases_by_version(db, name).get((name, version), ()))

    def get(self, ref: str | ModelRef, *, as_of: datetime | None = None) -> ModelVersion:
        """Return the version a reference names.

        Args:
            ref: ``NAME`` (latest), ``NAME:VERSION``, ``NAME:latest`` or ``NAME@ALIAS``.
            as_of: resolve aliases and "latest" as they were at this moment.

        Raises:
            InvalidInputError: the reference is malformed.
            NotFoundError: no such model, version or alias; the message lists what exists.
        """
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        with self.read() as db:
            return self._version(db, parsed.name, self._resolve(db, parsed, as_of))

    def find(
        self,
        name: str | None = None,
        tags: Mapping[str, str | None] | None = None,
        *,
        latest: bool = False,
    ) -> ModelVersionList:
        """Return versions, sorted by name then version.

        Args:
            name: a glob on the model name (``iris*``, ``*-v?``); case-sensitive.
            tags: every ``key: value`` must match; a ``None`` value only requires the key.
            latest: only the newest version of each model.
        """
        where: list[str] = []
        params: list[Any] = []
        if name:
            where.append("v.name GLOB ?")
            params.append(name)
        for key, value in (tags or {}).items():
            if value is None:
                where.append(
                    "EXISTS (SELECT 1 FROM tags t WHERE t.name = v.name AND t.version = v.version AND t.key = ?)"
                )
                params.append(key)
            else:
                where.append(
                    "EXISTS (SELECT 1 FROM tags t WHERE t.name = v.name AND t.version = v.version "
                    "AND t.key = ? AND t.value = ?)"
                )
                params += [key, value]
        if latest:
            where.append("v.version = (SELECT max(version) FROM versions w WHERE w.name = v.name)")
        sql = _VERSION_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY v.name, v.version"
        with self.read() as db:
            aliases = self._aliases_by_version(db)
            return ModelVersionList(
                self._to_version(row, aliases.get((row[0], row[1]), ())) for row in db.execute(sql, params)
            )

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """Every move of the model's aliases (or of one alias), oldest first."""
        sql = "SELECT name, alias, version, at, by FROM alias_history WHERE name = ?"
        params: list[Any] = [check_name(name)]
        if alias is not None:
            sql += " AND alias = ?"
            params.append(alias)
        with self.read() as db:
            if db.execute("SELECT 1 FROM models WHERE name = ?", [name]).fetchone() is None:
                raise self._no_model(db, name)
            return [
                AliasEvent(r["name"], r["alias"], r["version"], datetime.fromisoformat(r["at"]), r["by"])
                for r in db.query(sql + " ORDER BY at, id", params)
            ]

    # -- writing ---------------------------------------------------------------------------

    def add_version(
        self,
        name: str,
        staged: StagedArtifact,
        *,
        flavor: str,
        flavor_options: Mapping[str, Any] | None = None,
        framework: str | None = None,
        framework_version: str | None = None,
        tags: Mapping[str, str] | None = None,
        description: str = "",
        signature: Mapping[str, Any] | None = None,
        input_example: Mapping[str, Any] | None = None,
        lineage: Lineage | None = None,
        alias: str | None = None,
        origin: str = "unknown",
        origin_path: str | None = None,
        trusted: bool = False,
    ) -> ModelVersion:
        """Record a staged artifact as the next version of ``name``, atomically.

        The version number is allocated inside the write transaction: concurrent writers never
        share or skip a number. Numbers are never reused, even after a delete.

        Args:
            origin: 'object' (saved from memory), 'path' (a file or folder registered as it was) or 'unknown'.
            origin_path: the registered file or folder (origin 'path').
            trusted: record that the registrant trusts it to be loaded (now, by the current user).

        Raises:
            InvalidInputError: invalid name, tag or alias.
            RegistryLockedError: the write lock could not be had in time.
        """
        check_name(name)
        for key, value in (tags or {}).items():
            check_tag(key, value)
        if alias is not None:
            check_alias(alias)
        user = current_user()
        with self.write() as db:
            now = _stamp(utcnow())
            db.execute(
                "INSERT INTO models (name, last_version, created_at) VALUES (?, 0, ?) ON CONFLICT(name) DO NOTHING",
                [name, now],
            )
            # The store's high-water mark counts versions a database restored from an older copy forgot.
            (last,) = db.execute("SELECT last_version FROM models WHERE name = ?", [name]).fetchone()
            version = max(int(last), self.artifacts.high_water(name)) + 1
            db.execute("UPDATE models SET last_version = ? WHERE name = ?", [version, name])
            transaction = self._transaction()
            journal = transaction.journal()
            journal.record(("manifest", name, str(version)))
            transaction.on_rollback(lambda: self.artifacts.remove_manifest(name, version))
            published = not self.artifacts.path(staged.digest).exists()  # (no other writer: we hold the lock)
            if published:
                transaction.on_rollback(lambda: self.artifacts.unpublish(staged.digest))
            self.artifacts.publish(staged, journal, sync=False)  # synced with the manifest, below
            db.table("versions").insert(
                {
                    "name": name,
                    "version": version,
                    "flavor": flavor,
                    "flavor_options": json.dumps(dict(flavor_options or {}), sort_keys=True),
                    "framework": framework,
                    "framework_version": framework_version,
                    "sha256": staged.digest,
                    "size": staged.size,
                    "files": json.dumps([[f.path, f.size, f.sha256] for f in staged.files]),
                    "signature": None if signature is None else json.dumps(signature, sort_keys=True),
                    "input_example": None if input_example is None else json.dumps(input_example),
                    "description": description or "",
                    "lineage": json.dumps((lineage or Lineage()).as_dict(), sort_keys=True),
                    "created_at": now,
                    "created_by": user,
                    "tags": json.dumps(dict(sorted((tags or {}).items()))),
                    "origin": origin,
                    "origin_path": origin_path,
                    "trusted_at": now if trusted else None,
                    "trusted_by": user if trusted else None,
                }
            )
            if tags:
                db.table("tags").insert_all(
                    {"name": name, "version": version, "key": k, "value": v} for k, v in tags.items()
                )
            if alias is not None:
                self._point_alias(db, name, alias, version, now, user)
            self.artifacts.write_manifest(self._manifest_body(db, name, version) or {}, new=True)
            if published:
                self.artifacts.sync_blob(staged.digest)
            return self._version(db, name, version)

    def _point_alias(
        self, db: sqlite_utils.Database, name: str, alias: str, version: int | None, now: str, user: str
    ) -> None:
        if version is None:
            db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", [name, alias])
        else:
            self._check_gate(db, name, alias, version)
            db.execute(
                "INSERT INTO aliases (name, alias, version, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
                [name, alias, version, now],
            )
        db.execute(
            "INSERT INTO alias_history (name, alias, version, at, by) VALUES (?, ?, ?, ?, ?)",
            [name, alias, version, now, user],
        )

    def _check_gate(self, db: sqlite_utils.Database, name: str, alias: str, version: int) -> None:
        """Refuse to point a gated alias at a version without a passed validation."""
        if db.execute("SELECT 1 FROM alias_gates WHERE name = ? AND alias = ?", [name, alias]).fetchone() is None:
            return
        row = db.execute("SELECT body FROM reports WHERE name = ? AND version = ? AND kind = 'validation'",
                         [name, version]).fetchone()
        problem = validation_problem(json.loads(row[0]) if row else None)
        if problem:
            raise ConflictError(f"{name}@{alias} requires a passed validation, and {name}:{version} {problem}. "
                                f"Run %validate {name}:{version} --data X --labels y --metric ..., then move the "
                                "alias.")

    def set_alias(self, ref: str | ModelRef, alias: str, *, require_validation: bool = False) -> ModelVersion:
        """Point ``alias`` at the version ``ref`` names (moving it if set); the move is recorded.

        Args:
            require_validation: gate the alias from now on: it only points at versions whose last
                validation passed (this version included).

        Raises:
            InvalidInputError / NotFoundError: bad alias or reference.
            ConflictError: the alias is gated and the version has not passed its validation.
        """
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        check_alias(alias)
        with self.write() as db:
            version = self._resolve(db, parsed, None)
            if require_validation:
                db.execute("INSERT OR IGNORE INTO alias_gates (name, alias, created_at) VALUES (?, ?, ?)",
                           [parsed.name, alias, _stamp(utcnow())])
                self._check_gate(db, parsed.name, alias, version)
            current = db.execute(
                "SELECT version FROM aliases WHERE name = ? AND alias = ?", [parsed.name, alias]
            ).fetchone()
            if current is None or current[0] != version:
                self._point_alias(db, parsed.name, alias, version, _stamp(utcnow()), current_user())
            return self._version(db, parsed.name, version)

    def remove_alias(self, name: str, alias: str) -> None:
        """Remove an alias (recorded in its history).

        Raises:
            NotFoundError: the model has no such alias.
        """
        with self.write() as db:
            self._resolve_alias(db, check_name(name), alias, None)
            self._point_alias(db, name, alias, None, _stamp(utcnow()), current_user())

    def set_tags(
        self, ref: str | ModelRef, set_tags: Mapping[str, str] | None = None, remove: list[str] | None = None
    ) -> ModelVersion:
        """Set and remove tags of one version, in one transaction.

        Raises:
            NotFoundError: a key to remove is not set; the message lists the tags.
        """
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        for key, value in (set_tags or {}).items():
            check_tag(key, value)
        with self.write() as db:
            version = self._resolve(db, parsed, None)
            for key in remove or []:
                gone = db.execute(
                    "DELETE FROM tags WHERE name = ? AND version = ? AND key = ?", [parsed.name, version, key]
                ).rowcount
                if not gone:
                    have = [r[0] for r in db.execute(
                        "SELECT key FROM tags WHERE name = ? AND version = ? ORDER BY key", [parsed.name, version]
                    )]
                    raise NotFoundError(
                        f"{parsed.name}:{version} has no tag {key!r}. Tags: {', '.join(have) or 'none'}."
                    )
            for key, value in (set_tags or {}).items():
                db.table("tags").upsert({"name": parsed.name, "version": version, "key": key, "value": value},
                                        pk=("name", "version", "key"))
            db.execute(
                f"UPDATE versions SET tags = {_TAGS_JSON} WHERE name = ? AND version = ?",
                [parsed.name, version, parsed.name, version],
            )
            self._sync_manifest(parsed.name, version)
            return self._version(db, parsed.name, version)

    def set_trust(self, ref: str | ModelRef, trusted: bool = True) -> ModelVersion:
        """Record that the current user trusts one version to be loaded (now), or withdraw that trust.

        Only the version's row changes; its artifact stays as it was registered. Idempotent: trusting a trusted
        version keeps who trusted it first, and when.

        Raises:
            InvalidInputError: the reference does not name an exact version (``NAME:VERSION``).
            NotFoundError: no such version.
        """
        parsed = _exact(ref, "trust", "Trust goes to the exact version whose files you checked, never to an alias "
                                      "or 'latest' that may move.")
        with self.write() as db:
            version = self._resolve(db, parsed, None)
            if trusted:  # trusting a trusted version keeps the first record of who trusted it, and when
                db.execute("UPDATE versions SET trusted_at = ?, trusted_by = ? WHERE name = ? AND version = ? "
                           "AND trusted_at IS NULL", [_stamp(utcnow()), current_user(), parsed.name, version])
            else:
                db.execute("UPDATE versions SET trusted_at = NULL, trusted_by = NULL WHERE name = ? AND version = ?",
                           [parsed.name, version])
            self._sync_manifest(parsed.name, version)  # a rebuilt registry keeps who trusted what
            return self._version(db, parsed.name, version)

    def delete_version(self, ref: str | ModelRef) -> ModelVersion:
        """Delete one version: its row, tags and aliases (recorded), and its artifact if unshared.

        Returns:
            The version as it was before the delete.

        Raises:
            InvalidInputError: the reference does not name an exact version (``NAME:VERSION``).
            ConflictError: a live deployment uses the version; the message names it.
        """
        parsed = _exact(ref, "delete", "Deleting by alias or 'latest' is refused so that nothing is deleted by "
                                       "surprise.")
        with self.write() as db:
            version = self._resolve(db, parsed, None)
            gone = self._version(db, parsed.name, version)
            live = [
                d for d in self._deployments(db, "model_name = ? AND model_version = ?", [parsed.name, version])
                if d.is_live
            ]
            if live:
                names = ", ".join(f"'{d.name}' ({d.target}, {d.state})" for d in live)
                raise ConflictError(
                    f"Cannot delete {gone.ref}: deployment {names} uses it. "
                    f"Undeploy first (%undeploy {live[0].name}), then delete."
                )
            now, user = _stamp(utcnow()), current_user()
            for alias in gone.aliases:
                self._point_alias(db, parsed.name, alias, None, now, user)
            db.execute("DELETE FROM versions WHERE name = ? AND version = ?", [parsed.name, version])
            db.execute("DELETE FROM inference_configs WHERE name = ? AND version = ?", [parsed.name, version])
            db.execute("DELETE FROM reports WHERE name = ? AND version = ?", [parsed.name, version])
            shared = gone.sha256 in self._referenced(db)
            transaction = self._transaction()
            transaction.journal().record(("tombstone", parsed.name, str(version)))
            transaction.after_commit(lambda: self.artifacts.bury(parsed.name, version))
            if not shared:
                self.artifacts.retire(gone.sha256)
        if not shared:
            self.artifacts.discard(gone.sha256)
        return gone

    # -- inference configurations ------------------------------------------------------------

    def set_inference(
        self,
        name: str,
        version: int = 0,
        *,
        script: str | _Keep | None = KEEP,
        script_line_offset: int | None = None,
        environment: Mapping[str, Any] | _Keep | None = KEEP,
        assets: StagedArtifact | _Keep | None = KEEP,
        dockerfile_steps: str | _Keep | None = KEEP,
    ) -> None:
        """Store part of a model's inference configuration (``version=0``: for every version).

        Fields left as ``KEEP`` are unchanged; ``None`` clears one.

        Raises:
            NotFoundError: the model (or that version) does not exist.
        """
        with self.write() as db:
            self._resolve(db, ModelRef(check_name(name), version=version or None), None)
            row = db.execute("SELECT script, script_line_offset, environment, assets, dockerfile_steps "
                             "FROM inference_configs WHERE name = ? AND version = ?",
                             [name, version]).fetchone() or (None,) * 5
            values = list(row)
            if not isinstance(script, _Keep):
                values[0:2] = [script, script_line_offset]
            if not isinstance(environment, _Keep):
                values[2] = None if environment is None else json.dumps(dict(environment), sort_keys=True)
            if not isinstance(assets, _Keep):
                if assets is not None and not self.artifacts.path(assets.digest).exists():
                    transaction = self._transaction()
                    transaction.on_rollback(lambda: self.artifacts.unpublish(assets.digest))
                    self.artifacts.publish(assets, transaction.journal())
                values[3] = None if assets is None else json.dumps(
                    {"sha256": assets.digest, "files": [[f.path, f.size, f.sha256] for f in assets.files]})
            if not isinstance(dockerfile_steps, _Keep):
                values[4] = dockerfile_steps or None
            db.execute(
                "INSERT INTO inference_configs (name, version, script, script_line_offset, environment, assets, "
                "dockerfile_steps, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name, version) DO UPDATE "
                "SET script = excluded.script, script_line_offset = excluded.script_line_offset, "
                "environment = excluded.environment, assets = excluded.assets, "
                "dockerfile_steps = excluded.dockerfile_steps, updated_at = excluded.updated_at",
                [name, version, *values, _stamp(utcnow())],
            )

    def inference(self, version: ModelVersion) -> InferenceConfig:
        """The inference configuration that applies to ``version``: its own fields over the model's."""
        with self.read() as db:
            rows = {r[0]: r[1:] for r in db.execute(
                "SELECT version, script, script_line_offset, environment, assets, dockerfile_steps "
                "FROM inference_configs WHERE name = ? AND version IN (0, ?)", [version.name, version.version])}
        merged: list[Any] = [None, None, None, None, None]
        for source in (rows.get(0), rows.get(version.version)):
            if source is not None:
                if source[0] is not None:  # a script and its line offset go together
                    merged[0:2] = source[0:2]
                merged[2:] = [new if new is not None else old for old, new in zip(merged[2:], source[2:], strict=True)]
        script, offset, environment, assets, steps = merged
        return InferenceConfig(
            script=script,
            script_line_offset=offset,
            environment=None if environment is None else frozen_mapping(json.loads(environment)),
            assets_sha256=None if assets is None else json.loads(assets)["sha256"],
            asset_files=() if assets is None else tuple(ArtifactFile(*f) for f in json.loads(assets)["files"]),
            dockerfile_steps=steps,
        )

    # -- deployments -----------------------------------------------------------------------

    def _deployments(
        self, db: sqlite_utils.Database, where: str = "1", params: list[Any] | None = None
    ) -> list[Deployment]:
        return [
            Deployment(
                name=r["name"],
                model_name=r["model_name"],
                model_version=r["model_version"],
                target=r["target"],
                state=r["state"],
                url=r["url"],
                created_at=datetime.fromisoformat(r["created_at"]),
                updated_at=datetime.fromisoformat(r["updated_at"]),
                config=frozen_mapping(json.loads(r["config"])),
            )
            for r in db.query(f"SELECT * FROM deployments WHERE {where} ORDER BY name", params or [])
        ]

    def record_deployment(
        self,
        name: str,
        model: str | ModelRef,
        *,
        target: str,
        state: str,
        url: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> Deployment:
        """Create or replace the record of a deployment of a model version.

        Raises:
            NotFoundError: the model version does not exist.
        """
        check_name(name)
        parsed = parse_ref(model) if isinstance(model, str) else model
        with self.write() as db:
            return self._upsert_deployment(db, name, parsed, target, state, url, config or {})

    def _upsert_deployment(self, db: sqlite_utils.Database, name: str, model: ModelRef, target: str, state: str,
                           url: str | None, config: Mapping[str, Any]) -> Deployment:
        version = self._resolve(db, model, None)
        now = _stamp(utcnow())
        db.execute(
            "INSERT INTO deployments (name, model_name, model_version, target, state, url, config, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "model_name = excluded.model_name, model_version = excluded.model_version, "
            "target = excluded.target, state = excluded.state, url = excluded.url, "
            "config = excluded.config, updated_at = excluded.updated_at",
            [name, model.name, version, target, state, url, json.dumps(dict(config)), now, now],
        )
        return self._deployments(db, "name = ?", [name])[0]

    def claim_deployment(self, name: str, model: str | ModelRef, *, target: str, claimant: str,
                         checked: Deployment | None) -> Deployment:
        """Record that ``claimant`` is deploying ``name`` (state ``creating``): of several racing, exactly one wins.

        Args:
            claimant: who deploys (a process stamp), recorded so that a claim its dead owner left can be taken over.
            checked: the record the caller found and checked is no longer serving (None: there was none); the claim
                fails if the record changed since.

        Raises:
            ConflictError: the name is live (deployed, or being deployed by another process).
            NotFoundError: the model version does not exist.
        """
        check_name(name)
        parsed = parse_ref(model) if isinstance(model, str) else model
        with self.write() as db:
            found = self._deployments(db, "name = ?", [name])
            current = found[0] if found else None
            unchanged = checked is not None and current is not None and (current.state, current.updated_at) == (
                checked.state, checked.updated_at)
            if current is not None and current.is_live and not unchanged:
                doing = "is being deployed" if current.state == "creating" else "is already deployed"
                raise ConflictError(
                    f"Service {name!r} {doing} ({current.model_name}:{current.model_version} on {current.target}, "
                    f"{current.state}) by another process. Use %update {name} --model REF once it is up, or pick "
                    "another --name.")
            return self._upsert_deployment(db, name, parsed, target, "creating", None, {"claimant": claimant})

    def release_claim(self, name: str, claimant: str, previous: Deployment | None) -> None:
        """Undo ``claimant``'s claim on ``name`` if no deployment was recorded over it (the deploy raised before
        its target started anything): the record goes back to ``previous`` (None: no record)."""
        with self.write() as db:
            mine = "name = ? AND state = 'creating' AND json_extract(config, '$.claimant') = ?"
            if previous is None:
                db.execute(f"DELETE FROM deployments WHERE {mine}", [name, claimant])
                return
            p = previous
            db.execute(
                "UPDATE deployments SET model_name = ?, model_version = ?, target = ?, state = ?, url = ?, config = ?, "
                f"created_at = ?, updated_at = ? WHERE {mine}",
                [p.model_name, p.model_version, p.target, p.state, p.url, json.dumps(dict(p.config)),
                 _stamp(p.created_at), _stamp(p.updated_at), name, claimant])

    def set_deployment_state(self, name: str, state: str) -> Deployment:
        """Change the recorded state of a deployment.

        Raises:
            NotFoundError: no deployment has that name.
        """
        with self.write() as db:
            changed = db.execute(
                "UPDATE deployments SET state = ?, updated_at = ? WHERE name = ?", [state, _stamp(utcnow()), name]
            ).rowcount
            if not changed:
                raise self._no_deployment(db, name)
            return self._deployments(db, "name = ?", [name])[0]

    def _no_deployment(self, db: sqlite_utils.Database, name: str) -> NotFoundError:
        names = [d.name for d in self._deployments(db)]
        return NotFoundError(f"No deployment named {name!r}. Deployments: {', '.join(names) or 'none'}.")

    def deployments(self) -> list[Deployment]:
        """Every recorded deployment, by name."""
        with self.read() as db:
            return self._deployments(db)

    def get_deployment(self, name: str) -> Deployment:
        """The deployment with this name.

        Raises:
            NotFoundError: there is none; the message lists those that exist.
        """
        with self.read() as db:
            found = self._deployments(db, "name = ?", [name])
            if not found:
                raise self._no_deployment(db, name)
            return found[0]

    # -- reports ---------------------------------------------------------------------------

    def set_report(self, version: ModelVersion, kind: str, body: Mapping[str, Any]) -> None:
        """Store (or replace) the report of ``kind`` (``onnx``, ``validation``, ``profile``...) for a version.

        Raises:
            NotFoundError: the version does not exist (any more).
        """
        with self.write() as db:
            self._resolve(db, ModelRef(version.name, version=version.version), None)
            db.execute("INSERT INTO reports (name, version, kind, body, created_at) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT(name, version, kind) DO UPDATE SET body = excluded.body, "
                       "created_at = excluded.created_at",
                       [version.name, version.version, kind, json.dumps(dict(body), sort_keys=True),
                        _stamp(utcnow())])

    def gated_aliases(self, name: str) -> list[str]:
        """The aliases of ``name`` that only point at validated versions."""
        with self.read() as db:
            return [r[0] for r in db.execute("SELECT alias FROM alias_gates WHERE name = ? ORDER BY alias", [name])]

    def reports(self, version: ModelVersion) -> dict[str, Any]:
        """The reports stored for a version, by kind."""
        with self.read() as db:
            return {kind: json.loads(body) for kind, body in db.execute(
                "SELECT kind, body FROM reports WHERE name = ? AND version = ? ORDER BY kind",
                [version.name, version.version])}

    # -- images ----------------------------------------------------------------------------

    def record_image(
        self,
        tag: str,
        version: ModelVersion,
        *,
        context_digest: str,
        image_id: str,
        size: int,
        base_image: str,
        gpu: bool = False,
        build_seconds: float | None = None,
    ) -> Image:
        """Record (or refresh) the image built under ``tag`` for ``version``.

        Raises:
            NotFoundError: the model version does not exist (any more).
        """
        with self.write() as db:
            self._resolve(db, ModelRef(version.name, version=version.version), None)
            db.execute(
                "INSERT INTO images (tag, name, version, context_digest, image_id, size, base_image, gpu, "
                "build_seconds, built_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(tag) DO UPDATE SET "
                "context_digest = excluded.context_digest, image_id = excluded.image_id, size = excluded.size, "
                "base_image = excluded.base_image, gpu = excluded.gpu, build_seconds = excluded.build_seconds, "
                "built_at = excluded.built_at",
                [tag, version.name, version.version, context_digest, image_id, size, base_image, int(gpu),
                 build_seconds, _stamp(utcnow())],
            )
            return self._images(db, "tag = ?", [tag])[0]

    def _images(self, db: sqlite_utils.Database, where: str, params: list[Any]) -> list[Image]:
        return [
            Image(tag=r["tag"], model_name=r["name"], model_version=r["version"],
                  context_digest=r["context_digest"], image_id=r["image_id"], size=r["size"],
                  base_image=r["base_image"], gpu=bool(r["gpu"]), build_seconds=r["build_seconds"],
                  built_at=datetime.fromisoformat(r["built_at"]))
            for r in db.query(f"SELECT * FROM images WHERE {where} ORDER BY built_at DESC, tag", params)
        ]

    def forget_image(self, tag: str) -> None:
        """Drop the record of an image (after it was removed from the engine). Unknown tags are ignored."""
        with self.write() as db:
            db.execute("DELETE FROM images WHERE tag = ?", [tag])

    def images(self, version: ModelVersion | None = None) -> list[Image]:
        """The images recorded for ``version`` (or for every version), newest first."""
        with self.read() as db:
            if version is None:
                return self._images(db, "1", [])
            return self._images(db, "name = ? AND version = ?", [version.name, version.version])

    # -- artifacts -------------------------------------------------------------------------

    def verified_artifact(self, version: ModelVersion) -> Path:
        """Return the artifact folder of ``version`` after checking every file's sha256.

        Raises:
            IntegrityError: a file is missing or changed; the message names it.
        """
        return self.artifacts.verify(version.sha256, version.files)


def validation_problem(report: Mapping[str, Any] | None) -> str | None:
    """Why a stored validation report does not let a version through a gate (None: it passed)."""
    if report is None:
        return "has never been validated"
    if not report.get("passed"):
        failed = [c["check"] for c in report.get("checks", []) if not c.get("passed")]
        return f"failed its validation ({'; '.join(failed) or 'see %validate'})"
    return None


def _exact(ref: str | ModelRef, action: str, why: str) -> ModelRef:
    """``ref`` parsed, when it names one exact version (``NAME:VERSION``).

    Raises:
        InvalidInputError: it names an alias or 'latest'; the message says ``why`` that is refused for ``action``.
    """
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    if parsed.version is None:
        raise InvalidInputError(f"Say which version to {action}: {parsed.name}:VERSION (got {str(parsed)!r}). {why}")
    return parsed


def _ranges(numbers: list[int]) -> str:
    """'1-3, 5, 7-9' for [1, 2, 3, 5, 7, 8, 9]."""
    parts: list[str] = []
    start = prev = None
    for n in numbers:
        if start is None:
            start = prev = n
        elif n == prev + 1:  # type: ignore[operator]
            prev = n
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = n
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(parts)

"""The registry's database: one SQLite connection per thread, nestable write transactions, migrations, recovery.

:class:`Database` opens the file (refusing a lost or foreign one beside a store that holds artifacts),
brings its schema up to date (:mod:`.migrations`), lets the artifact store recover from a writer that died
(:mod:`.journals`), and gives out read and write transactions (:mod:`.transactions`). What SQLite and the
disk answer becomes one clear error (:mod:`.db_errors`).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_magics import config
from mlops_magics.errors import MlopsError, RegistryDamagedError, SchemaVersionError, StorageError
from mlops_magics.registry.artifacts import ArtifactStore
from mlops_magics.registry.db_errors import SQLITE_NOTADB, DatabaseErrors, quick_check, reraise, sqlite_code
from mlops_magics.registry.migrations import MIGRATIONS, SCHEMA_VERSION
from mlops_magics.registry.transactions import Transaction
from mlops_magics.version import __version__

if TYPE_CHECKING:
    import sqlite_utils

log = logging.getLogger(__name__)

DB_FILE = "registry.db"
#: Columns of ``versions`` that hold JSON text (decoded in manifests).
JSON_COLUMNS = ("files", "tags", "signature", "input_example", "lineage", "flavor_options", "metrics")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def stamp(moment: datetime) -> str:
    """``moment`` as the registry stores times: ISO 8601 in UTC, to the microsecond (naive means local time)."""
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def current_user() -> str:
    """The login name of whoever runs this process ('unknown' when there is none)."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "unknown"


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file: it changes when the file is replaced; None when there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def manifest_body(db: sqlite_utils.Database, name: str, version: int) -> dict[str, Any] | None:
    """Everything about a version the database holds, as its manifest records it (None: no such version)."""
    cursor = db.execute("SELECT * FROM versions WHERE name = ? AND version = ?", [name, version])
    row = cursor.fetchone()
    if row is None:
        return None
    body: dict[str, Any] = dict(zip([c[0] for c in cursor.description], row, strict=True))
    for column in JSON_COLUMNS:
        if isinstance(body.get(column), str):
            body[column] = json.loads(body[column])
    body["files"] = [{"path": p, "size": size, "sha256": sha} for p, size, sha in body.get("files") or []]
    return body


def referenced(db: sqlite_utils.Database) -> set[str]:
    """Every artifact digest something uses: model versions and inference assets."""
    return {row[0] for row in db.execute(
        "SELECT sha256 FROM versions UNION SELECT json_extract(assets, '$.sha256') FROM inference_configs "
        "WHERE assets IS NOT NULL"
    )}


class _RecoveryView:
    """What recovery reads from the database (see :class:`mlops_magics.registry.journals.RecoveryView`)."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self._db = db

    def has_version(self, name: str, version: int) -> bool:
        return self._db.execute(
            "SELECT 1 FROM versions WHERE name = ? AND version = ?", [name, version]).fetchone() is not None

    def manifest_body(self, name: str, version: int) -> dict[str, Any] | None:
        return manifest_body(self._db, name, version)

    def referenced(self) -> set[str]:
        return referenced(self._db)


class Database:
    """The registry database under ``home`` and its artifact store; safe to share between threads and processes.

    Each thread gets its own SQLite connection; writes take SQLite's write lock.

    Args:
        home: the registry folder; default ``$MLOPS_HOME`` or ``~/.mlops``.
        lock_timeout: seconds to wait for another writer; default ``$MLOPS_LOCK_TIMEOUT`` or 30.
    """

    def __init__(self, home: Path | str | None = None, *, lock_timeout: float | None = None) -> None:
        self.home = Path(home).expanduser().resolve() if home is not None else config.mlops_home()
        self.lock_timeout = config.lock_timeout() if lock_timeout is None else lock_timeout
        self.db_path = self.home / DB_FILE
        self.errors = DatabaseErrors(self.home, self.db_path, self.lock_timeout)
        self._local = threading.local()
        self._setup_lock = threading.Lock()
        self._ready = False
        self.home.mkdir(parents=True, exist_ok=True)
        self.artifacts = ArtifactStore(self.home / "artifacts")

    def close(self) -> None:
        """Close this thread's connection (the next use opens a new one)."""
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is not None:
            self._local.db = None
            db.conn.close()

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
            raise self.errors.database_error(exc, "Opening the registry") from exc
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
            if sqlite_code(exc) == SQLITE_NOTADB:
                raise RegistryDamagedError(
                    f"{self.db_path} is not a usable registry database ({exc}). Nothing was changed. "
                    + self.errors.restore_hint()
                ) from exc
            raise self.errors.database_error(exc, "Opening the registry") from exc
        return sqlite_utils.Database(conn, execute_plugins=False)

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
        raise RegistryDamagedError(self.errors.lost(
            self.artifacts, "is missing" if size is None else "is empty (0 bytes)", wal if wal_size else None))

    def _refuse_foreign_database(self, db: sqlite_utils.Database) -> None:
        if _schema_version(db) == 0 and self.artifacts.holds_anything():
            raise RegistryDamagedError(self.errors.lost(
                self.artifacts, "holds no registry (no schema, no version)", None))

    # -- transactions ------------------------------------------------------------------------

    def write(self) -> AbstractContextManager[sqlite_utils.Database]:
        """A write transaction (``BEGIN IMMEDIATE``): all or nothing, one writer at a time.

        Nestable: a write opened inside another on the same thread is a ``SAVEPOINT``. If the inner block
        raises, only it is rolled back (its artifact-store changes too) and the outer block goes on;
        ``after_commit`` steps wait for the outermost block to commit; an exception escaping the outermost
        block rolls back everything. A transaction belongs to its thread: another thread's write waits for
        the lock. What the transaction changes in the artifact store is journaled first and undone if it
        does not commit (see :mod:`mlops_magics.registry.transactions`).

        Raises:
            RegistryLockedError: another process held the write lock past the lock timeout.
            StorageError: the disk is full or read-only, or the database file is; nothing was changed.
            RegistryDamagedError: the database is corrupted.
        """
        transaction: Transaction | None = getattr(self._local, "transaction", None)
        return self._write(transaction.db if transaction is not None else self.db)

    @contextmanager
    def _write(self, db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
        doing = f"Writing to the registry {self.home}"
        outer: Transaction | None = getattr(self._local, "transaction", None)
        if outer is not None:
            try:
                with outer.savepoint():
                    yield db
            except BaseException as exc:  # noqa: BLE001 - rolled back alone, then raised again
                reraise(exc, self.errors.translated(exc, doing))
            return
        if db.conn.in_transaction:
            raise AssertionError("a registry write inside a read block: open the write first, and read inside it")
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            reraise(exc, self.errors.translated(exc, doing))
        transaction = Transaction(self.artifacts, db)
        self._local.transaction = transaction
        try:
            yield db
            if transaction.doomed is not None:
                raise MlopsError(f"{doing} failed: a nested write could not be rolled back on its own "
                                 f"({transaction.doomed}), so nothing of this transaction is kept. Retry.")
            db.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - rolled back, undone, then raised again
            self._local.transaction = None
            try:
                db.conn.rollback()
            except sqlite3.Error:
                log.warning("registry %s: rollback failed", self.db_path, exc_info=True)
            transaction.undo()
            reraise(exc, self.errors.translated(exc, doing))
        self._local.transaction = None
        transaction.commit()

    def transaction(self) -> Transaction:
        """The write transaction open on this thread.

        Raises:
            AssertionError: there is none (a bug: call inside :meth:`write`).
        """
        transaction: Transaction | None = getattr(self._local, "transaction", None)
        if transaction is None:
            raise AssertionError("outside a registry write transaction")
        return transaction

    @contextmanager
    def read(self) -> Iterator[sqlite_utils.Database]:
        """A read transaction: every query inside sees the same snapshot.

        Inside a write (or another read) on the same thread, it reads in that transaction (seeing its writes).

        Raises:
            RegistryDamagedError: the database is corrupted.
            StorageError: the disk failed (I/O error).
        """
        transaction: Transaction | None = getattr(self._local, "transaction", None)
        db = transaction.db if transaction is not None else self.db
        doing = f"Reading the registry {self.home}"
        if db.conn.in_transaction:
            try:
                yield db
            except sqlite3.Error as exc:
                reraise(exc, self.errors.translated(exc, doing))
            return
        try:
            db.execute("BEGIN")
            yield db
        except sqlite3.Error as exc:
            reraise(exc, self.errors.translated(exc, doing))
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
            reraise(exc, self.errors.translated(exc, f"Reading the registry {self.home}"))
        return int(data_version), int(db.conn.total_changes)

    def sync_manifest(self, name: str, version: int) -> None:
        """Rewrite a version's manifest from the database once the current transaction commits."""
        transaction = self.transaction()
        transaction.journal().record(("sync", name, str(version)))

        def sync() -> None:
            body = manifest_body(self.db, name, version)
            if body is not None:
                self.artifacts.write_manifest(body)

        transaction.after_commit(sync)

    # -- opening: migrations, manifests, recovery ----------------------------------------------

    def _migrate(self, db: sqlite_utils.Database) -> None:
        found = _schema_version(db)
        if found > SCHEMA_VERSION:
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
            done = _schema_version(db)  # another process may have migrated meanwhile
            for number, name, apply in MIGRATIONS:
                if number > done:
                    apply(db)
                    db.table("_migrations").insert({"id": number, "name": name, "applied_at": stamp(utcnow())})
                    log.info("registry %s: applied migration %d (%s)", self.db_path, number, name)

    def _recover(self, db: sqlite_utils.Database) -> None:
        if not self.artifacts.needs_recovery():
            return
        try:
            with self._write(db):
                problem = quick_check(db)
                if problem is not None:
                    raise RegistryDamagedError(
                        f"The registry {self.home} needs recovery (a writer died), but its database "
                        f"{self.db_path} fails its check ({problem}), so nothing in the artifact store is touched. "
                        f"Run `mlops registry check` to see what is affected. {self.errors.restore_hint()}"
                    )
                actions = self.artifacts.recover(_RecoveryView(db))
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
                    self.artifacts.write_manifest(manifest_body(db, name, version) or {}, new=True, sync=False)
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


def _schema_version(db: sqlite_utils.Database) -> int:
    if not db["_migrations"].exists():
        return 0
    return int(db.execute("SELECT coalesce(max(id), 0) FROM _migrations").fetchone()[0])

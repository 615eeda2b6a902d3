"""What SQLite and the disk answer, as one :class:`~mlops_magics.errors.MlopsError` that says what to do."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from mlops_magics.display import human_size
from mlops_magics.errors import ConflictError, MlopsError, RegistryDamagedError, RegistryLockedError, StorageError
from mlops_magics.registry.disk import free_space, storage_error

if TYPE_CHECKING:
    import sqlite_utils

    from mlops_magics.registry.artifacts import ArtifactStore

# SQLite's primary result codes (https://sqlite.org/rescode.html).
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CORRUPT = 5, 6, 8, 10, 11
SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 13, 14, 26
SQLITE_READONLY_DBMOVED = SQLITE_READONLY | 4 << 8  # an extended code: the file was renamed or deleted
_CODE_WORDS = (("locked", SQLITE_LOCKED), ("busy", SQLITE_BUSY), ("readonly", SQLITE_READONLY),
               ("disk is full", SQLITE_FULL), ("malformed", SQLITE_CORRUPT), ("not a database", SQLITE_NOTADB),
               ("disk i/o error", SQLITE_IOERR), ("unable to open", SQLITE_CANTOPEN))


def sqlite_code(error: sqlite3.Error) -> int:
    """SQLite's primary result code for an error (0 when it cannot be told)."""
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF
    text = str(error).lower()
    return next((number for words, number in _CODE_WORDS if words in text), 0)


def reraise(error: BaseException, translated: BaseException) -> NoReturn:
    """Raise ``translated``, chained to ``error`` (``error`` itself when it needs no translation)."""
    if translated is error:
        raise error
    raise translated from error


def quick_check(db: sqlite_utils.Database) -> str | None:
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


class DatabaseErrors:
    """The messages for what went wrong with the registry database of ``home``.

    Args:
        home: the registry folder.
        db_path: its database file.
        lock_timeout: how long a writer waits for the write lock (seconds).
    """

    def __init__(self, home: Path, db_path: Path, lock_timeout: float) -> None:
        self.home = home
        self.db_path = db_path
        self.lock_timeout = lock_timeout

    def restore_hint(self) -> str:
        """How to restore a lost or damaged database, or start over."""
        return (
            "Restore it from a backup (`mlops registry restore BACKUP`; backups are made with `mlops registry "
            "backup PATH`), or re-create it from the artifact store's manifests with `mlops registry rebuild` (it "
            f"keeps the old file aside). To start a new, empty registry instead, move {self.home} aside or point "
            "MLOPS_HOME at another folder."
        )

    def lost(self, store: ArtifactStore, state: str, wal: Path | None) -> str:
        """Why a database in ``state`` beside a ``store`` that holds artifacts is not opened, and how to restore it."""
        artifacts = len(store.digests())
        manifests = sum(1 for *_, deleted, _ in store.manifest_files() if not deleted)
        kept = f"{artifacts} artifact(s) in {store.blobs} and the manifests of {manifests} version(s) remain"
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

    def locked(self) -> RegistryLockedError:
        """The error for a write lock that another process held past the lock timeout."""
        return RegistryLockedError(
            f"The registry {self.db_path} is locked by another process: waited {self.lock_timeout:g} s "
            "for its write lock. Retry when the other writer is done, or raise MLOPS_LOCK_TIMEOUT "
            "(seconds)."
        )

    def database_error(self, exc: sqlite3.Error, doing: str) -> MlopsError:
        """One clear error for what SQLite answered: locked, read-only, full, damaged, I/O error."""
        code = sqlite_code(exc)
        if code in (SQLITE_BUSY, SQLITE_LOCKED):
            return self.locked()
        nothing = "Nothing was changed."
        if getattr(exc, "sqlite_errorcode", None) == SQLITE_READONLY_DBMOVED:
            return ConflictError(
                f"{doing} failed: the registry database {self.db_path} was replaced (restored or rebuilt) after this "
                f"process opened it. {nothing} Open the registry again (restart the kernel, or make a new Registry)."
            )
        if code == SQLITE_READONLY:
            return StorageError(
                f"{doing} failed: the registry database {self.db_path} is read-only ({_why_read_only(self.db_path)}). "
                f"{nothing} Reading still works. To write, make it writable (chmod u+w, chattr -i, or remount its "
                "filesystem read-write), or set MLOPS_HOME to a writable folder."
            )
        free = free_space(self.home)
        if code == SQLITE_FULL or (code == SQLITE_IOERR and free is not None and free < 1 << 20):
            left = "" if free is None else f" ({human_size(free)} free)"
            return StorageError(
                f"{doing} failed: the disk holding {self.db_path} is full{left}. {nothing} Free some space (or set "
                "MLOPS_HOME to a folder on a bigger disk) and retry."
            )
        if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
            return RegistryDamagedError(
                f"{doing} failed: the registry database {self.db_path} is damaged ({exc}). {nothing} See what is "
                f"affected with `mlops registry check`. {self.restore_hint()}"
            )
        if code == SQLITE_IOERR:
            return StorageError(
                f"{doing} failed: the disk reported an I/O error on {self.db_path} ({exc}). {nothing} Check the disk "
                "(dmesg), then run `mlops registry check`."
            )
        if code == SQLITE_CANTOPEN:
            return StorageError(
                f"{doing} failed: SQLite cannot open {self.db_path} ({exc}). Check that {self.home} exists and that "
                "this user may read and write it, or set MLOPS_HOME to another folder."
            )
        return MlopsError(f"{doing} failed: the registry database {self.db_path} answered: {exc}.")

    def translated(self, exc: BaseException, doing: str) -> BaseException:
        """The MlopsError to raise for a database or disk error (``exc`` itself for anything else)."""
        if type(exc) in (sqlite3.OperationalError, sqlite3.DatabaseError):
            return self.database_error(exc, doing)  # type: ignore[arg-type]
        if isinstance(exc, OSError):
            return storage_error(exc, doing, exc.filename or self.home) or exc
        return exc

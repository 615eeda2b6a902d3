"""The artifact store on disk: its folders, durable writes, lock files, and what the disk refused.

The building blocks the store's modules share (:mod:`.artifacts`, :mod:`.manifests`, :mod:`.journals`,
:mod:`.copying`); nothing here knows what a model version is.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from mlops_magics.display import human_size
from mlops_magics.errors import StorageError

#: The sub-folder where a writer locks its lock file before moving it in, and how old an unlocked one left there
#: must be before recovery removes it (a live writer keeps one there for microseconds).
PENDING = ".pending"
PENDING_GRACE_S = 600.0
#: Bytes read at a time when a file is hashed or copied.
CHUNK = 1 << 20
_FULL = (errno.ENOSPC, errno.EDQUOT)
#: errno values that mean the disk refused a write (as opposed to a bug or a bad argument).
STORAGE_ERRNOS = frozenset({*_FULL, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG})


class StoreLayout:
    """Where each part of an artifact store under ``root`` lives; the folders a writer needs are made."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.staging_root = root / ".staging"
        self.trash = root / ".trash"
        self.journals = root / ".journal"
        self.manifests = root / "manifests"
        for folder in (self.blobs, self.staging_root, self.trash):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a read-only registry can still be read; writing will say why not
                if exc.errno not in STORAGE_ERRNOS:
                    raise

    def path(self, digest: str) -> Path:
        """Return the folder of the artifact with this digest (it may not exist)."""
        return self.blobs / digest[:2] / digest


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def free_space(path: Path) -> int | None:
    """Bytes free for this user on the filesystem holding ``path`` (or its nearest existing parent)."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def storage_error(exc: OSError, what: str, where: Path | str | None = None) -> StorageError | None:
    """Say what the disk refused and what to do, or None when ``exc`` is not a storage problem.

    Args:
        exc: the error a write raised.
        what: what was being done, e.g. "Registering 'iris'".
        where: the file or folder written (default: the one the error names).
    """
    if exc.errno not in STORAGE_ERRNOS:
        return None
    path = Path(str(exc.filename if where is None and exc.filename else where or ""))
    if exc.errno in _FULL:
        free = free_space(path)
        left = f" ({human_size(free)} free)" if free is not None else ""
        return StorageError(
            f"{what} failed: no space left on the disk holding {path}{left}. Nothing was written. Free some space "
            "(or set MLOPS_HOME to a folder on a bigger disk) and retry."
        )
    if exc.errno == errno.EROFS:
        return StorageError(
            f"{what} failed: {path} is on a read-only filesystem. Nothing was written. Remount it read-write, or "
            "set MLOPS_HOME to a writable folder."
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StorageError(
            f"{what} failed: writing {path} is not permitted ({os.strerror(exc.errno)}: its mode, its owner or an "
            "immutable attribute forbids it). Nothing was written. Make it writable (chmod u+w, chown, chattr -i), "
            "or set MLOPS_HOME to a writable folder."
        )
    if exc.errno == errno.EFBIG:
        return StorageError(f"{what} failed: {path} would exceed the largest file this filesystem (or ulimit -f) "
                            "allows. Nothing was written.")
    return StorageError(
        f"{what} failed: the disk reported an I/O error on {path}. Nothing was written. Check the disk (dmesg), "
        "then run `mlops registry check`."
    )


def new_locked_file(root: Path, folder: Path, suffix: str) -> tuple[Path, int, str]:
    """Create ``folder/<token><suffix>`` holding an exclusive ``flock`` for as long as this process lives.

    Returns:
        The file's path, its open descriptor (close it to release the lock) and its token.
    """
    token = uuid.uuid4().hex
    folder.mkdir(exist_ok=True)
    final = folder / f"{token}{suffix}"
    # Lock it in a folder recovery does not take locks from, then move it in: recovery never sees an unlocked
    # live lock file (a file it could lock between this writer's open and flock would look dead to it).
    pending = root / PENDING
    pending.mkdir(exist_ok=True)
    private = pending / f"{token}{suffix}"
    fd = os.open(private, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(private, final)
    except BaseException:
        private.unlink(missing_ok=True)
        os.close(fd)
        raise
    return final, fd, token


def entries(folder: Path) -> Iterator[Path]:
    """What ``folder`` holds (nothing when it does not exist)."""
    try:
        yield from folder.iterdir()
    except FileNotFoundError:
        return


def write_durably(path: Path, text: str, *, sync: bool = True) -> None:
    """Replace ``path`` by ``text`` through a temporary file renamed over it (fsynced unless ``sync`` is False)."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    try:
        with open(temporary, "w") as fh:
            fh.write(text)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.rename(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if sync:
        fsync_path(path.parent)


def modified_before(path: Path, moment: float) -> bool:
    """True if ``path`` exists and was last modified before ``moment`` (a ``time.time()`` value)."""
    try:
        return path.stat().st_mtime < moment
    except FileNotFoundError:
        return False


def owner_is_dead(lock: Path) -> bool:
    """True if nobody holds the flock on ``lock`` (its writer exited or was killed)."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def fsync_path(folder: Path) -> None:
    """Flush a file's or a folder's entry to disk (after a rename or a new file in it)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Remove a file or a folder and everything in it (nothing when it is gone already)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

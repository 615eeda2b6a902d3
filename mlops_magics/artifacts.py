"""The content-addressed artifact store.

An artifact is a folder of files. Its digest is the sha256 of a manifest listing every file's
relative path, size and sha256, so a single-file artifact and a folder are handled alike.

Life of an artifact, and why a crash never leaves one a load would trust:

1. :meth:`ArtifactStore.stage` opens a staging folder under ``.staging/`` and holds an exclusive
   ``flock`` on its lock file for as long as the writer lives. Files are written there, hashed,
   fsynced and made read-only.
2. Inside the registry's write transaction, :meth:`ArtifactStore.publish` renames the staged
   folder to ``blobs/<aa>/<digest>``. The version row is inserted in the same transaction.
3. After the commit the staging lock file is removed.

A staging lock that can be taken by someone else means its writer died. :meth:`recover`
(run when a registry opens, under the write lock) then deletes the staging folder and every blob
that no version references. Deletion is the mirror image: :meth:`retire` moves a blob to
``.trash/`` inside the transaction and :meth:`discard` removes it after the commit; a blob
found in the trash whose digest is still referenced is put back.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlops_magics.errors import IntegrityError, InvalidInputError
from mlops_magics.registry.records import ArtifactFile

_CHUNK = 1 << 20
_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_digest(files: tuple[ArtifactFile, ...]) -> str:
    """Return the artifact digest: sha256 of 'sha256 size path' lines sorted by path."""
    lines = "".join(f"{f.sha256} {f.size} {f.path}\n" for f in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(lines.encode()).hexdigest()


@dataclass(frozen=True)
class StagedArtifact:
    """A finished staging folder: its files, digest and total size."""

    folder: Path
    files: tuple[ArtifactFile, ...]
    digest: str
    size: int


class Staging:
    """A folder to write one artifact into; locked while its writer lives."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.staged: StagedArtifact | None = None

    def finish(self) -> StagedArtifact:
        """Hash, fsync and freeze every file written so far.

        Raises:
            InvalidInputError: nothing was written, or a symlink/special file was.
        """
        files: list[ArtifactFile] = []
        for path in sorted(self.folder.rglob("*")):
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise InvalidInputError(
                    f"Artifact file {path.relative_to(self.folder)} is a link or a special file; "
                    "only regular files and folders can be registered. Copy the real file instead."
                )
            if path.is_dir():
                continue
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(path, _READ_ONLY)
            files.append(
                ArtifactFile(path.relative_to(self.folder).as_posix(), path.stat().st_size, file_sha256(path))
            )
        if not files:
            raise InvalidInputError("The artifact is empty: there is no file to register.")
        frozen = tuple(files)
        self.staged = StagedArtifact(self.folder, frozen, manifest_digest(frozen), sum(f.size for f in frozen))
        return self.staged


class ArtifactStore:
    """Immutable artifacts under ``root``, named by digest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.staging_root = root / ".staging"
        self.trash = root / ".trash"
        for folder in (self.blobs, self.staging_root, self.trash):
            folder.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """Return the folder of the artifact with this digest (it may not exist)."""
        return self.blobs / digest[:2] / digest

    @contextmanager
    def stage(self) -> Iterator[Staging]:
        """Yield a locked staging folder; remove it and its lock on exit, whatever happens."""
        token = uuid.uuid4().hex
        lock_path = self.staging_root / f"{token}.lock"
        folder = self.staging_root / token
        # Lock under a private name first, so recovery never sees an unlocked live lock file.
        private = self.staging_root / f"{token}.new"
        fd = os.open(private, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(private, lock_path)
            folder.mkdir()
            yield Staging(folder)
        finally:
            _remove_tree(folder)
            lock_path.unlink(missing_ok=True)
            private.unlink(missing_ok=True)
            os.close(fd)

    def publish(self, staged: StagedArtifact) -> Path:
        """Move a staged artifact into the store; call inside the registry write transaction.

        An artifact with the same digest already in the store is kept (it is the same content).
        """
        target = self.path(staged.digest)
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            os.rename(staged.folder, target)
            _fsync_dir(target.parent)
        return target

    def verify(self, digest: str, files: tuple[ArtifactFile, ...]) -> Path:
        """Check every file of an artifact against its recorded size and sha256.

        Returns:
            The artifact folder.

        Raises:
            IntegrityError: a file is missing or its content changed; the message names it.
        """
        folder = self.path(digest)
        for f in files:
            path = folder / f.path
            if not path.is_file():
                raise IntegrityError(
                    f"Artifact file {path} is missing: the registry's store was modified outside "
                    "mlops-magics. Register the model again (or restore the file from a backup)."
                )
            if path.stat().st_size != f.size or file_sha256(path) != f.sha256:
                raise IntegrityError(
                    f"Artifact file {path} is corrupted: its sha256 no longer matches the one recorded "
                    f"at registration ({f.sha256[:16]}...). It will not be loaded. Register the model "
                    "again (or restore the file from a backup)."
                )
        return folder

    def retire(self, digest: str) -> None:
        """Move an artifact to the trash; call inside the write transaction that drops its last use."""
        source = self.path(digest)
        if source.exists():
            os.rename(source, self.trash / digest)

    def discard(self, digest: str) -> None:
        """Delete a retired artifact for good; call after the transaction that retired it committed."""
        _remove_tree(self.trash / digest)

    def needs_recovery(self) -> bool:
        """True when a dead writer or an unfinished delete left something behind."""
        return any(self.trash.iterdir()) or any(_owner_is_dead(lock) for lock in self._locks())

    def _locks(self) -> list[Path]:
        return [*self.staging_root.glob("*.lock"), *self.staging_root.glob("*.new")]

    def recover(self, referenced: Callable[[], set[str]]) -> list[str]:
        """Clean what dead writers left; call under the registry write lock.

        Args:
            referenced: returns the digests that some model version uses.

        Returns:
            A description of each item removed or restored.
        """
        actions: list[str] = []
        dead_writer = False
        for lock in self._locks():
            if _owner_is_dead(lock):
                dead_writer = True
                _remove_tree(self.staging_root / lock.stem)
                lock.unlink(missing_ok=True)
                actions.append(f"removed unfinished staging {lock.stem}")
        in_use = referenced()
        for entry in self.trash.iterdir():
            if entry.name in in_use and not self.path(entry.name).exists():
                self.path(entry.name).parent.mkdir(exist_ok=True)
                os.rename(entry, self.path(entry.name))
                actions.append(f"restored artifact {entry.name} (its delete did not commit)")
            else:
                _remove_tree(entry)
                actions.append(f"emptied trash {entry.name}")
        if dead_writer:
            for folder in self.blobs.glob("*/*"):
                if folder.name not in in_use:
                    _remove_tree(folder)
                    actions.append(f"removed unreferenced artifact {folder.name}")
        return actions


def _owner_is_dead(lock: Path) -> bool:
    """True if nobody holds the flock on ``lock`` (its writer exited or was killed)."""
    try:
        fd = os.open(lock, os.O_RDWR)
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


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

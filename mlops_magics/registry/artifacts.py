"""The content-addressed artifact store.

An artifact is a folder of files. Its digest is the sha256 of a manifest listing every file's
relative path, size and sha256, so a single-file artifact and a folder are handled alike. Loading
checks the exact set of files against that list: a file missing, changed or added is refused.

Life of an artifact, and why a crash never leaves one a load would trust:

1. :meth:`ArtifactStore.stage` opens a staging folder under ``.staging/`` and holds an exclusive
   ``flock`` on its lock file for as long as the writer lives. Files are written there, hashed,
   fsynced and made read-only.
2. Inside the registry's write transaction, the registry opens a :class:`Journal` (a locked file
   under ``.journal/``) and writes down what it is about to change in the store, then does it:
   :meth:`ArtifactStore.publish` renames the staged folder to ``blobs/<aa>/<digest>``, and the new
   version's manifest is written to ``manifests/<name>/<version>.json``. The version row is
   inserted in the same transaction.
3. After the commit the journal and the staging lock file are removed.

A lock (staging or journal) that can be taken by someone else means its writer died.
:meth:`recover` (run when a registry opens, under the write lock, after the database passed its
check) then deletes dead staging folders, and undoes what a dead journal names unless the
database shows that its transaction committed: a blob is deleted only when it is named by a dead
journal or lies in the trash, and neither the database nor any manifest references it. Nothing
else in ``blobs/`` is ever deleted by recovery. Deletion is the mirror image: :meth:`retire`
moves a blob to ``.trash/`` inside the transaction (:meth:`unretire` puts it back if that rolls
back) and :meth:`discard` removes it after the commit; a blob found in the trash whose digest is
still referenced is put back.

Manifests outlive the database: one per version (with everything needed to re-create its row)
and, after a delete, a tombstone ``<version>.deleted.json``. They are what ``mlops registry
rebuild`` re-creates a lost database from, and the highest number among them is each model's
high-water mark: a version number is never handed out twice, even after the database was
restored from an older copy.

Where each part lives: folders, durable writes and lock files in :mod:`.disk`; manifests in
:mod:`.manifests`; journals and recovery in :mod:`.journals`; copying a registered path in, safely,
in :mod:`.copying`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlops_magics.errors import IntegrityError, InvalidInputError
from mlops_magics.registry.copying import copy_file
from mlops_magics.registry.disk import entries, file_sha256, fsync_path, new_locked_file, remove_tree, storage_error
from mlops_magics.registry.journals import Journal, Recoverable
from mlops_magics.registry.records import ArtifactFile

_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


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


class ArtifactStore(Recoverable):
    """Immutable artifacts under ``root``, named by digest, and a manifest per version.

    Its manifests: :class:`~mlops_magics.registry.manifests.Manifests`; its journals and recovery:
    :class:`~mlops_magics.registry.journals.Recoverable`.
    """

    def digests(self) -> list[str]:
        """The digest of every artifact folder in the store."""
        return sorted(p.name for p in self.blobs.glob("*/*") if p.is_dir())

    def holds_anything(self) -> bool:
        """True if the store holds an artifact or a manifest (cheap: stops at the first one)."""
        return any(p.is_dir() for p in self.blobs.glob("*/*")) or any(
            p.is_dir() for p in entries(self.manifests))

    @contextmanager
    def stage(self) -> Iterator[Staging]:
        """Yield a locked staging folder; remove it and its lock on exit, whatever happens.

        Raises:
            StorageError: the disk refused a write into the staging folder (full, read-only...).
        """
        try:
            lock_path, fd, token = new_locked_file(self.root, self.staging_root, ".lock")
            folder = self.staging_root / token
            try:
                folder.mkdir()
                yield Staging(folder)
            finally:
                remove_tree(folder)
                lock_path.unlink(missing_ok=True)
                os.close(fd)
        except OSError as exc:
            problem = storage_error(exc, "Writing the artifact", self.staging_root)
            if problem is None:
                raise
            raise problem from exc

    def publish(self, staged: StagedArtifact, journal: Journal | None = None, *, sync: bool = True) -> bool:
        """Move a staged artifact into the store; call inside the registry write transaction.

        An artifact with the same digest already in the store is kept (it is the same content).

        Args:
            journal: the transaction's journal: a new blob is recorded there before it appears.
            sync: fsync its folder now (else call :meth:`sync_blob` before the commit).

        Returns:
            True if the blob is new (this transaction created it).
        """
        target = self.path(staged.digest)
        if target.exists():
            return False
        if journal is not None:
            journal.record(("publish", staged.digest))
        target.parent.mkdir(exist_ok=True)
        os.rename(staged.folder, target)
        if sync:
            fsync_path(target.parent)
        return True

    def sync_blob(self, digest: str) -> None:
        """Make a published blob's name durable (fsync of its folder)."""
        fsync_path(self.path(digest).parent)

    def unpublish(self, digest: str) -> None:
        """Remove a blob this transaction published (its transaction rolled back)."""
        remove_tree(self.path(digest))

    def verify(self, digest: str, files: tuple[ArtifactFile, ...]) -> Path:
        """Check an artifact against its recorded files: exactly these files, each with its size and sha256.

        Returns:
            The artifact folder.

        Raises:
            IntegrityError: a file is missing, changed, or was added (or is a link or a special file);
                the message names it.
        """
        folder = self.path(digest)
        if manifest_digest(files) != digest:
            raise IntegrityError(
                f"The file list recorded for artifact {folder} does not match its digest: the registry database "
                "was modified outside mlops-magics. It will not be loaded. Run `mlops registry check`, and "
                "restore the database from a backup."
            )
        expected = {f.path for f in files}
        if folder.is_dir():
            for relative, kind in _walk(folder):
                if kind == "dir":
                    continue
                if relative not in expected:
                    raise IntegrityError(
                        f"Artifact folder {folder} holds {relative!r}, which was not registered with it (its "
                        f"manifest lists {len(files)} file(s)): something wrote into the store outside "
                        "mlops-magics. It will not be loaded or exported. Remove that file (or register the model "
                        "again), and run `mlops registry check`."
                    )
                if kind != "file":
                    raise IntegrityError(
                        f"Artifact file {folder / relative} is a {kind}, not the regular file registered: the "
                        "store was modified outside mlops-magics. It will not be loaded. Register the model again "
                        "(or restore the file from a backup)."
                    )
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

    def export(self, digest: str, files: tuple[ArtifactFile, ...], target: Path) -> None:
        """Copy exactly the recorded files of a verified artifact to ``target`` and check the copies' sha256.

        Raises:
            IntegrityError: the artifact (or a copy) does not match what was registered.
            StorageError: the disk refused the copy.
        """
        folder = self.verify(digest, files)
        try:
            for f in files:
                destination = target / f.path
                destination.parent.mkdir(parents=True, exist_ok=True)
                copy_file(folder / f.path, destination)
                if file_sha256(destination) != f.sha256:
                    raise IntegrityError(f"The copy {destination} does not match {folder / f.path}'s sha256: "
                                         "it changed while it was copied. Export again.")
        except OSError as exc:
            problem = storage_error(exc, f"Exporting to {target}")
            if problem is None:
                raise
            raise problem from exc

    def retire(self, digest: str) -> None:
        """Move an artifact to the trash; call inside the write transaction that drops its last use."""
        source = self.path(digest)
        if source.exists():
            os.rename(source, self.trash / digest)

    def unretire(self, digest: str) -> None:
        """Put a retired artifact back (the transaction that retired it rolled back)."""
        retired = self.trash / digest
        if retired.exists() and not self.path(digest).exists():
            os.rename(retired, self.path(digest))

    def discard(self, digest: str) -> None:
        """Delete a retired artifact for good; call after the transaction that retired it committed."""
        remove_tree(self.trash / digest)


# -- helpers ------------------------------------------------------------------------------------


def _walk(folder: Path) -> Iterator[tuple[str, str]]:
    """(relative posix path, kind) of everything under ``folder``, links not followed."""
    stack = [folder]
    while stack:
        current = stack.pop()
        with os.scandir(current) as listing:
            listed = list(listing)
        for entry in listed:
            relative = Path(entry.path).relative_to(folder).as_posix()
            if entry.is_symlink():
                yield relative, "symbolic link"
            elif entry.is_dir(follow_symlinks=False):
                yield relative, "dir"
                stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                yield relative, "file"
            else:
                yield relative, "special file"


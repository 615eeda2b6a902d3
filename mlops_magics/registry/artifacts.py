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
moves a blob to ``.trash/`` inside the transaction and :meth:`discard` removes it after the
commit; a blob found in the trash whose digest is still referenced is put back.

Manifests outlive the database: one per version (with everything needed to re-create its row)
and, after a delete, a tombstone ``<version>.deleted.json``. They are what ``mlops registry
rebuild`` re-creates a lost database from, and the highest number among them is each model's
high-water mark: a version number is never handed out twice, even after the database was
restored from an older copy.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mlops_magics.display import human_size
from mlops_magics.errors import IntegrityError, InvalidInputError, NotFoundError, StorageError
from mlops_magics.registry.records import ArtifactFile

#: The sub-folder where a writer locks its lock file before moving it in, and how old an unlocked one left there
#: must be before recovery removes it (a live writer keeps one there for microseconds).
PENDING = ".pending"
PENDING_GRACE_S = 600.0
_CHUNK = 1 << 20
_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH

#: At most this many files are copied from one registered folder (links inside it included).
MAX_FILES = 100_000
#: Kept free on the disk when a registered folder is copied in (beside what its files take).
SPACE_MARGIN = 1 << 20

_MANIFEST_FORMAT = 1
_MANIFEST_RE = re.compile(r"([0-9]{1,19})(\.deleted)?\.json")
_FULL = (errno.ENOSPC, errno.EDQUOT)
#: errno values that mean the disk refused a write (as opposed to a bug or a bad argument).
STORAGE_ERRNOS = frozenset({*_FULL, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG})


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


class Journal:
    """What one registry write transaction is about to change in the store, written down first.

    Each entry is a line ``VERB ARG...``: ``publish DIGEST`` (this transaction created that blob),
    ``manifest NAME VERSION`` (it wrote that version's manifest), ``sync NAME VERSION`` (the manifest
    is rewritten from the database after the commit), ``tombstone NAME VERSION`` (the version is
    deleted: its manifest becomes a tombstone after the commit). The file is locked while its
    writer lives; a dead one is undone or finished by :meth:`ArtifactStore.recover`.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self.entries: list[tuple[str, ...]] = []

    def record(self, *entries: tuple[str, ...]) -> None:
        """Append entries: they are in the file before the change they announce is made.

        Not fsynced: what it guards against is a writer that dies (its writes are in the page cache
        all the same). After a power cut a lost entry can leave an unused blob or skip a number,
        never delete one or hand one out twice (manifests are fsynced before the commit).
        """
        text = "".join(" ".join(entry) + "\n" for entry in entries)
        os.write(self._fd, text.encode())
        self.entries.extend(entries)

    def close(self, *, keep: bool = False) -> None:
        """Release the journal: delete it (the transaction's changes are settled) or keep it for recovery."""
        if not keep:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)


class RecoveryView(Protocol):
    """What recovery asks of a healthy registry database."""

    def has_version(self, name: str, version: int) -> bool:
        """True if the database holds this version."""

    def manifest_body(self, name: str, version: int) -> dict[str, Any] | None:
        """The manifest of this version as the database says (None: no such version)."""

    def referenced(self) -> set[str]:
        """Every digest the database uses (versions and inference assets)."""


class ArtifactStore:
    """Immutable artifacts under ``root``, named by digest, and a manifest per version."""

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

    def digests(self) -> list[str]:
        """The digest of every artifact folder in the store."""
        return sorted(p.name for p in self.blobs.glob("*/*") if p.is_dir())

    def holds_anything(self) -> bool:
        """True if the store holds an artifact or a manifest (cheap: stops at the first one)."""
        return any(p.is_dir() for p in self.blobs.glob("*/*")) or any(
            p.is_dir() for p in _entries(self.manifests))

    def _locked_file(self, folder: Path, suffix: str) -> tuple[Path, int, str]:
        token = uuid.uuid4().hex
        folder.mkdir(exist_ok=True)
        final = folder / f"{token}{suffix}"
        # Lock it in a folder recovery does not take locks from, then move it in: recovery never sees an unlocked
        # live lock file (a file it could lock between this writer's open and flock would look dead to it).
        pending = self.root / PENDING
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

    @contextmanager
    def stage(self) -> Iterator[Staging]:
        """Yield a locked staging folder; remove it and its lock on exit, whatever happens.

        Raises:
            StorageError: the disk refused a write into the staging folder (full, read-only...).
        """
        try:
            lock_path, fd, token = self._locked_file(self.staging_root, ".lock")
            folder = self.staging_root / token
            try:
                folder.mkdir()
                yield Staging(folder)
            finally:
                _remove_tree(folder)
                lock_path.unlink(missing_ok=True)
                os.close(fd)
        except OSError as exc:
            problem = storage_error(exc, "Writing the artifact", self.staging_root)
            if problem is None:
                raise
            raise problem from exc

    def open_journal(self) -> Journal:
        """Create and lock a journal for one write transaction (see :class:`Journal`)."""
        path, fd, _ = self._locked_file(self.journals, ".journal")
        return Journal(path, fd)

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
        _remove_tree(self.path(digest))

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

    def discard(self, digest: str) -> None:
        """Delete a retired artifact for good; call after the transaction that retired it committed."""
        _remove_tree(self.trash / digest)

    # -- manifests -------------------------------------------------------------------------

    def manifest_path(self, name: str, version: int, *, deleted: bool = False) -> Path:
        """Where the manifest (or, ``deleted``, the tombstone) of a version is kept."""
        return self.manifests / name / (f"{version}.deleted.json" if deleted else f"{version}.json")

    def write_manifest(self, body: Mapping[str, Any], *, new: bool = False, sync: bool = True) -> Path:
        """Write a version's manifest durably (fsync of the file and of its folder).

        Args:
            new: the version is being registered (no manifest exists): written in place, which lets
                one journal commit of the filesystem carry it (and the blob published before it).
                Otherwise through a temporary file renamed over the old one.
            sync: fsync now; False to write many and :meth:`sync_manifests` once at the end.
        """
        folder = self.manifests / str(body["name"])
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            fsync_path(folder.parent)
        final = folder / f"{int(body['version'])}.json"
        text = json.dumps({"format": _MANIFEST_FORMAT, **body}, indent=1, sort_keys=True) + "\n"
        if not new:
            _write_durably(final, text, sync=sync)
            return final
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(text.encode())
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if sync:
            fsync_path(folder)
        return final

    def sync_manifests(self, paths: list[Path]) -> None:
        """fsync manifests written with ``sync=False``, then their folders (many: one ``sync()`` of every disk)."""
        if len(paths) > 64 and hasattr(os, "sync"):
            os.sync()
            return
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for folder in sorted({p.parent for p in paths}):
            fsync_path(folder)

    def write_tombstone(self, name: str, version: int) -> None:
        """Record that ``name:version`` existed and was deleted (keeps its number from being handed out again)."""
        folder = self.manifests / name
        folder.mkdir(parents=True, exist_ok=True)
        _write_durably(self.manifest_path(name, version, deleted=True),
                       json.dumps({"format": _MANIFEST_FORMAT, "name": name, "version": version, "deleted": True})
                       + "\n")

    def remove_manifest(self, name: str, version: int) -> None:
        """Delete a version's manifest (its registration did not commit)."""
        self.manifest_path(name, version).unlink(missing_ok=True)

    def bury(self, name: str, version: int) -> None:
        """Turn a version's manifest into a tombstone: rebuild skips it, numbering still counts it."""
        live = self.manifest_path(name, version)
        if live.exists():
            os.rename(live, self.manifest_path(name, version, deleted=True))
            fsync_path(live.parent)

    def high_water(self, name: str) -> int:
        """The highest version number ever recorded for ``name`` in the store (tombstones included); 0: none."""
        return max((number for number, _ in _numbered(self.manifests / name)), default=0)

    def manifest_files(self) -> Iterator[tuple[str, int, bool, Path]]:
        """Every manifest: (folder name, version, is a tombstone, path)."""
        for folder in sorted(_entries(self.manifests)):
            if folder.is_dir():
                for number, path in sorted(_numbered(folder)):
                    yield folder.name, number, path.name.endswith(".deleted.json"), path

    def read_manifest(self, path: Path) -> dict[str, Any]:
        """A manifest's content.

        Raises:
            IntegrityError: it is not a manifest this version of mlops-magics can read.
        """
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"Manifest {path} cannot be read: {exc}.") from exc
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not isinstance(
                body.get("version"), int) or body.get("format", 0) > _MANIFEST_FORMAT:
            raise IntegrityError(f"{path} is not a version manifest this mlops-magics can read.")
        return body

    def has_manifest(self, name: str, version: int) -> bool:
        """True if the version has a readable manifest."""
        try:
            self.read_manifest(self.manifest_path(name, version))
        except IntegrityError:
            return False
        return True

    def manifests_complete(self) -> bool:
        """True once every version of the database has its manifest (written when the store started keeping them)."""
        return (self.manifests / ".format").exists()

    def mark_manifests_complete(self) -> None:
        """Record that every version has its manifest."""
        self.manifests.mkdir(parents=True, exist_ok=True)
        _write_durably(self.manifests / ".format", f"{_MANIFEST_FORMAT}\n")

    # -- recovery --------------------------------------------------------------------------

    def needs_recovery(self) -> bool:
        """True when a dead writer or an unfinished delete left something behind."""
        return (any(_entries(self.trash)) or any(_owner_is_dead(lock) for lock in self._locks())
                or any(_owner_is_dead(j) for j in self._journal_files()))

    def _locks(self) -> list[Path]:
        return list(self.staging_root.glob("*.lock"))

    def _journal_files(self) -> list[Path]:
        return list(self.journals.glob("*.journal"))

    def _stale_pending(self) -> list[Path]:
        """Lock files a writer died with before moving them in (unlocked, and older than any live writer's)."""
        old = time.time() - PENDING_GRACE_S
        return [path for path in (self.root / PENDING).glob("*")
                if _modified_before(path, old) and _owner_is_dead(path)]

    def live_manifest_digests(self) -> set[str]:
        """The digest of every version that has a manifest (tombstones excluded)."""
        found: set[str] = set()
        for _, _, deleted, path in self.manifest_files():
            if not deleted:
                try:
                    found.add(str(self.read_manifest(path)["sha256"]))
                except (IntegrityError, KeyError):
                    continue
        return found

    def recover(self, view: RecoveryView) -> list[str]:
        """Clean what dead writers left; call under the registry write lock, with a database that passed its check.

        Only what a dead writer was doing is touched: its staging folder; the blobs its journal says it
        created and the manifests it wrote, unless the database shows the transaction committed; and the
        trash. A blob is deleted only if neither the database nor any manifest references it.

        Returns:
            A description of each item removed or restored.
        """
        actions: list[str] = []
        for path in self._stale_pending():
            path.unlink(missing_ok=True)
            actions.append(f"removed the lock file {path.name} of a writer that died before it began")
        for lock in self._locks():
            if _owner_is_dead(lock):
                _remove_tree(self.staging_root / lock.stem)
                lock.unlink(missing_ok=True)
                actions.append(f"removed unfinished staging {lock.stem}")
        candidates: set[str] = set()
        dead = [j for j in self._journal_files() if _owner_is_dead(j)]
        for journal in dead:
            for line in _journal_entries(journal):
                verb, args = line[0], line[1:]
                if verb == "publish" and len(args) == 1:
                    candidates.add(args[0])
                    continue
                if len(args) != 2 or not args[1].isdigit():
                    continue
                name, version = args[0], int(args[1])
                if verb == "manifest" and not view.has_version(name, version):
                    self.remove_manifest(name, version)
                    actions.append(f"removed the manifest of {name}:{version} (its registration did not commit)")
                elif verb == "sync":
                    body = view.manifest_body(name, version)
                    if body is not None:
                        self.write_manifest(body)
                        actions.append(f"rewrote the manifest of {name}:{version} from the database")
                elif verb == "tombstone" and not view.has_version(name, version):
                    self.bury(name, version)
                    actions.append(f"marked the manifest of {name}:{version} deleted (its delete committed)")
        trash = list(_entries(self.trash))
        if candidates or trash:
            in_use = view.referenced() | self.live_manifest_digests()
            for digest in sorted(candidates):
                if digest not in in_use and self.path(digest).exists():
                    _remove_tree(self.path(digest))
                    actions.append(f"removed artifact {digest} (its registration did not commit)")
            for entry in trash:
                if entry.name in in_use and not self.path(entry.name).exists():
                    self.path(entry.name).parent.mkdir(exist_ok=True)
                    os.rename(entry, self.path(entry.name))
                    actions.append(f"restored artifact {entry.name} (its delete did not commit)")
                else:
                    _remove_tree(entry)
                    actions.append(f"emptied trash {entry.name}")
        for journal in dead:
            journal.unlink(missing_ok=True)
        return actions


# -- copying a file or folder in, safely ------------------------------------------------------


@dataclass(frozen=True)
class _Planned:
    source: str  # a real path (no link in it)
    relative: Path
    size: int
    allocated: int


def copy_in(source: Path, target: Path) -> int:
    """Copy the file or folder ``source`` to ``target`` (a new path in a staging folder), keeping sparse files sparse.

    The whole tree is checked before anything is copied. ``source`` itself may be a link (it is
    what the user named). Inside a folder, a link whose target lies inside the folder is copied as
    the file (or folder) it points at; a link that leaves the folder, a dangling link, a link that
    makes a loop, and any named pipe, socket or device are refused, naming the entry: a registered
    folder never brings in files from elsewhere on the machine, and never reads a FIFO or
    ``/dev/zero`` forever. More than :data:`MAX_FILES` files are refused; so is a copy that would
    not fit on the disk (the message gives both sizes).

    Returns:
        The number of bytes the copied files hold (holes in sparse files not counted).

    Raises:
        NotFoundError: ``source`` does not exist.
        InvalidInputError: a link leaves the folder or loops, a special file, too many files.
        StorageError: not enough free space for the copy.
    """
    try:
        root = os.path.realpath(source)
        top = os.stat(root)
    except FileNotFoundError:
        raise NotFoundError(f"No file or folder at {str(source)!r}. Check the path (relative to {Path.cwd()}).") \
            from None
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {str(source)!r}: {exc.strerror}.") from exc
    plan: list[_Planned] = []
    folders: list[Path] = []
    if stat.S_ISDIR(top.st_mode):
        folders.append(Path("."))
        _plan_folder(root, root, str(source), Path("."), frozenset({(top.st_dev, top.st_ino)}), plan, folders)
    elif stat.S_ISREG(top.st_mode):
        plan.append(_Planned(root, Path("."), top.st_size, _allocated(root, top)))
    else:
        raise _special(str(source), top)
    needed = sum(p.allocated for p in plan)
    free = free_space(target.parent)
    if free is not None and needed + SPACE_MARGIN > free:
        raise StorageError(
            f"Registering {str(source)!r} needs {human_size(needed)} of disk "
            f"({len(plan)} file(s), {human_size(sum(p.size for p in plan))} long), but only {human_size(free)} is "
            f"free on the disk holding {target.parent}. Nothing was written. Free some space, or set MLOPS_HOME to a "
            "folder on a bigger disk."
        )
    for folder in folders:
        (target / folder).mkdir(parents=True, exist_ok=True)
    for item in plan:
        copy_file(Path(item.source), target / item.relative if item.relative != Path(".") else target)
    return needed


def _plan_folder(root: str, real: str, shown_folder: str, relative: Path, ancestors: frozenset[tuple[int, int]],
                 plan: list[_Planned], folders: list[Path]) -> None:
    try:
        with os.scandir(real) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        raise InvalidInputError(f"Cannot list the folder {real!r}: {exc.strerror}.") from exc
    for entry in entries:
        child = relative / entry.name
        shown = os.path.join(shown_folder, entry.name)
        if entry.is_symlink():
            pointed = os.readlink(entry.path)
            resolved = os.path.realpath(entry.path)
            try:
                info = os.stat(resolved)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise InvalidInputError(f"{shown} -> {pointed} is a loop of links. Remove the link.") from None
                raise InvalidInputError(
                    f"{shown} is a link to {pointed}, which does not exist. Remove the link, or put the file there."
                ) from None
            if os.path.commonpath([root, resolved]) != root:
                where = pointed if pointed == resolved else f"{pointed} ({resolved})"
                raise InvalidInputError(
                    f"{shown} is a link to {where}, outside the folder {root} being registered: "
                    "its content would be copied from elsewhere on this machine. Copy what the model needs into "
                    "the folder (or register that path itself), or remove the link."
                )
        else:
            resolved = entry.path
            info = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            key = (info.st_dev, info.st_ino)
            if key in ancestors:
                raise InvalidInputError(
                    f"{shown} leads back to {resolved}, a folder that contains it: a loop. Remove the link "
                    "(or the bind mount)."
                )
            folders.append(child)
            _plan_folder(root, resolved, shown, child, ancestors | {key}, plan, folders)
        elif stat.S_ISREG(info.st_mode):
            plan.append(_Planned(resolved, child, info.st_size, _allocated(resolved, info)))
        else:
            raise _special(shown, info)
        if len(plan) + len(folders) > MAX_FILES:  # folders count: links to folders can multiply them unboundedly
            raise InvalidInputError(
                f"{root} holds more than {MAX_FILES:,} files and folders (links followed): too many to register as "
                "one model. Archive the folder (tar, zip) and register the archive, or remove links that repeat "
                "folders."
            )


def _allocated(path: str, info: os.stat_result) -> int:
    """Bytes a copy of this regular file will take: its data, holes of a sparse file left out.

    Fewer blocks than its size is not proof enough (procfs files have none, yet read on): the holes
    are asked for with SEEK_DATA/SEEK_HOLE, and a file that cannot say counts whole.
    """
    blocks = getattr(info, "st_blocks", None)
    if blocks is None or blocks * 512 >= info.st_size:
        return info.st_size
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None:
        return info.st_size
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return info.st_size
    data, position = 0, 0
    try:
        while position < info.st_size:
            start = os.lseek(fd, position, seek_data)
            end = min(os.lseek(fd, start, seek_hole), info.st_size)
            data += max(0, end - start)
            position = end
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: only a hole is left
            return info.st_size
    finally:
        os.close(fd)
    return data


def _special(path: str, info: os.stat_result) -> InvalidInputError:
    mode = info.st_mode
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "not a regular file")
    return InvalidInputError(
        f"{path} is {kind}: only regular files and folders can be registered (reading it could block forever or "
        "never end). Remove it from the folder, or copy the data into a regular file."
    )


def copy_file(source: Path, target: Path) -> None:
    """Copy one regular file to a new ``target``, holes of a sparse file kept as holes.

    Raises:
        InvalidInputError: ``source`` is not a regular file (anymore).
    """
    try:
        fd_in = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {source}: {exc.strerror}.") from exc
    try:
        info = os.fstat(fd_in)
        if not stat.S_ISREG(info.st_mode):
            raise _special(str(source), info)
        fd_out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            _copy_data(fd_in, fd_out, info.st_size)
            os.ftruncate(fd_out, info.st_size)
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _copy_data(fd_in: int, fd_out: int, size: int) -> None:
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    position = 0
    while position < size:
        if seek_data is None or seek_hole is None:
            start, end = position, size
        else:
            try:
                start = os.lseek(fd_in, position, seek_data)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    return
                start = position  # the filesystem cannot say where data is: copy it all
                end = size
            else:
                end = min(os.lseek(fd_in, start, seek_hole), size)
        if start >= size:
            return
        _copy_range(fd_in, fd_out, start, end)
        position = end


def _copy_range(fd_in: int, fd_out: int, start: int, end: int) -> None:
    offset = start
    fast = hasattr(os, "copy_file_range")
    while offset < end:
        count = min(end - offset, 1 << 30)
        done = 0
        if fast:
            try:
                done = os.copy_file_range(fd_in, fd_out, count, offset, offset)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                    raise
                fast = False
                continue
        else:
            data = os.pread(fd_in, min(count, _CHUNK), offset)
            view = memoryview(data)
            while view:
                written = os.pwrite(fd_out, view, offset + done)
                view = view[written:]
                done += written
        if done == 0:  # the file shrank while it was copied
            return
        offset += done


# -- helpers ------------------------------------------------------------------------------------


def _walk(folder: Path) -> Iterator[tuple[str, str]]:
    """(relative posix path, kind) of everything under ``folder``, links not followed."""
    stack = [folder]
    while stack:
        current = stack.pop()
        with os.scandir(current) as listing:
            entries = list(listing)
        for entry in entries:
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


def _entries(folder: Path) -> Iterator[Path]:
    try:
        yield from folder.iterdir()
    except FileNotFoundError:
        return


def _numbered(folder: Path) -> Iterator[tuple[int, Path]]:
    for path in _entries(folder):
        match = _MANIFEST_RE.fullmatch(path.name)
        if match:
            yield int(match.group(1)), path


def _journal_entries(path: Path) -> list[tuple[str, ...]]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [tuple(line.split()) for line in text.splitlines() if line.strip()]


def _write_durably(path: Path, text: str, *, sync: bool = True) -> None:
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


def _modified_before(path: Path, moment: float) -> bool:
    try:
        return path.stat().st_mtime < moment
    except FileNotFoundError:
        return False


def _owner_is_dead(lock: Path) -> bool:
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


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

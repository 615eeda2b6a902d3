"""Journals of registry write transactions, and recovery after a writer died.

Inside the registry's write transaction, the registry opens a :class:`Journal` (a locked file under
``.journal/``) and writes down what it is about to change in the store, then does it. After the commit the
journal is removed. A lock (staging or journal) that can be taken by someone else means its writer died:
:meth:`Recoverable.recover` (run when a registry opens, under the write lock, after the database passed its
check) then cleans up after it (see :mod:`mlops_magics.registry.artifacts` for the whole life of an artifact).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol

from mlops_magics.registry.disk import (
    PENDING,
    PENDING_GRACE_S,
    entries,
    modified_before,
    new_locked_file,
    owner_is_dead,
    remove_tree,
)
from mlops_magics.registry.manifests import Manifests


class Journal:
    """What one registry write transaction is about to change in the store, written down first.

    Each entry is a line ``VERB ARG...``: ``publish DIGEST`` (this transaction created that blob),
    ``manifest NAME VERSION`` (it wrote that version's manifest), ``sync NAME VERSION`` (the manifest
    is rewritten from the database after the commit), ``tombstone NAME VERSION`` (the version is
    deleted: its manifest becomes a tombstone after the commit). The file is locked while its
    writer lives; a dead one is undone or finished by :meth:`Recoverable.recover`.
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


class Recoverable(Manifests):
    """An artifact store whose writers journal their changes, so that what a dead one left is cleaned up."""

    def open_journal(self) -> Journal:
        """Create and lock a journal for one write transaction (see :class:`Journal`)."""
        path, fd, _ = new_locked_file(self.root, self.journals, ".journal")
        return Journal(path, fd)

    def needs_recovery(self) -> bool:
        """True when a dead writer or an unfinished delete left something behind."""
        return (any(entries(self.trash)) or any(owner_is_dead(lock) for lock in self._locks())
                or any(owner_is_dead(j) for j in self._journal_files()))

    def _locks(self) -> list[Path]:
        return list(self.staging_root.glob("*.lock"))

    def _journal_files(self) -> list[Path]:
        return list(self.journals.glob("*.journal"))

    def _stale_pending(self) -> list[Path]:
        """Lock files a writer died with before moving them in (unlocked, and older than any live writer's)."""
        old = time.time() - PENDING_GRACE_S
        return [path for path in (self.root / PENDING).glob("*")
                if modified_before(path, old) and owner_is_dead(path)]
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
            if owner_is_dead(lock):
                remove_tree(self.staging_root / lock.stem)
                lock.unlink(missing_ok=True)
                actions.append(f"removed unfinished staging {lock.stem}")
        candidates: set[str] = set()
        dead = [j for j in self._journal_files() if owner_is_dead(j)]
        for journal in dead:
            for line in journal_entries(journal):
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
        trash = list(entries(self.trash))
        if candidates or trash:
            in_use = view.referenced() | self.live_manifest_digests()
            for digest in sorted(candidates):
                if digest not in in_use and self.path(digest).exists():
                    remove_tree(self.path(digest))
                    actions.append(f"removed artifact {digest} (its registration did not commit)")
            for entry in trash:
                if entry.name in in_use and not self.path(entry.name).exists():
                    self.path(entry.name).parent.mkdir(exist_ok=True)
                    os.rename(entry, self.path(entry.name))
                    actions.append(f"restored artifact {entry.name} (its delete did not commit)")
                else:
                    remove_tree(entry)
                    actions.append(f"emptied trash {entry.name}")
        for journal in dead:
            journal.unlink(missing_ok=True)
        return actions


def journal_entries(path: Path) -> list[tuple[str, ...]]:
    """The entries of a journal file (none when it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [tuple(line.split()) for line in text.splitlines() if line.strip()]

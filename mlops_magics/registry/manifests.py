"""The manifests of an artifact store: one per version, with everything needed to re-create its row.

A manifest lives at ``manifests/<name>/<version>.json``; after a delete it becomes a tombstone
``<version>.deleted.json``. Manifests outlive the database: they are what ``mlops registry rebuild``
re-creates a lost database from, and the highest number among them is each model's high-water mark
(a version number is never handed out twice, even after the database was restored from an older copy).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mlops_magics.errors import IntegrityError
from mlops_magics.registry.disk import StoreLayout, entries, fsync_path, write_durably

#: The manifest format this version of mlops-magics writes (and the newest it reads).
MANIFEST_FORMAT = 1
_MANIFEST_RE = re.compile(r"([0-9]{1,19})(\.deleted)?\.json")


class Manifests(StoreLayout):
    """The manifest (or tombstone) of every version, under ``root/manifests``."""

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
        text = json.dumps({"format": MANIFEST_FORMAT, **body}, indent=1, sort_keys=True) + "\n"
        if not new:
            write_durably(final, text, sync=sync)
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
        write_durably(self.manifest_path(name, version, deleted=True),
                       json.dumps({"format": MANIFEST_FORMAT, "name": name, "version": version, "deleted": True})
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
        return max((number for number, _ in numbered(self.manifests / name)), default=0)

    def manifest_files(self) -> Iterator[tuple[str, int, bool, Path]]:
        """Every manifest: (folder name, version, is a tombstone, path)."""
        for folder in sorted(entries(self.manifests)):
            if folder.is_dir():
                for number, path in sorted(numbered(folder)):
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
                body.get("version"), int) or body.get("format", 0) > MANIFEST_FORMAT:
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
        write_durably(self.manifests / ".format", f"{MANIFEST_FORMAT}\n")

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


def numbered(folder: Path) -> Iterator[tuple[int, Path]]:
    """(version, path) of every manifest and tombstone in one model's folder."""
    for path in entries(folder):
        match = _MANIFEST_RE.fullmatch(path.name)
        if match:
            yield int(match.group(1)), path


"""The device's store-and-forward buffer: collected records waiting for the hub, in one SQLite file.

Each record gets an offset, increasing by one per record and never reused (AUTOINCREMENT), so that the hub can
tell new records from those it has (see :mod:`mlops_backend.edge.hub`). The buffer holds the records the hub has
not acknowledged yet, oldest first, up to a size in bytes (the records' own bytes; the file is somewhat larger):
past it the oldest records are evicted, and counted, so that the device never fills its disk however long it is
offline.

Taking a closed collection segment (``records/*.jsonl``, see :mod:`mlops_backend.collection_store`) inserts its
records and the segment's name in one transaction; the file is removed only after the commit. A kill at any
point therefore either leaves the file untaken (taken again, whole, next time) or taken (then only removed):
nothing lost, nothing twice.

Durability: WAL with ``synchronous=FULL``. Commits are few (one per segment taken and per batch acknowledged), so
the fsync each costs little, and only FULL makes a commit survive a power cut: with NORMAL the last commits of a
segment taken could be lost while the removal of its file was not.

The file's identity, ``epoch``, is made with it (a start time and random hex, like a collection segment's
name): offsets count within one epoch, and a device whose buffer was wiped starts a new epoch, so that the hub
does not take its new offsets 1, 2, ... for records it already has.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    offset INTEGER PRIMARY KEY AUTOINCREMENT,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS taken (
    segment TEXT PRIMARY KEY,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value
);
"""
#: Counters kept in ``state``, all 0 in a new buffer.
_COUNTERS = ("acked", "count", "bytes", "taken", "evicted", "evicted_bytes", "forwarded", "last_offset")


class BufferError(Exception):
    """The buffer cannot be opened or used; the message says why and what to do."""


@dataclass(frozen=True)
class BufferStats:
    """What a buffer holds and has done."""

    #: The buffer's identity: offsets count within it.
    epoch: str
    #: Records waiting for the hub, and their bytes.
    records: int
    bytes: int
    max_bytes: int
    #: Records taken from collection segments, ever.
    taken: int
    #: Records evicted (oldest first) to stay within max_bytes before the hub had them, and their bytes.
    evicted: int
    evicted_bytes: int
    #: Records the hub acknowledged.
    forwarded: int
    #: The highest offset the hub acknowledged (0: none).
    acked: int
    #: The highest offset given to a record (0: none).
    last_offset: int


class Buffer:
    """One device's buffer in the SQLite file ``path`` (created if needed), bounded by ``max_bytes``.

    One process uses a buffer at a time (a lock file beside it says so). Not thread-safe: one thread per buffer.

    Raises:
        BufferError: another process has the buffer, the bound is not positive, or the file is not a buffer.
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        if max_bytes < 1:
            raise BufferError(f"The buffer size {max_bytes} is invalid: give a positive number of bytes.")
        self.path = path
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise BufferError(f"The buffer {path} is in use by another process (an agent already runs on it): "
                              "stop that one first, or give another --buffer.") from None
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            with self._transaction():
                epoch = self._db.execute("SELECT value FROM state WHERE key = 'epoch'").fetchone()
                if epoch is None:
                    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
                    self._db.execute("INSERT INTO state VALUES ('epoch', ?)", (f"{stamp}-{secrets.token_hex(4)}",))
                self._db.executemany("INSERT OR IGNORE INTO state VALUES (?, 0)", [(k,) for k in _COUNTERS])
        except sqlite3.DatabaseError as exc:
            self.close()
            raise BufferError(f"{path} is not a usable buffer ({exc}): move it away to start a new one "
                              "(its records are then not forwarded).") from exc
        self.epoch: str = self._state("epoch")  # type: ignore[assignment]

    def close(self) -> None:
        """Close the database and release the buffer. Idempotent."""
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
            self._db = None  # type: ignore[assignment]
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Buffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _state(self, key: str) -> int | str:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0]  # type: ignore[no-any-return]

    def _add(self, key: str, amount: int) -> None:
        self._db.execute("UPDATE state SET value = value + ? WHERE key = ?", (amount, key))

    def append(self, records: list[bytes]) -> tuple[int, int]:
        """Buffer ``records`` (each one JSON line, without its line break), evicting past the bound.

        Returns:
            The offsets of the first and last record appended ((0, 0) for none).
        """
        with self._transaction():
            return self._insert(records)

    def _insert(self, records: list[bytes]) -> tuple[int, int]:
        if not records:
            return 0, 0
        cursor = self._db.cursor()
        first = last = 0
        size = 0
        for data in records:
            cursor.execute("INSERT INTO records (size, data) VALUES (?, ?)", (len(data), data))
            last = int(cursor.lastrowid or 0)
            first = first or last
            size += len(data)
        self._add("bytes", size)
        self._add("count", len(records))
        self._add("taken", len(records))
        self._db.execute("UPDATE state SET value = ? WHERE key = 'last_offset'", (last,))
        self._evict()
        return first, last

    def _evict(self) -> None:
        over = int(self._state("bytes")) - self.max_bytes
        if over <= 0:
            return
        count = size = 0
        cutoff = 0
        for offset, length in self._db.execute("SELECT offset, size FROM records ORDER BY offset"):
            count += 1
            size += length
            cutoff = offset
            if size >= over:
                break
        self._db.execute("DELETE FROM records WHERE offset <= ?", (cutoff,))
        self._add("bytes", -size)
        self._add("count", -count)
        self._add("evicted", count)
        self._add("evicted_bytes", size)

    def take_segment(self, segment: Path) -> int:
        """Move a closed collection segment into the buffer: its records, then the file is removed.

        A segment taken before (the process was killed before it removed the file) is only removed. Lines that
        are empty are skipped; a segment holds whole lines only (the collector's guarantee).

        Returns:
            How many records were taken (0 for a segment taken before).

        Raises:
            OSError: the file cannot be read or removed (it stays; the next call tries again).
        """
        name = segment.name
        with self._transaction():
            seen = self._db.execute("SELECT 1 FROM taken WHERE segment = ?", (name,)).fetchone()
            count = 0
            if seen is None:
                lines = [line for line in segment.read_bytes().split(b"\n") if line.strip()]
                first, last = self._insert(lines)
                self._db.execute("INSERT INTO taken VALUES (?, ?, ?, ?)", (name, first, last, time.time()))
                count = len(lines)
        segment.unlink(missing_ok=True)
        with self._transaction():  # the name was needed only until the file was gone (names are never reused)
            self._db.execute("DELETE FROM taken WHERE segment = ?", (name,))
        return count

    def settle(self, records_dir: Path) -> int:
        """After a restart: remove the segment files in ``records_dir`` that were taken but not removed.

        Returns:
            How many files were removed.
        """
        removed = 0
        for name in self.taken_segments():
            path = records_dir / name
            if path.exists():
                path.unlink()
                removed += 1
            with self._transaction():
                self._db.execute("DELETE FROM taken WHERE segment = ?", (name,))
        return removed

    def ack(self, offset: int) -> int:
        """The hub has stored every record up to ``offset``: drop them from the buffer, remember the offset.

        An offset at or below the one acknowledged before changes nothing.

        Returns:
            How many records this acknowledged.
        """
        with self._transaction():
            if offset <= int(self._state("acked")):
                return 0
            count, size = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM records WHERE offset <= ?",
                                           (offset,)).fetchone()
            self._db.execute("DELETE FROM records WHERE offset <= ?", (offset,))
            self._db.execute("UPDATE state SET value = ? WHERE key = 'acked'", (offset,))
            self._add("bytes", -size)
            self._add("count", -count)
            self._add("forwarded", count)
            return int(count)

    # -- reading ----------------------------------------------------------------------------

    def pending(self, limit: int, max_bytes: int | None = None) -> list[tuple[int, bytes]]:
        """Up to ``limit`` records after the acknowledged offset, oldest first, as ``(offset, line)``.

        With ``max_bytes``, the records stop before their bytes would exceed it (one record at least).
        """
        rows = self._db.execute("SELECT offset, size, data FROM records WHERE offset > ? ORDER BY offset LIMIT ?",
                                (int(self._state("acked")), limit))
        found: list[tuple[int, bytes]] = []
        size = 0
        for offset, length, data in rows:
            if max_bytes is not None and found and size + length > max_bytes:
                break
            found.append((offset, bytes(data)))
            size += length
        return found

    def stats(self) -> BufferStats:
        """The buffer's counters now."""
        state = dict(self._db.execute("SELECT key, value FROM state").fetchall())
        return BufferStats(epoch=self.epoch, records=int(state["count"]), bytes=int(state["bytes"]),
                           max_bytes=self.max_bytes,
                           taken=int(state["taken"]), evicted=int(state["evicted"]),
                           evicted_bytes=int(state["evicted_bytes"]), forwarded=int(state["forwarded"]),
                           acked=int(state["acked"]), last_offset=int(state["last_offset"]))

    @property
    def evicted(self) -> int:
        """Records evicted so far."""
        return int(self._state("evicted"))

    def taken_segments(self) -> list[str]:
        """Names of segments taken whose file may still be there (a kill came between the commit and the removal)."""
        return [row[0] for row in self._db.execute("SELECT segment FROM taken ORDER BY segment")]

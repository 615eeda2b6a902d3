"""Data collection: what each scored request sent and got back, written off the request path.

The request path, once its answer is on the way, only encodes the record as one JSON line (a few
microseconds) and appends it to an in-memory queue; a background thread of the worker wakes every flush
interval (or sooner when a batch is ready) and appends the queued lines to the store with one write. (Encoding
in the writer thread instead was measured: same CPU, but the thread holding the GIL for milliseconds at a time
raised the p99 latency by half.) Nothing is dropped while the server is healthy: when the queue is full the
request itself writes its record (the queue spills to disk). A graceful stop (SIGTERM) writes everything
queued; a crash loses at most the last flush interval, and the worker's counters, kept in a memory-mapped file
beside the records, tell how many.

When the store refuses a write (a full disk, a quota, an I/O error), nothing half-written stays: a write that
stopped part-way keeps the whole records before the refusal and the file is cut back to the end of the last of
them, so every line on disk is one whole record and ``written`` is exactly the number of lines. The records the
store refused stay queued, in order, and the writer tries again every flush interval (the request path no
longer touches the disk meanwhile); writing resumes by itself when space returns. Memory stays bounded: the
queue holds at most ``queue_limit`` records and ``queue_bytes`` bytes (one batch more while the writer has it
in hand); a record arriving beyond that while the store refuses, or one that cannot be encoded, is dropped and
counted in ``dropped``; at a stop, what the store still refuses is dropped and counted. So at any time
``received = sampled_out + written + dropped + queued`` (``queued``: waiting in memory), exactly. The log says
once when the store starts refusing and once when it takes records again (with how many were dropped
meanwhile). The ``ModelDataCollector`` CSV files get the same treatment, a ``collect()`` call's rows being the
unit kept whole (a quoted CSV field may hold a line break), with their own counters (``csv_*``, in rows).

The folder's layout and what reads it back: :mod:`mlops_backend.collection_store`.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import threading
import time
from collections import deque
from pathlib import Path

import orjson

from mlops_backend.collection_store import (
    CLOSED,
    CSV_DROPPED,
    CSV_RECEIVED,
    CSV_WRITTEN,
    DROPPED,
    FLUSH,
    HEARTBEAT,
    RECEIVED,
    SAMPLED_OUT,
    SPILLED,
    STARTED,
    WRITTEN,
    append_csv,
    counters,
    reason,
    record_value,
    say,
    whole_prefix,
    write_all,
)

DEFAULT_FLUSH_S = 0.5
DEFAULT_QUEUE_LIMIT = 20_000
DEFAULT_QUEUE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_BODY = 256 * 1024
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
#: Records one write takes at most.
_BATCH = 4_096
#: Records (or CSV chunks) a retry offers while the store refuses: a small probe, not the whole backlog.
_PROBE = 16
#: Queued records that wake the writer before its interval.
_WAKE_AT = 2_000

_current: Collector | None = None


def current() -> Collector | None:
    """The collector of this worker process (None: collection is off)."""
    return _current


class Collector:
    """One worker's collector: a queue, a writer thread, a segment file and its counters.

    :meth:`record` is called by the worker's event loop thread only (its counters have one writer each);
    :meth:`csv` may be called from any thread.

    Args:
        folder: the collection folder (created if needed).
        worker: the worker's number, part of its token (files of several workers never clash).
        sample_rate: the share of requests recorded (1.0: every one), drawn at random per request.
        flush_interval: seconds between writes (and between retries while the store refuses); the most a crash
            can lose.
        queue_limit: queued records beyond which requests write their own record (spill) instead, or, while
            the store refuses writes, beyond which new records are dropped (counted).
        queue_bytes: the same bound in bytes, for the records and, separately, for the CSV rows.
        max_body_bytes: larger inputs or outputs are recorded as their size only.
        segment_bytes: a segment is closed and a new one begun past this size.
        segment_seconds: a segment that holds records is also closed this long after it was begun (None: by
            size only), checked every flush interval; an edge agent forwards closed segments only.

    Raises:
        ValueError: the sample rate is not in (0, 1].
        OSError: the folder, the counters or the first segment cannot be created.
    """

    # Slots: over 29 attributes a plain instance's dict stops sharing its keys and every attribute read on the
    # request path gets slower (measured: 8% more instructions for record() with 30).
    __slots__ = ("_bytes_ceiling", "_bytes_in", "_closing", "_csv_bytes", "_csv_dropped_at_refusal", "_csv_lock",
                 "_cut", "_dropped_at_refusal", "_fd", "_lock", "_opened", "_segment", "_sequence", "_size", "_thread",
                 "_wake", "csv_queue", "csv_refusing", "flush_interval", "folder", "max_body_bytes", "queue",
                 "queue_bytes", "queue_limit", "refusing", "request_id", "sample_rate", "segment_bytes",
                 "segment_seconds", "stats", "stats_path", "token")

    def __init__(self, folder: Path, *, worker: int = 0, sample_rate: float = 1.0,
                 flush_interval: float = DEFAULT_FLUSH_S, queue_limit: int = DEFAULT_QUEUE_LIMIT,
                 queue_bytes: int = DEFAULT_QUEUE_BYTES, max_body_bytes: int = DEFAULT_MAX_BODY,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES, segment_seconds: float | None = None) -> None:
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample rate {sample_rate} is out of range: use a share in (0, 1].")
        self.folder = folder
        self.token = f"w{worker}-{secrets.token_hex(4)}"
        self.sample_rate = sample_rate
        self.flush_interval = flush_interval
        self.queue_limit = queue_limit
        self.queue_bytes = queue_bytes
        self.max_body_bytes = max_body_bytes
        self.segment_bytes = segment_bytes
        self.segment_seconds = segment_seconds
        #: The request being scored now (what ModelDataCollector records as $aml_request_id; decoded there only).
        self.request_id = b""
        self.queue: deque[bytes] = deque()
        #: CSV chunks waiting: (file, its header, the rows of one collect() call, how many rows).
        self.csv_queue: deque[tuple[Path, bytes, bytes, int]] = deque()
        #: Why the store refused the last write of records (None: it takes them).
        self.refusing: OSError | None = None
        #: Why the store refused the last CSV write (None: it takes them).
        self.csv_refusing: OSError | None = None
        (folder / "records").mkdir(parents=True, exist_ok=True)
        (folder / "stats").mkdir(exist_ok=True)
        self.stats_path = folder / "stats" / f"{self.token}.bin"
        self.stats = counters(self.stats_path)
        self.stats[STARTED] = self.stats[HEARTBEAT] = time.time()
        self.stats[FLUSH] = flush_interval
        # The queue's bytes: in (added by the request path) below a ceiling (bytes taken out, by the writer, plus
        # the bound). One writer each: no lock on the request path.
        self._bytes_in = 0
        self._bytes_ceiling = queue_bytes
        self._csv_lock = threading.Lock()
        self._csv_bytes = 0  # under _csv_lock
        self._lock = threading.Lock()
        self._fd = -1
        self._segment: Path | None = None
        self._size = 0
        self._opened = 0.0
        #: The offset the segment must be cut back to before anything more is written (a cut that failed).
        self._cut: int | None = None
        self._sequence = 0
        self._dropped_at_refusal = 0.0
        self._csv_dropped_at_refusal = 0.0
        self._open_segment()
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._writer, name="mlops-collector", daemon=True)
        self._thread.start()

    # -- the request path -------------------------------------------------------------------

    def record(self, request_id: bytes, status: int, seconds: float, payload: bytes, body: bytes) -> None:
        """Queue the record of one scored request. Never raises, never blocks unless the queue is full."""
        stats = self.stats
        stats[RECEIVED] += 1
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
            stats[SAMPLED_OUT] += 1
            return
        try:
            line = self._line(request_id, status, seconds, payload, body)
        except Exception:  # noqa: BLE001 - a record that cannot be encoded must not fail the request
            with self._lock:  # the writer counts drops too
                stats[DROPPED] += 1
            return
        queue = self.queue
        if len(queue) >= self.queue_limit or self._bytes_in >= self._bytes_ceiling:
            self._overflow(line)
            return
        queue.append(line)
        self._bytes_in += len(line)
        if len(queue) >= _WAKE_AT and not self._wake.is_set() and self.refusing is None:
            self._wake.set()

    def csv(self, path: Path, header: bytes, rows: bytes, count: int = 1) -> None:
        """Queue ``count`` CSV rows (``rows``, encoded) for ``path``; ``header`` is written first when the file is new.

        Never raises, never blocks on the disk: beyond ``queue_bytes`` of waiting rows (the store refuses, or
        cannot keep up) the rows are dropped, counted in ``csv_dropped``.
        """
        size = len(header) + len(rows)
        with self._csv_lock:
            self.stats[CSV_RECEIVED] += count
            if self._csv_bytes + size > self.queue_bytes:
                self.stats[CSV_DROPPED] += count
                return
            self._csv_bytes += size
            self.csv_queue.append((path, header, rows, count))

    # -- writing ----------------------------------------------------------------------------

    def _line(self, request_id: bytes, status: int, seconds: float, payload: bytes, body: bytes) -> bytes:
        limit = self.max_body_bytes
        return orjson.dumps({"time": time.time(), "request_id": request_id.decode("latin-1"), "status": status,
                             "latency_ms": int(seconds * 1e6) / 1000,  # round() would cost more than the rest
                             "input": record_value(payload, limit), "output": record_value(body, limit)}) + b"\n"

    def _overflow(self, line: bytes) -> None:
        """The queue is full: the request writes its own record, unless the store refuses (then it is dropped)."""
        with self._lock:
            if self.refusing is None and self._append([line])[0]:
                self.stats[SPILLED] += 1
            else:
                self.stats[DROPPED] += 1

    def _append(self, lines: list[bytes]) -> tuple[int, int]:
        """Append whole records to the segment (the lock is held); return how many are on disk, and their bytes.

        A write the store refuses part-way keeps the records before the refusal and cuts the file back to the
        end of the last whole one: never a partial line. The records not written are the caller's to keep.
        """
        if (self._fd < 0 and not self._reopen()) or (self._cut is not None and not self._truncate()):
            return 0, 0
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        done, error = write_all(self._fd, data)
        if error is None:
            kept, size = len(lines), done
        else:
            kept, size = whole_prefix(lines, done)
            if size < done:  # a torn line: cut it off (if that fails too, before the next write)
                self._cut = self._size + size
                self._truncate()
        self._size += size
        self.stats[WRITTEN] += kept
        if error is not None:
            self._refused(error)
        elif self.refusing is not None:
            self._resumed()
        if self._size >= self.segment_bytes:
            self._close_segment()  # the next write begins the next segment
        return kept, size

    def _truncate(self) -> bool:
        """Cut the segment back to its last whole record (``_cut``); False when even that fails."""
        if self._cut is None:
            return True
        try:
            os.ftruncate(self._fd, self._cut)
        except OSError as exc:
            self._refused(exc)
            return False
        self._cut = None
        return True

    def _refused(self, exc: OSError) -> None:
        if self.refusing is None:
            self._dropped_at_refusal = self.stats[DROPPED]
            target = self._segment or self.folder / "records"
            say(f"cannot write {target}: {reason(exc)}. Records wait in memory (up to {self.queue_limit:,} "
                 f"records or {self.queue_bytes / 2**20:.0f} MiB; beyond that new ones are dropped, counted) and "
                 f"the write is retried every {self.flush_interval:g} s. Free space in {self.folder} to resume.")
        self.refusing = exc

    def _resumed(self) -> None:
        self.refusing = None
        dropped = int(self.stats[DROPPED] - self._dropped_at_refusal)
        say(f"writing records again to {self.folder}; {dropped:,} dropped while the store refused.")

    def _drain(self) -> None:
        queue = self.queue
        while queue:
            count = min(len(queue), _PROBE if self.refusing is not None else _BATCH)
            lines = [queue.popleft() for _ in range(count)]
            with self._lock:
                kept, size = self._append(lines)
            self._bytes_ceiling += size
            if kept < count:  # the store refused: the rest waits, in order, for the next try
                queue.extendleft(reversed(lines[kept:]))
                break
        while self.csv_queue and self._write_csv():
            pass
        if self.segment_seconds is not None and self._size and time.monotonic() - self._opened >= self.segment_seconds:
            with self._lock:
                if self._size:  # the next write begins the next segment
                    self._close_segment()
        self.stats[HEARTBEAT] = time.time()

    def _write_csv(self) -> bool:
        """Append the queued CSV chunks, file by file; what the store refuses waits for the next try.

        Returns:
            True when the store took every chunk tried (while it refuses, only a few are tried).
        """
        taken: list[tuple[Path, bytes, bytes, int]] = []
        queue = self.csv_queue
        for _ in range(min(len(queue), _PROBE) if self.csv_refusing is not None else len(queue)):
            taken.append(queue.popleft())
        grouped: dict[Path, list[tuple[Path, bytes, bytes, int]]] = {}
        for item in taken:
            grouped.setdefault(item[0], []).append(item)
        waiting: list[tuple[Path, bytes, bytes, int]] = []
        error: OSError | None = None
        for path, items in grouped.items():
            kept, failure = append_csv(path, items)
            waiting += items[kept:]
            error = error or failure
            size = sum(len(header) + len(rows) for _, header, rows, _ in items[:kept])
            with self._csv_lock:
                self._csv_bytes -= size
            self.stats[CSV_WRITTEN] += sum(count for *_, count in items[:kept])
        if waiting:
            queue.extendleft(reversed(waiting))
        if error is not None:
            if self.csv_refusing is None:
                self._csv_dropped_at_refusal = self.stats[CSV_DROPPED]
                say(f"cannot write ModelDataCollector rows: {reason(error)}. They wait in memory (up to "
                     f"{self.queue_bytes / 2**20:.0f} MiB; beyond that new ones are dropped, counted) and the write "
                     f"is retried every {self.flush_interval:g} s. Free space in {self.folder} to resume.")
            self.csv_refusing = error
        elif self.csv_refusing is not None:
            self.csv_refusing = None
            dropped = int(self.stats[CSV_DROPPED] - self._csv_dropped_at_refusal)
            say(f"writing ModelDataCollector rows again; {dropped:,} dropped while the store refused.")
        return error is None

    def _writer(self) -> None:
        while not self._closing:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self._drain()

    # -- segments ---------------------------------------------------------------------------

    def _open_segment(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self._sequence += 1
        segment = self.folder / "records" / f"{stamp}-{self.token}-{self._sequence:04d}.jsonl.part"
        self._fd = os.open(segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._segment = segment
        self._size = 0
        self._opened = time.monotonic()
        self._cut = None

    def _reopen(self) -> bool:
        """Begin a new segment (the lock is held); False, the store refusing, when it cannot be created."""
        try:
            self._open_segment()
        except OSError as exc:
            self._refused(exc)
            return False
        return True

    def _close_segment(self) -> None:
        if self._fd < 0 or self._segment is None:
            return
        if self._cut is not None:
            self._truncate()
        os.close(self._fd)
        self._fd = -1
        closed = self._segment.with_suffix("")  # drop ".part": complete and immutable from here on
        try:
            if self._size:
                os.replace(self._segment, closed)
            else:
                self._segment.unlink(missing_ok=True)
        except OSError as exc:
            say(f"cannot close the segment {self._segment}: {reason(exc)}; it stays as it is (whole records).")
        self._segment = None

    def close(self) -> None:
        """Write everything queued, close the segment and mark the counters closed. Idempotent.

        What the store still refuses at this point is dropped, counted (and said in the log).
        """
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._thread.join()
        self._drain()
        with self._lock:
            if self.queue:
                left = len(self.queue)
                self.stats[DROPPED] += left
                self._bytes_ceiling += sum(map(len, self.queue))
                self.queue.clear()
                why = f": {reason(self.refusing)}" if self.refusing is not None else ""
                say(f"{left:,} records could not be written at the stop{why}; dropped, counted.")
            self._close_segment()
        with self._csv_lock:
            if self.csv_queue:
                left = sum(count for *_, count in self.csv_queue)
                self.stats[CSV_DROPPED] += left
                self.csv_queue.clear()
                self._csv_bytes = 0
                why = f": {reason(self.csv_refusing)}" if self.csv_refusing is not None else ""
                say(f"{left:,} ModelDataCollector rows could not be written at the stop{why}; dropped, counted.")
        self.stats[CLOSED] = 1.0


def start(folder: Path, *, worker: int, sample_rate: float, flush_interval: float = DEFAULT_FLUSH_S,
          segment_seconds: float | None = None, metrics_dir: Path | None = None) -> Collector:
    """Start this worker's collector and make it :func:`current`; link its counters into ``metrics_dir``."""
    global _current
    collector = Collector(folder, worker=worker, sample_rate=sample_rate, flush_interval=flush_interval,
                          segment_seconds=segment_seconds)
    if metrics_dir is not None:
        with contextlib.suppress(OSError):
            os.symlink(collector.stats_path, metrics_dir / f"collect-{collector.token}.bin")
    _current = collector
    return collector



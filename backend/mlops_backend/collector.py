"""Data collection: what each scored request sent and got back, written off the request path.

The request path, once its answer is on the way, only encodes the record as one JSON line (a few
microseconds) and appends it to an in-memory queue; a background thread of the worker wakes every flush
interval (or sooner when a batch is ready) and appends the queued lines to the store with one write. (Encoding
in the writer thread instead was measured: same CPU, but the thread holding the GIL for milliseconds at a time
raised the p99 latency by half.) Nothing is dropped while the server is healthy: when the queue is full the
request itself writes its record (the queue spills to disk), and only a failed disk write drops a record, counted.
A graceful stop (SIGTERM) writes everything queued; a crash loses at most the last flush interval, and the
worker's counters, kept in a memory-mapped file beside the records, tell how many.

Layout of a collection folder (``--collect-dir``, env ``MLOPS_COLLECT_DIR``)::

    records/<start>-<token>.jsonl.part  the segment a worker writes now: one JSON object a line
    records/<start>-<token>.jsonl       closed segments, immutable: an edge agent forwards and removes these
    stats/<token>.bin                   a worker's counters (see STATS)
    modeldata/<workspace>/<service>/<model>/<version>/<designation>/<yyyy>/<mm>/<dd>/data.csv
                                        what entry scripts gave ``azureml.monitoring.ModelDataCollector``

A record: ``{"time": epoch seconds, "request_id", "status", "latency_ms", "input", "output"}``; input and
output are the JSON bodies (a string when a body is not JSON, ``{"truncated": true, "bytes": n}`` above the
size limit, null when there was none).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import random
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

#: The counters of a worker, in this order, as float64 in ``stats/<token>.bin``.
STATS = ("received", "sampled_out", "written", "spilled", "dropped", "closed", "started", "heartbeat",
         "flush_interval")
_RECEIVED, _SAMPLED_OUT, _WRITTEN, _SPILLED, _DROPPED, _CLOSED, _STARTED, _HEARTBEAT, _FLUSH = range(len(STATS))
DEFAULT_FLUSH_S = 0.5
DEFAULT_QUEUE_LIMIT = 20_000
DEFAULT_MAX_BODY = 256 * 1024
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
#: Records one write takes at most.
_BATCH = 4_096
#: Queued records that wake the writer before its interval.
_WAKE_AT = 2_000

_current: Collector | None = None


def current() -> Collector | None:
    """The collector of this worker process (None: collection is off)."""
    return _current


def _value(raw: bytes, limit: int) -> Any:
    """A body as it goes into a record: JSON as it came (checked, then copied), else a string, else its size."""
    if not raw:
        return None
    if len(raw) > limit:
        return {"truncated": True, "bytes": len(raw)}
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", errors="replace")
    # Valid JSON has line breaks only as whitespace (inside strings they are escaped): one record, one line.
    return orjson.Fragment(raw.replace(b"\n", b" ").replace(b"\r", b" "))


class Collector:
    """One worker's collector: a queue, a writer thread, a segment file and its counters.

    Args:
        folder: the collection folder (created if needed).
        worker: the worker's number, part of its token (files of several workers never clash).
        sample_rate: the share of requests recorded (1.0: every one), drawn at random per request.
        flush_interval: seconds between writes; the most a crash can lose.
        queue_limit: queued records beyond which requests write their own record (spill) instead.
        max_body_bytes: larger inputs or outputs are recorded as their size only.
        segment_bytes: a segment is closed and a new one begun past this size.
    """

    def __init__(self, folder: Path, *, worker: int = 0, sample_rate: float = 1.0,
                 flush_interval: float = DEFAULT_FLUSH_S, queue_limit: int = DEFAULT_QUEUE_LIMIT,
                 max_body_bytes: int = DEFAULT_MAX_BODY, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample rate {sample_rate} is out of range: use a share in (0, 1].")
        self.folder = folder
        self.token = f"w{worker}-{secrets.token_hex(4)}"
        self.sample_rate = sample_rate
        self.flush_interval = flush_interval
        self.queue_limit = queue_limit
        self.max_body_bytes = max_body_bytes
        self.segment_bytes = segment_bytes
        #: The request being scored now (what ModelDataCollector records as $aml_request_id; decoded there only).
        self.request_id = b""
        self.queue: deque[bytes] = deque()
        self.csv_queue: deque[tuple[Path, bytes, bytes]] = deque()
        (folder / "records").mkdir(parents=True, exist_ok=True)
        (folder / "stats").mkdir(exist_ok=True)
        self.stats_path = folder / "stats" / f"{self.token}.bin"
        self.stats = _counters(self.stats_path)
        self.stats[_STARTED] = self.stats[_HEARTBEAT] = time.time()
        self.stats[_FLUSH] = flush_interval
        self._lock = threading.Lock()
        self._fd = -1
        self._segment: Path | None = None
        self._size = 0
        self._sequence = 0
        self._open_segment()
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._writer, name="mlops-collector", daemon=True)
        self._thread.start()

    # -- the request path -------------------------------------------------------------------

    def record(self, request_id: bytes, status: int, seconds: float, payload: bytes, body: bytes) -> None:
        """Queue the record of one scored request. Never raises, never blocks unless the queue is full."""
        stats = self.stats
        stats[_RECEIVED] += 1
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
            stats[_SAMPLED_OUT] += 1
            return
        try:
            line = self._line(request_id, status, seconds, payload, body)
        except Exception:  # noqa: BLE001 - a record that cannot be encoded must not fail the request
            with self._lock:  # the writer counts drops too
                stats[_DROPPED] += 1
            return
        if len(self.queue) >= self.queue_limit:
            self._spill(line)
            return
        self.queue.append(line)
        if len(self.queue) >= _WAKE_AT and not self._wake.is_set():
            self._wake.set()

    def csv(self, path: Path, header: bytes, rows: bytes) -> None:
        """Queue CSV rows for ``path``; ``header`` is written first when the file is new."""
        self.csv_queue.append((path, header, rows))

    # -- writing ----------------------------------------------------------------------------

    def _line(self, request_id: bytes, status: int, seconds: float, payload: bytes, body: bytes) -> bytes:
        limit = self.max_body_bytes
        return orjson.dumps({"time": time.time(), "request_id": request_id.decode("latin-1"), "status": status,
                             "latency_ms": int(seconds * 1e6) / 1000,  # round() would cost more than the rest
                             "input": _value(payload, limit), "output": _value(body, limit)}) + b"\n"

    def _spill(self, line: bytes) -> None:
        with self._lock:
            if self._append(line, 1):
                self.stats[_SPILLED] += 1

    def _append(self, data: bytes, count: int) -> bool:
        """Write ``count`` records (the lock is held); count them written, or dropped when the disk refuses."""
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            self.stats[_DROPPED] += count
            return False
        self._size += len(data)
        self.stats[_WRITTEN] += count
        if self._size >= self.segment_bytes:
            self._close_segment()
            self._open_segment()
        return True

    def _drain(self) -> None:
        queue = self.queue
        while queue:
            count = min(len(queue), _BATCH)
            batch = b"".join([queue.popleft() for _ in range(count)])
            with self._lock:
                self._append(batch, count)
        if self.csv_queue:
            self._write_csv()
        self.stats[_HEARTBEAT] = time.time()

    def _write_csv(self) -> None:
        grouped: dict[Path, tuple[bytes, list[bytes]]] = {}
        while self.csv_queue:
            path, header, rows = self.csv_queue.popleft()
            grouped.setdefault(path, (header, []))[1].append(rows)
        for path, (header, chunks) in grouped.items():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # workers share the file: the header goes in exactly once
                    data = b"".join(chunks)
                    if os.fstat(fd).st_size == 0:
                        data = header + data
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
            except OSError as exc:
                print(f"mlops-serve: ModelDataCollector could not write {path}: {exc}", file=sys.stderr, flush=True)

    def _writer(self) -> None:
        while not self._closing:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self._drain()

    # -- segments ---------------------------------------------------------------------------

    def _open_segment(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self._sequence += 1
        self._segment = self.folder / "records" / f"{stamp}-{self.token}-{self._sequence:04d}.jsonl.part"
        self._fd = os.open(self._segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = 0

    def _close_segment(self) -> None:
        if self._fd < 0 or self._segment is None:
            return
        os.close(self._fd)
        self._fd = -1
        closed = self._segment.with_suffix("")  # drop ".part": complete and immutable from here on
        if self._size:
            os.replace(self._segment, closed)
        else:
            self._segment.unlink(missing_ok=True)
        self._segment = None

    def close(self) -> None:
        """Write everything queued, close the segment and mark the counters closed. Idempotent."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._thread.join()
        self._drain()
        with self._lock:
            self._close_segment()
        self.stats[_CLOSED] = 1.0


def _counters(path: Path) -> Any:
    """A float64 array of len(STATS) counters backed by ``path`` (written through, survives a crash)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, bytes(8 * len(STATS)))  # real blocks, not a hole: a full disk cannot fault the mapping
        mapped = mmap.mmap(fd, 8 * len(STATS))
    finally:
        os.close(fd)
    return memoryview(mapped).cast("d")


def start(folder: Path, *, worker: int, sample_rate: float, flush_interval: float = DEFAULT_FLUSH_S,
          metrics_dir: Path | None = None) -> Collector:
    """Start this worker's collector and make it :func:`current`; link its counters into ``metrics_dir``."""
    global _current
    collector = Collector(folder, worker=worker, sample_rate=sample_rate, flush_interval=flush_interval)
    if metrics_dir is not None:
        with contextlib.suppress(OSError):
            os.symlink(collector.stats_path, metrics_dir / f"collect-{collector.token}.bin")
    _current = collector
    return collector


def read_stats(path: Path) -> dict[str, float]:
    """One worker's counters, by name."""
    data = path.read_bytes()[: 8 * len(STATS)]
    if len(data) < 8 * len(STATS):
        return dict.fromkeys(STATS, 0.0)
    return dict(zip(STATS, memoryview(data).cast("d"), strict=True))


def segments(folder: Path, *, closed_only: bool = False) -> Iterator[Path]:
    """The record segments of a collection folder, oldest first (closed ones only: what may be forwarded)."""
    records = folder / "records"
    if not records.is_dir():
        return
    for path in sorted(records.iterdir()):
        if path.suffix == ".jsonl" or (not closed_only and path.name.endswith(".jsonl.part")):
            yield path


def forward(folder: Path, send: Callable[[Path], bool]) -> int:
    """Offer each closed segment to ``send``, oldest first; remove those it accepts. Stops at the first refusal
    (offline: try again later). Returns how many were forwarded."""
    done = 0
    for path in segments(folder, closed_only=True):
        if not send(path):
            break
        path.unlink(missing_ok=True)
        done += 1
    return done

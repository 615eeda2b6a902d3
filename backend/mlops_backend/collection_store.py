"""The collection folder on disk: its layout, whole-record appends, each worker's counters, reading it back.

Layout of a collection folder (``--collect-dir``, env ``MLOPS_COLLECT_DIR``)::

    records/<start>-<token>.jsonl.part  the segment a worker writes now: one JSON object a line
    records/<start>-<token>.jsonl       closed segments, immutable: an edge agent forwards and removes these
    stats/<token>.bin                   a worker's counters (see STATS)
    modeldata/<subscription>/<group>/<workspace>/<service>/<model>/<version>/<designation>/<yyyy>/<mm>/<dd>/data.csv
                                        what entry scripts gave ``azureml.monitoring.ModelDataCollector``
                                        (Azure's layout; the first three are ``default`` unless the
                                        script passes ``workspace="<subscription>/<group>/<name>"``)

A record: ``{"time": epoch seconds, "request_id", "status", "latency_ms", "input", "output"}``; input and
output are the JSON bodies (a string when a body is not JSON, ``{"truncated": true, "bytes": n}`` above the
size limit, null when there was none).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

#: The counters of a worker, in this order, as float64 in ``stats/<token>.bin`` (the ``csv_*`` ones count
#: ModelDataCollector rows; files written before they existed read them as 0).
STATS = ("received", "sampled_out", "written", "spilled", "dropped", "closed", "started", "heartbeat",
         "flush_interval", "csv_received", "csv_written", "csv_dropped")
(RECEIVED, SAMPLED_OUT, WRITTEN, SPILLED, DROPPED, CLOSED, STARTED, HEARTBEAT, FLUSH,
 CSV_RECEIVED, CSV_WRITTEN, CSV_DROPPED) = range(len(STATS))
#: Counters every stats file has (the first release's).
_FIRST_STATS = 9


def record_value(raw: bytes, limit: int) -> Any:
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


def say(message: str) -> None:
    """Log a line about data collection."""
    print(f"mlops-serve[{os.getpid()}]: data collection: {message}", file=sys.stderr, flush=True)


def write_all(fd: int, data: bytes) -> tuple[int, OSError | None]:
    """Write ``data`` at the end of ``fd``; return the bytes written and the error that stopped it (None: all)."""
    view = memoryview(data)
    done = 0
    try:
        while done < len(data):
            count = os.write(fd, view[done:])
            if count == 0:  # no progress and no error: treat it as the full disk it is
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done += count
    except OSError as exc:
        return done, exc
    return done, None


def whole_prefix(chunks: Sequence[bytes], done: int) -> tuple[int, int]:
    """How many of ``chunks``, written one after the other, the first ``done`` bytes hold whole, and their size."""
    size = 0
    for count, chunk in enumerate(chunks):
        if size + len(chunk) > done:
            return count, size
        size += len(chunk)
    return len(chunks), size


def reason(exc: OSError) -> str:
    """Why a write failed, for the log."""
    return f"{exc.strerror or exc} (errno {exc.errno})" if exc.errno else str(exc)


def append_csv(path: Path, items: list[tuple[Path, bytes, bytes, int]]) -> tuple[int, OSError | None]:
    """Append chunks of rows to one CSV file, whole or not at all each; return how many, and the refusal."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        return 0, exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # workers share the file: the header goes in exactly once
        start = os.fstat(fd).st_size
        chunks = [rows for _, _, rows, _ in items]
        header = items[0][1] if start == 0 else b""
        if header:
            chunks.insert(0, header)
        done, error = write_all(fd, b"".join(chunks))
        if error is None:
            return len(items), None
        whole, size = whole_prefix(chunks, done)
        if size < done:  # a torn row: cut it off (the lock is held: no other worker wrote after it)
            try:
                os.ftruncate(fd, start + size)
            except OSError as exc:
                say(f"cannot cut the partial row off {path} after a failed write: {reason(exc)}; its last "
                     "row is incomplete.")
        return max(0, whole - (1 if header else 0)), error
    except OSError as exc:
        return 0, exc
    finally:
        os.close(fd)


def counters(path: Path) -> Any:
    """A float64 array of len(STATS) counters backed by ``path`` (written through, survives a crash)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, bytes(8 * len(STATS)))  # real blocks, not a hole: a full disk cannot fault the mapping
        mapped = mmap.mmap(fd, 8 * len(STATS))
    finally:
        os.close(fd)
    return memoryview(mapped).cast("d")


def read_stats(path: Path) -> dict[str, float]:
    """One worker's counters, by name (those a file from an older release lacks read as 0)."""
    data = path.read_bytes()[: 8 * len(STATS)]
    if len(data) < 8 * _FIRST_STATS:
        return dict.fromkeys(STATS, 0.0)
    values = memoryview(data[: len(data) // 8 * 8]).cast("d").tolist()
    return dict(zip(STATS, values + [0.0] * (len(STATS) - len(values)), strict=True))


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

"""What each member answered, as JSON lines, for comparing members (shadow, canary, replay).

One record per answer: ``{"t", "id", "m", "kind", "status", "ms", "in", "out"}`` (``"error"`` when there was no
answer); ``in`` only on the record of the answer the client got (a shadow record has its request's id).
Bodies go in as the JSON they are (checked, not re-encoded), else as text, else as their size when larger
than :data:`MAX_BODY`. The request path only queues what a record needs (the bodies as they are); the tick
checks the bodies, encodes the records and writes them, off the request path. A file is closed at
:data:`FILE_BYTES` and the oldest files go once the folder holds :data:`FOLDER_BYTES`. A queue that grows past
:data:`MAX_BUFFER` bytes (the disk stalls) drops records and counts them.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from mlops_backend.collection_store import record_value, write_all

MAX_BODY = 64 * 1024
FILE_BYTES = 32 * 1024 * 1024
FOLDER_BYTES = 256 * 1024 * 1024
MAX_BUFFER = 16 * 1024 * 1024
#: What a queued record counts for besides its bodies.
_RECORD_BYTES = 200


#: A queued body: as it came, or its size when larger than MAX_BODY (None: no body).
Body = bytes | int | None


def _value(body: bytes | int) -> Any:
    return {"truncated": True, "bytes": body} if isinstance(body, int) else record_value(body, MAX_BODY)


class TrafficLog:
    """The traffic records of one router process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        #: Records queued, not yet encoded: (time, id, member, kind, status, seconds, payload, body, error); a
        #: body larger than MAX_BODY is queued as its size.
        self.queue: list[tuple[float, bytes, str, str, int, float, Body, Body, str | None]] = []
        #: What the queue holds, roughly (the bodies plus a record's own size each), bounded by MAX_BUFFER.
        self.queued_bytes = 0
        self.fd = -1
        self.size = 0
        #: Records taken (queued), written, lost to a failed write, and not taken (the queue was full).
        self.recorded = self.written = self.lost = self.dropped = 0
        self.error: str | None = None

    def record(self, request_id: bytes, member: str, kind: str, status: int, seconds: float,
               payload: bytes | None, body: bytes | None, error: str | None = None) -> None:
        """Queue one record (``payload``: the request body, given on the client's answer only)."""
        size = self.queued_bytes + _RECORD_BYTES
        kept: Body = payload
        if payload is not None:
            if len(payload) > MAX_BODY:
                kept = len(payload)
            else:
                size += len(payload)
        answer: Body = body
        if body is not None:
            if len(body) > MAX_BODY:
                answer = len(body)
            else:
                size += len(body)
        if size > MAX_BUFFER:
            self.dropped += 1
            return
        self.queued_bytes = size
        self.recorded += 1
        self.queue.append((time.time(), request_id, member, kind, status, seconds, kept, answer, error))

    def encode(self) -> bytes:
        """The queued records as JSON lines (the queue is emptied)."""
        queue, self.queue, self.queued_bytes = self.queue, [], 0
        lines = []
        dumps = orjson.dumps
        for t, request_id, member, kind, status, seconds, payload, body, error in queue:
            # int(x * 1000 + 0.5) / 1000 is round(x, 3) for x >= 0 (the nearest double prints as the short decimal),
            # at a tenth of its cost
            item: dict[str, Any] = {"t": int(t * 1000 + 0.5) / 1000, "id": request_id.decode("latin-1"), "m": member,
                                    "kind": kind, "status": status, "ms": int(seconds * 1e6 + 0.5) / 1000}
            if payload is not None:
                item["in"] = _value(payload)
            item["out"] = None if body is None else _value(body)
            if error is not None:
                item["error"] = error
            lines.append(dumps(item))
        lines.append(b"")
        return b"\n".join(lines)

    def flush(self) -> None:
        """Write what is queued (called from the tick and at the end)."""
        if not self.queue:
            return
        data = self.encode()
        try:
            if self.fd < 0 or self.size >= FILE_BYTES:
                self._next_file()
            done, error = write_all(self.fd, data)
        except OSError as exc:
            done, error = 0, exc
        self.size += done
        self.written += data.count(b"\n", 0, done)
        if error is not None:
            lost = data.count(b"\n", done)
            self.lost += lost
            message = f"cannot write traffic records in {self.folder}: {error.strerror or error}"
            if message != self.error:
                print(f"mlops-route[{os.getpid()}]: {message}; {lost} record(s) dropped", file=sys.stderr,
                      flush=True)
                self.error = message
        else:
            self.error = None

    def _next_file(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        name = f"traffic-{int(time.time() * 1000)}-{os.getpid()}.jsonl"
        self.fd = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = 0
        files = sorted(self.folder.glob("traffic-*.jsonl"), key=lambda p: int(p.name.split("-")[1]))
        total = sum(p.stat().st_size for p in files)
        for old in files[:-1]:
            if total <= FOLDER_BYTES:
                break
            total -= old.stat().st_size
            old.unlink(missing_ok=True)

    def close(self) -> None:
        """Write what is queued and close the file."""
        self.flush()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

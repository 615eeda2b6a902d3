"""What each member answered, as JSON lines, for comparing members (shadow, canary, replay).

One record per answer: ``{"t", "id", "m", "kind", "status", "ms", "in", "out"}`` (``"error"`` when there was no
answer); ``in`` only on the record of the answer the client got (a shadow record has its request's id).
Bodies go in as the JSON they are (checked, not re-encoded), else as text, else as their size when larger
than :data:`MAX_BODY`. Records are buffered and written from the router's tick, off the request path; a
file is closed at :data:`FILE_BYTES` and the oldest files go once the folder holds :data:`FOLDER_BYTES`.
A buffer that grows past :data:`MAX_BUFFER` (the disk stalls) drops records and counts them.
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


class TrafficLog:
    """The traffic records of one router process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.buffer = bytearray()
        self.fd = -1
        self.size = 0
        self.written = self.dropped = 0
        self.error: str | None = None

    def record(self, request_id: bytes, member: str, kind: str, status: int, seconds: float,
               payload: bytes | None, body: bytes | None, error: str | None = None) -> None:
        """Queue one record (``payload``: the request body, given on the client's answer only)."""
        if len(self.buffer) > MAX_BUFFER:
            self.dropped += 1
            return
        item: dict[str, Any] = {"t": round(time.time(), 3), "id": request_id.decode("latin-1"), "m": member,
                                "kind": kind, "status": status, "ms": round(seconds * 1000, 3)}
        if payload is not None:
            item["in"] = record_value(payload, MAX_BODY)
        item["out"] = None if body is None else record_value(body, MAX_BODY)
        if error is not None:
            item["error"] = error
        self.buffer += orjson.dumps(item)
        self.buffer += b"\n"

    def flush(self) -> None:
        """Write what is queued (called from the tick and at the end)."""
        if not self.buffer:
            return
        data = bytes(self.buffer)
        self.buffer.clear()
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
            self.dropped += lost
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

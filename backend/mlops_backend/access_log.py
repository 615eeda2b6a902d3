"""The access log of a worker: one JSON line per request on stdout, written in batches off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import orjson


class AccessLog:
    """JSON lines on stdout, buffered: written when 64 KiB pile up or half a second after the first."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self._timer: asyncio.TimerHandle | None = None

    def write(self, record: dict[str, Any]) -> None:
        self.buffer += orjson.dumps(record)
        self.buffer += b"\n"
        if len(self.buffer) > 65536:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(0.5, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.buffer:
            with contextlib.suppress(OSError):  # stdout closed: the log is lost, the service is not
                os.write(1, self.buffer)
            self.buffer.clear()

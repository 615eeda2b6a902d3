"""Liveness while ``run()`` holds the event loop: a thread that answers probes on new connections.

A worker calls a fast ``run()`` on its event loop (:mod:`mlops_backend.execution`); a call that
turns out slow holds the loop until it returns, and a liveness probe that times out gets the pod
restarted. While an inline call has held the loop for :data:`HOLD_S`, this thread accepts the
connections that arrive on the worker's listening socket, answers ``GET|HEAD /`` and
``GET|HEAD /ready`` itself (probes open a connection per probe), and hands every other
connection, with the bytes already read, back to the loop, which serves it as usual once the call
returns. It costs nothing per request: it looks at one attribute ten times a second. Probes it
answers are counted in ``/metrics``, not written to the access log.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from mlops_backend import __version__
from mlops_backend.execution import block_signals
from mlops_backend.metrics import ROUTE_INDEX

#: An inline run() holding the loop this long (seconds) brings the guard in.
HOLD_S = 0.1
_PROBES = {b"/": "health", b"/ready": "ready"}
_SERVER = f"mlops-serve/{__version__}".encode()


class LivenessGuard:
    """The guard of one worker (see the module's docstring)."""

    def __init__(self, sock: socket.socket, app: Any, loop: asyncio.AbstractEventLoop,
                 adopt: Callable[[socket.socket, bytes, float], None]) -> None:
        self.sock, self.app, self.loop, self.adopt = sock, app, loop, adopt
        #: A head longer than this without its end is handed back to the loop (which refuses it: 431).
        self.max_head_bytes: int = app.config.limits.max_header_bytes
        #: Probes this guard answered (for the log and the tests' curiosity).
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="mlops-liveness", daemon=True)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; connections it holds go back to the loop first."""
        self._stop.set()
        self._thread.join(2)

    def _watch(self) -> None:
        block_signals()
        executor = self.app.executor
        while not self._stop.wait(HOLD_S):
            since = executor.inline_since
            if since and time.perf_counter() - since >= HOLD_S:
                try:
                    self._serve_while_held(since)
                except Exception as exc:  # noqa: BLE001 - the guard must never take the worker down
                    print(f"mlops-serve: liveness guard: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    def _serve_while_held(self, since: float) -> None:
        executor = self.app.executor
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ)
        pending: dict[socket.socket, tuple[bytearray, float]] = {}
        try:
            while executor.inline_since == since and not self._stop.is_set():
                for key, _ in selector.select(0.02):
                    if key.fileobj is self.sock:
                        self._accept(selector, pending)
                        continue
                    conn: socket.socket = key.fileobj  # type: ignore[assignment]
                    buffer, accepted = pending[conn]
                    try:
                        data = conn.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        selector.unregister(conn)
                        del pending[conn]
                        conn.close()
                        continue
                    buffer += data
                    if b"\r\n\r\n" in buffer or len(buffer) > self.max_head_bytes:
                        selector.unregister(conn)
                        del pending[conn]
                        if not self._answer(conn, bytes(buffer), accepted):
                            self._hand_back(conn, bytes(buffer), accepted)
        finally:
            for conn, (buffer, accepted) in pending.items():
                self._hand_back(conn, bytes(buffer), accepted)
            selector.close()

    def _accept(self, selector: selectors.BaseSelector, pending: dict[socket.socket, tuple[bytearray, float]]) -> None:
        for _ in range(64):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            conn.setblocking(False)
            pending[conn] = (bytearray(), time.perf_counter())
            selector.register(conn, selectors.EVENT_READ)

    def _answer(self, conn: socket.socket, head: bytes, accepted: float) -> bool:
        """Answer a probe (True), or leave the request to the loop (False)."""
        line, _, rest = head.partition(b"\r\n")
        parts = line.split(b" ")
        if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
            return False
        route = _PROBES.get(parts[1].split(b"?", 1)[0])
        if route is None:
            return False
        request_id = b""
        for header in rest.split(b"\r\n"):
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"x-request-id":
                request_id = value.strip()
        if not request_id or len(request_id) > 100 or not request_id.isascii():
            request_id = str(uuid.uuid4()).encode()
        if route == "health":
            status, content_type, body = b"200 OK", b"text/html; charset=utf-8", b"Healthy"
        elif self.app.draining:
            status, content_type, body = b"503 Service Unavailable", b"application/json", b'{"status": "draining"}'
        else:
            status, content_type, body = b"200 OK", b"application/json", b'{"status": "ready"}'
        response = b"".join([
            b"HTTP/1.1 ", status, b"\r\ndate: ", formatdate(usegmt=True).encode(), b"\r\nx-ms-server-version: ",
            _SERVER, b"\r\nx-request-id: ", request_id, b"\r\nx-ms-request-id: ", request_id,
            b"\r\ncontent-type: ", content_type, b"\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body),
            b"" if parts[0] == b"HEAD" else body,
        ])
        try:
            conn.setblocking(True)
            conn.settimeout(1.0)
            conn.sendall(response)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.close()
        self.answered += 1
        metrics = self.app.metrics
        metrics.started()
        metrics.finished(ROUTE_INDEX[route], int(status[:3]), time.perf_counter() - accepted)
        return True

    def _hand_back(self, conn: socket.socket, data: bytes, accepted: float) -> None:
        try:
            self.loop.call_soon_threadsafe(self.adopt, conn, data, accepted)
        except RuntimeError:  # the loop is closed: the server has stopped
            with contextlib.suppress(OSError):
                conn.close()

"""Keep-alive HTTP/1.1 connections from the router to each member, parsed with httptools.

A member's idle connections are kept (up to a bound) and reused; one idle for longer than
:data:`IDLE_S` is closed first, before the member's own keep-alive timeout could close it under a request.
A request that meets a reused connection closed by the member before any byte of the answer came is sent
again on a new connection (the member never read it: its server answers a request it has begun, even while
it stops). A member that refuses the connection is :class:`Unreachable`: the caller may send elsewhere.
A request's deadline is checked by :meth:`Upstream.expire`, called from the router's tick (a timer per request
cost more than the rest of the exchange). :meth:`Upstream.send` is the router's fast path: no coroutine, no
future, the outcome handed to a callback; :meth:`Upstream.request` the general one.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import httptools

#: Seconds an idle connection is kept (the scoring server closes its own after 30 s).
IDLE_S = 15.0
#: Idle connections kept per member.
MAX_IDLE = 64
#: Largest answer read from a member (larger is a 502).
MAX_ANSWER_BYTES = 100 * 1024 * 1024
_HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"upgrade",
                         b"proxy-connection", b"te", b"trailer"))


class Unreachable(Exception):
    """The member could not be reached (refused, reset before answering): the request was not delivered."""


class UpstreamError(Exception):
    """The member was reached but gave no usable answer (timed out, closed mid-answer, too large)."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class Answer:
    """A member's answer: status, headers (hop-by-hop ones left out) and body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


#: Called with a request's answer, or with why there is none.
Done = Callable[[Answer | None, Exception | None], None]


class _Connection(asyncio.Protocol):
    """One connection to a member; one request at a time, whose ``done`` is called once with its outcome."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.done: Done | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.received = False  # a byte of the current answer came
        self.closed = False
        self.keep_alive = True
        self.idle_since = time.monotonic()
        #: When the answer in progress is overdue (time.monotonic()), and the timeout it came from.
        self.deadline = 0.0
        self.timeout = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the member sent an invalid HTTP answer ({exc})"))
        except UpstreamError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.done is not None:
            if self.received:
                self._finish(None, UpstreamError("the member closed the connection in the middle of its answer"))
            else:
                self._finish(None, Unreachable("the member closed the connection before answering"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name not in _HOP_BY_HOP:
            self.headers.append((name, value))
        elif name == b"connection" and value.lower() == b"close":
            self.keep_alive = False

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_ANSWER_BYTES:
            raise UpstreamError(f"the member's answer is larger than {MAX_ANSWER_BYTES} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = self.body
        answer = Answer(self.parser.get_status_code(), self.headers, body[0] if len(body) == 1 else b"".join(body))
        if not self.parser.should_keep_alive():
            self.keep_alive = False
        self._finish(answer, None)

    def _finish(self, answer: Answer | None, error: Exception | None) -> None:
        done, self.done = self.done, None
        if done is None:
            return
        if error is not None:
            self.keep_alive = False
        self.upstream.release(self)
        done(answer, error)

    def _fail(self, exc: Exception) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()
        self._finish(None, exc)

    def time_out(self, seconds: float) -> None:
        self._fail(UpstreamError(f"the member did not answer within {seconds:g} s", status=504))

    def send(self, data: bytes, done: Done) -> None:
        self.headers, self.body, self.size, self.received = [], [], 0, False
        self.done = done
        self.transport.write(data)


class Upstream:
    """The connections to one member (``host:port``)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: deque[_Connection] = deque()
        #: The connections waiting for an answer.
        self.busy: set[_Connection] = set()
        self.host_header = f"{host}:{port}".encode()

    def encode(self, method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> bytes:
        """A request to this member, as sent."""
        head = [method, b" ", target, b" HTTP/1.1\r\nhost: ", self.host_header,
                b"\r\ncontent-length: ", str(len(body)).encode(), b"\r\n"]
        for name, value in headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"\r\n", body]
        return b"".join(head)

    def send(self, data: bytes, timeout: float, done: Done) -> bool:
        """Send ``data`` (from :meth:`encode`) on an idle connection and have ``done`` called with the outcome,
        from the event loop; False, and nothing sent, when no connection is idle (then use :meth:`request`).

        ``done`` gets :class:`Unreachable` when the member had closed the idle connection (it never read the
        request: send it again with :meth:`request`), :class:`UpstreamError` when it gave no usable answer.
        """
        idle = self.idle
        while idle:
            connection = idle.pop()
            if not connection.closed:
                self._start(connection, data, timeout, done)
                return True
        return False

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError as exc:
            raise Unreachable(f"{self.host}:{self.port} refused the connection ({exc.strerror or exc})") from None
        return connection

    async def request(self, method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]], body: bytes,
                      timeout: float) -> Answer:
        """Send one request and return the answer.

        Raises:
            Unreachable: the request could not be delivered (the member refused or closed before answering).
            UpstreamError: delivered, no usable answer (``status`` 504 after ``timeout`` seconds, else 502).
        """
        return await self.resend(self.encode(method, target, headers, body), timeout)

    async def resend(self, data: bytes, timeout: float) -> Answer:
        """Send ``data`` (from :meth:`encode`) and return the answer, as :meth:`request` does."""
        idle = self.idle
        while idle and idle[-1].closed:
            idle.pop()
        reused = bool(idle)
        connection = idle.pop() if reused else await self._connect()
        try:
            return await self._exchange(connection, data, timeout)
        except Unreachable:
            if not reused:
                raise
            connection = await self._connect()  # the member had closed the idle connection: it never read this
            return await self._exchange(connection, data, timeout)

    def _exchange(self, connection: _Connection, data: bytes, timeout: float) -> asyncio.Future[Answer]:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

        def done(answer: Answer | None, error: Exception | None) -> None:
            if future.done():  # the caller was cancelled: the connection was released all the same
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(answer)  # type: ignore[arg-type]

        if connection.closed:
            future.set_exception(Unreachable("the member closed the idle connection"))
        else:
            self._start(connection, data, timeout, done)
        return future

    def _start(self, connection: _Connection, data: bytes, timeout: float, done: Done) -> None:
        connection.timeout = timeout
        connection.deadline = time.monotonic() + timeout
        self.busy.add(connection)
        connection.send(data, done)

    def release(self, connection: _Connection) -> None:
        """A connection's request is over: keep it for the next one when it can be, else close it."""
        self.busy.discard(connection)
        if connection.closed:
            return
        if connection.keep_alive and len(self.idle) < MAX_IDLE:
            connection.idle_since = time.monotonic()
            self.idle.append(connection)
        else:
            connection.transport.close()

    def expire(self, now: float | None = None) -> None:
        """Fail the requests whose answer is overdue (504; called from the router's tick)."""
        now = time.monotonic() if now is None else now
        for connection in [c for c in self.busy if now >= c.deadline]:
            connection.time_out(connection.timeout)

    def prune(self, now: float | None = None) -> None:
        """Close idle connections kept longer than :data:`IDLE_S` (called from the router's tick)."""
        now = time.monotonic() if now is None else now
        while self.idle and (self.idle[0].closed or now - self.idle[0].idle_since > IDLE_S):
            connection = self.idle.popleft()
            if not connection.closed:
                connection.transport.close()

    def close(self) -> None:
        """Close every idle connection."""
        while self.idle:
            connection = self.idle.popleft()
            if not connection.closed:
                connection.transport.close()

"""The HTTP protocol of a worker: uvicorn's httptools protocol, with bounds on what one client may hold.

httptools parses a request's head before the ASGI application sees it, buffering an unfinished
header whole, so the bounds act here, while bytes are read, not in the application:

- the head (request line and headers) is at most ``max_header_bytes`` and ``max_header_count``
  headers (431), its URL at most ``max_url_bytes`` (414); counted as bytes arrive, so a client
  that never ends its head holds at most the limit plus one read (256 KiB), never more;
- the head must be complete ``header_timeout_s`` after the connection opens or after the
  request's first byte, and a body must not stall for more than ``body_timeout_s`` (408);
- past ``max_connections`` open connections, a new one is answered 503 once its head is in
  (liveness and readiness probes excepted: they are answered, so that a flood does not get the
  pod restarted);
- an unparsable request gets a 400 with a JSON message, like every other error of the server.

Every refusal is ``{"message": ...}`` with ``connection: close``. Deadlines are checked by
:func:`expire`, called twice a second from the server's tick: arming one is a float store,
nothing per request on the fast path but a few comparisons.
"""

from __future__ import annotations

import select
import time
from collections.abc import Iterable
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mlops_backend import __version__
from mlops_backend.config import ConnectionLimits
from mlops_backend.metrics import WorkerMetrics

#: Seconds an idle keep-alive connection stays open once the server stops, for a request already on its way.
DRAIN_GRACE_S = 1.0
#: Paths a probe asks; answered even past the connection cap.
PROBE_PATHS = (b"/", b"/ready")
_HEAD, _BODY = 1, 2
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large", 414: b"URI Too Long",
            431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}
_SERVER = f"mlops-serve/{__version__}".encode()
_GONE = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR
_clock = time.perf_counter
#: uvicorn's own handling of a complete head (it starts the request), called without super()'s cost.
_start_request = HttpToolsProtocol.on_headers_complete


class Refused(Exception):
    """Raised from a parser callback once the request has been answered: stops the parser."""


def refusal(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 error response with a JSON ``{"message": ...}`` body that closes the connection."""
    body = orjson.dumps({"message": message})
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
        b"x-ms-server-version: ", _SERVER, b"\r\ncontent-type: application/json\r\n",
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body), body,
    ])


class ServingProtocol(HttpToolsProtocol):
    """One HTTP connection of a worker. Subclassed per server by :func:`protocol_class` with its limits."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    metrics: ClassVar[WorkerMetrics | None] = None
    #: A head this small breaks no bound: its URL is shorter and a header line takes 4 bytes at least.
    quick_bound: ClassVar[int] = min(limits.max_header_bytes, limits.max_url_bytes, 4 * limits.max_header_count)
    # Slots, not the instance dict: uvicorn's protocol has 28 attributes, and past 30 CPython gives up the
    # shared-key dict, which made every attribute access of the request path slower (3,500 instructions
    # a request, measured with callgrind).
    __slots__ = ("accepted_at", "deadline", "draining", "head_bytes", "over_capacity", "prefix", "quick", "waiting")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Bytes of the current request's head read so far (0 once the head is complete).
        self.head_bytes = 0
        #: What the connection waits for (_HEAD, _BODY or 0) and until when (time.monotonic()).
        self.waiting = 0
        self.deadline = 0.0
        self.over_capacity = False
        #: Bytes already read from the socket by someone else (the liveness guard), parsed first,
        #: and when that one accepted the connection (the first request's arrival).
        self.prefix = b""
        self.accepted_at = 0.0
        self.quick = self.quick_bound
        #: The server is stopping: the request in flight (or one already on its way) is the last.
        self.draining = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        """A client connected: its first head must come in time; past the cap, it will be answered 503."""
        super().connection_made(transport)
        self.waiting, self.deadline = _HEAD, time.monotonic() + self.limits.header_timeout_s
        if len(self.connections) > self.limits.max_connections:
            self.over_capacity = True
            self.quick = -1  # every request of this connection gets the full check
        if self.prefix:
            data, self.prefix = self.prefix, b""
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        """Feed the parser, counting the head's bytes; refuse what is too large (uvicorn's loop, plus bounds)."""
        keep_alive = self.timeout_keep_alive_task
        if keep_alive is not None:  # the connection is no longer idle
            keep_alive.cancel()
            self.timeout_keep_alive_task = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.scope is not self.scope:
            self.head_bytes += len(data)  # not a body: the start of a head, or more of it
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no protocol upgrades here: the request is served as plain HTTP, as uvicorn does
        except httptools.HttpParserError as exc:
            if not isinstance(exc.__context__, Refused):
                self.refuse(400, f"Invalid HTTP request: {exc}.")
            return
        if self.head_bytes:  # a head has begun and is not complete
            self._head_pending()
            return
        cycle = self.cycle  # any request of the connection (the first or a keep-alive one) whose body is incomplete
        if cycle is not None and cycle.more_body and not cycle.response_complete:
            self.waiting, self.deadline = _BODY, time.monotonic() + self.limits.body_timeout_s
        elif self.waiting:
            self.waiting = 0

    # -- parser callbacks -------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        """The head is in: check it against the bounds, stamp its arrival, and let uvicorn start the request."""
        size, self.head_bytes = self.head_bytes, 0
        if size > self.quick:  # else too small to break any bound: no need to look (the hot path)
            limits = self.limits
            if (size > limits.max_header_bytes or len(self.headers) > limits.max_header_count
                    or len(self.url) > limits.max_url_bytes or self.over_capacity):
                self._check_complete_head()
        accepted = self.accepted_at
        if accepted:
            self.accepted_at = 0.0
        self.start(accepted or _clock())
        if self.draining:  # served, with connection: close
            self.cycle.keep_alive = False

    def start(self, arrived: float) -> None:
        """Start the request whose head is in, as uvicorn does (a task running the application), stamped with
        its arrival (``time.perf_counter()``). A subclass may answer some requests its own way: it then sets
        ``cycle`` to an object with the attributes of uvicorn's cycle that this class and uvicorn's read
        (``scope``, ``more_body``, ``response_complete``, ``keep_alive``, ``disconnected``, ``message_event``)."""
        scope: Any = self.scope
        scope["mlops.arrived"] = arrived
        scope["mlops.connection"] = self
        _start_request(self)

    def shutdown(self) -> None:
        """The server stops: finish the request in flight, then close. An idle keep-alive connection is not
        closed at once (uvicorn's way), as its client may have sent the next request already: that one is
        answered with ``connection: close``, and a connection still idle after :data:`DRAIN_GRACE_S` is closed.
        (Closing it at once failed about one request per keep-alive client in every rolling update.)"""
        self.draining = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
            return
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
        self.timeout_keep_alive_task = self.loop.call_later(DRAIN_GRACE_S, self.timeout_keep_alive_handler)

    # -- bounds -----------------------------------------------------------------------------

    def refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with ``{"message": message}`` and close the connection."""
        self.waiting = 0
        if self.metrics is not None:
            self.metrics.rejected(status)
        if not self.transport.is_closing():
            self.transport.write(refusal(status, message))
            self.transport.close()

    def _refuse_now(self, status: int, message: str) -> None:
        self.refuse(status, message)
        raise Refused

    def _head_pending(self) -> None:
        limits = self.limits
        url = getattr(self, "url", b"")
        if len(url) > limits.max_url_bytes:
            self.refuse(414, f"The URL is longer than the limit of {limits.max_url_bytes} bytes.")
        elif self.head_bytes > limits.max_header_bytes:
            self.refuse(431, f"The request's headers are larger than the limit of {limits.max_header_bytes} bytes.")
        elif self.headers is not None and len(self.headers) > limits.max_header_count:
            self.refuse(431, f"The request has more than {limits.max_header_count} headers, the limit.")
        elif self.waiting != _HEAD:
            self.waiting, self.deadline = _HEAD, time.monotonic() + limits.header_timeout_s

    def _check_complete_head(self) -> None:
        limits = self.limits
        if len(self.url) > limits.max_url_bytes:
            self._refuse_now(414, f"The URL is {len(self.url)} bytes long, over the limit of "
                                  f"{limits.max_url_bytes} bytes.")
        if len(self.headers) > limits.max_header_count:
            self._refuse_now(431, f"The request has {len(self.headers)} headers, over the limit of "
                                  f"{limits.max_header_count}.")
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > limits.max_header_bytes:
            self._refuse_now(431, f"The request's headers are {size} bytes, over the limit of "
                                  f"{limits.max_header_bytes} bytes.")
        if self.over_capacity and httptools.parse_url(self.url).path not in PROBE_PATHS:
            self._refuse_now(503, f"The server is busy: this worker holds its limit of {limits.max_connections} "
                                  "connections. Retry later, or reuse a connection (keep-alive).")

    def expire(self, now: float) -> None:
        """Close the connection if what it waits for is overdue (408 when part of a request came)."""
        if not self.waiting or now < self.deadline or self.transport.is_closing():
            return
        cycle = self.cycle
        if self.waiting == _HEAD and cycle is not None and not cycle.response_complete:
            return  # the next head began while the previous request is still being answered: that one first
        limits = self.limits
        if self.waiting == _BODY:
            self.refuse(408, f"The request body stalled: no bytes came for {limits.body_timeout_s:g} s.")
        elif self.head_bytes:
            self.refuse(408, f"The request's headers did not arrive within {limits.header_timeout_s:g} s.")
        else:  # a connection that never sent anything: nothing to answer
            self.waiting = 0
            self.transport.close()

    # -- for the application ----------------------------------------------------------------

    def drop(self) -> None:
        """Close the connection of a request dropped unanswered (its client has gone): uvicorn then sends no 500
        and logs no error for the answer that never started."""
        cycle = self.cycle
        if cycle is not None:
            cycle.disconnected = True
        self.transport.close()

    def client_gone(self) -> bool:
        """True when the client has closed or reset its side (checked on the socket itself, now)."""
        if self.transport.is_closing():
            return True
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        poller = select.poll()
        poller.register(sock.fileno(), _GONE)
        return bool(poller.poll(0))


def protocol_class(limits: ConnectionLimits, metrics: WorkerMetrics | None) -> type[ServingProtocol]:
    """A :class:`ServingProtocol` subclass bound to one server's limits and metrics (uvicorn's ``http=``)."""
    quick = min(limits.max_header_bytes, limits.max_url_bytes, 4 * limits.max_header_count)
    return type("BoundServingProtocol", (ServingProtocol,),
                {"limits": limits, "metrics": metrics, "quick_bound": quick})


def expire(connections: Iterable[Any], now: float | None = None) -> None:
    """Close every connection whose head or body is overdue; called from the server's tick."""
    now = time.monotonic() if now is None else now
    for connection in list(connections):
        if isinstance(connection, ServingProtocol) and connection.waiting and now >= connection.deadline:
            connection.expire(now)

"""The router's HTTP protocol: the scoring server's (bounds, probes, draining), with a fast path for ``/score``.

A ``POST|GET /score`` of HTTP/1.1 is not made an ASGI request (a task, an event, the receive and send
coroutines and their messages cost as much as the rest of the routing together): its body is gathered here
and the whole request handed to :meth:`RouterApp.take <mlops_backend.router.app.RouterApp.take>` as an
:class:`Exchange`, whose answer is written in one piece. Every other request (the router's own routes, an
HTTP/1.0 client, ``Expect: 100-continue``) goes the ASGI way. The exchange stands in for uvicorn's cycle
while it lasts, so a pipelined request waits its turn (uvicorn queues it) and the server's bounds, draining
and the client-gone checks see it as they see any request.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any, ClassVar

from mlops_backend.config import ConnectionLimits
from mlops_backend.protocol import Refused, ServingProtocol

_STATUS_LINES = {int(s): b"HTTP/1.1 %d %s\r\n" % (s, s.phrase.encode()) for s in HTTPStatus}


class _NoEvent:
    """What uvicorn sets on a cycle's event when the connection is lost: nothing waits on an exchange."""

    __slots__ = ()

    def set(self) -> None:
        """Nothing to wake."""


_NO_EVENT = _NoEvent()


class Exchange:
    """One ``/score`` request on the fast path, from its head to its answer."""

    __slots__ = ("arrived", "body", "connection", "disconnected", "headers", "keep_alive", "method", "more_body",
                 "response_complete", "scope", "size")
    message_event = _NO_EVENT

    def __init__(self, connection: RouterProtocol, method: bytes, arrived: float) -> None:
        self.connection = connection
        self.scope = connection.scope
        #: The request's headers, names in lower case (as uvicorn gives them).
        self.headers: list[tuple[bytes, bytes]] = connection.headers
        self.method = method
        #: When the request's head was complete (``time.perf_counter()``).
        self.arrived = arrived
        self.body: list[bytes] = []
        self.size = 0
        self.more_body = True
        self.response_complete = False
        self.disconnected = False
        self.keep_alive = True

    @property
    def payload(self) -> bytes:
        """The request body."""
        body = self.body
        return body[0] if len(body) == 1 else b"".join(body)

    def reply(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Write the answer (``headers`` without framing: content length, date and connection are added)."""
        self.connection.answer(self, status, headers, body)


class RouterProtocol(ServingProtocol):
    """One client connection of the router. Subclassed by :func:`router_protocol_class` with its application."""

    #: Called with each exchange once its body is complete.
    take: ClassVar[staticmethod[[Exchange], None]]
    max_body_bytes: ClassVar[int] = 100 * 1024 * 1024
    __slots__ = ()

    def start(self, arrived: float) -> None:
        """A ``/score`` request goes the fast way when nothing of the connection is in flight, else uvicorn's."""
        cycle = self.cycle
        parser = self.parser
        if (self.url == b"/score" and (cycle is None or cycle.response_complete) and not self.expect_100_continue
                and parser.get_http_version() == "1.1"):
            method = parser.get_method()
            if method == b"POST" or method == b"GET":
                exchange = Exchange(self, method, arrived)
                exchange.keep_alive = parser.should_keep_alive()
                self.cycle = exchange  # type: ignore[assignment]
                return
        super().start(arrived)

    def on_body(self, body: bytes) -> None:
        """Gather a fast-path body (bounded); any other request's goes to uvicorn."""
        exchange: Any = self.cycle
        if type(exchange) is not Exchange:
            super().on_body(body)
            return
        exchange.size += len(body)
        if exchange.size > self.max_body_bytes:
            self.refuse(413, f"The request body is larger than the limit of {self.max_body_bytes} bytes.")
            exchange.response_complete = True
            raise Refused
        exchange.body.append(body)

    def on_message_complete(self) -> None:
        """A fast-path request is whole: hand it to the router's application."""
        exchange: Any = self.cycle
        if type(exchange) is not Exchange:
            super().on_message_complete()
            return
        exchange.more_body = False
        self.take(exchange)

    def answer(self, exchange: Exchange, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Write an exchange's answer in one piece, then serve what comes next on the connection."""
        if exchange.response_complete:
            return
        exchange.response_complete = True
        transport = self.transport
        if exchange.disconnected or transport.is_closing():
            return
        head = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        for name, value in headers:
            head += [name, b": ", value, b"\r\n"]
        keep_alive = exchange.keep_alive
        head += [b"content-length: ", str(len(body)).encode(),
                 b"\r\n\r\n" if keep_alive else b"\r\nconnection: close\r\n\r\n", body]
        transport.write(b"".join(head))
        if keep_alive:
            self.on_response_complete()
        else:
            transport.close()


def router_protocol_class(limits: ConnectionLimits, take: Callable[[Exchange], None],
                          max_body_bytes: int) -> type[RouterProtocol]:
    """A :class:`RouterProtocol` subclass bound to a router's limits and application (uvicorn's ``http=``)."""
    quick = min(limits.max_header_bytes, limits.max_url_bytes, 4 * limits.max_header_count)
    return type("BoundRouterProtocol", (RouterProtocol,),
                {"limits": limits, "metrics": None, "quick_bound": quick, "take": staticmethod(take),
                 "max_body_bytes": max_body_bytes})

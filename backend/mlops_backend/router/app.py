"""The router's ASGI application.

``POST|GET /score`` goes to one member, chosen by weight (or by the sticky header's value), and the member's
answer comes back as it was, with ``x-mlops-member`` saying who answered; a member that refuses the
connection is skipped for the next one with weight (the request was not delivered, so nothing runs twice).
A shadow copy, when the table has one, is sent once the client has its answer, off the request path and
bounded (:data:`MAX_SHADOWS` in flight; more are dropped and counted): a slow or failing shadow never
slows or fails a client. ``GET /`` (liveness), ``/ready``, ``/metrics`` and ``/endpoint`` (the table and the
counters, as JSON) are the router's own; ``GET /swagger.json`` is the heaviest member's.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from mlops_backend import __version__
from mlops_backend.execution import ClientGone
from mlops_backend.inputs import HTTPError, Receive, Scope, check_bearer, read_body
from mlops_backend.outputs import log_exception
from mlops_backend.router.protocol import Exchange
from mlops_backend.router.stats import RouterStats
from mlops_backend.router.table import Member, RouteTable
from mlops_backend.router.traffic import TrafficLog
from mlops_backend.router.upstream import Answer, Unreachable, Upstream, UpstreamError

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
#: What the router reads of a request's headers: request id, authorization, sticky value, content length, and
#: the headers passed on.
Inbound = tuple[bytes, bytes | None, bytes | None, int, list[tuple[bytes, bytes]]]

#: Shadow copies in flight at most; past it a copy is dropped (counted) rather than queued.
MAX_SHADOWS = 64
HEADER_LIMIT = 100
JSON_TYPE = b"application/json"
_SERVER = f"mlops-route/{__version__}".encode()
#: Request headers not passed to a member (the router sets its own framing, host and request id).
_NOT_FORWARDED = frozenset((b"host", b"content-length", b"connection", b"keep-alive", b"transfer-encoding",
                            b"upgrade", b"te", b"trailer", b"proxy-connection", b"x-request-id", b"authorization",
                            b"expect"))
#: Answer headers the router sets itself.
_NOT_RETURNED = frozenset((b"x-request-id", b"x-mlops-member", b"server", b"date"))


class RouterApp:
    """The ASGI application of a router process."""

    def __init__(self, table: RouteTable, *, traffic: TrafficLog | None = None, keys: tuple[str, ...] = (),
                 max_body_bytes: int = 100 * 1024 * 1024) -> None:
        self.table = table
        self.traffic = traffic
        self.stats = RouterStats()
        self.upstreams: dict[tuple[str, int], Upstream] = {}
        self.max_body_bytes = max_body_bytes
        self.draining = False
        self.shadows_in_flight = 0
        self.pending: set[asyncio.Task[None]] = set()
        self.set_keys(keys)
        # request ids in the form of a UUID 4: a random one's first 74 bits, then a counter from a random start
        # (unique in the process, random across processes; a fresh uuid4() per request cost ~3 us)
        self._id_prefix = str(uuid.uuid4())[:24]
        self._ids = itertools.count(int.from_bytes(os.urandom(6), "big"))

    def set_keys(self, keys: tuple[str, ...]) -> None:
        """The keys a client must send (none: no auth)."""
        self._keys = [f"Bearer {k}".encode() for k in keys]

    def _new_id(self) -> bytes:
        return f"{self._id_prefix}{next(self._ids) & 0xFFFFFFFFFFFF:012x}".encode()

    def upstream(self, member: Member) -> Upstream:
        """The connections to ``member``."""
        key = (member.host, member.port)
        found = self.upstreams.get(key)
        if found is None:
            found = self.upstreams[key] = Upstream(member.host, member.port)
        return found

    def expire(self) -> None:
        """Fail the requests whose member's answer is overdue (504; called from the tick)."""
        now = time.monotonic()
        for upstream in self.upstreams.values():
            if upstream.busy:
                upstream.expire(now)

    def prune(self) -> None:
        """Close idle connections kept too long, and those to addresses no member has any more."""
        wanted = {(m.host, m.port) for m in self.table.members}
        for key, upstream in list(self.upstreams.items()):
            if key in wanted:
                upstream.prune()
            elif not upstream.idle:
                del self.upstreams[key]
            else:
                upstream.close()

    # -- the request path -------------------------------------------------------------------

    def _inbound(self, headers: list[tuple[bytes, bytes]], sticky_name: bytes | None) -> Inbound:
        request_id = auth = sticky = None
        content_length = -1
        forwarded: list[tuple[bytes, bytes]] = []
        for name, value in headers:
            if name == b"x-request-id":
                request_id = value
            elif name == b"content-length":
                content_length = int(value) if value.isdigit() else -1
            elif name == b"authorization":
                auth = value
            elif name not in _NOT_FORWARDED:
                forwarded.append((name, value))
                if name == sticky_name:
                    sticky = value
        return request_id or self._new_id(), auth, sticky, content_length, forwarded

    # -- the fast path ----------------------------------------------------------------------

    def take(self, exchange: Exchange) -> None:
        """Serve a ``/score`` request the protocol took on its fast path: sent on an idle connection to the
        chosen member and answered from the callback, without a task (one is made only when a connection must
        be opened, or the member had closed the idle one)."""
        table = self.table
        request_id, auth, sticky, _, forwarded = self._inbound(exchange.headers, table.sticky_header)
        headers: list[tuple[bytes, bytes]] = [(b"server", _SERVER)]
        try:
            if len(request_id) > HEADER_LIMIT:
                raise HTTPError(431, f"x-request-id must not exceed {HEADER_LIMIT} characters")
            headers.append((b"x-request-id", request_id))
            if self._keys:
                self._check_auth(auth)
        except HTTPError as error:
            exchange.reply(*_error_answer(error, headers))
            return
        payload = exchange.payload if exchange.method == b"POST" else b""
        member = table.choose(sticky)
        upstream = self.upstream(member)
        data = upstream.encode(exchange.method, b"/score", self._member_headers(member, forwarded, request_id, auth),
                               payload)

        def done(answer: Answer | None, error: Exception | None) -> None:
            if answer is not None:
                self._answered(exchange, table, member, answer, headers, request_id, payload, forwarded)
            elif isinstance(error, Unreachable):  # the idle connection was closed: again, on a new one
                self._later(exchange, table, sticky, forwarded, payload, request_id, auth, headers)
            else:
                assert isinstance(error, UpstreamError)
                self._member_failed(exchange, table, member, error, headers)

        if not upstream.send(data, table.timeout_s, done):
            self._later(exchange, table, sticky, forwarded, payload, request_id, auth, headers)

    def _answered(self, exchange: Exchange, table: RouteTable, member: Member, answer: Answer,
                  headers: list[tuple[bytes, bytes]], request_id: bytes, payload: bytes,
                  forwarded: list[tuple[bytes, bytes]]) -> None:
        for name, value in answer.headers:
            if name not in _NOT_RETURNED:
                headers.append((name, value))
        headers.append((b"x-mlops-member", member.name.encode()))
        status, body = answer.status, answer.body
        exchange.reply(status, headers, body)
        self._after(table, member, exchange.method, b"/score", status, time.perf_counter() - exchange.arrived,
                    request_id, payload, body, forwarded)

    def _member_failed(self, exchange: Exchange, table: RouteTable, member: Member, error: UpstreamError,
                       headers: list[tuple[bytes, bytes]]) -> None:
        failure = HTTPError(error.status, f"Member {member.name!r} of endpoint {table.endpoint!r}: {error}.",
                            [(b"x-mlops-member", member.name.encode())])
        exchange.reply(*_error_answer(failure, headers))
        self.stats.add(member.name, "live", error.status, time.perf_counter() - exchange.arrived)

    def _later(self, exchange: Exchange, table: RouteTable, sticky: bytes | None,
               forwarded: list[tuple[bytes, bytes]], payload: bytes, request_id: bytes, auth: bytes | None,
               headers: list[tuple[bytes, bytes]]) -> None:
        task = asyncio.get_running_loop().create_task(
            self._take_slowly(exchange, table, sticky, forwarded, payload, request_id, auth, headers))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _take_slowly(self, exchange: Exchange, table: RouteTable, sticky: bytes | None,
                           forwarded: list[tuple[bytes, bytes]], payload: bytes, request_id: bytes,
                           auth: bytes | None, headers: list[tuple[bytes, bytes]]) -> None:
        try:
            member, answer = await self._forward(table, sticky, exchange.method.decode(), b"/score", forwarded,
                                                 payload, request_id, auth)
        except HTTPError as error:
            exchange.reply(*_error_answer(error, headers))
            return
        except Exception:  # noqa: BLE001 - a router bug must still answer, and be logged
            log_exception("unexpected router error")
            exchange.reply(*_error_answer(_INTERNAL, headers))
            return
        self._answered(exchange, table, member, answer, headers, request_id, payload, forwarded)

    # -- the ASGI path ----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        table = self.table
        path: str = scope["path"]
        method: str = scope["method"]
        request_id, auth, sticky, content_length, forwarded = self._inbound(scope["headers"], table.sticky_header)
        headers: list[tuple[bytes, bytes]] = [(b"server", _SERVER)]
        member: Member | None = None
        answer: Answer | None = None
        payload = b""
        target = _target(scope)
        try:
            if len(request_id) > HEADER_LIMIT:
                raise HTTPError(431, f"x-request-id must not exceed {HEADER_LIMIT} characters")
            headers.append((b"x-request-id", request_id))
            if path == "/score":
                if method not in ("POST", "GET"):
                    if method == "OPTIONS":
                        member, answer = await self._forward(table, None, method, target, forwarded, b"",
                                                             request_id, auth)
                    else:
                        raise HTTPError(405, "Method not allowed", [(b"allow", b"GET, POST, OPTIONS")])
                else:
                    if self._keys:
                        self._check_auth(auth)
                    if method == "POST":
                        payload = await read_body(receive, content_length, self.max_body_bytes)
                    member, answer = await self._forward(table, sticky, method, target, forwarded, payload,
                                                         request_id, auth)
                status, body = answer.status, answer.body
                for name, value in answer.headers:
                    if name not in _NOT_RETURNED:
                        headers.append((name, value))
                headers.append((b"x-mlops-member", member.name.encode()))
            else:
                status, body = await self._other(path, method, scope, headers, forwarded, request_id, auth)
        except HTTPError as error:
            status, _, body = _error_answer(error, headers)
        except ClientGone:
            connection = scope.get("mlops.connection")
            if connection is not None:
                connection.drop()
            return
        except Exception:  # noqa: BLE001 - a router bug must still answer, and be logged
            log_exception("unexpected router error")
            member = None
            status, _, body = _error_answer(_INTERNAL, headers)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if member is not None and path == "/score" and method != "OPTIONS":
            self._after(table, member, method.encode(), target, status, time.perf_counter() - started, request_id,
                        payload, body, forwarded)

    def _after(self, table: RouteTable, member: Member, method: bytes, target: bytes, status: int, elapsed: float,
               request_id: bytes, payload: bytes, body: bytes, forwarded: list[tuple[bytes, bytes]]) -> None:
        """Once the client has its answer: count it, record it, send the shadow copy."""
        self.stats.add(member.name, "live", status, elapsed)
        if self.traffic is not None and table.record:
            self.traffic.record(request_id, member.name, "live", status, elapsed,
                                payload if method == b"POST" else None, body)
        shadow = table.shadow
        # a request the shadow answered itself gets no copy
        if status < 500 and shadow is not None and shadow.name != member.name and table.shadows():
            self._shadow(table, shadow, method, target, forwarded, payload, request_id)

    async def _forward(self, table: RouteTable, sticky: bytes | None, method: str, target: bytes,
                       forwarded: list[tuple[bytes, bytes]], payload: bytes, request_id: bytes,
                       auth: bytes | None) -> tuple[Member, Answer]:
        """Send the request to the chosen member, or to the next one with weight when it is unreachable."""
        member = table.choose(sticky)
        tried: dict[str, str] = {}  # member -> why it could not be reached
        while True:
            try:
                answer = await self.upstream(member).request(
                    method.encode(), target, self._member_headers(member, forwarded, request_id, auth), payload,
                    table.timeout_s)
                return member, answer
            except Unreachable as exc:
                tried[member.name] = str(exc)
                others = [m for m in table.others(member) if m.name not in tried]
                if not others:
                    self.stats.add(member.name, "live", 0, 0.0)
                    raise HTTPError(502, f"No member of endpoint {table.endpoint!r} could be reached: "
                                         f"{'; '.join(f'{k}: {v}' for k, v in tried.items())}.") from None
                self.stats.failovers += 1
                member = others[0]
            except UpstreamError as exc:
                raise HTTPError(exc.status, f"Member {member.name!r} of endpoint {table.endpoint!r}: {exc}.",
                                [(b"x-mlops-member", member.name.encode())]) from None

    def _member_headers(self, member: Member, forwarded: list[tuple[bytes, bytes]], request_id: bytes,
                        auth: bytes | None) -> list[tuple[bytes, bytes]]:
        headers = [*forwarded, (b"x-request-id", request_id)]
        if member.authorization is not None:
            headers.append((b"authorization", member.authorization))
        elif auth is not None and not self._keys:  # no key of the router's own: the client's is the member's
            headers.append((b"authorization", auth))
        return headers

    def _shadow(self, table: RouteTable, shadow: Member, method: bytes, target: bytes,
                forwarded: list[tuple[bytes, bytes]], payload: bytes, request_id: bytes) -> None:
        if self.shadows_in_flight >= MAX_SHADOWS:
            self.stats.shadow_dropped += 1
            return
        self.shadows_in_flight += 1
        task = asyncio.get_running_loop().create_task(
            self._send_shadow(table, shadow, method, target, forwarded, payload, request_id))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _send_shadow(self, table: RouteTable, shadow: Member, method: bytes, target: bytes,
                           forwarded: list[tuple[bytes, bytes]], payload: bytes, request_id: bytes) -> None:
        started = time.perf_counter()
        status, body, error = 0, None, None
        try:
            answer = await self.upstream(shadow).request(
                method, target, self._member_headers(shadow, forwarded, request_id, None), payload,
                table.timeout_s)
            status, body = answer.status, answer.body
        except (Unreachable, UpstreamError) as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a shadow's failure is recorded, never raised
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self.shadows_in_flight -= 1
        elapsed = time.perf_counter() - started
        self.stats.add(shadow.name, "shadow", status, elapsed)
        if self.traffic is not None and table.record:
            self.traffic.record(request_id, shadow.name, "shadow", status, elapsed, None, body, error)

    def _check_auth(self, auth: bytes | None) -> None:
        check_bearer(auth, self._keys)

    # -- the router's own routes ------------------------------------------------------------

    async def _other(self, path: str, method: str, scope: Scope, headers: list[tuple[bytes, bytes]],
                     forwarded: list[tuple[bytes, bytes]], request_id: bytes, auth: bytes | None) -> tuple[int, bytes]:
        if path not in ("/", "/ready", "/metrics", "/endpoint", "/swagger.json"):
            raise HTTPError(404, f"No route {path!r}. Routes: GET /, GET|POST /score, GET /swagger.json, GET /ready, "
                                 "GET /metrics, GET /endpoint.")
        if method != "GET" and not (method == "HEAD" and path in ("/", "/ready")):
            raise HTTPError(405, "Method not allowed", [(b"allow", b"GET")])
        if path == "/":
            headers.append((b"content-type", b"text/html; charset=utf-8"))
            return 200, b"Healthy"
        if path == "/ready":
            headers.append((b"content-type", JSON_TYPE))
            if self.draining:
                return 503, b'{"status": "draining"}'
            return 200, orjson.dumps({"status": "ready", "generation": self.table.generation})
        if path == "/metrics":
            headers.append((b"content-type", b"text/plain; version=0.0.4; charset=utf-8"))
            return 200, self.stats.render(self.table.endpoint).encode()
        if path == "/endpoint":
            if self._keys:
                self._check_auth(auth)
            headers.append((b"content-type", JSON_TYPE))
            return 200, orjson.dumps({**self.table.describe(), **self.stats.summary(),
                                      "traffic": None if self.traffic is None else {
                                          "folder": str(self.traffic.folder), "recorded": self.traffic.recorded,
                                          "written": self.traffic.written, "lost": self.traffic.lost,
                                          "dropped": self.traffic.dropped}})
        heaviest = max(self.table.members, key=lambda m: m.weight)
        try:
            answer = await self.upstream(heaviest).request(
                b"GET", _target(scope), self._member_headers(heaviest, forwarded, request_id, auth), b"",
                self.table.timeout_s)
        except (Unreachable, UpstreamError) as exc:
            raise HTTPError(502, f"Member {heaviest.name!r} did not give its swagger.json: {exc}.") from None
        headers += [(n, v) for n, v in answer.headers if n not in _NOT_RETURNED]
        return answer.status, answer.body

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for the shadow copies in flight (at most ``timeout`` seconds), then close every connection."""
        if self.pending:
            await asyncio.wait(set(self.pending), timeout=timeout)
        for upstream in self.upstreams.values():
            upstream.close()


_INTERNAL = HTTPError(500, "An unexpected internal error occurred in the router. Check its log.")


def _error_answer(error: HTTPError, headers: list[tuple[bytes, bytes]]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The answer to a request the router refuses or cannot serve: ``{"message": ...}``."""
    headers += error.extra
    headers.append((b"content-type", JSON_TYPE))
    return error.status, headers, orjson.dumps({"message": error.message})


def _target(scope: Scope) -> bytes:
    path: str = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string") or b""
    target = path if isinstance(path, bytes) else path.encode()
    return target + b"?" + query if query else target

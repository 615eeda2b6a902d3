"""The scoring server's ASGI application: Azure ML's HTTP contract, on a lean request path.

Routes: ``GET /`` (liveness, "Healthy"), ``GET|POST|OPTIONS /score``, ``GET /swagger.json``
(Azure ML's document, as azmlinfsrv serves it), and ours: ``GET /ready``, ``GET /metrics`` and
``GET /swagger-mlops.json`` (the document of everything this server does). Errors are
``{"message": ...}`` with the status Azure ML's server gives. ``OPTIONS /score`` reaches a
``@rawhttp`` run(), as in azmlinfsrv (a CORS preflight, when CORS is on, is answered here). A response
object whose body is a generator is streamed (chunked), each chunk sent as the generator yields it.
A worker scores one request at a time, as Azure ML's sync workers do; :mod:`mlops_backend.execution`
decides when (a bounded queue: 503 "server busy" past it) and where (on the event loop while ``run()``
is fast, on a scoring thread once it is slow, so that liveness answers while ``run()`` works).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from mlops_backend import __version__
from mlops_backend.access_log import AccessLog
from mlops_backend.collector import Collector
from mlops_backend.config import ServeConfig
from mlops_backend.entry import EntryScript, InputMode
from mlops_backend.execution import Busy, ClientGone, Executor, block_signals
from mlops_backend.inputs import HTTPError, Receive, RunArguments, Scope, check_bearer, parse_query, read_body
from mlops_backend.keys import KeyFile
from mlops_backend.metrics import ROUTE_INDEX, WorkerMetrics, render
from mlops_backend.outputs import (
    FAILED,
    JSON_TYPE,
    NOT_FAILED,
    RUN_FAILED_MESSAGE,
    Answers,
    Streamed,
    is_streamed,
    log_exception,
)
from mlops_backend.swagger import Swagger, SwaggerError

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

HEADER_LIMIT = 100
#: The status recorded (never sent) for a request dropped because its client had gone.
CLIENT_GONE = 499
_HTML = b"text/html; charset=utf-8"  # what Azure ML's (Flask) server says for "Healthy" and OPTIONS
_SERVER = f"mlops-serve/{__version__}".encode()
#: Azure ML's (werkzeug's) text for a method a route does not take.
METHOD_NOT_ALLOWED = "The method is not allowed for the requested URL."


class ScoringApp:
    """The ASGI application of one worker."""

    def __init__(self, config: ServeConfig, script: EntryScript, metrics: WorkerMetrics,
                 collector: Collector | None = None) -> None:
        self.config = config
        self.collector = collector
        self.script = script
        self.metrics = metrics
        self.swagger = Swagger(config, script)
        self.access_log = AccessLog() if config.access_log else None
        self.draining = False
        self.executor = Executor(script.run, max_concurrent=config.max_concurrent_requests,
                                 max_wait_s=config.max_request_wait_ms / 1000,
                                 timeout_s=config.scoring_timeout_ms / 1000,
                                 before_run=self._before_run if collector is not None else None,
                                 keeps_place=is_streamed)
        self.key_file = KeyFile(config.auth_key_file, config.auth_keys) if config.auth_key_file else None
        self._keys = [f"Bearer {k}".encode() for k in config.auth_keys]
        self._cors = set(config.cors_origins)
        self.arguments = RunArguments(config, script)
        self.answers = Answers(config, script)
        #: OPTIONS /score reaches run() (a @rawhttp one), as in azmlinfsrv.
        self.options_to_run = script.mode is InputMode.RAW
        self._stream_pool: Any = None  # the thread that advances streamed bodies, made at the first one

    def refresh_keys(self) -> None:
        """Take up a rewritten key file (called once a second from the server's tick, off the request path)."""
        if self.key_file is not None and self.key_file.refresh():
            self._keys = [f"Bearer {k}".encode() for k in self.key_file.keys]

    def _before_run(self, request_id: Any) -> None:
        if self.collector is not None:  # what ModelDataCollector inside run() records as the request id
            self.collector.request_id = request_id

    # -- the request path -------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        self.metrics.started()
        path: str = scope["path"]
        method: str = scope["method"]
        request_id = client_id = legacy_id = auth = content_type = origin = trace_id = None
        content_length = -1
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                content_length = int(value) if value.isdigit() else -1
            elif name == b"authorization":
                auth = value
            elif name == b"x-ms-client-request-id":
                client_id = value
            elif name == b"x-ms-request-id":
                legacy_id = value
            elif name == b"origin":
                origin = value
            elif name == b"traceid":
                trace_id = value
        headers: list[tuple[bytes, bytes]] = [(b"x-ms-server-version", _SERVER)]
        route = ROUTE_INDEX["other"]
        status = 500
        body = payload = b""
        run_failed = False
        collector: Collector | None = None
        streamed: Streamed | None = None
        if request_id is None:
            request_id = str(uuid.uuid4()).encode()
        try:
            if len(request_id) > HEADER_LIMIT:
                raise HTTPError(431, f"x-request-id must not exceed {HEADER_LIMIT} characters")
            headers.append((b"x-request-id", request_id))
            if legacy_id is None:
                legacy_id = client_id or request_id
            elif client_id is None:
                client_id = legacy_id
            if len(legacy_id) > HEADER_LIMIT or (client_id is not None and len(client_id) > HEADER_LIMIT):
                raise HTTPError(431, f"x-ms-request-id and x-ms-client-request-id must not exceed "
                                     f"{HEADER_LIMIT} characters")
            headers.append((b"x-ms-request-id", legacy_id))
            if client_id is not None:
                headers.append((b"x-ms-client-request-id", client_id))
            if trace_id is not None:
                headers.append((b"traceid", trace_id))
            if origin is not None and self._cors and (origin.decode("latin-1") in self._cors or "*" in self._cors):
                headers.append((b"access-control-allow-origin", origin))
            if path == "/score":
                route = 0
                if method == "POST" or method == "GET" or (method == "OPTIONS" and self.options_to_run
                                                           and not self._preflight(scope)):
                    if self._keys:
                        self._check_auth(auth)
                    collector = self.collector  # from here on the request is recorded, whatever its answer
                    if method != "GET":
                        payload = await read_body(receive, content_length, self.config.max_body_bytes)
                    elif collector is not None:
                        payload = orjson.dumps(parse_query(scope["query_string"]))
                    kwargs = self.arguments.build(scope, method, payload, content_type)
                    executor = self.executor
                    try:
                        if executor.inline and not executor.admitted and not executor.queued:  # the fast path:
                            # run() on the loop now (Executor.can_run_inline, spelled out: no call, no hand-off)
                            outcome = executor.run_inline(kwargs, request_id, scope)
                            inline = True
                        else:
                            outcome = await executor.submit(kwargs, request_id, scope)
                            inline = False
                    except Busy as exc:
                        raise self._busy(exc) from None
                    mark = len(headers)
                    status, answered, run_failed = self.answers.answer(outcome, kwargs, headers)
                    if isinstance(answered, bytes):
                        body = answered
                    else:  # a streamed response: it keeps run()'s place until it is sent
                        streamed = answered
                        if inline:  # (from the scoring thread, the executor kept the place itself)
                            executor.hold()
                        status, body, run_failed = await self._stream(streamed, status, headers, mark, send,
                                                                      scope, collector is not None)
                        if status == CLIENT_GONE:
                            collector = None
                elif method == "OPTIONS":
                    status, body = 200, b""
                    headers.append((b"content-type", _HTML))
                    headers.append((b"x-ms-run-function-failed", NOT_FAILED))
                    if self._cors:
                        headers += [(b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                                    (b"access-control-allow-headers", b"*")]
                else:
                    raise HTTPError(405, METHOD_NOT_ALLOWED, [(b"allow", b"GET, POST, OPTIONS")])
            else:
                route = ROUTE_INDEX[_ROUTE_NAMES.get(path, "other")]
                status, body = self._other(path, method, scope, headers)
        except HTTPError as error:
            status = error.status
            body = orjson.dumps({"message": error.message})
            headers += error.extra
            if route == 0:  # every /score answer says how long run() took: here, it did not run
                headers.append((b"x-ms-run-fn-exec-ms", b"0.000"))
            headers.append((b"content-type", JSON_TYPE))
            headers.append((b"x-ms-run-function-failed", NOT_FAILED))
        except ClientGone:  # nobody to answer: the request is dropped, not run, not recorded
            status, collector = CLIENT_GONE, None
            connection = scope.get("mlops.connection")
            if connection is not None:
                connection.drop()
        except Exception:  # noqa: BLE001 - a server bug must still answer, and be logged
            log_exception("unexpected server error")
            status = 500
            body = b'{"message": "An unexpected internal error occurred. Check the logs for more info."}'
            headers.append((b"content-type", JSON_TYPE))
        # Counted before the answer leaves: a client that has its answer and asks /metrics (of any worker) finds it.
        # A client gone before the answer still ends the request's count.
        elapsed = time.perf_counter() - started
        self.metrics.finished(route, status, elapsed, run_failed=run_failed)
        try:
            if status != CLIENT_GONE and streamed is None:
                headers.append((b"content-length", str(len(body)).encode()))
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
        finally:
            if collector is not None:
                collector.record(request_id, status, elapsed, payload, body)
        if self.access_log is not None:
            self.access_log.write({"time": round(time.time(), 3), "request_id": request_id.decode("latin-1"),
                                   "method": method, "path": path, "status": status,
                                   "ms": round(elapsed * 1000, 3), "bytes": len(body)})

    # -- streamed answers -------------------------------------------------------------------

    @staticmethod
    def _preflight(scope: Scope) -> bool:
        """A CORS preflight (answered by the server when CORS is on, never by run())."""
        return any(name == b"access-control-request-method" for name, _ in scope["headers"])

    async def _stream(self, streamed: Streamed, status: int, headers: list[tuple[bytes, bytes]], mark: int,
                      send: Send, scope: Scope, collect: bool) -> tuple[int, bytes, bool]:
        """Send a streamed answer, each chunk as the script's generator yields it (chunked transfer encoding).

        The generator is advanced on a helper thread, the event loop staying free (probes, metrics); the request
        keeps run()'s place meanwhile, so no other run() starts. A generator that fails before its first chunk
        gets the 500 of a failed run(); one that fails later cuts the connection (the status is sent already),
        as a WSGI server does. Returns the status, the body sent (for the collector, when ``collect``; bounded by
        ``--max-body-bytes``) and whether run() failed.
        """
        loop = asyncio.get_running_loop()
        if self._stream_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._stream_pool = ThreadPoolExecutor(1, thread_name_prefix="mlops-stream", initializer=block_signals)
        pool, end = self._stream_pool, _END
        chunk: Any
        connection = scope.get("mlops.connection")
        kept: list[bytes] = []
        size = 0
        try:
            chunks = streamed.chunks()
            try:
                chunk = await loop.run_in_executor(pool, next, chunks, end)
            except Exception:  # noqa: BLE001 - the script's generator may raise anything
                log_exception("the generator of run()'s streamed response raised before its first chunk")
                del headers[mark + 1:]  # the script's headers go; the request ids and run()'s time stay
                headers += [(b"content-type", JSON_TYPE), (b"x-ms-run-function-failed", FAILED)]
                body = orjson.dumps({"message": RUN_FAILED_MESSAGE})
                headers.append((b"content-length", str(len(body)).encode()))
                await send({"type": "http.response.start", "status": 500, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return 500, body, True
            await send({"type": "http.response.start", "status": status, "headers": headers})
            limit = self.config.max_body_bytes
            while chunk is not end:
                data = chunk if isinstance(chunk, bytes) else chunk.encode() if isinstance(chunk, str) else (
                    bytes(chunk))
                if collect and size + len(data) <= limit:
                    kept.append(data)
                size += len(data)
                await send({"type": "http.response.body", "body": data, "more_body": True})
                if connection is not None and connection.transport.is_closing():
                    return CLIENT_GONE, b"", False  # the client left: the rest is not made
                try:
                    chunk = await loop.run_in_executor(pool, next, chunks, end)
                except Exception:  # noqa: BLE001
                    log_exception("the generator of run()'s streamed response raised after its first chunk; the "
                                  "connection is closed, its answer incomplete")
                    if connection is not None:
                        connection.drop()
                    return status, b"".join(kept), True
            await send({"type": "http.response.body", "body": b""})
            return status, b"".join(kept), status >= 500
        finally:
            try:
                await loop.run_in_executor(pool, streamed.close)
            except Exception:  # noqa: BLE001 - a failing close() must not keep the place taken
                log_exception("closing run()'s streamed response failed")
            self.executor.release()

    def close(self) -> None:
        """Stop the helper threads (after the server has stopped)."""
        self.executor.close()
        if self._stream_pool is not None:
            self._stream_pool.shutdown(wait=False, cancel_futures=True)

    def _check_auth(self, auth: bytes | None) -> None:
        check_bearer(auth, self._keys)

    def _busy(self, exc: Busy) -> HTTPError:
        return HTTPError(503, f"Server busy: this worker is scoring its limit of {exc.places} request"
                              f"{'s' if exc.places > 1 else ''} (--max-concurrent-requests) and this one waited "
                              f"{exc.waited_s * 1000:.0f} ms (--max-request-wait-ms {self.config.max_request_wait_ms}) "
                              "without its turn. Retry later.", [(b"retry-after", b"1")])

    # -- the other routes -------------------------------------------------------------------

    def _other(self, path: str, method: str, scope: Scope, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
        if path not in _ROUTE_NAMES:
            raise HTTPError(404, f"No route {path!r}. Routes: GET /, GET|POST /score, GET /swagger.json, "
                                 "GET /swagger-mlops.json, GET /ready, GET /metrics.")
        if method != "GET" and not (method == "HEAD" and path in ("/", "/ready")):
            raise HTTPError(405, METHOD_NOT_ALLOWED, [(b"allow", b"GET")])
        if path == "/":
            headers.append((b"content-type", _HTML))
            return 200, b"Healthy"
        if path == "/ready":
            headers.append((b"content-type", JSON_TYPE))
            if self.draining:
                return 503, b'{"status": "draining"}'
            return 200, b'{"status": "ready"}'
        if path == "/metrics":
            headers.append((b"content-type", b"text/plain; version=0.0.4; charset=utf-8"))
            return 200, render(self.metrics.path.parent).encode()
        version = dict(parse_qsl(scope["query_string"].decode("latin-1"))).get("version")
        try:
            document = self.swagger.get(version, own=path == "/swagger-mlops.json")
        except SwaggerError as exc:
            raise HTTPError(404, str(exc)) from None
        headers.append((b"content-type", JSON_TYPE))
        headers.append((b"x-ms-run-function-failed", NOT_FAILED))
        return 200, document

_ROUTE_NAMES = {"/": "health", "/ready": "ready", "/metrics": "metrics", "/swagger.json": "swagger",
               "/swagger-mlops.json": "swagger"}
_END = object()  # the end of a streamed body

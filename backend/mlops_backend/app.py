"""The scoring server's ASGI application: Azure ML's HTTP contract, on a lean request path.

Routes: ``GET /`` (liveness, "Healthy"), ``GET|POST|OPTIONS /score``, ``GET /swagger.json``,
and ours: ``GET /ready`` and ``GET /metrics``. Errors are ``{"message": ...}`` with the status
Azure ML's server gives. A worker scores one request at a time, as Azure ML's sync workers do;
:mod:`mlops_backend.execution` decides when (a bounded queue: 503 "server busy" past it) and
where (on the event loop while ``run()`` is fast, on a scoring thread once it is slow, so that
liveness answers while ``run()`` works).
"""

from __future__ import annotations

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
from mlops_backend.entry import EntryScript
from mlops_backend.execution import Busy, ClientGone, Executor
from mlops_backend.inputs import HTTPError, Receive, RunArguments, Scope, check_bearer, parse_query, read_body
from mlops_backend.keys import KeyFile
from mlops_backend.metrics import ROUTE_INDEX, WorkerMetrics, render
from mlops_backend.outputs import JSON_TYPE, NOT_FAILED, Answers, log_exception
from mlops_backend.swagger import Swagger, SwaggerError

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

HEADER_LIMIT = 100
#: The status recorded (never sent) for a request dropped because its client had gone.
CLIENT_GONE = 499
_HTML = b"text/html; charset=utf-8"  # what Azure ML's (Flask) server says for "Healthy" and OPTIONS
_SERVER = f"mlops-serve/{__version__}".encode()


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
                                 before_run=self._before_run if collector is not None else None)
        self.key_file = KeyFile(config.auth_key_file, config.auth_keys) if config.auth_key_file else None
        self._keys = [f"Bearer {k}".encode() for k in config.auth_keys]
        self._cors = set(config.cors_origins)
        self.arguments = RunArguments(config, script)
        self.answers = Answers(config, script)

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
                if method == "POST" or method == "GET":
                    if self._keys:
                        self._check_auth(auth)
                    collector = self.collector  # from here on the request is recorded, whatever its answer
                    if method == "POST":
                        payload = await read_body(receive, content_length, self.config.max_body_bytes)
                    elif collector is not None:
                        payload = orjson.dumps(parse_query(scope["query_string"]))
                    kwargs = self.arguments.build(scope, method, payload, content_type)
                    executor = self.executor
                    try:
                        if executor.inline and not executor.admitted and not executor.queued:  # the fast path:
                            # run() on the loop now (Executor.can_run_inline, spelled out: no call, no hand-off)
                            outcome = executor.run_inline(kwargs, request_id, scope)
                        else:
                            outcome = await executor.submit(kwargs, request_id, scope)
                    except Busy as exc:
                        raise self._busy(exc) from None
                    status, body, run_failed = self.answers.answer(outcome, kwargs, headers)
                elif method == "OPTIONS":
                    status, body = 200, b""
                    headers.append((b"content-type", _HTML))
                    headers.append((b"x-ms-run-function-failed", NOT_FAILED))
                    if self._cors:
                        headers += [(b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                                    (b"access-control-allow-headers", b"*")]
                else:
                    raise HTTPError(405, "Method not allowed", [(b"allow", b"GET, POST, OPTIONS")])
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
        headers.append((b"content-length", str(len(body)).encode()))
        try:
            if status != CLIENT_GONE:
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
        finally:  # a client gone before the answer still ends the request's count
            elapsed = time.perf_counter() - started
            self.metrics.finished(route, status, elapsed, run_failed=run_failed)
            if collector is not None:
                collector.record(request_id, status, elapsed, payload, body)
        if self.access_log is not None:
            self.access_log.write({"time": round(time.time(), 3), "request_id": request_id.decode("latin-1"),
                                   "method": method, "path": path, "status": status,
                                   "ms": round(elapsed * 1000, 3), "bytes": len(body)})

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
                                 "GET /ready, GET /metrics.")
        if method != "GET" and not (method == "HEAD" and path in ("/", "/ready")):
            raise HTTPError(405, "Method not allowed", [(b"allow", b"GET")])
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
            document = self.swagger.get(version)
        except SwaggerError as exc:
            raise HTTPError(404, str(exc)) from None
        headers.append((b"content-type", JSON_TYPE))
        headers.append((b"x-ms-run-function-failed", NOT_FAILED))
        return 200, document

_ROUTE_NAMES = {"/": "health", "/ready": "ready", "/metrics": "metrics", "/swagger.json": "swagger"}

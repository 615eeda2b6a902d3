"""The scoring server's ASGI application: Azure ML's HTTP contract, on a lean request path.

Routes: ``GET /`` (liveness, "Healthy"), ``GET|POST|OPTIONS /score``, ``GET /swagger.json``,
and ours: ``GET /ready`` and ``GET /metrics``. Errors are ``{"message": ...}`` with the status
Azure ML's server gives. A worker scores one request at a time, as Azure ML's sync workers do;
:mod:`mlops_backend.execution` decides when (a bounded queue: 503 "server busy" past it) and
where (on the event loop while ``run()`` is fast, on a scoring thread once it is slow, so that
liveness answers while ``run()`` works).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import io
import json
import os
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from mlops_backend import __version__
from mlops_backend.collector import Collector
from mlops_backend.config import ServeConfig
from mlops_backend.entry import EntryScript, InputMode, input_conversion_failure
from mlops_backend.execution import Busy, ClientGone, Executor, Outcome
from mlops_backend.keys import KeyFile
from mlops_backend.metrics import ROUTE_INDEX, WorkerMetrics, render
from mlops_backend.swagger import Swagger, SwaggerError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

HEADER_LIMIT = 100
#: How deep a JSON body or query value may nest (orjson's own limit; deeper gets 400).
MAX_JSON_DEPTH = 1024
#: The status recorded (never sent) for a request dropped because its client had gone.
CLIENT_GONE = 499
RUN_FAILED_MESSAGE = "An unexpected error occurred in scoring script. Check the logs for more info."
_JSON = b"application/json"
_HTML = b"text/html; charset=utf-8"  # what Azure ML's (Flask) server says for "Healthy" and OPTIONS
_SERVER = f"mlops-serve/{__version__}".encode()
_FALSE = b"False"
_TRUE = b"True"


class HTTPError(Exception):
    """Answer the request with this status and ``{"message": ...}``."""

    def __init__(self, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or []


def _json_default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, pandas objects
    if callable(tolist):
        return tolist()
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def encode_json(value: Any) -> bytes:
    """JSON-encode a run() result: orjson (numpy-aware), falling back to the standard library."""
    try:
        return orjson.dumps(value, default=_json_default,
                            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(value, default=_json_default).encode()


class JSONTooDeep(Exception):
    """A JSON document nests deeper than it can be decoded (the message says how deep it may go)."""

    def __init__(self, message: str = f"JSON nested deeper than {MAX_JSON_DEPTH} levels, the limit") -> None:
        super().__init__(message)


#: When Python's own decoder (query values; bodies with NaN or Infinity) runs out of stack, before orjson's limit.
_TOO_DEEP_FOR_PYTHON = "JSON nested too deeply to decode (about 900 levels at most here)"


def decode_json(body: bytes | str) -> Any:
    """Decode JSON as Python's json module would (orjson first; stdlib for NaN, huge ints).

    Raises:
        JSONTooDeep: the document nests deeper than :data:`MAX_JSON_DEPTH` levels.
        ValueError: it is not JSON.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise JSONTooDeep from None
    try:
        return json.loads(body)
    except RecursionError:  # stdlib's limit is the interpreter's stack, below orjson's
        raise JSONTooDeep(_TOO_DEEP_FOR_PYTHON) from None


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:  # the URL limit allows a few thousand levels: more than the stack takes
        raise HTTPError(400, f"A query parameter's value is {_TOO_DEEP_FOR_PYTHON}.") from None
    except ValueError:
        return text


def parse_query(query: bytes) -> dict[str, Any]:
    """Query parameters as Azure ML reads them: values JSON-decoded when they can be; repeats make lists."""
    found: dict[str, list[Any]] = {}
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        found.setdefault(key, []).append(_parse_value(value))
    return {k: v[0] if len(v) == 1 else v for k, v in found.items()}


def _title(name: bytes) -> str:
    return "-".join(part.capitalize() for part in name.decode("latin-1").split("-"))


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
        self._headers_for_run = script.wants_headers or script.mode is InputMode.RAW

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
                        payload = await self._read_body(receive, content_length)
                    elif collector is not None:
                        payload = orjson.dumps(parse_query(scope["query_string"]))
                    kwargs = self._arguments(scope, method, payload, content_type)
                    executor = self.executor
                    try:
                        if executor.inline and not executor.admitted and not executor.queued:  # the fast path:
                            # run() on the loop now (Executor.can_run_inline, spelled out: no call, no hand-off)
                            outcome = executor.run_inline(kwargs, request_id, scope)
                        else:
                            outcome = await executor.submit(kwargs, request_id, scope)
                    except Busy as exc:
                        raise self._busy(exc) from None
                    status, body, run_failed = self._answer(outcome, kwargs, headers)
                elif method == "OPTIONS":
                    status, body = 200, b""
                    headers.append((b"content-type", _HTML))
                    headers.append((b"x-ms-run-function-failed", _FALSE))
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
            headers.append((b"content-type", _JSON))
            headers.append((b"x-ms-run-function-failed", _FALSE))
        except ClientGone:  # nobody to answer: the request is dropped, not run, not recorded
            status, collector = CLIENT_GONE, None
            connection = scope.get("mlops.connection")
            if connection is not None:
                connection.drop()
        except Exception:  # noqa: BLE001 - a server bug must still answer, and be logged
            self._log_exception("unexpected server error")
            status = 500
            body = b'{"message": "An unexpected internal error occurred. Check the logs for more info."}'
            headers.append((b"content-type", _JSON))
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
        if auth is not None:
            for key in self._keys:
                if hmac.compare_digest(auth, key):
                    return
        raise HTTPError(401, "Missing or invalid key: send the header 'Authorization: Bearer <key>'.",
                        [(b"www-authenticate", b"Bearer")])

    async def _read_body(self, receive: Receive, content_length: int) -> bytes:
        limit = self.config.max_body_bytes
        if content_length > limit:
            raise HTTPError(413, f"The request body ({content_length} bytes) is larger than the limit of "
                                 f"{limit} bytes.")
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if message["type"] != "http.request":
                raise ClientGone  # gone (or timed out) before its body was complete: never scored
            if len(body) > limit:
                raise HTTPError(413, f"The request body is larger than the limit of {limit} bytes.")
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] != "http.request":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"The request body is larger than the limit of {limit} bytes.")
            chunks.append(chunk)
        return b"".join(chunks)

    def _arguments(self, scope: Scope, method: str, payload: bytes, content_type: bytes | None) -> dict[str, Any]:
        """run()'s keyword arguments for this request, as its input mode wants them."""
        script = self.script
        mode = script.mode
        if mode is InputMode.STRING:
            if method == "POST":
                try:
                    kwargs: dict[str, Any] = {script.input_name: payload.decode("utf-8")}
                except UnicodeDecodeError as exc:
                    raise HTTPError(400, f"Input cannot be decoded as UTF-8: {exc}") from None
            else:
                kwargs = {script.input_name: json.dumps(parse_query(scope["query_string"]))}
        elif mode is InputMode.SCHEMA:
            kwargs = self._schema_arguments(scope, method, payload, content_type)
        else:
            kwargs = {script.input_name: self._raw_request(scope, payload)}
        if script.wants_headers:
            kwargs["request_headers"] = {_title(k): v.decode("latin-1") for k, v in scope["headers"]}
        return kwargs

    def _busy(self, exc: Busy) -> HTTPError:
        return HTTPError(503, f"Server busy: this worker is scoring its limit of {exc.places} request"
                              f"{'s' if exc.places > 1 else ''} (--max-concurrent-requests) and this one waited "
                              f"{exc.waited_s * 1000:.0f} ms (--max-request-wait-ms {self.config.max_request_wait_ms}) "
                              "without its turn. Retry later.", [(b"retry-after", b"1")])

    def _answer(self, outcome: Outcome, kwargs: dict[str, Any],
                headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, bool]:
        """The status, body and run-failed flag for what run() gave."""
        result, error, timed_out, seconds = outcome
        headers.append((b"x-ms-run-fn-exec-ms", f"{seconds * 1000:.3f}".encode()))
        if timed_out:
            self._log_failure(f"run() exceeded the scoring timeout of {self.config.scoring_timeout_ms} ms", error)
            return self._run_failed(f"Scoring timeout after {self.config.scoring_timeout_ms} ms", headers)
        if error is not None:
            return self._failed(error, kwargs, headers)
        if hasattr(result, "get_data") and hasattr(result, "status_code") and hasattr(result, "headers"):
            return self._response_object(result, headers)
        try:
            body = encode_json(result)
        except (TypeError, ValueError) as exc:
            self._log_exception("run() returned a value that is not JSON serializable")
            return self._run_failed(f"run() returned a value that cannot be encoded as JSON: {exc}", headers)
        headers.append((b"content-type", _JSON))
        headers.append((b"x-ms-run-function-failed", _FALSE))
        return 200, body, False

    def _failed(self, error: BaseException, kwargs: dict[str, Any],
                headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, bool]:
        if self.script.mode is InputMode.SCHEMA:
            invalid = input_conversion_failure(self.script, error, kwargs)
            if invalid is not None:  # the decorators could not convert the input: the client's error
                body = orjson.dumps({"message": invalid})
                headers.append((b"content-type", _JSON))
                headers.append((b"x-ms-run-function-failed", _FALSE))
                return 400, body, False
        self._log_failure("run() raised", error)
        message = RUN_FAILED_MESSAGE
        if self.config.verbose_errors:
            message += f" {type(error).__name__}: {error}"
        return self._run_failed(message, headers)

    def _run_failed(self, message: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, bool]:
        headers.append((b"content-type", _JSON))
        headers.append((b"x-ms-run-function-failed", _TRUE))
        return 500, orjson.dumps({"message": message}), True

    def _response_object(self, result: Any, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, bool]:
        status = int(result.status_code)
        failed = status >= 500
        seen_failed = False
        for name, value in result.headers.items():
            lower = name.lower()
            if lower == "content-length":
                continue
            if lower == "x-ms-run-function-failed":
                seen_failed = True
                value = "True" if failed else value
            headers.append((lower.encode("latin-1"), str(value).encode("latin-1")))
        if not seen_failed:
            headers.append((b"x-ms-run-function-failed", _TRUE if failed else _FALSE))
        return status, result.get_data(), failed

    def _schema_arguments(self, scope: Scope, method: str, payload: bytes,
                          content_type: bytes | None) -> dict[str, Any]:
        if method == "GET":
            values = parse_query(scope["query_string"])
        else:
            mime = (content_type or b"").split(b";", 1)[0].strip().lower()
            if not (mime == b"application/json" or (mime.startswith(b"application/") and mime.endswith(b"+json"))):
                raise HTTPError(415, "Expects Content-Type to be application/json")
            try:
                values = decode_json(payload)
            except JSONTooDeep as exc:
                raise HTTPError(400, f"POST body could not be decoded: {exc}.") from None
            except ValueError as exc:
                if payload:
                    raise HTTPError(400, f"POST body could not be decoded as JSON: {exc}") from None
                raise HTTPError(400, "POST body is empty. Expecting a JSON dictionary.") from None
            if not isinstance(values, dict):
                raise HTTPError(400, "POST body should be a JSON dictionary.")
        kwargs: dict[str, Any] = {}
        for name, default in self.script.parameters:
            value = values.get(name, default)  # defaults are passed explicitly: the decorators expect every name
            if value is _EMPTY:
                raise HTTPError(400, f"A value is not provided for the {name!r} parameter.")
            kwargs[name] = value
        return kwargs

    def _raw_request(self, scope: Scope, payload: bytes) -> Any:
        from azureml.contrib.services.aml_request import AMLRequest

        server = scope.get("server") or ("127.0.0.1", self.config.port)
        client = scope.get("client") or ("", 0)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": "",
            "PATH_INFO": scope["path"],
            "QUERY_STRING": scope["query_string"].decode("latin-1"),
            "SERVER_NAME": str(server[0]),
            "SERVER_PORT": str(server[1]),
            "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
            "REMOTE_ADDR": str(client[0]),
            "REMOTE_PORT": str(client[1]),
            "CONTENT_LENGTH": str(len(payload)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.get("scheme", "http"),
            "wsgi.input": io.BytesIO(payload),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": self.config.worker_count > 1,
            "wsgi.run_once": False,
        }
        for name, value in scope["headers"]:
            key = name.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = text
            elif key != "CONTENT_LENGTH":
                http_key = f"HTTP_{key}"
                environ[http_key] = f"{environ[http_key]},{text}" if http_key in environ else text
        return AMLRequest(environ)

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
            headers.append((b"content-type", _JSON))
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
        headers.append((b"content-type", _JSON))
        headers.append((b"x-ms-run-function-failed", _FALSE))
        return 200, document

    def _log_exception(self, what: str) -> None:
        print(f"mlops-serve: {what}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)

    def _log_failure(self, what: str, error: BaseException | None) -> None:
        detail = "".join(traceback.format_exception(error)) if error is not None else (
            "(still running on the scoring thread: interrupted at its next Python instruction)\n")
        print(f"mlops-serve: {what}:\n{detail}", file=sys.stderr, flush=True)


_ROUTE_NAMES = {"/": "health", "/ready": "ready", "/metrics": "metrics", "/swagger.json": "swagger"}
_EMPTY = inspect.Parameter.empty

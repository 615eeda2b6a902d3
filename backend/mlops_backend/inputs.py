"""What a request gives run(): its body read within bounds, JSON and query strings decoded as Azure ML's
server decodes them, and run()'s keyword arguments built for the script's input mode (string, schema, raw).
A request that cannot be given to run() is refused with :class:`HTTPError`.
"""

from __future__ import annotations

import hmac
import inspect
import io
import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from mlops_backend.config import ServeConfig
from mlops_backend.entry import EntryScript, InputMode
from mlops_backend.execution import ClientGone

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
#: How deep a JSON body or query value may nest (orjson's own limit; deeper gets 400).
MAX_JSON_DEPTH = 1024


class HTTPError(Exception):
    """Answer the request with this status and ``{"message": ...}``."""

    def __init__(self, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or []


def check_bearer(auth: bytes | None, accepted: list[bytes]) -> None:
    """Accept a request whose ``Authorization`` header is one of ``accepted`` (``b"Bearer KEY"``), compared in
    constant time.

    Raises:
        HTTPError: 401, saying what to send.
    """
    if auth is not None:
        for key in accepted:
            if hmac.compare_digest(auth, key):
                return
    raise HTTPError(401, "Missing or invalid key: send the header 'Authorization: Bearer <key>'.",
                    [(b"www-authenticate", b"Bearer")])


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


async def read_body(receive: Receive, content_length: int, limit: int) -> bytes:
    """The whole request body, at most ``limit`` bytes.

    Raises:
        HTTPError: 413, the body is larger than ``limit``.
        ClientGone: the client left before the body was complete.
    """
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


class RunArguments:
    """Builds run()'s keyword arguments for one entry script."""

    def __init__(self, config: ServeConfig, script: EntryScript) -> None:
        self.config = config
        self.script = script

    def build(self, scope: Scope, method: str, payload: bytes, content_type: bytes | None) -> dict[str, Any]:
        """run()'s keyword arguments for this request, as its input mode wants them.

        Raises:
            HTTPError: 400 or 415, the input cannot be given to run() as its mode wants it.
        """
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
            kwargs = self._schema(scope, method, payload, content_type)
        else:
            kwargs = {script.input_name: self._raw(scope, payload)}
        if script.wants_headers:
            kwargs["request_headers"] = {_title(k): v.decode("latin-1") for k, v in scope["headers"]}
        return kwargs

    def _schema(self, scope: Scope, method: str, payload: bytes,
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
            if value is inspect.Parameter.empty:
                raise HTTPError(400, f"A value is not provided for the {name!r} parameter.")
            kwargs[name] = value
        return kwargs

    def _raw(self, scope: Scope, payload: bytes) -> Any:
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

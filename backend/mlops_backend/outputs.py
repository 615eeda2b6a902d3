"""What a request is answered once run() has been called: its result encoded as JSON (numpy-aware), the
status and headers of a response object it returned (streamed when its body is a generator), or the 500 of a
run() that failed or timed out.

As azmlinfsrv answers: ``None`` is ``{}``; a response object's own ``x-request-id`` and ``x-ms-request-id``
(and ``x-ms-client-request-id`` when the client sent one) give way to the request's; ``x-ms-run-function-failed``
is sent once ("True" for a 5xx, else the script's value if it gave one, else "False").
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

import orjson

from mlops_backend.config import ServeConfig
from mlops_backend.entry import EntryScript, InputMode, input_conversion_failure
from mlops_backend.execution import Outcome

RUN_FAILED_MESSAGE = "An unexpected error occurred in scoring script. Check the logs for more info."
JSON_TYPE = b"application/json"
#: Values of the ``x-ms-run-function-failed`` header.
NOT_FAILED = b"False"
FAILED = b"True"
#: What run() returning None answers (azmlinfsrv: ``AMLResponse(None, 200)``, an empty JSON object).
EMPTY_OBJECT = b"{}"
#: Headers of a response object that the server sets itself (the body's framing): never taken from it.
_FRAMING = frozenset(("content-length", "transfer-encoding"))
#: Request-id headers: the request's value wins over a response object's, when the server sends one.
_REQUEST_IDS = frozenset((b"x-request-id", b"x-ms-request-id", b"x-ms-client-request-id"))


class Streamed:
    """The body of a response object that run() streams (a generator): sent chunk by chunk, as it yields."""

    __slots__ = ("response",)

    def __init__(self, response: Any) -> None:
        self.response = response

    def chunks(self) -> Any:
        """An iterator of the body's chunks, as bytes."""
        encoded = getattr(self.response, "iter_encoded", None)
        return iter(encoded() if callable(encoded) else self.response.response)

    def close(self) -> None:
        """Close the response (and so its generator), as a WSGI server does once the body is sent."""
        close = getattr(self.response, "close", None)
        if callable(close):
            close()


def is_response(value: Any) -> bool:
    """True for a response object run() returned (werkzeug's, Flask's, AMLResponse, or alike)."""
    return hasattr(value, "get_data") and hasattr(value, "status_code") and hasattr(value, "headers")


def is_streamed(value: Any) -> bool:
    """True for a response object whose body is a generator (werkzeug's ``is_streamed``)."""
    return is_response(value) and getattr(value, "is_streamed", False) is True


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


def log_exception(what: str) -> None:
    """Log ``what`` went wrong, with the traceback of the exception being handled."""
    print(f"mlops-serve: {what}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)

def log_failure(what: str, error: BaseException | None) -> None:
    """Log a failed run(): ``what``, and the traceback of ``error`` (None: a call still running at its timeout)."""
    detail = "".join(traceback.format_exception(error)) if error is not None else (
        "(still running on the scoring thread: interrupted at its next Python instruction)\n")
    print(f"mlops-serve: {what}:\n{detail}", file=sys.stderr, flush=True)


class Answers:
    """Answers for what one entry script's run() gave."""

    def __init__(self, config: ServeConfig, script: EntryScript) -> None:
        self.config = config
        self.script = script

    def answer(self, outcome: Outcome, kwargs: dict[str, Any],
               headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes | Streamed, bool]:
        """The status, body and run-failed flag for what run() gave; its headers are appended to ``headers``.

        The body is :class:`Streamed` for a response object whose body is a generator (its chunks are sent as
        they come, without a content-length).
        """
        result, error, timed_out, seconds = outcome
        headers.append((b"x-ms-run-fn-exec-ms", f"{seconds * 1000:.3f}".encode()))
        if timed_out:
            log_failure(f"run() exceeded the scoring timeout of {self.config.scoring_timeout_ms} ms", error)
            return self._run_failed(f"Scoring timeout after {self.config.scoring_timeout_ms} ms", headers)
        if error is not None:
            return self._failed(error, kwargs, headers)
        if result is None:
            body = EMPTY_OBJECT
        elif hasattr(result, "get_data") and hasattr(result, "status_code") and hasattr(result, "headers"):
            return self._response_object(result, headers)  # is_response(), spelled out on the hot path
        else:
            try:
                body = encode_json(result)
            except (TypeError, ValueError) as exc:
                log_exception("run() returned a value that is not JSON serializable")
                return self._run_failed(f"run() returned a value that cannot be encoded as JSON: {exc}", headers)
        headers.append((b"content-type", JSON_TYPE))
        headers.append((b"x-ms-run-function-failed", NOT_FAILED))
        return 200, body, False

    def _failed(self, error: BaseException, kwargs: dict[str, Any],
                headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, bool]:
        if self.script.mode is InputMode.SCHEMA:
            invalid = input_conversion_failure(self.script, error, kwargs)
            if invalid is not None:  # the decorators could not convert the input: the client's error
                body = orjson.dumps({"message": invalid})
                headers.append((b"content-type", JSON_TYPE))
                headers.append((b"x-ms-run-function-failed", NOT_FAILED))
                return 400, body, False
        log_failure("run() raised", error)
        message = RUN_FAILED_MESSAGE
        if self.config.verbose_errors:
            message += f" {type(error).__name__}: {error}"
        return self._run_failed(message, headers)

    def _run_failed(self, message: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, bool]:
        headers.append((b"content-type", JSON_TYPE))
        headers.append((b"x-ms-run-function-failed", FAILED))
        return 500, orjson.dumps({"message": message}), True

    def _response_object(self, result: Any, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes | Streamed, bool]:
        status = int(result.status_code)
        failed = status >= 500
        flag = FAILED if failed else NOT_FAILED
        content_type = None
        ids = {name for name, _ in headers if name in _REQUEST_IDS}  # sent by the server for this request
        for name, value in result.headers.items():
            lower = name.lower()
            if lower in _FRAMING:
                continue
            raw = lower.encode("latin-1")
            if lower == "x-ms-run-function-failed":
                if not failed:  # one header, the script's value (azmlinfsrv sends its "False" and this one)
                    flag = str(value).encode("latin-1")
            elif lower == "content-type":  # one header, the last given
                content_type = str(value).encode("latin-1")
            elif raw not in ids:
                headers.append((raw, str(value).encode("latin-1")))
        if content_type is not None:
            headers.append((b"content-type", content_type))
        headers.append((b"x-ms-run-function-failed", flag))
        if is_streamed(result):
            return status, Streamed(result), failed
        return status, result.get_data(), failed

"""What a request is answered once run() has been called: its result encoded as JSON (numpy-aware), the
status and headers of a response object it returned, or the 500 of a run() that failed or timed out.
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
               headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, bool]:
        """The status, body and run-failed flag for what run() gave; its headers are appended to ``headers``."""
        result, error, timed_out, seconds = outcome
        headers.append((b"x-ms-run-fn-exec-ms", f"{seconds * 1000:.3f}".encode()))
        if timed_out:
            log_failure(f"run() exceeded the scoring timeout of {self.config.scoring_timeout_ms} ms", error)
            return self._run_failed(f"Scoring timeout after {self.config.scoring_timeout_ms} ms", headers)
        if error is not None:
            return self._failed(error, kwargs, headers)
        if hasattr(result, "get_data") and hasattr(result, "status_code") and hasattr(result, "headers"):
            return self._response_object(result, headers)
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
            headers.append((b"x-ms-run-function-failed", FAILED if failed else NOT_FAILED))
        return status, result.get_data(), failed

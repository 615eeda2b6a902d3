"""``AMLResponse``, as Azure ML entry scripts import it: a werkzeug ``Response`` that run() may return."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from werkzeug.wrappers import Response


class AMLResponse(Response):
    """A response returned as-is by the server (status, headers and body chosen by run()).

    Args:
        message: the body: str or bytes, or any JSON-serialisable value with ``json_str=True``;
            ``None`` gives ``{}``.
        status_code: the HTTP status.
        response_headers: extra headers; a comma in a value gives repeated headers.
        json_str: encode ``message`` as JSON (``application/json``).
        run_function_failed: the value of the ``x-ms-run-function-failed`` header.
    """

    default_mimetype = "text/html"  # as Flask's Response, which Azure ML's AMLResponse extends

    def __init__(
        self,
        message: Any,
        status_code: int,
        response_headers: Mapping[str, str] | None = None,
        json_str: bool = False,
        run_function_failed: bool = False,
    ) -> None:
        headers = dict(response_headers or {})
        if message is None:
            super().__init__(json.dumps({}), status=status_code, mimetype="application/json")
        elif json_str:
            super().__init__(json.dumps(message), status=status_code, mimetype="application/json")
        else:
            super().__init__(message, status=status_code)
            if any(k.lower() == "content-type" for k in headers):
                self.headers.remove("Content-Type")
        self.headers["x-ms-run-function-failed"] = str(run_function_failed)
        for name, value in headers.items():
            for part in str(value).split(","):
                self.headers.add_header(name, part.strip())

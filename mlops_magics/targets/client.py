"""Talking to a running scoring server: the request body for some data, a POST /score, the answer as a table."""

from __future__ import annotations

import http.client
import json
import sys
from typing import Any
from urllib.parse import urlsplit

from mlops_magics.errors import MlopsError


def request_body(data: Any) -> bytes:
    """The request body for ``data``: ``{"data": rows}`` for arrays, data frames and lists; a dict, str or
    bytes is sent as it is (a dict as JSON)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, dict):
        return json.dumps(data, default=_plain).encode()
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(data, pd.DataFrame):
        return json.dumps({"data": data.to_dict(orient="records")}, default=_plain).encode()
    return json.dumps({"data": data}, default=_plain).encode()


def _plain(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"Cannot send a {type(value).__name__} as JSON.")


def post_score(url: str, body: bytes, *, key: str | None, service: str, timeout: float = 60,
               request_id: str | None = None) -> tuple[int, Any]:
    """POST ``body`` to ``url``/score; return the status and the answer (JSON decoded when it is JSON).

    Raises:
        MlopsError: the service is not reachable.
    """
    parts = urlsplit(url)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if request_id:
        headers["x-request-id"] = request_id
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("POST", "/score", body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    except OSError as exc:
        raise MlopsError(f"Service {service!r} at {url} is not reachable ({exc}). Check %deployments.") from exc
    finally:
        conn.close()
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw.decode(errors="replace")
    return response.status, value


def as_table(value: Any) -> Any:
    """A DataFrame when the answer is a table (records, or rows of equal length); otherwise as it is."""
    pd = sys.modules.get("pandas")
    if pd is None or not isinstance(value, list) or not value:
        return value
    if all(isinstance(v, dict) for v in value):
        return pd.DataFrame(value)
    if all(isinstance(v, list) for v in value) and len({len(v) for v in value}) == 1 and value[0]:
        return pd.DataFrame(value)
    return value

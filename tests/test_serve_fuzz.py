"""Property-based: whatever is thrown at the server, it answers a valid status with a JSON message, and lives on."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serving import Served, serving

pytestmark = pytest.mark.serve

TOKEN = string.ascii_letters + string.digits + "-"
VISIBLE = "".join(chr(c) for c in range(0x20, 0x7F))

methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
paths = st.one_of(
    st.sampled_from(["/score", "/", "/swagger.json", "/ready", "/metrics", "/score/", "//score"]),
    st.text(alphabet=string.ascii_letters + string.digits + "-._~/%", max_size=30).map(lambda p: "/" + p),
)
queries = st.one_of(st.just(""), st.text(max_size=60).map(lambda q: "?" + quote(q, safe="=&")))
content_types = st.one_of(
    st.sampled_from(["application/json", "text/plain", "application/json; charset=latin-1", "multipart/form-data",
                     "application/x-www-form-urlencoded", "application/vnd+json"]),
    st.text(alphabet=VISIBLE, max_size=40),
)
header_names = st.text(alphabet=TOKEN, min_size=1, max_size=20).filter(
    lambda n: n.lower() not in ("content-length", "transfer-encoding", "host", "connection"))
headers = st.dictionaries(header_names, st.text(alphabet=VISIBLE, max_size=120).map(str.strip), max_size=6)
ids = st.dictionaries(st.sampled_from(["x-request-id", "x-ms-request-id", "x-ms-client-request-id"]),
                      st.text(alphabet=TOKEN, min_size=1, max_size=140), max_size=3)
bodies = st.one_of(
    st.binary(max_size=2000),
    st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                 max_leaves=20).map(lambda v: json.dumps(v).encode()),
)


@pytest.fixture(scope="module", params=["numpy_schema.py", "echo.py", "rawhttp_script.py"])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(request.param, "--max-body-bytes", "1500", logs=tmp_path_factory.mktemp("fuzz")) as served:
        yield served


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=methods, path=paths, query=queries, content_type=content_types, extra=headers, request_ids=ids,
       body=bodies)
def test_any_request_gets_a_valid_answer_and_the_server_keeps_serving(
    target: Served, method: str, path: str, query: str, content_type: str, extra: dict[str, str],
    request_ids: dict[str, str], body: bytes,
) -> None:
    sent = {**extra, **request_ids, "Content-Type": content_type}
    reply = target.request(method, path + query, body if method != "GET" else None, sent)
    assert 200 <= reply.status <= 599
    if reply.status >= 400:
        payload = json.loads(reply.body)
        assert isinstance(payload, dict) and isinstance(payload["message"], str) and payload["message"]
    assert target.request("GET", "/").status == 200


def test_the_fuzzed_servers_logged_no_server_error(target: Served, tmp_path: Path) -> None:
    assert "unexpected server error" not in target.log()

"""Streamed answers: a run() returning ``AMLResponse(generator, status)`` is sent chunk by chunk (chunked transfer
encoding), as azmlinfsrv sends it; black-box, on real mlops-serve processes on 127.0.0.1.

No timing is asserted: the generator waits for a file that the test creates only after it has read the first part
(:func:`tests.serving.read_streamed`), so a buffered answer cannot pass.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving import Served, read_streamed, serving

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def streaming(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving("streaming.py", logs=tmp_path_factory.mktemp("streaming")) as served:
        yield served


def test_the_first_part_arrives_before_the_generator_has_finished(streaming: Served, tmp_path: Path) -> None:
    reply = read_streamed(streaming, tmp_path / "gate")
    assert (reply.status, reply.first, reply.rest) == (200, b"first\n", b"released\nlast\n")
    assert reply.headers["transfer-encoding"] == "chunked" and "content-length" not in reply.headers
    assert reply.headers["content-type"] == "text/plain"
    assert reply.headers["x-ms-run-function-failed"] == "False" and "x-ms-run-fn-exec-ms" in reply.headers


def test_the_connection_serves_the_next_request_after_a_stream(streaming: Served, tmp_path: Path) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", streaming.port, timeout=30)
    try:
        (tmp_path / "gate").touch()
        for _ in range(2):  # keep-alive: the chunked body ended cleanly
            conn.request("POST", "/score", body=json.dumps({"gate": str(tmp_path / "gate")}).encode())
            assert conn.getresponse().read() == b"first\nreleased\nlast\n"
    finally:
        conn.close()


def test_while_the_generator_waits_probes_answer_and_no_other_run_starts(streaming: Served, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    conn = http.client.HTTPConnection("127.0.0.1", streaming.port, timeout=30)
    try:
        conn.request("POST", "/score", body=json.dumps({"gate": str(gate)}).encode())
        response = conn.getresponse()
        assert response.readline() == b"first\n"  # the generator now waits for the gate
        assert streaming.request("GET", "/").body == b"Healthy"  # the event loop is free
        assert streaming.request("GET", "/metrics").status == 200
        # the stream keeps run()'s place: another request waits its turn (--max-request-wait-ms), then gets 503
        busy = streaming.request("POST", "/score", json.dumps({}))
        assert busy.status == 503 and busy.message.startswith("Server busy")
        gate.touch()
        assert response.read() == b"released\nlast\n"
    finally:
        conn.close()
    assert streaming.request("POST", "/score", json.dumps({"gate": str(gate)})).body == b"first\nreleased\nlast\n"


def test_a_generator_failing_before_its_first_part_is_a_run_failure(streaming: Served) -> None:
    reply = streaming.request("POST", "/score", json.dumps({"fail": "before"}))
    assert reply.status == 500 and reply.message.startswith("An unexpected error occurred in scoring script")
    assert reply.headers["x-ms-run-function-failed"] == "True"
    assert "the generator failed before its first part" in streaming.log()


def test_a_generator_failing_later_cuts_the_answer_short(streaming: Served, tmp_path: Path) -> None:
    (tmp_path / "gate").touch()
    conn = http.client.HTTPConnection("127.0.0.1", streaming.port, timeout=30)
    try:
        conn.request("POST", "/score", body=json.dumps({"gate": str(tmp_path / "gate"), "fail": "after"}).encode())
        response = conn.getresponse()
        assert response.status == 200  # sent with the first part, before the failure
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        assert cut.value.partial == b"first\nreleased\n"  # a client cannot take it for a complete answer
    finally:
        conn.close()
    assert "raised after its first chunk" in streaming.log()
    assert streaming.request("GET", "/").status == 200


def test_a_stream_the_client_leaves_is_closed_and_frees_the_place(streaming: Served, tmp_path: Path) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", streaming.port, timeout=30)
    conn.request("POST", "/score", body=json.dumps({"gate": str(tmp_path / "gate")}).encode())
    assert conn.getresponse().readline() == b"first\n"
    conn.close()  # gone while the generator waits
    (tmp_path / "gate").touch()
    statuses = []
    for _ in range(50):  # 503 "busy" while the abandoned stream ends; then served: its place was given back
        reply = streaming.request("POST", "/score", json.dumps({"gate": str(tmp_path / "gate")}))
        statuses.append(reply.status)
        if reply.status == 200:
            break
    assert statuses[-1] == 200 and set(statuses) <= {200, 503}
    assert reply.body == b"first\nreleased\nlast\n"

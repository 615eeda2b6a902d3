"""Hostile and unlucky clients against a real mlops-serve on 127.0.0.1: every one answered, bounded, and the
server stays up (issue 15, "The scoring server under hostile clients").

Raw sockets where an HTTP library would refuse to send what an attacker sends. Every test is bounded in time
(socket timeouts, deadlines in loops); none asserts a timing: orderings (a probe answered *before* run() is
released) and counts (run() calls, memory) instead.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.serving import SCRIPTS, Served, metric, serving

pytestmark = pytest.mark.serve

#: run() blocks until the test creates RELEASE (or 20 s pass); each call is logged in RUNS first.
GATED = '''
import os, time
HERE = os.path.dirname(os.path.abspath(__file__))

def init():
    pass

def run(data):
    with open(os.path.join(HERE, "runs.log"), "a") as fh:
        fh.write(data + "\\n")
    if data.startswith("gate"):
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(HERE, "release-" + data)) and time.monotonic() < deadline:
            time.sleep(0.01)
    elif data.startswith("sleep"):
        time.sleep(float(data.split()[1]))
    elif data == "spin":
        while True:
            pass
    return data
'''


_OPEN: list[socket.socket] = []


class Raw:
    """One raw TCP connection to the server (closed at the end of the test, if not before)."""

    def __init__(self, served: Served, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", served.port), timeout=timeout)
        _OPEN.append(self.sock)

    def send(self, data: bytes) -> bool:
        """Send; False if the server had already closed the connection (reset)."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """Read one whole response (status, headers, body); (0, {}, b"") if the server closed without one."""
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return 0, {}, b""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(lines[0].split()[1]), headers, body

    def closed_by_server(self) -> bool:
        """True once the server has closed its side (read EOF or reset); waits up to the socket timeout."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


def _request(served: Served, data: bytes) -> tuple[int, dict[str, str], bytes]:
    raw = Raw(served)
    try:
        raw.send(data)
        return raw.response()
    finally:
        raw.close()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _post(body: str) -> bytes:
    data = body.encode()
    return b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (
        len(data), data)


def _until(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving("echo.py", "--no-access-log", logs=tmp_path_factory.mktemp("hostile")) as served:
        yield served


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``gated(*args)``: a server whose run() waits for the test (see GATED); its folder is ``tmp_path``."""
    from contextlib import ExitStack

    (tmp_path / "score.py").write_text(GATED)
    with ExitStack() as stack:
        def start(*args: str) -> Served:
            return stack.enter_context(serving(tmp_path / "score.py", "--no-access-log", *args, logs=tmp_path / "logs"))

        yield start
        for name in ("gate", "gate-a", "gate-b", "gate-c"):  # let any run() still waiting end
            (tmp_path / f"release-{name}").touch()


def _runs(folder: Path) -> list[str]:
    path = folder / "runs.log"
    return path.read_text().splitlines() if path.exists() else []


# -- heads: bytes, count, URL, nesting ------------------------------------------------------------

def test_a_1_mb_header_is_a_431_with_a_json_message(echo: Served) -> None:
    status, headers, body = _request(echo, b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
    assert status == 431 and headers["content-type"] == "application/json"
    assert "larger than the limit of 65536 bytes" in json.loads(body)["message"]
    assert echo.request("GET", "/").status == 200


def test_100000_headers_or_just_too_many_are_a_431(echo: Served) -> None:
    status, _, body = _request(echo, b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-A: b\r\n" * 100_000 + b"\r\n")
    assert status == 431 and "limit" in json.loads(body)["message"]
    status, _, body = _request(echo, b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-A: b\r\n" * 150 + b"\r\n")
    assert status == 431 and json.loads(body)["message"] == "The request has 151 headers, over the limit of 100."


def test_unfinished_huge_headers_hold_no_memory(echo: Served) -> None:
    before = _rss_mb(echo.process.pid)
    sent: list[int] = []

    def attacker() -> None:
        raw = Raw(echo)
        total = 0
        if raw.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: "):
            chunk = b"a" * (1 << 20)
            for _ in range(48):  # 48 MB of a header that never ends, unless the server cuts it
                if not raw.send(chunk):
                    break
                total += len(chunk)
        sent.append(total)
        raw.close()

    threads = [threading.Thread(target=attacker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    grown = _rss_mb(echo.process.pid) - before
    assert grown < 30, f"RSS grew by {grown:.0f} MB"  # before the bound: 8 x 48 MB held, +340 MB
    assert max(sent) < 48 << 20, "the server read a whole 48 MB head"
    assert echo.request("GET", "/").status == 200


def test_a_long_url_is_a_414_with_a_json_message(echo: Served) -> None:
    for size in (10_000, 100_000, 2_000_000):
        status, headers, body = _request(echo, b"GET /score?q=" + b"a" * size + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (status, headers["content-type"]) == (414, "application/json"), size
        assert "over the limit of 8192 bytes" in json.loads(body)["message"] or "longer than the limit" in json.loads(
            body)["message"]


def test_an_unparsable_request_is_a_400_with_a_json_message(echo: Served) -> None:
    status, headers, body = _request(echo, b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n")
    assert (status, headers["content-type"]) == (400, "application/json")
    assert json.loads(body)["message"].startswith("Invalid HTTP request")


def test_a_deeply_nested_json_body_is_a_400_naming_the_limit(tmp_path: Path) -> None:
    with serving("numpy_schema.py", "--no-access-log", logs=tmp_path) as s:
        deep = "[" * 100_000 + "]" * 100_000
        reply = s.request("POST", "/score", deep, {"Content-Type": "application/json"})
        assert reply.status == 400 and reply.message == ("POST body could not be decoded: JSON nested deeper than "
                                                         "1024 levels, the limit.")
        query = s.request("GET", "/score?data=" + "[" * 2000 + "]" * 2000)
        assert query.status == 400 and "nested too deeply" in query.message
        assert s.post_json("/score", {"data": [[1, 2, 3]]}).status == 200
        assert "unexpected server error" not in s.log()


# -- slow clients ---------------------------------------------------------------------------------

def test_connections_that_never_finish_their_headers_get_408_and_are_closed(tmp_path: Path) -> None:
    with serving("echo.py", "--no-access-log", "--header-timeout-s", "1", logs=tmp_path) as s:
        partial = [Raw(s) for _ in range(40)]
        for raw in partial:
            raw.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        silent = Raw(s)  # opens a connection and says nothing
        answers = [raw.response() for raw in partial]  # each read waits up to 10 s
        assert {status for status, _, _ in answers} == {408}
        assert "did not arrive within 1 s" in json.loads(answers[0][2])["message"]
        assert silent.closed_by_server()
        slowloris = Raw(s)  # one byte every 0.3 s: the deadline holds for the whole head, not per byte
        for byte in b"GET / HTTP/1.1\r\nHost: t\r\n":
            if not slowloris.send(bytes([byte])):
                break
            time.sleep(0.3)
        assert slowloris.response()[0] == 408
        assert s.request("GET", "/").status == 200


def test_a_stalled_body_gets_408_and_run_is_never_called(gated: Callable[..., Served], tmp_path: Path) -> None:
    s = gated("--body-timeout-s", "1")
    raw = Raw(s)
    raw.send(b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten b")
    status, _, body = raw.response()
    assert status == 408 and "body stalled" in json.loads(body)["message"]
    assert s.request("POST", "/score", "after").status == 200
    assert _runs(tmp_path) == ["after"]  # the truncated body was never scored


def test_a_stalled_body_on_a_keep_alive_connection_gets_408_too(gated: Callable[..., Served], tmp_path: Path) -> None:
    s = gated("--body-timeout-s", "1")
    raw = Raw(s)
    raw.send(_post("first"))
    assert raw.response()[0] == 200
    raw.send(b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten b")  # the second request stalls
    status, _, body = raw.response()
    assert status == 408 and "body stalled" in json.loads(body)["message"]
    assert _runs(tmp_path) == ["first"]


def test_a_client_gone_mid_body_is_not_scored(gated: Callable[..., Served], tmp_path: Path) -> None:
    s = gated()
    raw = Raw(s)
    raw.send(b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\npart")
    raw.close()
    assert s.request("POST", "/score", "after").status == 200
    time.sleep(0.2)
    assert _runs(tmp_path) == ["after"]  # before: run("part") was called with the truncated body


def test_idle_keep_alive_connections_are_closed(tmp_path: Path) -> None:
    with serving("echo.py", "--no-access-log", "--keep-alive-s", "1", logs=tmp_path) as s:
        raw = Raw(s)
        raw.send(_post("x"))
        assert raw.response()[0] == 200
        assert raw.closed_by_server()


def test_past_the_connection_cap_a_new_connection_gets_503_but_probes_are_answered(tmp_path: Path) -> None:
    with serving("echo.py", "--no-access-log", "--max-connections", "20", logs=tmp_path) as s:
        held = [Raw(s) for _ in range(25)]
        assert _until(lambda: _request(s, _post("x"))[0] == 503)  # the server has seen them all
        status, headers, body = _request(s, _post("x"))
        assert (status, headers["content-type"]) == (503, "application/json")
        assert "its limit of 20 connections" in json.loads(body)["message"]
        assert _request(s, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200  # liveness must not fail in a flood
        assert _request(s, b"GET /ready HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200
        for raw in held:
            raw.close()
        assert _until(lambda: _request(s, _post("x"))[0] == 200)


# -- overload: liveness while run() works, a bounded queue, departed clients dropped ------------

def _post_in_background(s: Served, body: str, results: list[int]) -> threading.Thread:
    def call() -> None:
        try:
            results.append(s.request("POST", "/score", body, timeout=30).status)
        except OSError:
            results.append(0)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def test_liveness_answers_while_run_is_busy(gated: Callable[..., Served], tmp_path: Path) -> None:
    s = gated()
    for gate in ("gate-a", "gate-b"):  # the first call runs on the event loop, the second on the scoring thread
        results: list[int] = []
        thread = _post_in_background(s, gate, results)
        assert _until(lambda gate=gate: gate in _runs(tmp_path))  # run() has started and waits
        assert s.request("GET", "/", timeout=5).status == 200  # answered while run() is still busy
        assert s.request("GET", "/ready", timeout=5).status == 200
        assert not results, "run() was released before the probes were answered"
        (tmp_path / f"release-{gate}").touch()
        thread.join(30)
        assert results == [200]


@pytest.mark.parametrize("wait_ms, expected", [("20000", 200), ("300", 503)])
def test_a_request_that_came_while_run_held_the_loop_is_served_after_or_turned_away(
    gated: Callable[..., Served], tmp_path: Path, wait_ms: str, expected: int
) -> None:
    s = gated("--max-request-wait-ms", wait_ms)
    results: list[int] = []
    thread = _post_in_background(s, "gate-a", results)  # the first call: on the event loop, which it holds
    assert _until(lambda: "gate-a" in _runs(tmp_path))
    late = Raw(s)  # a new connection: the liveness guard takes it and hands it to the loop
    late.send(_post("late"))
    assert s.request("GET", "/", timeout=5).status == 200
    time.sleep(0.5)
    (tmp_path / "release-gate-a").touch()
    thread.join(30)
    status, _, body = late.response()
    assert (status, results) == (expected, [200])
    assert ("late" in _runs(tmp_path)) == (expected == 200)  # waited longer than allowed: turned away, not run
    if expected == 503:
        assert json.loads(body)["message"].startswith("Server busy")


def test_a_full_queue_answers_503_server_busy(gated: Callable[..., Served], tmp_path: Path) -> None:
    s = gated("--max-request-wait-ms", "300")
    s.request("POST", "/score", "sleep 0.05")  # a slow call: run() moves to the scoring thread
    results: list[int] = []
    thread = _post_in_background(s, "gate-a", results)
    assert _until(lambda: "gate-a" in _runs(tmp_path))
    busy = s.request("POST", "/score", "waits", timeout=10)
    assert busy.status == 503 and busy.message.startswith("Server busy: this worker is scoring its limit of 1 ")
    assert "waited 3" in busy.message and busy.headers["retry-after"] == "1"
    assert "waits" not in _runs(tmp_path)
    (tmp_path / "release-gate-a").touch()
    thread.join(30)
    assert results == [200]
    text = s.request("GET", "/metrics").body.decode()
    assert metric(text, "mlops_requests_total", worker="0", route="score", status="503") == 1


@pytest.mark.parametrize("where", ["event loop", "scoring thread"])
def test_a_request_whose_client_has_gone_before_its_turn_is_dropped_not_run(
    gated: Callable[..., Served], tmp_path: Path, where: str
) -> None:
    s = gated("--max-request-wait-ms", "20000")
    if where == "scoring thread":
        s.request("POST", "/score", "sleep 0.05")
    results: list[int] = []
    thread = _post_in_background(s, "gate-a", results)
    assert _until(lambda: "gate-a" in _runs(tmp_path))
    leaving = Raw(s)
    leaving.send(_post("left"))
    time.sleep(0.3)  # its request is in (parsed and queued, or waiting in the socket while the loop is held)
    leaving.close()
    time.sleep(0.1)
    (tmp_path / "release-gate-a").touch()
    thread.join(30)
    assert results == [200]
    assert s.request("POST", "/score", "after").status == 200
    assert "left" not in _runs(tmp_path)
    assert metric(s.request("GET", "/metrics").body.decode(), "mlops_requests_total", route="score", status="499") == 1
    logged = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.err"))
    assert "returned without starting response" not in logged  # dropped quietly: no 500 attempted, no error logged


def test_after_a_crowd_leaves_its_queued_requests_are_not_run(gated: Callable[..., Served], tmp_path: Path) -> None:
    s = gated("--max-request-wait-ms", "20000")
    s.request("POST", "/score", "sleep 0.05")  # on the scoring thread from now on
    crowd = [Raw(s, timeout=5) for _ in range(30)]
    for raw in crowd:
        raw.send(_post("sleep 0.2"))
    time.sleep(0.5)
    for raw in crowd:  # they give up, as clients with a timeout do
        raw.close()
    assert s.request("GET", "/", timeout=5).status == 200
    assert s.request("POST", "/score", "after", timeout=5).status == 200  # served next, not after 30 x 0.2 s
    ran = _runs(tmp_path).count("sleep 0.2")
    assert 1 <= ran <= 5, ran  # those that started before the crowd left; before: all 30, one after the other
    assert "after" in _runs(tmp_path)


def test_a_run_that_never_returns_is_answered_at_the_timeout_and_the_server_recovers(
    gated: Callable[..., Served], tmp_path: Path
) -> None:
    s = gated("--scoring-timeout-ms", "500")
    s.request("POST", "/score", "sleep 0.05")  # on the scoring thread from now on
    reply = s.request("POST", "/score", "spin", timeout=10)
    assert reply.status == 500 and reply.message == "Scoring timeout after 500 ms"
    assert s.request("GET", "/").status == 200
    assert _until(lambda: s.request("POST", "/score", "after", timeout=5).status == 200)


def test_the_header_limits_are_settings(tmp_path: Path) -> None:
    with serving(SCRIPTS / "echo.py", "--no-access-log", "--max-header-bytes", "2048", "--max-url-bytes", "64",
                 "--max-header-count", "10", logs=tmp_path) as s:
        assert _request(s, b"GET / HTTP/1.1\r\nHost: t\r\nX-A: " + b"a" * 3000 + b"\r\n\r\n")[0] == 431
        assert _request(s, b"GET /?" + b"a" * 100 + b" HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 414
        assert _request(s, b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 11 + b"\r\n")[0] == 431
        assert _request(s, b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 9 + b"\r\n")[0] == 200

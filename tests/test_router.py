"""The endpoint router (``mlops-route``), black box: real member servers (``mlops-serve`` with
tests/entry_scripts/member.py) behind a real router process on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlops_backend.router import table as tables

from tests import serving
from tests.serving import Served

ROWS = [[1.0, 2.0], [3.0, 4.0]]


class Router:
    """A router process and its routes file."""

    def __init__(self, folder: Path, routes: dict[str, Any], *args: str) -> None:
        self.folder = folder
        self.routes = folder / "routes.json"
        self.traffic = folder / "traffic"
        folder.mkdir(parents=True, exist_ok=True)
        self.write(routes)
        self.served = Served(serving.free_port(), None, folder / "router.out", folder / "router.err")  # type: ignore[arg-type]
        with open(self.served.stdout, "wb") as out, open(self.served.stderr, "wb") as err:
            self.served.process = subprocess.Popen(
                [sys.executable, "-m", "mlops_backend.router.serve", "--routes", str(self.routes), "--port",
                 str(self.served.port), "--traffic-dir", str(self.traffic), *args], stdout=out, stderr=err)
        serving.wait_healthy(self.served)

    @property
    def url(self) -> str:
        return self.served.url

    def write(self, routes: dict[str, Any]) -> None:
        fresh = self.routes.with_suffix(".tmp")
        fresh.write_text(json.dumps(routes))
        fresh.replace(self.routes)

    def switch(self, routes: dict[str, Any]) -> None:
        """Write new routes and wait until the router serves their generation."""
        self.write(routes)
        deadline = time.monotonic() + 10
        while self.served.request("GET", "/ready").json().get("generation") != routes["generation"]:
            assert time.monotonic() < deadline, self.served.log()
            time.sleep(0.05)

    def score(self, headers: dict[str, str] | None = None, rows: Any = ROWS) -> serving.Reply:
        return self.served.post_json("/score", {"data": rows}, headers)

    def status(self) -> dict[str, Any]:
        return dict(self.served.request("GET", "/endpoint").json())

    def records(self) -> list[dict[str, Any]]:
        time.sleep(0.6)  # written from the tick, twice a second
        found = []
        for path in sorted(self.traffic.glob("traffic-*.jsonl")):
            found += [json.loads(line) for line in path.read_text().splitlines() if line]
        return found

    def stop(self) -> int:
        return serving.stop(self.served)


def members(**weights: int) -> list[dict[str, Any]]:
    return [{"name": name, "url": MEMBERS[name].url, "weight": weight} for name, weight in weights.items()]


MEMBERS: dict[str, Served] = {}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    """blue and green (labels differ by one on every row), always up, for the module."""
    logs = tmp_path_factory.mktemp("members")
    started = {"blue": serving.start("member.py", "--no-access-log", env={"MEMBER": "blue"}, logs=logs),
               "green": serving.start("member.py", "--no-access-log", env={"MEMBER": "green", "MEMBER_OFFSET": "1"},
                                      logs=logs)}
    try:
        for served in started.values():
            serving.wait_healthy(served)
        MEMBERS.update(started)
        yield started
    finally:
        for served in started.values():
            serving.stop(served)
        MEMBERS.clear()


@pytest.fixture
def router(tmp_path: Path, fleet: dict[str, Served]) -> Iterator[Router]:
    made = Router(tmp_path, {"generation": 1, "endpoint": "iris", "members": members(blue=90, green=10)})
    try:
        yield made
    finally:
        made.stop()


def test_weights_are_honoured_within_a_few_percent_over_1000_requests(router: Router) -> None:
    answered = Counter(router.score().json()["member"] for _ in range(1000))
    assert answered["blue"] + answered["green"] == 1000
    assert 60 <= answered["green"] <= 140, answered  # 10% +- 4 points (the binomial's sd is 0.95 point)
    status = router.status()
    assert status["answers"]["blue"]["live"]["requests"] == answered["blue"]
    assert [(m["name"], m["weight"]) for m in status["members"]] == [("blue", 90), ("green", 10)]


def test_every_answer_says_which_member_gave_it_and_keeps_the_request_id(router: Router) -> None:
    reply = router.score({"x-request-id": "req-42"})
    assert reply.status == 200 and reply.headers["x-request-id"] == "req-42"
    assert reply.headers["x-mlops-member"] == reply.json()["member"]
    assert reply.json()["request_id"] == "req-42"  # the member got the client's id
    generated = router.score()
    assert len(generated.headers["x-request-id"]) == 36 and generated.json()["request_id"] == (
        generated.headers["x-request-id"])


def test_a_sticky_header_keeps_a_client_on_one_member_and_clients_spread_by_weight(router: Router) -> None:
    router.switch({"generation": 2, "endpoint": "iris", "members": members(blue=50, green=50),
                   "sticky_header": "X-User"})
    for user in ("ann", "bob", "cy"):
        assert len({router.score({"x-user": user}).json()["member"] for _ in range(20)}) == 1
    spread = Counter(router.score({"x-user": f"user-{i}"}).json()["member"] for i in range(300))
    assert 105 <= spread["green"] <= 195, spread  # 50% +- 15 points over 300 clients
    mixed = Counter(router.score().json()["member"] for _ in range(200))  # no header: weighted at random
    assert mixed["blue"] > 0 and mixed["green"] > 0


def test_a_new_routes_file_takes_over_between_requests_and_a_bad_one_changes_nothing(router: Router) -> None:
    router.switch({"generation": 2, "endpoint": "iris", "members": members(blue=0, green=100)})
    assert {router.score().json()["member"] for _ in range(50)} == {"green"}
    router.write({"generation": 3, "endpoint": "iris", "members": members(blue=50, green=10)})  # sums to 60
    time.sleep(0.5)
    assert router.served.request("GET", "/ready").json()["generation"] == 2
    assert "The weights must add up to 100: they add up to 60 (blue=50, green=10)" in router.served.log()
    assert {router.score().json()["member"] for _ in range(20)} == {"green"}


def test_of_several_routes_files_the_highest_generation_is_served(tmp_path: Path, fleet: dict[str, Served]) -> None:
    # On Kubernetes: a ConfigMap's file (a change reaches the pod a minute later) and the pod's own scratch file
    # (written at once); the scratch file is missing until the first change.
    scratch = tmp_path / "scratch" / "routes.json"
    made = Router(tmp_path, {"generation": 1, "endpoint": "iris", "members": members(blue=100, green=0)},
                  "--routes", str(scratch))
    try:
        assert {made.score().json()["member"] for _ in range(10)} == {"blue"}
        scratch.parent.mkdir()
        scratch.write_text(json.dumps({"generation": 2, "endpoint": "iris", "members": members(blue=0, green=100)}))
        deadline = time.monotonic() + 10
        while made.served.request("GET", "/ready").json()["generation"] != 2:
            assert time.monotonic() < deadline, made.served.log()
            time.sleep(0.05)
        assert {made.score().json()["member"] for _ in range(10)} == {"green"}
        scratch.write_text("{broken")  # the newer file goes bad: the older one never takes the router back
        time.sleep(0.5)
        assert made.served.request("GET", "/ready").json()["generation"] == 2
        assert {made.score().json()["member"] for _ in range(10)} == {"green"}
        made.switch({"generation": 3, "endpoint": "iris", "members": members(blue=100, green=0)})  # the other file
        assert {made.score().json()["member"] for _ in range(10)} == {"blue"}
    finally:
        made.stop()


def test_the_newest_of_several_routes_files_or_why_none_can_be_used(tmp_path: Path) -> None:
    one, two, missing = tmp_path / "one.json", tmp_path / "two.json", tmp_path / "missing.json"
    member = [{"name": "a", "url": "http://127.0.0.1:1", "weight": 100}]
    one.write_text(json.dumps({"generation": 4, "members": member}))
    two.write_text(json.dumps({"generation": 7, "members": member}))
    assert tables.load_newest([one, missing, two]).generation == 7
    assert tables.load_newest([missing, one]).generation == 4
    two.write_text("{")
    with pytest.raises(tables.RoutesError, match=r"(?s)missing.json' cannot be read.*two.json' is not JSON"):
        tables.load_newest([missing, two])


def test_shadow_copies_go_after_the_answer_and_are_recorded_under_the_request_id(tmp_path: Path,
                                                                                  fleet: dict[str, Served]) -> None:
    made = Router(tmp_path, {"generation": 1, "endpoint": "iris", "members": members(blue=100, green=0),
                             "shadow": {"name": "green", "percent": 100}})
    try:
        for i in range(20):
            assert made.score({"x-request-id": f"s-{i}"}).json()["member"] == "blue"
        records = made.records()
        live = {r["id"]: r for r in records if r["kind"] == "live"}
        shadow = {r["id"]: r for r in records if r["kind"] == "shadow"}
        assert set(live) == set(shadow) == {f"s-{i}" for i in range(20)}
        first = live["s-0"]
        assert (first["m"], first["status"], first["in"], first["out"]["labels"]) == ("blue", 200, {"data": ROWS},
                                                                                     [0, 1])
        assert (shadow["s-0"]["m"], shadow["s-0"]["out"]["labels"], "in" in shadow["s-0"]) == ("green", [1, 2], False)
        assert made.status()["answers"]["green"]["shadow"]["requests"] == 20
    finally:
        made.stop()


def test_a_member_that_is_also_the_shadow_gets_no_copy_of_what_it_answered(tmp_path: Path,
                                                                            fleet: dict[str, Served]) -> None:
    made = Router(tmp_path, {"generation": 1, "endpoint": "iris", "members": members(blue=50, green=50),
                             "shadow": {"name": "green", "percent": 100}})
    try:
        answered = Counter(made.score({"x-request-id": f"r-{i}"}).json()["member"] for i in range(100))
        assert answered["blue"] and answered["green"], answered
        shadowed = {r["id"] for r in made.records() if r["kind"] == "shadow"}
        assert len(shadowed) == answered["blue"]  # copies of blue's answers only, none of green's own
        assert made.status()["answers"]["green"]["shadow"]["requests"] == answered["blue"]
    finally:
        made.stop()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_pipelined_chunked_and_http_1_0_requests_are_answered_in_order(tmp_path: Path, fleet: dict[str, Served],
                                                                       loop: str) -> None:
    """/score is answered without ASGI on its fast path: what the fast path does not take goes the other way,
    and requests sent together on one connection are answered one after the other, in order (on either loop)."""
    router = Router(tmp_path, {"generation": 1, "endpoint": "iris", "members": members(blue=100)}, "--loop", loop)
    try:
        _pipelined(router)
    finally:
        router.stop()


def _pipelined(router: Router) -> None:
    import socket

    body = json.dumps({"data": ROWS}).encode()
    score = b"POST /score HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" \
            b"x-request-id: %s\r\n\r\n%s"
    chunked = (b"POST /score HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
               b"transfer-encoding: chunked\r\nx-request-id: c-1\r\n\r\n"
               + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:7], body[7:])) + b"0\r\n\r\n")
    with socket.create_connection(("127.0.0.1", router.served.port), timeout=10) as client:
        client.sendall(score % (len(body), b"p-1", body) + b"GET /ready HTTP/1.1\r\nhost: x\r\n\r\n"
                       + score % (len(body), b"p-2", body) + chunked)
        got = b""
        while got.count(b"HTTP/1.1 200") < 4 or not got.endswith(b"}"):
            chunk = client.recv(65536)
            assert chunk, got
            got += chunk
    answers = got.split(b"HTTP/1.1 ")[1:]
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"200 OK"] * 4
    assert [json.loads(a.split(b"\r\n\r\n", 1)[1]).get("request_id") for a in answers] == ["p-1", None, "p-2", "c-1"]
    assert b'"generation":1' in answers[1].replace(b" ", b"")
    with socket.create_connection(("127.0.0.1", router.served.port), timeout=10) as client:
        client.sendall(b"POST /score HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                       % (len(body), body))
        got = b""
        while chunk := client.recv(65536):  # HTTP/1.0: the router closes the connection after the answer
            got += chunk
    assert got.startswith(b"HTTP/1.1 200") and json.loads(got.split(b"\r\n\r\n", 1)[1])["labels"] == [0, 1]


def test_a_client_gone_before_its_answer_leaves_the_router_serving(tmp_path: Path, fleet: dict[str, Served]) -> None:
    import socket

    slow = serving.start("member.py", "--no-access-log", env={"MEMBER": "slow", "MEMBER_SLEEP_S": "0.5"},
                         logs=tmp_path / "slow")
    serving.wait_healthy(slow)
    made = Router(tmp_path / "router", {"generation": 1, "endpoint": "iris",
                                        "members": [{"name": "slow", "url": slow.url, "weight": 100}]})
    try:
        body = json.dumps({"data": ROWS}).encode()
        for _ in range(5):  # each leaves while its request is at the member
            with socket.create_connection(("127.0.0.1", made.served.port), timeout=10) as client:
                client.sendall(b"POST /score HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        deadline = time.monotonic() + 15
        while made.status()["answers"].get("slow", {}).get("live", {}).get("requests") != 5:  # answered, to nobody
            assert time.monotonic() < deadline, made.status()
            time.sleep(0.1)
        assert made.score().json()["member"] == "slow"
        assert made.status()["answers"]["slow"]["live"]["requests"] == 6
        assert "Traceback" not in made.served.log()
    finally:
        made.stop()
        serving.stop(slow)


def test_a_shadow_that_hangs_or_fails_never_holds_or_fails_the_client(tmp_path: Path, fleet: dict[str, Served]) -> None:
    gate = tmp_path / "release"
    stuck = serving.start("member.py", "--no-access-log", "--max-concurrent-requests", "100",
                          "--max-request-wait-ms", "60000",
                          env={"MEMBER": "stuck", "MEMBER_WAIT_FOR": str(gate)}, logs=tmp_path)
    failing = serving.start("member.py", "--no-access-log", env={"MEMBER": "failing", "MEMBER_FAIL": "1"},
                            logs=tmp_path)
    serving.wait_healthy(stuck)
    serving.wait_healthy(failing)
    routes = {"generation": 1, "endpoint": "iris", "shadow": {"name": "stuck", "percent": 100},
              "members": [*members(blue=100), {"name": "stuck", "url": stuck.url, "weight": 0},
                          {"name": "failing", "url": failing.url, "weight": 0}]}
    made = Router(tmp_path / "router", routes)
    try:
        # the shadow cannot answer until the gate opens: every client is answered meanwhile (it would time out)
        for i in range(70):
            reply = made.served.post_json("/score", {"data": ROWS}, {"x-request-id": f"h-{i}"})
            assert reply.status == 200 and reply.json()["member"] == "blue"
        status = made.status()
        assert status["shadow_dropped"] == 70 - 64  # at most 64 copies in flight: the rest are not queued
        assert "stuck" not in status["answers"]  # none answered yet
        gate.touch()
        deadline = time.monotonic() + 30
        while made.status()["answers"].get("stuck", {}).get("shadow", {}).get("requests", 0) < 64:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        made.switch({**routes, "generation": 2, "shadow": {"name": "failing", "percent": 100}})
        for i in range(10):
            assert made.served.post_json("/score", {"data": ROWS}, {"x-request-id": f"f-{i}"}).status == 200
        records = [r for r in made.records() if r["id"].startswith("f-") and r["kind"] == "shadow"]
        assert len(records) == 10 and {r["status"] for r in records} == {500}
        assert records[0]["out"]["message"].startswith("An unexpected error occurred in scoring script")
    finally:
        made.stop()
        serving.stop(stuck)
        serving.stop(failing)


def test_promotion_and_a_member_going_away_under_load_fail_no_request(tmp_path: Path,
                                                                     fleet: dict[str, Served]) -> None:
    old = serving.start("member.py", "--no-access-log", env={"MEMBER": "old"}, logs=tmp_path)
    serving.wait_healthy(old)
    routes = {"generation": 1, "endpoint": "iris",
              "members": [{"name": "old", "url": old.url, "weight": 100}, *members(green=0)]}
    made = Router(tmp_path / "router", routes)
    failures: list[Any] = []
    answered: Counter[str] = Counter()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                reply = made.score()
            except OSError as exc:
                failures.append(exc)
                continue
            if reply.status != 200:
                failures.append((reply.status, reply.body))
            else:
                answered[reply.json()["member"]] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        made.switch({**routes, "generation": 2, "members": [{"name": "old", "url": old.url, "weight": 10},
                                                           *members(green=90)]})
        time.sleep(1)
        serving.stop(old)  # gone while it still has weight: refused connections go to green
        time.sleep(1)
        made.switch({**routes, "generation": 3, "members": [{"name": "old", "url": old.url, "weight": 0},
                                                           *members(green=100)]})
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        failovers = [made.status()["failovers"]]
        made.stop()
    assert failures == [] and answered["old"] > 0 and answered["green"] > 100
    assert failovers[0] > 0  # requests chosen for 'old' after it stopped went to green


def test_no_member_reachable_is_a_502_naming_each(tmp_path: Path) -> None:
    nobody = serving.free_port()
    made = Router(tmp_path, {"generation": 1, "endpoint": "iris",
                             "members": [{"name": "gone", "url": f"http://127.0.0.1:{nobody}", "weight": 100}]})
    try:
        reply = made.score()
        assert reply.status == 502 and reply.message.startswith("No member of endpoint 'iris' could be reached: gone:")
        assert f"127.0.0.1:{nobody} refused the connection" in reply.message
    finally:
        made.stop()


def test_a_member_slower_than_the_timeout_is_a_504(tmp_path: Path) -> None:
    slow = serving.start("member.py", "--no-access-log", env={"MEMBER": "slow", "MEMBER_SLEEP_S": "3"},
                         logs=tmp_path)
    serving.wait_healthy(slow)
    made = Router(tmp_path / "router", {"generation": 1, "endpoint": "iris", "timeout_s": 0.5,
                                        "members": [{"name": "slow", "url": slow.url, "weight": 100}]})
    try:
        reply = made.score()
        assert reply.status == 504 and reply.message == (
            "Member 'slow' of endpoint 'iris': the member did not answer within 0.5 s.")
    finally:
        made.stop()
        serving.stop(slow)


def test_keys_the_routers_own_and_each_members(tmp_path: Path) -> None:
    def key_file(path: Path, *keys: str) -> Path:
        path.write_text("\n".join(keys) + "\n")
        path.chmod(0o600)
        return path

    member_keys = key_file(tmp_path / "member.keys", "member-key-1", "member-key-2")
    locked = serving.start("member.py", "--no-access-log", "--auth-key-file", str(member_keys),
                           env={"MEMBER": "locked"}, logs=tmp_path)
    serving.wait_healthy(locked)
    own = key_file(tmp_path / "router.keys", "router-key-1", "router-key-2")
    made = Router(tmp_path / "router", {"generation": 1, "endpoint": "iris", "members": [
        {"name": "locked", "url": locked.url, "weight": 100, "key_file": str(member_keys)}]},
                  "--auth-key-file", str(own))
    try:
        assert made.score().status == 401
        assert made.score({"Authorization": "Bearer member-key-1"}).status == 401  # the member's key is not ours
        reply = made.score({"Authorization": "Bearer router-key-2"})
        assert reply.status == 200 and reply.json()["authorization"] == "Bearer member-key-1"
        assert made.served.request("GET", "/endpoint").status == 401
        key_file(own, "router-key-3")  # rotation without a restart
        deadline = time.monotonic() + 5
        while made.score({"Authorization": "Bearer router-key-3"}).status != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert made.score({"Authorization": "Bearer router-key-2"}).status == 401
    finally:
        made.stop()
        serving.stop(locked)


def test_the_routers_own_routes_and_bounds(router: Router) -> None:
    served = router.served
    assert served.request("GET", "/").body == b"Healthy"
    assert served.request("GET", "/nowhere").status == 404
    assert served.request("DELETE", "/score").status == 405
    broken = served.request("POST", "/score", b"x" * 2048, {"Content-Type": "application/json"})
    assert broken.status == 500 and broken.headers["x-mlops-member"] in ("blue", "green")  # the member's, as it was
    assert broken.message.startswith("An unexpected error occurred in scoring script")
    who = router.score().json()["member"]
    metrics = served.request("GET", "/metrics").body.decode()
    assert serving.metric(metrics, "mlops_endpoint_requests_total", member=who, kind="live", code="200") == 1
    assert serving.metric(metrics, "mlops_endpoint_requests_total", member=broken.headers["x-mlops-member"],
                          kind="live", code="500") == 1
    swagger, own = served.request("GET", "/swagger.json"), MEMBERS["blue"].request("GET", "/swagger.json")
    assert (swagger.status, swagger.body) == (own.status, own.body)  # the heaviest member's (blue, 90)
    assert swagger.headers["content-type"] == own.headers["content-type"]


def test_a_body_over_the_limit_is_413_and_never_forwarded(tmp_path: Path, fleet: dict[str, Served]) -> None:
    made = Router(tmp_path, {"generation": 1, "endpoint": "iris", "members": members(blue=100)},
                  "--max-body-bytes", "1000")
    try:
        reply = made.served.request("POST", "/score", b"[" + b"1," * 1000 + b"1]", {"Content-Type": "application/json"})
        assert reply.status == 413 and "larger than the limit of 1000 bytes" in reply.message
        assert "blue" not in made.status()["answers"]
    finally:
        made.stop()


@pytest.mark.parametrize(("routes", "message"), [
    ({"members": []}, "'members' must be a non-empty list"),
    ({"members": [{"name": "a", "url": "http://127.0.0.1:1", "weight": 50}]}, "must add up to 100: they add up to 50"),
    ({"members": [{"name": "a", "url": "ftp://x", "weight": 100}]}, "The url of 'a' must be http://HOST:PORT"),
    ({"members": [{"name": "a b", "url": "http://127.0.0.1:1", "weight": 100}]}, "members[0].name must be a name"),
    ({"members": [{"name": "a", "url": "http://127.0.0.1:1", "weight": 100}], "shadow": {"name": "z"}},
     "The shadow 'z' is not a member (a)"),
    ({"members": [{"name": "a", "url": "http://127.0.0.1:1", "weight": 100}], "sticky_header": "a b"},
     "'sticky_header' must be null or a header name"),
    ({"members": [{"name": "a", "url": "http://127.0.0.1:1", "weight": 101}]}, "from 0 to 100, not 101"),
])
def test_a_bad_routes_table_says_what_is_wrong(routes: dict[str, Any], message: str) -> None:
    with pytest.raises(tables.RoutesError, match=message.replace("(", r"\(").replace(")", r"\)").replace(
            "[", r"\[").replace("]", r"\]")):
        tables.parse(routes)


def test_a_router_whose_routes_file_is_bad_exits_2_saying_why(tmp_path: Path) -> None:
    (tmp_path / "routes.json").write_text("{not json")
    done = subprocess.run([sys.executable, "-m", "mlops_backend.router.serve", "--routes",
                           str(tmp_path / "routes.json"), "--port", "0"], capture_output=True, text=True, timeout=30,
                          env={**os.environ})
    assert done.returncode == 2 and "is not JSON" in done.stderr


def test_traffic_records_keep_bodies_as_json_as_text_or_as_their_size(tmp_path: Path) -> None:
    from mlops_backend.router.traffic import MAX_BODY, TrafficLog

    log = TrafficLog(tmp_path)
    log.record(b"a", "blue", "live", 200, 0.0012, b'{"data":\n[[1, 2]]}', b"[0]")
    log.record(b"b", "blue", "live", 400, 0.002, b"not json", b'{"message": "bad"}')
    log.record(b"c", "green", "shadow", 200, 0.003, None, b"x" * (MAX_BODY + 1))
    log.record(b"c", "blue", "live", 0, 0.5, b"[" + b"1," * MAX_BODY + b"1]", None, "refused")
    assert log.written == 0  # queued, not written: the tick writes
    log.close()
    lines = (tmp_path / next(p.name for p in tmp_path.glob("traffic-*.jsonl"))).read_bytes().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["id"], r["m"], r["kind"], r["status"], r["ms"]) for r in records] == [
        ("a", "blue", "live", 200, 1.2), ("b", "blue", "live", 400, 2.0), ("c", "green", "shadow", 200, 3.0),
        ("c", "blue", "live", 0, 500.0)]
    assert (records[0]["in"], records[0]["out"]) == ({"data": [[1, 2]]}, [0])  # one line per record
    assert (records[1]["in"], records[1]["out"]) == ("not json", {"message": "bad"})
    assert "in" not in records[2] and records[2]["out"] == {"truncated": True, "bytes": MAX_BODY + 1}
    assert records[3]["in"] == {"truncated": True, "bytes": 2 * MAX_BODY + 3} and records[3]["out"] is None
    assert records[3]["error"] == "refused" and log.written == 4 and log.dropped == 0

"""The registry's endpoint records: create and update, routing generations and their history, conflicts, checks,
lookups, the migration, atomicity, and concurrent changes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import mlops_magics as mm
from mlops_magics.errors import ConflictError, InvalidInputError, NotFoundError
from mlops_magics.registry import Endpoint, EndpointChange, Registry, maintenance
from mlops_magics.registry.migrations import SCHEMA_VERSION
from tests.schema import roll_back


def _member(name: str, weight: int, *, service: str | None = None, owned: bool = True) -> dict[str, Any]:
    return {"name": name, "service": service or f"iris-{name}", "weight": weight, "owned": owned}


BLUE_GREEN = {"members": [_member("blue", 90), _member("green", 10)], "shadow": None, "sticky_header": None}


def _endpoint(registry: Registry, name: str = "iris", state: str = "running") -> Endpoint:
    return registry.record_endpoint(name, target="local", state=state, url="http://127.0.0.1:5100",
                                    config={"port": 5100, "pid": 42})


def test_a_new_endpoint_routes_nowhere_and_an_update_keeps_its_routing_and_creation_time(registry: Registry) -> None:
    created = _endpoint(registry, state="creating")
    assert (created.name, created.target, created.state, created.url, dict(created.config)) == (
        "iris", "local", "creating", "http://127.0.0.1:5100", {"port": 5100, "pid": 42})
    assert dict(created.routing) == {"generation": 0, "members": [], "shadow": None, "sticky_header": None}
    assert (created.generation, created.members, created.is_live) == (0, (), True)
    assert created.created_at == created.updated_at and created.created_at.tzinfo is not None
    registry.set_endpoint_routing("iris", BLUE_GREEN, reason="first members")
    updated = registry.record_endpoint("iris", target="local", state="running", url="http://127.0.0.1:5200",
                                       config={"port": 5200})
    assert (updated.state, updated.url, dict(updated.config)) == ("running", "http://127.0.0.1:5200", {"port": 5200})
    assert (updated.generation, updated.members) == (1, ("blue", "green"))  # the routing stays
    assert updated.created_at == created.created_at and updated.updated_at >= created.updated_at
    assert registry.get_endpoint("iris") == updated
    with pytest.raises(TypeError):
        updated.routing["generation"] = 7  # type: ignore[index]  # read-only, like Deployment.config


def test_endpoints_are_listed_by_name_and_their_state_can_change(registry: Registry) -> None:
    for name in ("wine", "iris"):
        _endpoint(registry, name)
    assert [e.name for e in registry.endpoints()] == ["iris", "wine"]
    stopped = registry.set_endpoint_state("wine", "stopped")
    assert (stopped.state, stopped.is_live) == ("stopped", False)
    assert registry.get_endpoint("wine").state == "stopped"
    assert [registry.set_endpoint_state("iris", state).is_live for state in ("unhealthy", "failed", "deleted")] == [
        True, False, False]
    with pytest.raises(InvalidInputError, match=r"Invalid state 'up' for endpoint 'iris': one of 'creating', "
                                                r"'running', 'unhealthy', 'stopped', 'failed', 'deleted'\."):
        registry.set_endpoint_state("iris", "up")
    with pytest.raises(InvalidInputError, match=r"Invalid state 'live'"):
        registry.record_endpoint("new", target="local", state="live", url=None, config={})
    with pytest.raises(InvalidInputError, match=r"Invalid model name 'bad name'"):  # the check services get
        registry.record_endpoint("bad name", target="local", state="creating", url=None, config={})
    assert [e.name for e in registry.endpoints()] == ["iris", "wine"]


def test_each_routing_change_gets_the_next_generation_and_is_kept_in_the_history(registry: Registry) -> None:
    _endpoint(registry)
    first = registry.set_endpoint_routing("iris", {**BLUE_GREEN, "generation": 41}, reason="add blue and green")
    assert first.generation == 1  # a generation in the routing given is ignored: the registry numbers changes
    shifted = {"generation": 1, "members": [_member("blue", 50), _member("green", 50, owned=False)],
               "shadow": {"name": "green", "percent": 25}, "sticky_header": "x-user"}
    second = registry.set_endpoint_routing("iris", shifted, reason="50/50, shadow, sticky", expected_generation=1)
    assert dict(second.routing) == {**shifted, "generation": 2}
    assert second.members == ("blue", "green") and second.updated_at >= first.updated_at
    third = registry.set_endpoint_routing("iris", {"members": [_member("blue", 100)]}, reason="blue only")
    assert dict(third.routing) == {"generation": 3, "members": [_member("blue", 100)], "shadow": None,
                                   "sticky_header": None}  # what was left out is stored as None
    history = registry.endpoint_history("iris")
    assert all(isinstance(c, EndpointChange) for c in history)
    assert [(c.endpoint, c.generation, c.reason) for c in history] == [
        ("iris", 1, "add blue and green"), ("iris", 2, "50/50, shadow, sticky"), ("iris", 3, "blue only")]
    assert [dict(c.routing) for c in history] == [dict(first.routing), dict(second.routing), dict(third.routing)]
    assert [c.at for c in history] == sorted(c.at for c in history) and history[-1].at == third.updated_at
    assert {c.by for c in history} == {history[0].by} and history[0].by
    rolled_back = registry.set_endpoint_routing("iris", history[0].routing, reason="rollback to 1")
    assert (rolled_back.generation, rolled_back.routing["members"]) == (4, first.routing["members"])


def test_a_stale_expected_generation_is_refused_and_changes_nothing(registry: Registry) -> None:
    _endpoint(registry)
    registry.set_endpoint_routing("iris", BLUE_GREEN, reason="one", expected_generation=0)
    registry.set_endpoint_routing("iris", BLUE_GREEN, reason="two", expected_generation=1)
    before = registry.get_endpoint("iris")
    with pytest.raises(ConflictError) as stale:
        registry.set_endpoint_routing("iris", {"members": [_member("blue", 100)]}, reason="three",
                                      expected_generation=1)
    assert str(stale.value) == ("Another process changed the routing of endpoint 'iris' (it is at generation 2, "
                                "expected 1). Look at %endpoint iris and try again.")
    assert registry.get_endpoint("iris") == before
    assert [c.reason for c in registry.endpoint_history("iris")] == ["one", "two"]


BAD_ROUTINGS = [
    (["blue"], r"Invalid routing for endpoint 'iris': \['blue'\] is not a mapping of 'members', 'shadow' and "
               r"'sticky_header'\."),
    ({**BLUE_GREEN, "sticky": "x-user"}, r"unknown key\(s\) 'sticky' \(a routing has 'members', 'shadow' and "
                                         r"'sticky_header'\)"),
    ({"shadow": None}, r"'members' must be a list of members such as \{.*\}, not None\."),
    ({"members": "blue"}, r"'members' must be a list of members .*, not 'blue'\."),
    ({"members": ["blue"]}, r"Invalid member #1 of endpoint 'iris': 'blue' is not a member; write one as \{"),
    ({"members": [{"name": "blue", "service": "iris-blue", "weight": 100, "colour": "b"}]},
     r"Invalid member #1 of endpoint 'iris' \(missing 'owned'; unknown 'colour'\): a member has exactly 'name', "
     r"'service', 'weight' and 'owned'"),
    ({"members": [_member("blue", 100), _member("green green", 0)]},
     r"Invalid name 'green green' of member #2 of endpoint 'iris': a member name is 1-128 characters"),
    ({"members": [{**_member("blue", 100), "name": 7}]}, r"Invalid name 7 of member #1"),
    ({"members": [_member("blue", 100, service="iris/blue")]},
     r"Invalid service 'iris/blue' of member 'blue' of endpoint 'iris': a service name is"),
    ({"members": [_member("blue", 101)]}, r"Invalid weight 101 of member 'blue' of endpoint 'iris': a weight is a "
                                          r"whole number from 0 to 100"),
    ({"members": [_member("blue", -1)]}, r"Invalid weight -1 of member 'blue'"),
    ({"members": [{**_member("blue", 100), "weight": 99.5}]}, r"Invalid weight 99.5 of member 'blue'"),
    ({"members": [{**_member("blue", 100), "weight": True}]}, r"Invalid weight True of member 'blue'"),
    ({"members": [{**_member("blue", 100), "owned": "yes"}]}, r"Invalid 'owned' 'yes' of member 'blue' of endpoint "
                                                              r"'iris': true or false"),
    ({"members": [_member("blue", 50), _member("blue", 50, service="wine")]},
     r"Endpoint 'iris' lists member\(s\) 'blue' more than once: member names are unique\."),
    ({"members": [_member("blue", 60), _member("green", 30)]},
     r"The weights of endpoint 'iris' sum to 90 \(blue 60, green 30\): they must sum to 100"),
    ({"members": [_member("blue", 0), _member("green", 0)]}, r"sum to 0 \(blue 0, green 0\): they must sum to 100"),
    ({**BLUE_GREEN, "shadow": "green"}, r"Invalid shadow 'green' of endpoint 'iris': write it as \{\"name\": MEMBER, "
                                        r"\"percent\": 1-100\}, or None for no shadow\."),
    ({**BLUE_GREEN, "shadow": {"name": "green"}}, r"Invalid shadow \{'name': 'green'\} of endpoint 'iris'"),
    ({**BLUE_GREEN, "shadow": {"name": "red", "percent": 10}},
     r"The shadow of endpoint 'iris' names 'red', which is not one of its members \('blue', 'green'\)\. Add it as a "
     r"member first\."),
    ({"members": [], "shadow": {"name": "red", "percent": 10}}, r"names 'red', which is not one of its members "
                                                                r"\(it has none\)"),
    ({**BLUE_GREEN, "shadow": {"name": "green", "percent": 0}},
     r"Invalid shadow percent 0 of endpoint 'iris': a whole number from 1 to 100"),
    ({**BLUE_GREEN, "shadow": {"name": "green", "percent": 101}}, r"Invalid shadow percent 101"),
    ({**BLUE_GREEN, "sticky_header": "x user"}, r"Invalid sticky header 'x user' of endpoint 'iris': an HTTP header "
                                                r"name is 1-256 letters, digits or any of"),
    ({**BLUE_GREEN, "sticky_header": ""}, r"Invalid sticky header ''"),
    ({**BLUE_GREEN, "sticky_header": "x-user:"}, r"Invalid sticky header 'x-user:'"),
    ({**BLUE_GREEN, "sticky_header": 3}, r"Invalid sticky header 3"),
]


@pytest.mark.parametrize(("routing", "message"), BAD_ROUTINGS)
def test_a_malformed_routing_is_refused_saying_what_is_wrong_and_changes_nothing(
        registry: Registry, routing: Any, message: str) -> None:
    _endpoint(registry)
    registry.set_endpoint_routing("iris", BLUE_GREEN, reason="good")
    before = registry.get_endpoint("iris")
    with pytest.raises(InvalidInputError, match=message):
        registry.set_endpoint_routing("iris", routing, reason="bad", expected_generation=1)
    assert registry.get_endpoint("iris") == before
    assert [c.generation for c in registry.endpoint_history("iris")] == [1]


def test_a_routing_change_needs_a_reason(registry: Registry) -> None:
    _endpoint(registry)
    with pytest.raises(InvalidInputError, match=r"Say why the routing of endpoint 'iris' changes: reason=' ' is empty"):
        registry.set_endpoint_routing("iris", BLUE_GREEN, reason=" ")
    assert registry.endpoint_history("iris") == []


def test_valid_edge_cases_are_accepted(registry: Registry) -> None:
    _endpoint(registry)
    no_members = registry.set_endpoint_routing("iris", {"members": []}, reason="empty")
    assert (no_members.generation, no_members.members) == (1, ())
    standby = registry.set_endpoint_routing(
        "iris", {"members": (_member("blue", 100), _member("green", 0)), "shadow": {"name": "green", "percent": 100},
                 "sticky_header": "X-Session_Id.v2"}, reason="green on standby, shadowing")
    assert standby.routing["members"][1] == _member("green", 0)  # a tuple of members is stored as a list
    assert standby.routing["sticky_header"] == "X-Session_Id.v2"


def test_an_unknown_endpoint_says_which_there_are_and_how_to_create_one(registry: Registry) -> None:
    with pytest.raises(NotFoundError) as none_yet:
        registry.get_endpoint("iris")
    assert str(none_yet.value) == ("No endpoint named 'iris'. There are no endpoints yet. Create one with %endpoint "
                                   "iris --add blue=MODEL:VERSION.")
    for name in ("wine", "digits", "old"):
        _endpoint(registry, name)
    registry.set_endpoint_state("old", "deleted")
    with pytest.raises(NotFoundError) as typo:
        registry.get_endpoint("wien")
    assert str(typo.value) == ("No endpoint named 'wien'. Did you mean 'wine'? Endpoints: 'digits', 'wine'. Removed: "
                               "'old'. Create one with %endpoint wien --add blue=MODEL:VERSION.")
    with pytest.raises(NotFoundError, match=r"^No endpoint named 'fraud'\. Endpoints: 'digits', 'wine'\. Removed"):
        registry.get_endpoint("fraud")
    with pytest.raises(NotFoundError, match=r"Did you mean 'old' \(removed\)\?"):
        registry.get_endpoint("odl")
    for call in (lambda: registry.set_endpoint_state("iris", "running"),
                 lambda: registry.set_endpoint_routing("iris", BLUE_GREEN, reason="x"),
                 lambda: registry.endpoint_history("iris")):
        with pytest.raises(NotFoundError, match=r"^No endpoint named 'iris'\."):
            call()
    assert [e.name for e in registry.endpoints()] == ["digits", "old", "wine"]


def test_endpoints_routing_to_a_service_are_the_live_ones_with_a_member_serving_it(registry: Registry) -> None:
    for name, state in (("iris", "running"), ("canary", "unhealthy"), ("gone", "running"), ("idle", "stopped")):
        _endpoint(registry, name, state)
        registry.set_endpoint_routing(name, {"members": [_member("blue", 100, service=f"{name}-blue"),
                                                         _member("shared", 0, service="shared-svc", owned=False)]},
                                      reason="setup")
    registry.set_endpoint_state("gone", "deleted")
    assert [e.name for e in registry.endpoints_routing_to("shared-svc")] == ["canary", "iris"]
    assert [e.name for e in registry.endpoints_routing_to("iris-blue")] == ["iris"]
    assert registry.endpoints_routing_to("idle-blue") == []  # its endpoint is stopped: the service may go
    assert registry.endpoints_routing_to("blue") == []  # a member's name is not its service
    registry.set_endpoint_routing("iris", {"members": [_member("blue", 100, service="iris-blue")]}, reason="drop")
    assert [e.name for e in registry.endpoints_routing_to("shared-svc")] == ["canary"]


def test_an_endpoint_shows_itself_with_its_routing(registry: Registry) -> None:
    _endpoint(registry)
    e = registry.set_endpoint_routing("iris", {**BLUE_GREEN, "shadow": {"name": "green", "percent": 100},
                                               "sticky_header": "x-user"}, reason="r")
    assert repr(e) == ("<Endpoint iris on local, running http://127.0.0.1:5100: blue 90% (iris-blue), green 10% "
                       "(iris-green); shadow green 100%; sticky header x-user; generation 1>")
    html = e._repr_html_()
    assert "<strong>iris</strong>" in html and "http://127.0.0.1:5100/score" in html and "shadow green 100%" in html


# -- atomicity ---------------------------------------------------------------------------------


def test_a_routing_change_that_fails_after_recording_its_history_keeps_neither(registry: Registry,
                                                                               home: Path) -> None:
    _endpoint(registry)
    registry.set_endpoint_routing("iris", BLUE_GREEN, reason="good")
    conn = sqlite3.connect(home / "registry.db")  # the endpoint's row refuses a routing naming 'poison'
    conn.execute("CREATE TRIGGER refuse BEFORE UPDATE OF routing ON endpoints WHEN NEW.routing LIKE '%poison%' "
                 "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    conn.commit()
    poisoned = {"members": [_member("blue", 50), _member("poison", 50)]}
    with pytest.raises(sqlite3.IntegrityError, match="refused by the test"):
        registry.set_endpoint_routing("iris", poisoned, reason="bad")
    assert registry.get_endpoint("iris").generation == 1
    assert [c.reason for c in registry.endpoint_history("iris")] == ["good"]  # its history row was rolled back too
    assert registry.set_endpoint_routing("iris", BLUE_GREEN, reason="next").generation == 2


def test_a_routing_change_inside_a_write_that_rolls_back_is_not_kept(registry: Registry) -> None:
    _endpoint(registry)
    with pytest.raises(RuntimeError, match="the caller failed"), registry.write():
        assert registry.set_endpoint_routing("iris", BLUE_GREEN, reason="undone").generation == 1
        raise RuntimeError("the caller failed")
    assert registry.get_endpoint("iris").generation == 0 and registry.endpoint_history("iris") == []


# -- schema, maintenance -----------------------------------------------------------------------


def test_an_older_registry_gains_endpoints_keeping_its_deployments(home: Path) -> None:
    reg = Registry(home)
    mm.register({"n": 1}, "iris", registry=reg)
    reg.record_deployment("iris-blue", "iris:1", target="local", state="running", url="http://127.0.0.1:5001")
    reg.close()
    conn = roll_back(home / "registry.db", SCHEMA_VERSION - 1)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'endpoint%'").fetchall() == []
    conn.close()
    reg = Registry(home)
    conn = sqlite3.connect(home / "registry.db")
    assert conn.execute("SELECT max(id) FROM _migrations").fetchone()[0] == SCHEMA_VERSION
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} >= {
        "endpoints", "endpoint_changes"}
    assert [d.name for d in reg.deployments()] == ["iris-blue"]
    _endpoint(reg)
    assert reg.set_endpoint_routing("iris", {"members": [_member("blue", 100)]}, reason="r").members == ("blue",)
    assert reg.endpoints_routing_to("iris-blue")[0].name == "iris"


def test_a_backup_carries_endpoints_and_their_history_and_a_rebuild_from_manifests_says_they_are_lost(
        home: Path, tmp_path: Path) -> None:
    reg = Registry(home)
    mm.register({"n": 1}, "iris", registry=reg)
    _endpoint(reg)
    reg.set_endpoint_routing("iris", BLUE_GREEN, reason="one")
    copy = maintenance.backup(tmp_path / "copy.db", home=home)
    reg.set_endpoint_routing("iris", {"members": [_member("blue", 100)]}, reason="two")
    maintenance.restore(copy.path, home=home, force=True)
    assert [(c.generation, c.reason) for c in reg.endpoint_history("iris")] == [(1, "one")]
    assert reg.get_endpoint("iris").members == ("blue", "green")
    reg.close()
    for suffix in ("", "-wal", "-shm"):
        (home / f"registry.db{suffix}").unlink(missing_ok=True)
    report = maintenance.rebuild(home=home)
    assert report.source == "manifests" and "endpoints" in repr(report)
    rebuilt = Registry(home)
    assert rebuilt.endpoints() == [] and [v.ref for v in rebuilt.find()] == ["iris:1"]


# -- concurrency -------------------------------------------------------------------------------


def test_threads_changing_one_routing_at_once_get_distinct_generations(registry: Registry) -> None:
    _endpoint(registry)
    got: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(10):
            generation = registry.set_endpoint_routing("iris", BLUE_GREEN, reason=f"thread {n} change {i}").generation
            with lock:
                got.append(generation)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 41))
    assert [c.generation for c in registry.endpoint_history("iris")] == list(range(1, 41))
    assert registry.get_endpoint("iris").generation == 40


WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from mlops_magics.errors import ConflictError
    from mlops_magics.registry import Registry

    home, go, mode, changes = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    members = [{"name": "blue", "service": "iris-blue", "weight": 100, "owned": True}]
    registry = Registry(home)
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    generations, conflicts = [], 0
    for n in range(changes):
        while True:
            seen = registry.get_endpoint("iris")
            count = int(seen.routing["sticky_header"].rsplit("-", 1)[1]) if seen.routing["sticky_header"] else 0
            routing = {"members": members, "sticky_header": f"x-count-{count + 1}"}
            expected = seen.generation if mode == "checked" else None
            try:
                changed = registry.set_endpoint_routing("iris", routing, reason=f"{mode} {n}",
                                                        expected_generation=expected)
            except ConflictError:
                conflicts += 1
                continue
            generations.append(changed.generation)
            break
    print(json.dumps({"generations": generations, "conflicts": conflicts}))
""")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["unchecked", "checked"])
def test_processes_changing_one_routing_at_once_never_share_a_generation(home: Path, tmp_path: Path,
                                                                         mode: str) -> None:
    _endpoint(Registry(home))
    go = tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(home), str(go), mode, "25"], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
               for _ in range(3)]
    assert [w.stdout.readline().strip() for w in workers if w.stdout] == ["ready"] * 3
    go.touch()  # all three start changing together
    outputs = [w.communicate(timeout=120) for w in workers]
    assert [w.returncode for w in workers] == [0] * 3, [err for _, err in outputs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    generations = [g for r in results for g in r["generations"]]
    assert sorted(generations) == list(range(1, 76))  # each change its own number, none skipped
    reg = Registry(home)
    history = reg.endpoint_history("iris")
    assert [c.generation for c in history] == list(range(1, 76))
    final = reg.get_endpoint("iris")
    assert final.generation == 75
    if mode == "checked":  # read, then change only if nobody changed it since: no change is lost
        assert final.routing["sticky_header"] == "x-count-75"
        assert [c.routing["sticky_header"] for c in history] == [f"x-count-{n}" for n in range(1, 76)]

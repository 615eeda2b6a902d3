"""Deployments that must not collide: one service per port, one winner per name, no stray signals."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlops_magics as mm
from mlops_magics.errors import ConflictError
from mlops_magics.registry import Registry
from mlops_magics.targets.process import alive, listeners

pytestmark = pytest.mark.serve


@pytest.fixture
def clean(registry: Registry) -> Iterator[Registry]:
    """The test's registry; every deployment it made is stopped afterwards."""
    yield registry
    mm.undeploy(all_services=True)


def _wait_dead(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(pid)


def test_a_second_service_cannot_take_a_port_another_service_serves(clean: Registry, iris_lr: Any,
                                                                     iris_tree: Any, iris: Any) -> None:
    X, _ = iris
    mm.register(iris_lr, "first")
    mm.register(iris_tree, "second")
    one = mm.deploy("first")
    port = int(one.config["port"])
    with pytest.raises(ConflictError, match=rf"Port {port} is in use by another service \(pid {one.config['pid']} "):
        mm.deploy("second", port=port)
    assert [x.name for x in clean.deployments()] == ["first"]  # nothing started, nothing recorded
    assert set(listeners(port)) <= {int(one.config["pid"]), *[c for c in _children(int(one.config["pid"]))]}
    for _ in range(20):  # every answer comes from the first model: no traffic split between two services
        assert mm.call("first", X[:40]) == iris_lr.predict(X[:40]).tolist()


def _children(pid: int) -> list[int]:
    from mlops_magics.targets.process import process_tree

    return process_tree(pid)


def test_a_reload_refuses_a_port_that_a_stranger_joined(clean: Registry, iris_lr: Any, iris: Any) -> None:
    X, _ = iris
    mm.register(iris_lr, "shared")
    d = mm.deploy("shared")
    port, pid = int(d.config["port"]), int(d.config["pid"])
    with socket.socket() as squatter:  # a stranger sharing the port through SO_REUSEPORT
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(ConflictError, match=rf"Port {port} is in use by another service \(pid {os.getpid()} "):
            mm.reload("shared")
    assert clean.get_deployment("shared").config["pid"] == pid  # the running generation stays, untouched
    assert mm.call("shared", X[:3]) == iris_lr.predict(X[:3]).tolist()


RACER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import mlops_magics as mm
    from mlops_magics.errors import ConflictError
    go = Path(sys.argv[1])
    while not go.exists():
        time.sleep(0.001)
    try:
        d = mm.deploy("racer")
        print(json.dumps({"won": True, "pid": d.config["pid"], "port": d.config["port"]}))
    except ConflictError as exc:
        print(json.dumps({"won": False, "message": str(exc)}))
""")


def test_two_kernels_deploying_one_new_name_at_once_leave_one_winner_and_nothing_orphaned(
        clean: Registry, iris_lr: Any, tmp_path: Path) -> None:
    mm.register(iris_lr, "racer")
    go = tmp_path / "go"
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(go)], stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ)) for _ in range(2)]
    time.sleep(1.5)  # both imported and waiting
    go.touch()
    results = [json.loads(r.communicate(timeout=120)[0].strip().splitlines()[-1]) for r in racers]
    winners = [r for r in results if r["won"]]
    losers = [r for r in results if not r["won"]]
    assert len(winners) == 1 and len(losers) == 1, results
    assert re.match(r"Service 'racer' is (being|already) deployed", losers[0]["message"]), losers[0]
    d = clean.get_deployment("racer")
    assert (d.state, d.config["pid"]) == ("running", winners[0]["pid"])
    assert _servers(clean.home) == {int(winners[0]["pid"])}  # the loser started no server, on any port
    mm.undeploy("racer")
    _wait_dead(int(winners[0]["pid"]))
    assert listeners(int(winners[0]["port"])) == [] and _servers(clean.home) == set()


def test_undeploy_never_signals_a_process_that_reused_a_dead_servers_pid(clean: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "gone")
    d = mm.deploy("gone")
    pid = int(d.config["pid"])
    os.killpg(pid, signal.SIGKILL)
    _wait_dead(pid)
    # The kernel gives the dead server's pid to an unrelated process (simulated: the record now names it).
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        for stamp in (d.config.get("pid_stamp"), None):  # a record with its start stamp, and an older one without
            config = {**d.config, "pid": stranger.pid, "pid_stamp": stamp}
            clean.record_deployment("gone", "gone:1", target="local", state="running", url=d.url, config=config)
            assert [x.state for x in mm.list_deployments() if x.name == "gone"] == ["stopped"]
            clean.record_deployment("gone", "gone:1", target="local", state="running", url=d.url, config=config)
            mm.undeploy("gone")
            assert stranger.poll() is None and alive(stranger.pid), "the stranger was signalled"
            assert clean.get_deployment("gone").state == "deleted"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_deploy_refused_before_anything_started_leaves_the_previous_record_as_it_was(
        clean: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "again")
    mm.deploy("again")
    mm.undeploy("again")
    before = clean.get_deployment("again")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConflictError, match="is in use by another service"):
            mm.deploy("again", port=taken.getsockname()[1])
    assert clean.get_deployment("again") == before


SLOW_INIT = "import time\n\ndef init():\n    time.sleep(30)\n\ndef run(data):\n    return data\n"


def test_a_deploy_interrupted_while_it_waits_leaves_nothing_running(clean: Registry, iris_lr: Any) -> None:
    import threading

    from mlops_magics.targets.process import free_port

    mm.register(iris_lr, "slow")
    mm.set_score_script("slow", SLOW_INIT)
    port = free_port()
    timer = threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGINT))  # the user interrupts the kernel
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            mm.deploy("slow", port=port)
    finally:
        timer.cancel()
    deadline = time.monotonic() + 15
    while _servers(clean.home) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _servers(clean.home) == set(), "the interrupted deploy left its server running"
    assert "slow" not in [d.name for d in clean.deployments()]  # and no record: it never served


def _servers(home: Path) -> set[int]:
    """The mlops-serve processes running now for deployments of the registry under ``home``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
                if b"mlops_backend.cli" in command and str(home).encode() in command:
                    found.add(int(entry.name))
            except OSError:
                pass
    return found


def test_port_locks_live_in_a_private_folder_that_no_other_user_can_plant(clean: Registry, iris_lr: Any,
                                                                           tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    mm.register(iris_lr, "locked")
    planted = tmp_path / f"mlops-{os.getuid()}"
    planted.symlink_to(tmp_path / "elsewhere")  # what another user could leave in a shared /tmp
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ConflictError, match=r"is not a folder of this user .* remove it"):
        mm.deploy("locked")
    planted.unlink()
    planted.mkdir(mode=0o755)
    os.chmod(planted, 0o755)
    mm.deploy("locked")
    assert planted.stat().st_mode & 0o777 == 0o700

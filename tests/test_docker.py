"""Docker images and container deployments against a real engine.

The engine and a base image must exist (CI starts both with ``make docker-engine``); without them these tests
skip and say how to get them. One registry serves the whole module so that images share their layers.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

import mlops_magics as mm
from mlops_magics import api
from mlops_magics.errors import BuildError, DeployError, EngineError, InvalidInputError
from mlops_magics.packaging import engine
from mlops_magics.packaging.context import APP_ROOT
from mlops_magics.registry import Registry
from tests.infrastructure import docker_engine

BASE = os.environ.get("MLOPS_BASE_IMAGE") or "mlops-base:bookworm"
SCRIPT = """\
import os, joblib, numpy as np

def init():
    global model
    model = joblib.load(os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model.pkl"))

def run(raw):
    import json
    data = np.array(json.loads(raw)["data"])
    return {"labels": model.predict(data).tolist(), "variant": VARIANT}

VARIANT = "first"
"""


def _engine_or_skip() -> Any:
    """The engine with the base image, or a skip saying how to get them (a failure in CI)."""
    return docker_engine(BASE)


@pytest.fixture(scope="module")
def docker_client() -> Any:
    return _engine_or_skip()


@pytest.fixture(scope="module")
def dreg(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Registry]:
    """A registry for the module, with iris:1 (LogisticRegression) and its entry script and environment."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_BASE_IMAGE", BASE)
    home = tmp_path_factory.mktemp("docker-home")
    reg = Registry(home)
    X, y = load_iris(return_X_y=True)
    mm.register(LogisticRegression(max_iter=500).fit(X, y), "iris", sample=X[:2], registry=reg)
    mm.set_score_script("iris", SCRIPT, registry=reg)
    mm.set_environment("iris", None, from_kernel=True, registry=reg)
    yield reg
    for container in docker_client.containers.list(all=True, filters={"label": f"mlops.home={home}"}):
        container.remove(force=True)
    for image in docker_client.images.list(filters={"label": f"mlops.home={home}"}):
        docker_client.images.remove(image.id, force=True)
    mp.undo()


@pytest.fixture
def cleanup(dreg: Registry) -> Iterator[None]:
    yield
    api.undeploy(all_services=True, registry=dreg)


def _labels(url: str, rows: Any) -> Any:
    import json
    import urllib.request

    request = urllib.request.Request(f"{url}/score", json.dumps({"data": rows}).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _cgroup(container: Any, v2: str, v1: str) -> str:
    code, out = container.exec_run(["sh", "-c", f"cat /sys/fs/cgroup/{v2} 2>/dev/null || cat /sys/fs/cgroup/{v1}"])
    assert code == 0, out
    return str(out.decode()).strip()


# -- without an engine ----------------------------------------------------------------------


def test_no_engine_is_a_clear_error(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    mm.register({"w": 1}, "table")
    with pytest.raises(EngineError, match=r"No Docker engine is reachable at unix:///nonexistent/docker.sock.*"
                                          r"--target local"):
        api.deploy("table", target="docker")
    assert [d.state for d in registry.deployments()] == []  # nothing recorded: it never started
    # A deployment recorded while the engine is away keeps its state: nothing is known, nothing changes.
    registry.record_deployment("table", "table:1", target="docker", state="running", url="http://127.0.0.1:9",
                               config={"container": "0123456789ab", "port": 9})
    assert [d.state for d in api.list_deployments()] == ["running"]


def test_removing_images_none_was_built_for_needs_no_engine(ip: Any, registry: Registry,
                                                             monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    mm.register({"w": 1}, "table")
    gone = api.remove_images("table")
    assert list(gone) == [] and repr(gone) == "No image built for table: nothing to remove."
    ip.run_line_magic("images", "table --remove")
    assert capsys.readouterr().out == "No image built for table: nothing to remove.\n"
    # An image that was built needs the engine to be removed: refused, saying where no engine answered.
    registry.record_image("mlops/table:1-0123456789ab", registry.get("table:1"), context_digest="0" * 64,
                          image_id="sha256:" + "0" * 64, size=1, base_image="python:3.11-slim")
    with pytest.raises(EngineError, match="No Docker engine is reachable at unix:///nonexistent/docker.sock"):
        api.remove_images("table")
    assert [i.tag for i in api.list_images("table")] == ["mlops/table:1-0123456789ab"]  # nothing forgotten


def test_limits_are_checked_before_anything_runs(registry: Registry) -> None:
    from mlops_magics.targets.docker import parse_memory

    assert parse_memory("512m") == 512 * 1024**2 and parse_memory("1.5g") == int(1.5 * 1024**3)
    assert parse_memory("268435456") == 268435456
    with pytest.raises(InvalidInputError, match="not a size"):
        parse_memory("lots")
    with pytest.raises(InvalidInputError, match="minimum of 6m"):
        parse_memory("1m")
    mm.register({"w": 1}, "table")
    with pytest.raises(InvalidInputError, match=r"this machine has \d+ cores"):
        api.deploy("table", target="docker", cpu=1000)
    with pytest.raises(InvalidInputError, match="--target docker"):
        api.deploy("table", memory="512m")


def test_dockerfile_steps_are_stored_validated_and_used(registry: Registry, tmp_path: Path) -> None:
    mm.register({"w": 1}, "table")
    api.set_dockerfile_steps("table", "# certificates\nRUN echo one && \\\n    echo two\nENV FOO=bar\n")
    context = api.package("table", tmp_path / "a", wheels=False)
    assert "RUN echo one && \\\n    echo two\nENV FOO=bar" in context.dockerfile
    lines = context.dockerfile.splitlines()
    assert lines.index("ENV FOO=bar") < next(i for i, x in enumerate(lines) if x.startswith("RUN pip install"))
    assert "RUN echo override" in api.package("table", tmp_path / "b", wheels=False,
                                                 extra_steps="RUN echo override").dockerfile
    with pytest.raises(InvalidInputError, match="cannot change the base image"):
        api.set_dockerfile_steps("table", "FROM ubuntu\n")
    with pytest.raises(InvalidInputError, match="Line 2 .* 'APT-GET'"):
        api.set_dockerfile_steps("table", "RUN true\napt-get install curl\n")
    api.set_dockerfile_steps("table", "")
    assert "RUN echo" not in api.package("table", tmp_path / "c", wheels=False).dockerfile


# -- with an engine -----------------------------------------------------------------------------


@pytest.mark.docker
def test_build_tags_records_and_reuses_the_image(dreg: Registry, docker_client: Any) -> None:
    steps: list[engine.BuildStep] = []
    image = api.build("iris", progress=steps.append, registry=dreg)
    assert re.fullmatch(r"mlops/iris:1-[0-9a-f]{12}", image.tag)
    on_engine = docker_client.images.get(image.tag)
    assert on_engine.id == image.image_id and on_engine.attrs["Size"] == image.size
    assert on_engine.labels["mlops.model"] == "iris:1"
    assert steps and steps[-1].number == steps[-1].total and steps[-1].total >= 15
    assert [i.tag for i in api.list_images("iris:1", registry=dreg)] == [image.tag]
    assert image.base_image == BASE and "MB" in repr(api.list_images(registry=dreg))
    again: list[engine.BuildStep] = []
    assert api.build("iris", progress=again.append, registry=dreg).image_id == image.image_id
    assert again == []  # same context digest: nothing was built


@pytest.mark.docker
def test_a_failing_step_is_named_with_its_output(dreg: Registry) -> None:
    with pytest.raises(BuildError) as caught:
        api.build("iris", extra_steps="RUN echo 'compiling the widget' && exit 3", registry=dreg)
    message = str(caught.value)
    assert re.search(r"failed at step 3/\d+ `RUN echo 'compiling the widget' && exit 3`", message)
    assert "compiling the widget" in message and "returned a non-zero code: 3" in message
    assert caught.value.log and "Step 1/" in Path(caught.value.log).read_text()


@pytest.mark.docker
def test_a_missing_base_image_says_how_to_get_one(dreg: Registry) -> None:
    with pytest.raises(BuildError, match=r"(?s)step 1/\d+ `FROM mlops-nonexistent:1`.*cannot be pulled from here.*"
                                         r"MLOPS_BASE_IMAGE"):
        api.build("iris", base="mlops-nonexistent:1", registry=dreg)


@pytest.mark.docker
def test_deploy_runs_with_limits_scores_and_undeploys(dreg: Registry, docker_client: Any, iris: Any,
                                                      cleanup: None) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    d = api.deploy("iris", target="docker", cpu=0.5, memory="256m", name="iris-svc", registry=dreg)
    assert d.state == "running" and d.target == "docker" and d.url and d.url.startswith("http://127.0.0.1:")
    expected = LogisticRegression(max_iter=500).fit(X, y).predict(X[:5]).tolist()
    assert _labels(d.url, X[:5].tolist()) == {"labels": expected, "variant": "first"}
    assert api.call("iris-svc", X[:5], registry=dreg)["labels"] == expected

    container = docker_client.containers.get(d.config["container"])
    assert _cgroup(container, "memory.max", "memory/memory.limit_in_bytes") == str(256 * 1024**2)
    quota = _cgroup(container, "cpu.max", "cpu/cpu.cfs_quota_us").split()
    period = int(quota[1]) if len(quota) > 1 else int(_cgroup(container, "cpu.max", "cpu/cpu.cfs_period_us"))
    assert int(quota[0]) / period == pytest.approx(0.5)
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    assert container.attrs["Config"]["WorkingDir"] == APP_ROOT  # the server keeps it: the app root, as on Azure

    log = Path(d.config["volume"]) / "logs" / "server.log"
    assert "serving score.py" in log.read_text() and "serving score.py" in api.logs("iris-svc", registry=dreg)
    access = Path(d.config["volume"]) / "logs" / "access.log"
    deadline = time.monotonic() + 10  # the access log is flushed half a second after a request
    while access.read_text().count('"/score"') < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert access.read_text().count('"/score"') == 2
    assert [x.state for x in api.list_deployments(registry=dreg)] == ["running"]

    assert api.undeploy("iris-svc", registry=dreg) == ["iris-svc"]
    import docker

    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(d.config["container"])
    assert dreg.get_deployment("iris-svc").state == "deleted"
    assert log.exists()  # the volume outlives the container


@pytest.mark.docker
def test_two_registries_deploy_services_of_the_same_name_side_by_side(dreg: Registry, docker_client: Any,
                                                                      tmp_path: Path, iris: Any,
                                                                      cleanup: None) -> None:
    # Each tutorial notebook has a registry of its own; two of them deploying 'iris' once shared the container
    # name mlops-iris-1, and the second deploy removed the first one's container as "a leftover".
    import shutil

    X, _ = iris
    dreg.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    other_home = tmp_path / "other-registry"
    shutil.copytree(dreg.home, other_home, ignore=shutil.ignore_patterns("deployments", "secrets"))
    other = Registry(other_home)
    first = api.deploy("iris", target="docker", name="twin", registry=dreg)
    try:
        second = api.deploy("iris", target="docker", name="twin", registry=other)
        try:
            assert first.config["container_name"] != second.config["container_name"]
            assert [d.state for d in api.list_deployments(registry=dreg)] == ["running"]
            assert docker_client.containers.get(first.config["container"]).status == "running"  # still there
            assert _labels(first.url, X[:2].tolist())["variant"] == _labels(second.url, X[:2].tolist())["variant"]
        finally:
            api.undeploy("twin", registry=other)
    finally:
        api.undeploy("twin", registry=dreg)


@pytest.mark.docker
def test_auth_and_logs_surviving_a_container_restart(dreg: Registry, docker_client: Any, cleanup: None) -> None:
    import json
    import urllib.error
    import urllib.request

    d = api.deploy("iris", target="docker", name="iris-restart", auth=True, registry=dreg)
    with pytest.raises(urllib.error.HTTPError, match="401"):
        _labels(str(d.url), [[5.1, 3.5, 1.4, 0.2]])
    container = docker_client.containers.get(d.config["container"])
    keys = api.keys("iris-restart", registry=dreg)
    inspected = json.dumps(container.attrs)  # what `docker inspect` shows anyone with access to the engine
    assert keys.primary not in inspected and keys.secondary not in inspected
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert mounts["/run/mlops-secrets"]["RW"] is False  # the keys' folder, read-only
    rotated = api.keys("iris-restart", regenerate="secondary", registry=dreg)  # seen through the mount
    assert api.call("iris-restart", [[5.1, 3.5, 1.4, 0.2]], registry=dreg)["labels"] == [0]
    request = urllib.request.Request(f"{d.url}/score", json.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]}).encode(),
                                     {"Content-Type": "application/json",
                                      "Authorization": f"Bearer {rotated.secondary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read())["labels"] == [0]
    container.restart(timeout=10)
    deadline = time.monotonic() + 60
    while api.list_deployments(registry=dreg)[0].state != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert api.call("iris-restart", [[5.1, 3.5, 1.4, 0.2]], registry=dreg)["labels"] == [0]
    assert api.logs("iris-restart", tail=200, registry=dreg).count("serving score.py") == 2


@pytest.mark.docker
def test_a_script_only_change_rebuilds_one_layer_and_reload_serves_it(dreg: Registry, docker_client: Any,
                                                                      cleanup: None) -> None:
    d = api.deploy("iris", target="docker", name="iris-reload", registry=dreg)
    first_image = d.config["image"]
    mm.set_score_script("iris", SCRIPT.replace('"first"', '"second"'), registry=dreg)
    try:
        events: list[Any] = []
        reloaded = api.reload("iris-reload", progress=events.append, registry=dreg)
        steps = [e for e in events if isinstance(e, engine.BuildStep)]  # the build's; the others say the steps
        said = [e.what for e in events if not isinstance(e, engine.BuildStep)]
        assert said[0] == "checking iris-reload" and any(w.startswith("starting container") for w in said)
        assert reloaded.config["image"] != first_image and reloaded.config["port"] == d.config["port"]
        assert reloaded.config["generation"] == 2
        answers = {_labels(str(reloaded.url), [[5.1, 3.5, 1.4, 0.2]])["variant"] for _ in range(30)}
        assert answers == {"second"}  # from the moment reload returns, only the new container answers
        rebuilt = {s.number for s in steps if s.line and s.line.startswith("--->") and not s.cached}
        cached = {s.number for s in steps if s.cached}
        pip_step = next(s.number for s in steps if s.instruction.startswith("RUN pip install"))
        copy_app = next(s.number for s in steps if s.instruction.startswith("COPY app/"))
        assert pip_step in cached and copy_app not in cached and copy_app in rebuilt
        deadline = time.monotonic() + 30  # the old container drains and is removed in the background
        import docker

        while time.monotonic() < deadline:
            try:
                docker_client.containers.get(d.config["container"])
            except docker.errors.NotFound:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the replaced container was not removed")
    finally:
        mm.set_score_script("iris", SCRIPT, registry=dreg)


@pytest.mark.docker
def test_an_oom_kill_is_a_clear_error_and_nothing_is_left(dreg: Registry, docker_client: Any,
                                                          cleanup: None) -> None:
    mm.register({"w": 1}, "hungry", registry=dreg)
    mm.set_score_script("hungry", "def init():\n    global ballast\n    ballast = bytearray(400 * 1024 * 1024)\n"
                                  "    ballast[::4096] = b'x' * len(ballast[::4096])\n\n"
                                  "def run(data):\n    return len(ballast)\n", registry=dreg)
    with pytest.raises(DeployError, match=r"killed for lack of memory \(--memory 64m\); deploy it with more --memory"):
        api.deploy("hungry", target="docker", memory="64m", registry=dreg)
    assert dreg.get_deployment("hungry").state == "failed"
    assert docker_client.containers.list(all=True, filters={"label": "mlops.service=hungry"}) == []


@pytest.mark.docker
def test_port_taken_and_image_missing_are_clear_errors(dreg: Registry, docker_client: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(DeployError, match=f"Port {port} is taken"):
            api.deploy("iris", target="docker", port=port, registry=dreg)
    mm.register({"w": 2}, "unbuilt", registry=dreg)
    with pytest.raises(DeployError, match=r"Image mlops/unbuilt:1-\w+ .*not on this Docker engine: build it with "
                                          r"%build unbuilt:1"):
        api.deploy("unbuilt", target="docker", build=False, registry=dreg)


@pytest.mark.docker
def test_the_magics_build_with_progress_and_deploy_with_limits(ip: Any, docker_client: Any, iris: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.tree import DecisionTreeClassifier

    monkeypatch.setenv("MLOPS_BASE_IMAGE", BASE)
    X, y = iris
    ip.user_ns["tree"] = DecisionTreeClassifier(max_depth=2).fit(X, y)
    ip.run_line_magic("register", "tree")
    ip.run_cell_magic("dockerfile_steps", "tree", "RUN echo from-the-cell > /etc/mlops-step\n")
    image = ip.run_line_magic("build", "tree")
    try:
        assert image.tag.startswith("mlops/tree:1-") and image.size > 0
        d = ip.run_line_magic("deploy", "tree --target docker --cpu 1 --memory 300m --no-build")
        container = docker_client.containers.get(d.config["container"])
        assert container.exec_run(["cat", "/etc/mlops-step"]).output.decode().strip() == "from-the-cell"
        assert container.attrs["HostConfig"]["Memory"] == 300 * 1024**2
        assert ip.run_line_magic("call", "tree [[5.1, 3.5, 1.4, 0.2]]") == [0]
        assert "docker" in repr(ip.run_line_magic("deployments", ""))
        assert "mlops/tree:1-" in repr(ip.run_line_magic("images", "tree"))
        with pytest.raises(UsageError, match=r"used by the live deployment 'tree': %undeploy tree first"):
            ip.run_line_magic("images", "tree --remove")
    finally:
        ip.run_line_magic("undeploy", "--all")
    ip.run_line_magic("images", "tree --remove")
    assert repr(ip.run_line_magic("images", "tree")).startswith("No images built yet")
    import docker

    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image.tag)


@pytest.mark.docker
def test_a_container_collects_into_the_service_volume_and_flushes_when_stopped(dreg: Registry, docker_client: Any,
                                                                              cleanup: None) -> None:

    api.deploy("iris", target="docker", name="iris-collect", collect=True, registry=dreg)
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    for i in range(50):
        api.call("iris-collect", rows, request_id=f"c-{i}", registry=dreg)
    api.undeploy("iris-collect", registry=dreg)  # SIGTERM: the container writes what it queued, then exits
    frame = api.collected("iris-collect", registry=dreg)
    assert frame["request_id"].nunique() == 50 and len(frame) == 100
    assert list(frame["prediction"][:2]) == [0, 2] and list(frame["x2"][:2]) == [1.4, 5.2]
    stats = frame.attrs["stats"]
    assert (stats.written, stats.dropped, stats.lost) == (50, 0, 0)
    store = dreg.home / "deployments" / "iris-collect" / "volume" / "data" / "collected"
    assert all(p.stat().st_uid == os.getuid() for p in store.rglob("*.jsonl")), "files belong to the caller"


@pytest.mark.docker
def test_an_endpoint_routes_to_a_container_with_its_key_and_a_local_process(dreg: Registry, docker_client: Any,
                                                                             iris: Any, cleanup: None) -> None:
    import json
    import urllib.request

    X, _ = iris
    boxed = api.deploy("iris", target="docker", name="ep-boxed", auth=True, registry=dreg)
    try:
        made = api.endpoint("ep", add="blue=ep-boxed,green=iris:1", traffic="blue=50,green=50", registry=dreg)
        assert made.member("blue").target == "docker" and made.member("green").target == "local"
        answered = set()
        for _ in range(40):  # the router sends blue's key to the container; the client sends none
            request = urllib.request.Request(f"{made.url}/score", json.dumps({"data": X[:2].tolist()}).encode(),
                                             {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200 and json.loads(response.read())["variant"] == "first"
                answered.add(response.headers["x-mlops-member"])
        assert answered == {"blue", "green"}
        assert api.endpoint_status("ep", registry=dreg).member("blue").answers["live"]["errors"] == 0
    finally:
        api.delete_endpoint("ep", registry=dreg)
    assert boxed.name in {d.name for d in dreg.deployments() if d.is_live}  # not the endpoint's to remove

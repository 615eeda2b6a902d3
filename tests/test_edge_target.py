"""The edge target for real: a lean module on a simulated device of the local Docker engine, run from its own
deployment manifest, with real cgroup limits, a link that is really cut, store-and-forward across it and a
kill -9, eviction, and MQTT through Debian's mosquitto on the device.

They need a Docker engine with the base image, and root (the device's veth link): without them they skip saying
so, and fail instead where MLOPS_REQUIRE_DOCKER is set (CI runs as root with an engine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import mlops_magics as mm
from mlops_magics import api
from mlops_magics.edge.manifest import build_manifest, module_create_options, validate_manifest
from mlops_magics.errors import DeployError, InvalidInputError
from mlops_magics.registry import Deployment, Registry
from mlops_magics.targets.edge.device import Device
from mlops_magics.targets.edge.target import EdgeSettings, EdgeTarget, container_config
from tests.infrastructure import docker_engine, give_up

BASE = os.environ.get("MLOPS_BASE_IMAGE") or "mlops-base:bookworm"
T = TypeVar("T")

pytestmark = pytest.mark.docker


def _wait(check: Callable[[], T], what: str, timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def ereg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry with iris:1 (LogisticRegression, with a sample): its module image is built once for the module."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    client = docker_engine(BASE, "An edge device is a container of a real Docker engine.")
    if os.geteuid() != 0 or shutil.which("ip") is None:
        give_up("MLOPS_REQUIRE_DOCKER", "A simulated edge device needs root and iproute2 (a veth link, nsenter): "
                "run the tests as root.")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_BASE_IMAGE", BASE)
    home = tmp_path_factory.mktemp("edge-home")
    mp.setenv("MLOPS_HOME", str(home))
    reg = Registry(home)
    X, y = load_iris(return_X_y=True)
    mm.register(LogisticRegression(max_iter=500).fit(X, y), "iris", sample=X[:5], registry=reg)
    yield reg
    api.undeploy(all_services=True, registry=reg)
    target = EdgeTarget(reg)
    for device in target.devices().all():
        target.devices().remove(device.name)
    for container in client.containers.list(all=True, filters={"label": f"mlops.home={home}"}):
        container.remove(force=True)
    for image in client.images.list(filters={"label": f"mlops.home={home}"}):
        client.images.remove(image.id, force=True)
    mp.undo()


@pytest.fixture
def undeploy(ereg: Registry) -> Iterator[None]:
    yield
    api.undeploy(all_services=True, registry=ereg)


def _device(reg: Registry, deployment: Deployment) -> Device:
    return EdgeTarget(reg).devices().get(deployment.config["settings"]["device"])


def _score_on_device(reg: Registry, deployment: Deployment, ids: list[str]) -> list[Any]:
    """Score one row per request id from inside the module's container (on the device: no link needed)."""
    container = EdgeTarget(reg).engine.containers.get(deployment.config["container"])
    code = ("import json, sys, urllib.request\n"
            "out = []\n"
            "for rid in sys.argv[1:]:\n"
            f"    r = urllib.request.Request('http://127.0.0.1:{deployment.config['port']}/score', "
            "data=json.dumps({'data': [[5.9, 3.0, 5.1, 1.8]]}).encode(), headers={'Content-Type': "
            "'application/json', 'x-request-id': rid})\n"
            "    out.append(json.loads(urllib.request.urlopen(r, timeout=10).read()))\n"
            "print(json.dumps(out))\n")
    code_, output = container.exec_run(["python", "-c", code, *ids])
    assert code_ == 0, output.decode(errors="replace")
    return list(json.loads(output.decode().strip().splitlines()[-1]))


def _score_from_here(deployment: Deployment, rid: str) -> Any:
    request = urllib.request.Request(f"{deployment.url}/score", json.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]}).encode(),
                                     {"Content-Type": "application/json", "x-request-id": rid})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _agent(deployment: Deployment) -> dict[str, Any]:
    try:
        return dict(json.loads((Path(deployment.config["volume"]) / "agent.json").read_text()))
    except (OSError, ValueError):
        return {}


def _collected_ids(reg: Registry, service: str) -> list[str]:
    frame = api.collected(service, registry=reg)
    return [str(r) for r in frame["request_id"]] if len(frame) else []


def _cgroup(container: Any, v2: str, v1: str) -> str:
    code, out = container.exec_run(["sh", "-c", f"cat /sys/fs/cgroup/{v2} 2>/dev/null || cat /sys/fs/cgroup/{v1}"])
    assert code == 0, out
    return str(out.decode()).strip()


# -- without a device ------------------------------------------------------------------------


def test_edge_settings_are_checked_before_anything_is_built() -> None:
    with pytest.raises(InvalidInputError, match="no setting 'replicas'"):
        EdgeSettings.of({"replicas": 2})
    with pytest.raises(InvalidInputError, match="--quantize 'int4' is not supported"):
        EdgeSettings.of({"quantize": "int4"})
    with pytest.raises(InvalidInputError, match="--max-buffer 1k is too small"):
        EdgeSettings.of({"max_buffer": "1k"})
    with pytest.raises(InvalidInputError, match="Device name 'Sim_1' is not valid"):
        EdgeSettings.of({"device": "Sim_1"})
    with pytest.raises(InvalidInputError, match="are for --target edge"):
        api.edge_options("docker", device="sim-1")
    assert api.edge_options("edge", device="sim-2", max_buffer="1m") == {"device": "sim-2", "max_buffer": "1m"}


def test_a_port_published_under_another_number_is_refused_for_the_simulated_device() -> None:
    manifest = build_manifest("iris", "mlops/iris:2", model="iris", model_version=2, port=5001, host_port=8080)
    parsed = validate_manifest(manifest)["iris"]
    device = Device(name="sim-1", container="abc", index=0, folder="/tmp/nowhere")
    with pytest.raises(InvalidInputError, match="publishes the module's port 5001/tcp as 8080"):
        container_config(manifest, "iris", parsed, device, name="x")
    same = build_manifest("iris", "mlops/iris:2", model="iris", model_version=2, port=5001, cpu=0.5,
                          memory="256m", restart_policy="on-failure")
    config = container_config(same, "iris", validate_manifest(same)["iris"], device, name="x")
    assert config["HostConfig"]["NetworkMode"] == "container:abc" and "PortBindings" not in config["HostConfig"]
    assert "ExposedPorts" not in config and config["HostConfig"]["RestartPolicy"] == {"Name": "on-failure"}
    assert (config["HostConfig"]["NanoCpus"], config["HostConfig"]["Memory"]) == (500_000_000, 256 * 2**20)


# -- on a device -----------------------------------------------------------------------------


def test_the_module_runs_its_manifest_on_the_device_with_real_limits_and_scores(ereg: Registry, iris: Any,
                                                                                 undeploy: None) -> None:
    from sklearn.linear_model import LogisticRegression

    deployed = api.deploy("iris", target="edge", cpu=0.5, memory="256m", collect=True,
                          target_options={"device": "sim-a"}, registry=ereg)
    device = _device(ereg, deployed)
    assert deployed.url == f"http://{device.address}:5001" and deployed.config["source"] == "iris:1"
    served = ereg.get(f"{deployed.model_name}:{deployed.model_version}")
    assert served.flavor == "onnx", "the module serves the ONNX version"
    X, y = iris
    expected = LogisticRegression(max_iter=500).fit(X, y).predict(X[:5]).tolist()
    assert api.call("iris", X[:5], registry=ereg) == expected
    # the container is exactly the manifest's createOptions, in the device's namespace
    manifest = json.loads(Path(deployed.config["manifest"]).read_text())
    options = module_create_options(manifest, "iris")
    inspected = EdgeTarget(ereg).engine.api.inspect_container(deployed.config["container"])
    host = inspected["HostConfig"]
    for key in ("NanoCpus", "Memory", "MemorySwap", "Binds"):
        assert host[key] == options["HostConfig"][key], key
    assert inspected["Config"]["Cmd"] == options["Cmd"]
    assert host["NetworkMode"] == f"container:{device.container}"
    assert set(options["HostConfig"]["PortBindings"]) == {"5001/tcp"}, "the manifest publishes the port"
    container = EdgeTarget(ereg).engine.containers.get(deployed.config["container"])
    memory = _cgroup(container, "memory.max", "memory/memory.limit_in_bytes")
    assert int(memory) == 256 * 2**20
    quota = _cgroup(container, "cpu.max", "cpu/cpu.cfs_quota_us") + " " + _cgroup(
        container, "cpu.max", "cpu/cpu.cfs_period_us")
    numbers = [int(n) for n in quota.split() if n.isdigit()]
    assert numbers[0] / numbers[1] == pytest.approx(0.5), quota
    _, out = container.exec_run(["python", "-c", "import importlib.util as u; print(u.find_spec('sklearn'))"])
    assert out.decode().strip() == "None", "no scikit-learn in the module"
    status = api.edge_status("sim-a", registry=ereg)
    assert status.online and status.module("iris").state == "running"
    assert "device sim-a (online)" in EdgeTarget(ereg).describe(deployed)


def test_offline_the_device_scores_on_and_forwards_every_record_exactly_once_in_order(ereg: Registry,
                                                                                     undeploy: None) -> None:
    deployed = api.deploy("iris", target="edge", name="iris-off", collect=True, target_options={"device": "sim-b"},
                          registry=ereg)
    before = [f"before-{i}" for i in range(10)]
    for rid in before:
        _score_from_here(deployed, rid)
    _wait(lambda: _agent(deployed).get("forwarded_records") == 10, "the first records forwarded")
    offline = api.edge_offline("sim-b", registry=ereg)
    assert not offline.online and "OFFLINE" in repr(offline)
    with pytest.raises(DeployError, match="'sim-b' is offline"):
        api.call("iris-off", [[5.1, 3.5, 1.4, 0.2]], registry=ereg)
    during = [f"offline-{i}" for i in range(120)]
    answers = _score_on_device(ereg, deployed, during)
    assert answers == [[2]] * len(during), "the module scores on while the link is cut"
    buffered = _wait(lambda: (a := _agent(deployed)).get("buffered_records") == 120 and not a["hub_reachable"] and a,
                     "the offline records buffered on the device")
    assert buffered["forwarded_records"] == 10
    assert _collected_ids(ereg, "iris-off") == before, "nothing crossed the cut link"
    back = api.edge_online("sim-b", wait=60, registry=ereg)
    assert back.online and back.module("iris-off").buffered == 0
    assert "every record collected on the device is forwarded" in back.note
    ids = _collected_ids(ereg, "iris-off")
    assert ids == before + during, "every record once, in the order scored"
    assert back.module("iris-off").forwarded == 130 and back.module("iris-off").evicted == 0


def test_a_kill_9_of_the_module_mid_forward_loses_and_duplicates_nothing(ereg: Registry, undeploy: None) -> None:
    deployed = api.deploy("iris", target="edge", name="iris-kill", collect=True,
                          target_options={"device": "sim-c"}, registry=ereg)
    api.edge_offline("sim-c", registry=ereg)
    sent = [f"k-{i}" for i in range(600)]
    for start in range(0, len(sent), 200):
        _score_on_device(ereg, deployed, sent[start:start + 200])
    _wait(lambda: _agent(deployed).get("buffered_records") == 600, "the records buffered")
    engine = EdgeTarget(ereg).engine
    pid = engine.api.inspect_container(deployed.config["container"])["State"]["Pid"]
    api.edge_online("sim-c", wait=0, registry=ereg)
    _wait(lambda: _agent(deployed).get("forwarded_records", 0) > 0 or _collected_ids(ereg, "iris-kill"),
          "forwarding to begin", timeout=30)
    os.kill(pid, signal.SIGKILL)  # the module's main process: its agent, server and bridge go with it
    _wait(lambda: (s := engine.api.inspect_container(deployed.config["container"])["State"])["Running"]
          and s["Pid"] != pid, "the device to restart the module (its manifest's restart policy)")
    _wait(lambda: len(_collected_ids(ereg, "iris-kill")) >= 600 and _agent(deployed).get("buffered_records") == 0,
          "the rest forwarded after the restart", timeout=90)
    ids = _collected_ids(ereg, "iris-kill")
    assert ids == sent, f"{len(ids)} records, {len(set(ids))} distinct, for {len(sent)} scored"


def test_a_full_buffer_evicts_the_oldest_records_and_counts_them(ereg: Registry, undeploy: None) -> None:
    deployed = api.deploy("iris", target="edge", name="iris-small", collect=True,
                          target_options={"device": "sim-d", "max_buffer": "64k"}, registry=ereg)
    api.edge_offline("sim-d", registry=ereg)
    sent = [f"e-{i:04d}" for i in range(800)]
    for start in range(0, len(sent), 200):
        _score_on_device(ereg, deployed, sent[start:start + 200])
    agent = _wait(lambda: (a := _agent(deployed)).get("taken_records") == 800 and a, "the records taken")
    assert agent["evicted_records"] > 0 and agent["buffered_bytes"] <= 64 * 1024
    status = api.edge_online("sim-d", wait=60, registry=ereg)
    module = status.module("iris-small")
    ids = _collected_ids(ereg, "iris-small")
    assert module.evicted == agent["evicted_records"] and len(ids) + module.evicted == len(sent)
    assert ids == sent[module.evicted:], "the oldest went, the rest arrived in order"
    assert f"evicted {module.evicted:,}" in repr(status)


def test_mqtt_messages_in_and_predictions_out_through_the_devices_broker(ereg: Registry, undeploy: None) -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        give_up("MLOPS_REQUIRE_MQTT", "Debian's mosquitto is not installed (apt-get install mosquitto): the device's "
                "broker cannot run.")
    paho = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is in the test extra: pip install -e '.[test]'")
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    deployed = api.deploy("iris", target="edge", name="iris-mqtt", target_options={"device": "sim-e"},
                          registry=ereg)
    assert deployed.config["mqtt"], "the device has a broker: the module takes its messages"
    device = _device(ereg, deployed)
    received: list[Any] = []
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_message = lambda _c, _u, message: received.append(json.loads(message.payload))
    client.connect(device.address, 1883)
    client.subscribe("mlops/score/output", qos=1)
    client.loop_start()
    try:
        time.sleep(0.5)
        ids = [str(uuid.uuid4()) for _ in range(3)]
        for rid in ids:
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = rid.encode()
            client.publish("mlops/score/input", json.dumps({"data": [[6.7, 3.0, 5.2, 2.3]]}), qos=1,
                           properties=properties)
        _wait(lambda: len(received) >= 3, "the module's answers on the output topic", timeout=30)
    finally:
        client.loop_stop()
        client.disconnect()
    assert [(r["request_id"], r["status"], r["output"]) for r in received] == [(rid, 200, [2]) for rid in ids]


def test_the_manifest_for_a_real_device_from_a_deployment(ereg: Registry, tmp_path: Path, undeploy: None) -> None:
    api.deploy("iris", target="edge", name="iris-man", cpu=0.5, memory="256m", collect=True,
               target_options={"device": "sim-f"}, registry=ereg)
    made = api.edge_manifest("iris-man", output=tmp_path / "deployment.json", image="myacr.azurecr.io/iris:2",
                             registry=ereg)
    written = json.loads((tmp_path / "deployment.json").read_text())
    assert written == made.manifest and validate_manifest(written)
    options = module_create_options(written, "iris-man")
    assert options["HostConfig"]["PortBindings"] == {"5001/tcp": [{"HostPort": "5001"}]}
    assert options["HostConfig"]["Binds"] == ["/var/lib/mlops-edge/iris-man:/var/mlops-data:rw"]
    assert options["HostConfig"]["NanoCpus"] == 500_000_000
    module = written["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["iris-man"]
    assert module["settings"]["image"] == "myacr.azurecr.io/iris:2"
    assert "MLOPS_EDGE_HUB" not in module.get("env", {}), "no hub given: a real device's module does not forward"
    assert "az iot edge set-modules" in made.instructions and "Wrote" in repr(made)


def test_the_magics_deploy_cut_restore_and_show_a_device(ereg: Registry, ip: Any, undeploy: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(ereg.home))  # the shell's default registry: the module's
    ip.run_line_magic("deploy", "iris --target edge --name iris-ip --device sim-g --collect --no-mqtt")
    deployed = ereg.get_deployment("iris-ip")
    assert deployed.config["settings"]["device"] == "sim-g" and deployed.config["mqtt"] is False
    for rid in ("m-1", "m-2"):
        _score_from_here(deployed, rid)
    status = ip.run_line_magic("edge", "offline sim-g")
    assert not status.online
    _score_on_device(ereg, deployed, ["m-3"])
    status = ip.run_line_magic("edge", "online sim-g --wait 60")
    assert status.online and status.module("iris-ip").forwarded == 3
    shown = ip.run_line_magic("edge", "status sim-g")
    assert "<table" in shown._repr_html_() and "iris-ip" in repr(shown)
    assert "sim-g" in repr(ip.run_line_magic("edge", "status"))
    listed = ip.run_line_magic("deployments", "")
    assert "device sim-g (online)" in listed.details["iris-ip"]


def test_an_int8_module_serves_the_quantized_version_and_says_how_it_compares(ereg: Registry, iris: Any,
                                                                              undeploy: None) -> None:
    from sklearn.neural_network import MLPClassifier

    X, y = iris
    mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=3000, tol=1e-3, random_state=0).fit(X, y)  # MatMul
    source = mm.register(mlp, "iris-mlp", sample=X[:20], registry=ereg)
    deployed = api.deploy(source.ref, target="edge", name="iris-int8",
                          target_options={"device": "sim-h", "quantize": "int8"}, registry=ereg)
    served = ereg.get(f"{deployed.model_name}:{deployed.model_version}")
    assert served.flavor == "onnx" and served.tags.get("onnx.quantized"), served.tags
    assert deployed.config["source"] == source.ref
    assert any("int8 vs float: PASSED" in line for line in deployed.config["quantization"])
    answers = api.call("iris-int8", X, registry=ereg)
    agree = sum(int(a == b) for a, b in zip(answers, mlp.predict(X), strict=True))
    assert agree >= 0.95 * len(X), f"int8 agrees with the float MLP on {agree} of {len(X)} rows"


def test_a_hub_that_went_is_started_again_on_its_port_and_nothing_is_lost(ereg: Registry, undeploy: None) -> None:
    deployed = api.deploy("iris:1", target="edge", name="iris-hub", collect=True, target_options={"device": "sim-i"},
                          registry=ereg)
    hub = deployed.config["hub"]
    os.kill(int(hub["pid"]), signal.SIGKILL)  # this machine's side went (a restarted machine, a killed process)
    ids = [f"h-{i}" for i in range(15)]
    for rid in ids:
        _score_from_here(deployed, rid)
    _wait(lambda: (a := _agent(deployed)).get("buffered_records") == 15 and a.get("hub_reachable") is False,
          "the records buffered while the hub is away")
    status = api.edge_online("sim-i", wait=60, registry=ereg)
    again = ereg.get_deployment("iris-hub").config["hub"]
    assert again["port"] == hub["port"] and again["pid"] != hub["pid"], "the same address, a new process"
    assert status.module("iris-hub").buffered == 0 and _collected_ids(ereg, "iris-hub") == ids

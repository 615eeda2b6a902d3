"""The kubernetes target against a real cluster (``make kube-cluster``: Kubernetes 1.20 on this machine's Docker
engine; pods on the host network, reached on 127.0.0.1 only) and a real image registry.

Without a cluster these tests skip, saying how to get one; CI sets MLOPS_REQUIRE_KUBERNETES=1 and they must run.
One registry serves the module, so the image is built once.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import mlops_magics as mm
from mlops_magics import api
from mlops_magics.errors import DeployError
from mlops_magics.registry import Registry
from mlops_magics.targets.kube.cluster import Cluster, connect
from tests.infrastructure import KubeCluster
from tests.test_docker import BASE, SCRIPT, _engine_or_skip

pytestmark = [pytest.mark.kubernetes, pytest.mark.docker]

HOST = {"network": "host", "cpu": 0.05, "memory_gb": 0.25}
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@pytest.fixture(scope="module")
def kreg(tmp_path_factory: pytest.TempPathFactory, kube_cluster: KubeCluster) -> Iterator[Registry]:
    """A registry for the module (iris:1 with its script and environment), the cluster as the current context."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    client = _engine_or_skip()
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_BASE_IMAGE", BASE)
    mp.setenv("KUBECONFIG", str(kube_cluster.kubeconfig))
    home = tmp_path_factory.mktemp("kube-home")
    reg = Registry(home)
    X, y = load_iris(return_X_y=True)
    mm.register(LogisticRegression(max_iter=500).fit(X, y), "iris", sample=X[:2], registry=reg)
    mm.set_score_script("iris", SCRIPT, registry=reg)
    mm.set_environment("iris", None, from_kernel=True, registry=reg)
    yield reg
    api.undeploy(all_services=True, registry=reg)
    import docker

    deadline = time.monotonic() + 60  # the kubelet stops the last containers shortly after their pods are gone
    for image in client.images.list(filters={"label": f"mlops.home={home}"}):
        while True:
            try:
                client.images.remove(image.id, force=True)
                break
            except docker.errors.APIError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    mp.undo()


@pytest.fixture
def cleanup(kreg: Registry) -> Iterator[None]:
    yield
    api.undeploy(all_services=True, registry=kreg)


def _post(url: str, rows: Any, key: str | None = None, timeout: float = 10) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(f"{url}/score", json.dumps({"data": rows}).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _objects(cluster: Cluster, name: str, namespace: str) -> list[str]:
    found = []
    for api_version, kind in (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "Secret"),
                              ("autoscaling/v2beta2", "HorizontalPodAutoscaler")):
        if cluster.serves(api_version, kind) and cluster.get(api_version, kind, name if kind != "Secret" else
                                                             f"{name}-keys", namespace):
            found.append(kind)
    return found


def test_deploy_to_available_call_and_undeploy_everything(kreg: Registry, kube_cluster: KubeCluster,
                                                          cleanup: None) -> None:
    steps: list[str] = []
    d = api.deploy("iris", target="kubernetes", name="k-iris", target_options=HOST,
                   progress=lambda event: steps.append(getattr(event, "what", "")), registry=kreg)
    assert d.state == "running" and d.target == "kubernetes" and d.url.startswith("http://127.0.0.1:")
    assert _post(d.url, ROWS) == (200, {"labels": [0, 2], "variant": "first"})
    assert api.call("k-iris", ROWS, registry=kreg)["labels"] == [0, 2]
    assert any(step.startswith("rolling out iris:1") for step in steps) and steps[-1].startswith("rolled out: 1/1")
    cluster = connect()
    body = cluster.get("apps/v1", "Deployment", "k-iris", "mlops")
    assert body is not None and body["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlops-magics"
    assert body["metadata"]["managedFields"][0]["manager"] == "mlops-magics"  # server-side apply
    assert [x.state for x in api.list_deployments(registry=kreg)] == ["running"]
    assert "mlops-serve" in api.logs("k-iris", registry=kreg)
    assert api.undeploy("k-iris", registry=kreg) == ["k-iris"]
    assert _objects(cluster, "k-iris", "mlops") == [] and not cluster.running_pods("k-iris", "mlops")
    assert kreg.get_deployment("k-iris").state == "deleted"
    api.undeploy("k-iris", registry=kreg)  # idempotent


def test_autoscaled_with_auth_the_key_is_a_mounted_file_only(kreg: Registry, cleanup: None) -> None:
    d = api.deploy("iris", target="kubernetes", name="k-auth", auth=True,
                   target_options={**HOST, "autoscale": True, "min_replicas": 1, "max_replicas": 3}, registry=kreg)
    keys = api.keys("k-auth", registry=kreg)
    assert _post(d.url, ROWS)[0] == 401
    assert _post(d.url, ROWS, keys.primary)[0] == 200 and _post(d.url, ROWS, keys.secondary)[0] == 200
    cluster = connect()
    assert _objects(cluster, "k-auth", "mlops") == ["Deployment", "Service", "Secret", "HorizontalPodAutoscaler"]
    hpa = cluster.get("autoscaling/v2beta2", "HorizontalPodAutoscaler", "k-auth", "mlops")
    assert hpa is not None and (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    deadline = time.monotonic() + 60  # the autoscaler finds out that there are no metrics within its period
    while "CPU use unknown" not in api.list_deployments(registry=kreg).details["k-auth"] and (
            time.monotonic() < deadline):
        time.sleep(1)
    assert api.list_deployments(registry=kreg).details["k-auth"] == (
        "1/1 pods ready; autoscaled 1-3 at 70% CPU, CPU use unknown: the cluster has no metrics server")
    pod = cluster.pods("k-auth", "mlops")[0].to_dict()
    text = json.dumps(pod["spec"], default=str)
    assert keys.primary not in text and keys.secondary not in text  # not in the environment nor the command line
    assert keys.primary not in json.dumps(dict(kreg.get_deployment("k-auth").config))
    rotated = api.keys("k-auth", regenerate="secondary", registry=kreg)  # a rolling restart: the pods copy keys
    assert rotated.primary == keys.primary and rotated.secondary != keys.secondary
    # when keys() returns no pod accepts the old key any more: the retiring pod, still draining, did on some runs
    assert len(cluster.running_pods("k-auth", "mlops")) == 1  # the retired pod has stopped
    assert [_post(d.url, ROWS, keys.secondary)[0] for _ in range(20)] == [401] * 20
    assert _post(d.url, ROWS, rotated.secondary)[0] == 200
    scaled = api.scale("k-auth", replicas=2, registry=kreg)
    assert scaled.config["settings"]["replicas"] == 2 and not scaled.config["settings"]["autoscale"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and ((cluster.get("apps/v1", "Deployment", "k-auth", "mlops") or {}).get(
            "status", {}).get("readyReplicas") or 0) < 2:
        time.sleep(0.5)
    assert cluster.get("apps/v1", "Deployment", "k-auth", "mlops")["status"]["readyReplicas"] == 2
    assert cluster.get("autoscaling/v2beta2", "HorizontalPodAutoscaler", "k-auth", "mlops") is None


def test_diff_shows_just_what_would_change_and_scale_returns_with_the_pods_ready(kreg: Registry,
                                                                               cleanup: None) -> None:
    fresh = f"k-fresh-{uuid.uuid4().hex[:8]}"
    new = api.kubernetes_diff("iris", name="k-diff", target_options={**HOST, "namespace": fresh}, registry=kreg)
    # Once: "The cluster refused Deployment/k-diff: namespaces ... not found", before any first deploy there.
    assert "+kind: Namespace" in new and "--- Deployment/k-diff (not on the cluster)" in new
    assert Cluster().get("v1", "Namespace", fresh, None) is None  # nothing was applied
    options = {**HOST, "autoscale": True, "min_replicas": 1, "max_replicas": 2}
    api.deploy("iris", target="kubernetes", name="k-diff", auth=True, target_options=options, registry=kreg)
    # Once: the pods' keys digest showed as removed, for a deployment with --auth that nothing would change.
    assert api.kubernetes_diff("iris", name="k-diff", auth=True, target_options=options, registry=kreg) == ""
    changed = api.kubernetes_diff("iris", name="k-diff", auth=True, target_options={**options, "cpu_cores": 0.1},
                                  registry=kreg)
    assert [line.replace(" ", "") for line in changed.splitlines() if line[:1] in "+-" and
            not line.startswith(("+++", "---"))] == ["-cpu:50m", "+cpu:100m"]
    api.scale("k-diff", replicas=2, registry=kreg)
    body = Cluster().get("apps/v1", "Deployment", "k-diff", "mlops")
    assert body is not None and body["status"].get("readyReplicas") == 2  # once: it returned with one pod ready


def test_a_rolling_update_under_load_fails_no_request_and_collection_loses_nothing(kreg: Registry,
                                                                                  cleanup: None) -> None:
    d = api.deploy("iris", target="kubernetes", name="k-roll", collect=True, target_options=HOST, registry=kreg)
    failures: list[Any] = []
    sent = [0]
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            sent[0] += 1
            try:
                status, body = _post(d.url, ROWS, timeout=10)
            except OSError as exc:  # refused or reset: a failure to count, not the end of the load
                failures.append(exc)
                continue
            if status != 200:
                failures.append((status, body))

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        # A slow start: the new pods listen seconds after they run. Once, another pod on the shared port answered
        # their probes meanwhile, the old pods went, and requests were refused until the new ones listened.
        slow = SCRIPT.replace('"first"', '"second"') + "\nimport time\ntime.sleep(6)\n"
        mm.set_score_script("iris", slow, registry=kreg)
        reloaded = api.reload("k-roll", registry=kreg)
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        mm.set_score_script("iris", SCRIPT, registry=kreg)
    assert failures == [] and sent[0] > 20
    assert reloaded.url == d.url and _post(d.url, ROWS)[1]["variant"] == "second"
    cluster = connect()
    before = len(cluster.pods("k-roll", "mlops"))
    cluster_pod = cluster.pods("k-roll", "mlops")[0].metadata.name
    from kubernetes import client

    client.CoreV1Api(cluster.api).delete_namespaced_pod(cluster_pod, "mlops")  # the Deployment makes a new one
    from mlops_magics.errors import EngineError
    from mlops_magics.targets.kube.forward import ready_pod

    deadline = time.monotonic() + 90  # one replica: nothing serves until its successor is ready (6 s of import)
    while time.monotonic() < deadline:
        try:
            if ready_pod(cluster, "k-roll", "mlops") != cluster_pod:
                break
        except EngineError:  # no pod is ready yet
            pass
        time.sleep(0.5)
    for i in range(10):
        assert _post(d.url, ROWS, timeout=30)[0] == 200, i
    api.undeploy("k-roll", registry=kreg)  # SIGTERM: the pods write what they queued, then exit
    frame = api.collected("k-roll", registry=kreg)
    assert before >= 1 and frame["request_id"].nunique() == sent[0] + 1 + 10


def test_diff_update_and_follow_on_a_live_service(kreg: Registry, cleanup: None) -> None:
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    d = api.deploy("iris", target="kubernetes", name="k-live", target_options=HOST, registry=kreg)
    assert api.kubernetes_diff("iris", name="k-live", target_options=HOST, registry=kreg) == ""
    changed = api.kubernetes_diff("iris", name="k-live", target_options={**HOST, "replicas": 2}, registry=kreg)
    assert "-  replicas: 1" in changed and "+  replicas: 2" in changed and "live Deployment/k-live" in changed
    X, y = load_iris(return_X_y=True)
    stump = DecisionTreeClassifier(max_depth=1).fit(X, y)
    mm.register(stump, "stump", registry=kreg)
    mm.set_score_script("stump", SCRIPT.replace('"first"', '"stump"'), registry=kreg)
    updated = api.update("k-live", "stump:1", registry=kreg)
    assert (updated.model_name, updated.url) == ("stump", d.url)
    assert _post(d.url, ROWS)[1] == {"labels": stump.predict(ROWS).tolist(), "variant": "stump"}
    lines: list[str] = []

    def poke() -> None:
        time.sleep(2)
        _post(d.url, "not rows")  # run() fails: the server logs the script's traceback

    threading.Thread(target=poke).start()
    for line in api.follow("k-live", timeout=8, registry=kreg):
        lines.append(line)
    assert any("Traceback" in line for line in lines), lines


def test_a_service_reached_through_the_api_servers_port_forward(kreg: Registry, cleanup: None) -> None:
    # With pod networking this machine reaches pods only this way; here the pods use the host network, and
    # reach='port-forward' makes %call go through the API server all the same.
    d = api.deploy("iris", target="kubernetes", name="k-forward", target_options={**HOST, "reach": "port-forward"},
                   registry=kreg)
    from mlops_magics.targets.kube.target import KubernetesTarget

    local = KubernetesTarget(kreg).local_url(d)
    assert local != d.url and local.startswith("http://127.0.0.1:")
    assert api.call("k-forward", ROWS, registry=kreg)["labels"] == [0, 2]
    failures: list[Any] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                api.call("k-forward", ROWS, registry=kreg)
            except Exception as exc:  # noqa: BLE001 - counted: the assertion below shows them
                failures.append(exc)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        api.reload("k-forward", registry=kreg)  # the forward moves to the new pod as it becomes ready
    finally:
        stop.set()
        thread.join(timeout=60)
    assert failures == []
    assert api.call("k-forward", ROWS, registry=kreg)["labels"] == [0, 2]


def test_collected_data_on_a_claim_is_fetched_and_outlives_the_pods(kreg: Registry, tmp_path: Any,
                                                                     cleanup: None) -> None:
    # A cluster of several machines keeps collected data on a PersistentVolumeClaim; this one has no storage
    # provisioner, so the test gives the claim a volume of its own (a folder of the node).
    import os

    from kubernetes import client

    cluster = connect()
    folder = tmp_path / "claim-volume"
    folder.mkdir()
    os.chmod(folder, 0o777)  # the pods' user writes there
    volume = {"apiVersion": "v1", "kind": "PersistentVolume",
              "metadata": {"name": f"mlops-test-{os.getpid()}"},
              "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                       "persistentVolumeReclaimPolicy": "Retain", "storageClassName": f"mlops-test-{os.getpid()}",
                       "hostPath": {"path": str(folder), "type": "Directory"}}}
    cluster.apply(volume)
    try:
        d = api.deploy("iris", target="kubernetes", name="k-claim", collect=True, registry=kreg,
                       target_options={**HOST, "data_volume": "claim",
                                       "storage_class": f"mlops-test-{os.getpid()}"})
        for i in range(20):
            api.call("k-claim", ROWS, request_id=f"claim-{i}", registry=kreg)
        time.sleep(1.5)  # the server writes within a second
        assert api.collected("k-claim", registry=kreg)["request_id"].nunique() == 20  # fetched from the pod
        for i in range(20, 30):
            api.call("k-claim", ROWS, request_id=f"claim-{i}", registry=kreg)
        api.undeploy("k-claim", registry=kreg)  # the pods write what they queued; a reader pod copies it out
        frame = api.collected("k-claim", registry=kreg)
        assert frame["request_id"].nunique() == 30 and len(frame) == 60
        assert cluster.get("v1", "PersistentVolumeClaim", "k-claim-data", "mlops") is None
        assert not cluster.running_pods("k-claim", "mlops") and d.state == "running"
    finally:
        client.CoreV1Api(cluster.api).delete_persistent_volume(volume["metadata"]["name"])


def test_a_crashing_script_says_what_failed_in_the_cell_and_leaves_nothing(kreg: Registry, cleanup: None) -> None:
    mm.register(mm.load_model("iris:1", registry=kreg), "broken", registry=kreg)
    mm.set_score_script("broken", "def init():\n    raise RuntimeError('no model here')\n\ndef run(raw):\n"
                                  "    return raw\n", line_offset=1, registry=kreg)
    with pytest.raises(DeployError, match=r"(?s)its entry script failed at init \(cell line 3: RuntimeError: no "
                                          r"model here\).*The script's traceback"):
        api.deploy("broken", target="kubernetes", name="k-broken", target_options=HOST, registry=kreg)
    cluster = connect()
    assert _objects(cluster, "k-broken", "mlops") == []
    assert kreg.get_deployment("k-broken").state == "failed"


def test_a_failed_update_leaves_the_old_version_serving(kreg: Registry, cleanup: None) -> None:
    d = api.deploy("iris", target="kubernetes", name="k-keep", target_options=HOST, registry=kreg)
    mm.set_score_script("iris", "def init():\n    raise ValueError('bad update')\n\ndef run(raw):\n    return raw\n",
                        line_offset=1, registry=kreg)
    try:
        with pytest.raises(DeployError, match=r"Reload of 'k-keep' failed: the new script failed at init .*'k-keep' "
                                              r"still serves iris:1"):
            api.reload("k-keep", registry=kreg)
    finally:
        mm.set_score_script("iris", SCRIPT, registry=kreg)
    assert _post(d.url, ROWS) == (200, {"labels": [0, 2], "variant": "first"})


def test_out_of_memory_and_unschedulable_are_said_in_the_users_terms(kreg: Registry, cleanup: None) -> None:
    mm.register(mm.load_model("iris:1", registry=kreg), "hungry", registry=kreg)
    mm.set_score_script("hungry", "def init():\n    global ballast\n    ballast = bytearray(400 * 1024 * 1024)\n\n"
                                  "def run(raw):\n    return raw\n", registry=kreg)
    with pytest.raises(DeployError, match=r"killed for lack of memory \(memory_gb_limit: 0.15 GB"):
        api.deploy("hungry", target="kubernetes", name="k-oom",
                   target_options={**HOST, "memory_gb": 0.1, "memory_gb_limit": 0.15}, registry=kreg)
    with pytest.raises(DeployError, match=r"no node can run its pod .*Each pod asks for 64.0 CPU"):
        api.deploy("iris", target="kubernetes", name="k-big", target_options={**HOST, "cpu": 64}, registry=kreg)
    # Several pods writing to one claim ask ReadWriteMany; this cluster provisions nothing. The scheduler says
    # "unbound immediate PersistentVolumeClaims": the message used to blame CPU and memory.
    with pytest.raises(DeployError, match=r"(?s)its pods wait for PersistentVolumeClaim 'k-shared-data', which has "
                                          r"no volume \(.*\)\. It asks the cluster's default storage class for "
                                          r"ReadWriteMany storage .*--set storage_class=azurefile-csi"):
        api.deploy("iris", target="kubernetes", name="k-shared", collect=True, registry=kreg,
                   target_options={**HOST, "data_volume": "claim", "replicas": 2})
    cluster = connect()
    assert _objects(cluster, "k-oom", "mlops") == [] and _objects(cluster, "k-big", "mlops") == []
    assert _objects(cluster, "k-shared", "mlops") == []
    assert cluster.get("v1", "PersistentVolumeClaim", "k-shared-data", "mlops") is None


def test_the_image_is_pushed_to_the_registry_the_nodes_pull_from(kreg: Registry, image_registry: str,
                                                                 cleanup: None) -> None:
    d = api.deploy("iris", target="kubernetes", name="k-pushed",
                   target_options={**HOST, "image_registry": f"{image_registry}/mlops"}, registry=kreg)
    assert d.config["image"].startswith(f"{image_registry}/mlops/iris:1-")
    repository, _, tag = d.config["image"].partition("/")[2].rpartition(":")
    with urllib.request.urlopen(f"http://{image_registry}/v2/{repository}/tags/list", timeout=10) as response:
        assert tag in json.loads(response.read())["tags"]
    assert _post(d.url, ROWS)[0] == 200


def test_an_endpoint_routes_to_a_kubernetes_service_and_a_local_process(kreg: Registry, cleanup: None) -> None:
    api.deploy("iris", target="kubernetes", name="k-member", target_options=HOST, registry=kreg)
    try:
        made = api.endpoint("kep", add="blue=k-member,green=iris:1", traffic="blue=50,green=50", registry=kreg)
        assert made.member("blue").target == "kubernetes" and made.member("green").target == "local"
        answered = set()
        for _ in range(40):
            request = urllib.request.Request(f"{made.url}/score", json.dumps({"data": ROWS}).encode(),
                                             {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200 and json.loads(response.read())["labels"] == [0, 2]
                answered.add(response.headers["x-mlops-member"])
        assert answered == {"blue", "green"}
    finally:
        api.delete_endpoint("kep", registry=kreg)

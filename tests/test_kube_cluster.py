"""The test infrastructure itself: the real Kubernetes cluster and image registry of ``tests/conftest.py``.

Without them these tests skip and say how to get them (``sudo make kube-cluster``, ``sudo make image-registry``);
with ``MLOPS_REQUIRE_KUBERNETES=1`` / ``MLOPS_REQUIRE_REGISTRY=1`` (as in CI) they fail instead.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import os
import tarfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from mlops_magics.packaging import engine
from tests import infrastructure
from tests.infrastructure import KubeCluster
from tests.serving import free_port

BASE = os.environ.get("MLOPS_BASE_IMAGE") or "mlops-base:bookworm"
#: Seconds a pod of an image already on the engine may take to run (~2-3 s here), and its namespace to go.
POD_TIMEOUT = 120
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


# -- finding them, or saying why not (everywhere: no cluster needed) ----------------------------------------------


def _unreachable_kubeconfig(path: Any, port: int) -> Any:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: gone, cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: not-a-secret}}}}]
contexts: [{{name: gone-context, context: {{cluster: gone, user: u}}}}]
current-context: gone-context
""")
    return path


@pytest.mark.parametrize("require", ["", "0", "1"])
def test_a_configured_cluster_that_does_not_answer_is_a_skip_or_a_failure_naming_it(
        tmp_path: Any, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
        require: str) -> None:
    kubeconfig = _unreachable_kubeconfig(tmp_path / "kubeconfig", free_port())
    monkeypatch.setenv("MLOPS_KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("MLOPS_REQUIRE_KUBERNETES", require)
    expected = pytest.fail.Exception if require == "1" else pytest.skip.Exception
    with pytest.raises(expected) as raised, infrastructure.kube_cluster(tmp_path_factory):
        pytest.fail("a cluster that does not answer was used")  # pragma: no cover
    message = str(raised.value)
    assert f"MLOPS_KUBECONFIG is set, but the cluster of {kubeconfig} does not answer" in message
    assert "sudo make kube-cluster" in message
    assert ("MLOPS_REQUIRE_KUBERNETES is set" in message) == (require == "1")


def test_kube_answers_names_the_context_of_a_cluster_that_answers_and_why_one_does_not(tmp_path: Any) -> None:
    cluster, why = infrastructure.kube_answers(tmp_path / "missing")
    assert cluster is None
    assert why == f"{tmp_path / 'missing'} does not exist"
    cluster, why = infrastructure.kube_answers(_unreachable_kubeconfig(tmp_path / "kubeconfig", free_port()))
    assert cluster is None
    assert "does not answer" in why
    assert "Connection refused" in why or "MaxRetryError" in why


@pytest.mark.parametrize("require", ["", "1"])
def test_a_configured_registry_that_does_not_answer_is_a_skip_or_a_failure_naming_it(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, require: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLOPS_TEST_IMAGE_REGISTRY", address)
    monkeypatch.setenv("MLOPS_REQUIRE_REGISTRY", require)
    expected = pytest.fail.Exception if require else pytest.skip.Exception
    with pytest.raises(expected) as raised, infrastructure.image_registry(tmp_path_factory):
        pytest.fail("a registry that does not answer was used")  # pragma: no cover
    assert f"MLOPS_TEST_IMAGE_REGISTRY is set, but no image registry answers at {address}" in str(raised.value)
    assert "sudo make image-registry" in str(raised.value)


@pytest.mark.parametrize(("has_v2", "why"), [(True, "(Docker-Distribution-Api-Version: '')"),
                                             (False, "(HTTP 404 to GET /v2/)")])
def test_an_http_server_that_is_not_a_registry_is_not_taken_for_one(tmp_path: Any, has_v2: bool, why: str) -> None:
    if has_v2:
        (tmp_path / "v2").mkdir()  # GET /v2/ is a 200 then, a directory listing without the registry's header
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
            found = infrastructure.registry_answers(f"127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert found == f"127.0.0.1:{server.server_address[1]} answers, but not as an image registry {why}"


# -- the cluster ---------------------------------------------------------------------------------------------------


# Session-scoped like kube_cluster and image_registry, and listed before them: without an engine these tests skip
# before a cluster or a registry is looked for (or started).
@pytest.fixture(scope="session")
def docker_client() -> Any:
    """The engine, or a skip saying how to get one (a failure where MLOPS_REQUIRE_DOCKER is set, as in CI)."""
    ok, why = engine.available()
    if not ok:
        give_up = pytest.fail if os.environ.get("MLOPS_REQUIRE_DOCKER") else pytest.skip
        give_up(f"{why} (These tests push images and run containers on a real Docker engine.)")
    return engine.client()


@pytest.fixture(scope="module")
def kube_api(kube_cluster: KubeCluster) -> Iterator[Any]:
    with kube_cluster.api_client() as api:
        yield api


@pytest.fixture(scope="module")
def namespace(kube_api: Any) -> Iterator[str]:
    """A namespace of this module's own, deleted afterwards (waiting until it, and so every pod in it, is gone)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(kube_api)
    name = f"mlops-infra-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # A pod of a namespace just made is refused ("No API token found for service account default", a 500) until
    # the controllers have made its default service account and, on 1.20, that account's token secret.
    deadline = time.monotonic() + 30
    while True:
        try:
            if core.read_namespaced_service_account("default", name).secrets:
                break
        except ApiException as exc:
            if exc.status != 404:
                raise
        assert time.monotonic() < deadline, f"namespace {name} has no default service account token after 30 s"
        time.sleep(0.2)
    yield name
    core.delete_namespace(name, grace_period_seconds=0)
    deadline = time.monotonic() + POD_TIMEOUT
    while time.monotonic() < deadline:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.5)
    pytest.fail(f"namespace {name} still there {POD_TIMEOUT} s after its deletion")


@pytest.mark.kubernetes
def test_the_cluster_answers_on_loopback_with_one_ready_node(kube_cluster: KubeCluster, kube_api: Any) -> None:
    from kubernetes import client

    assert urlsplit(kube_api.configuration.host).hostname == "127.0.0.1"  # nothing leaves the machine
    assert client.VersionApi(kube_api).get_code().major == "1"
    nodes = client.CoreV1Api(kube_api).list_node().items
    assert len(nodes) == 1, [node.metadata.name for node in nodes]
    (node,) = nodes
    conditions = {c.type: c.status for c in node.status.conditions}
    assert conditions.get("Ready") == "True", conditions
    assert not node.spec.unschedulable
    # the kubelet runs pods on this machine's Docker engine (dockershim)
    assert node.status.node_info.container_runtime_version.startswith("docker://")


def _wait_running_and_ready(core: Any, name: str, namespace: str) -> Any:
    """The pod once it is Running with every container ready; a failure with its state if it ends or times out."""
    deadline = time.monotonic() + POD_TIMEOUT
    pod = None
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, namespace)
        statuses = pod.status.container_statuses or []
        waiting = [s.state.waiting.reason for s in statuses if s.state.waiting and s.state.waiting.reason]
        if pod.status.phase in ("Failed", "Succeeded") or set(waiting) & {"ErrImageNeverPull", "CrashLoopBackOff",
                                                                           "CreateContainerError"}:
            pytest.fail(f"pod {name} did not run: phase {pod.status.phase}, waiting {waiting} (is {BASE} on the "
                        "Docker engine? `sudo make docker-engine` builds it)")
        if pod.status.phase == "Running" and statuses and all(s.ready for s in statuses):
            return pod
        time.sleep(0.5)
    pytest.fail(f"pod {name} not Running and Ready within {POD_TIMEOUT} s: {pod and pod.status}")


@pytest.mark.kubernetes
def test_a_host_network_pod_of_the_base_image_runs_and_serves_on_loopback(kube_api: Any, namespace: str) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(kube_api)
    port = free_port()
    probe = {"httpGet": {"host": "127.0.0.1", "port": port, "path": "/"}, "periodSeconds": 1}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
           # no service-account token: a scoring pod needs none, and without that volume deletion takes half as long
           "spec": {"hostNetwork": True, "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 1,
                    "restartPolicy": "Never",
                    "containers": [{"name": "http", "image": BASE, "imagePullPolicy": "Never",
                                    "command": ["python3", "-u", "-m", "http.server", str(port), "--bind",
                                                "127.0.0.1"],
                                    "readinessProbe": probe,
                                    "resources": {"requests": {"cpu": "50m", "memory": "32Mi"},
                                                  "limits": {"cpu": "500m", "memory": "128Mi"}}}]}}
    core.create_namespaced_pod(namespace, pod)
    try:
        running = _wait_running_and_ready(core, "web", namespace)
        assert running.spec.node_name == "localhost"
        assert running.spec.containers[0].image == BASE

        marker = f"/from-the-test-{uuid.uuid4().hex[:8]}"
        with pytest.raises(urllib.error.HTTPError) as missing:  # a path that is not there: the server's own 404
            urllib.request.urlopen(f"http://127.0.0.1:{port}{marker}", timeout=5)
        missing.value.close()  # it holds the response (and its socket)
        assert missing.value.code == 404
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert response.status == 200
            assert b"Directory listing" in response.read()

        # the container's log, through the API server and the kubelet, has the request just sent
        deadline = time.monotonic() + 30
        while marker not in (logs := core.read_namespaced_pod_log("web", namespace)):
            assert time.monotonic() < deadline, f"{marker} not in the pod's log within 30 s:\n{logs}"
            time.sleep(0.5)
    finally:
        core.delete_namespaced_pod("web", namespace, grace_period_seconds=1)
    deadline = time.monotonic() + POD_TIMEOUT
    while True:
        try:
            core.read_namespaced_pod("web", namespace)
        except ApiException as exc:
            assert exc.status == 404
            break
        assert time.monotonic() < deadline, f"pod web still there {POD_TIMEOUT} s after its deletion"
        time.sleep(0.5)
    # deleted means stopped: nothing listens on its port any more
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.kubernetes
def test_the_kubelet_collects_its_own_leftover_containers_and_never_the_docker_targets(
        docker_client: Any, kube_cluster: KubeCluster) -> None:
    """The dockershim kubelet removes exited ``k8s_*`` containers of pods it does not know (once a minute); the
    Docker target's containers (``mlops-<service>-<n>``), running or exited, are left alone."""
    import docker

    uid = str(uuid.uuid4())
    fake = docker_client.containers.run(
        BASE, ["true"], name=f"k8s_probe_gone_default_{uid}_0", network_mode="host", detach=True,
        labels={"io.kubernetes.docker.type": "container", "io.kubernetes.pod.uid": uid,
                "io.kubernetes.pod.name": "gone", "io.kubernetes.pod.namespace": "default",
                "io.kubernetes.container.name": "probe"})
    ours = [docker_client.containers.run(BASE, command, name=f"mlops-gc-probe-{uid[:8]}-{n}", network_mode="host",
                                         detach=True)
            for n, command in enumerate((["true"], ["sleep", "600"]))]
    try:
        deadline = time.monotonic() + 180  # the kubelet's container GC runs every minute
        while any(c.id == fake.id for c in docker_client.containers.list(all=True, filters={"id": fake.id})):
            assert time.monotonic() < deadline, "the kubelet left an exited k8s_ container of no pod for 180 s"
            time.sleep(2)
        for container in ours:
            container.reload()  # raises NotFound if the kubelet had removed it
        assert [c.status for c in ours] == ["exited", "running"]
    finally:
        for container in [fake, *ours]:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


# -- the image registry --------------------------------------------------------------------------------------------


def _tiny_image(client: Any, repository: str, tag: str) -> str:
    """A one-layer image of one file of random bytes (so that its id is new), imported without a base: its id."""
    data = os.urandom(256)
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("payload.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    client.api.import_image_from_data(layer.getvalue(), repository=repository, tag=tag)
    return str(client.images.get(f"{repository}:{tag}").id)


def _registry_get(address: str, path: str, *, accept: str = "application/json", method: str = "GET") -> Any:
    request = urllib.request.Request(f"http://{address}{path}", headers={"Accept": accept}, method=method)
    return urllib.request.urlopen(request, timeout=10)


@pytest.mark.docker
@pytest.mark.image_registry
def test_the_registry_takes_a_push_and_gives_the_same_image_back(docker_client: Any, image_registry: str) -> None:
    import docker

    assert image_registry.startswith("127.0.0.1:")
    repository = f"{image_registry}/mlops-infra-test/tiny"
    tag = uuid.uuid4().hex[:12]
    image_id = _tiny_image(docker_client, repository, tag)
    digest = None
    try:
        events = list(docker_client.api.push(repository, tag=tag, stream=True, decode=True))
        errors = [event["error"] for event in events if "error" in event]
        assert not errors, errors
        digest = next(event["aux"]["Digest"] for event in events if "Digest" in event.get("aux", {}))

        # the registry itself lists the tag and serves the manifest the engine pushed
        with _registry_get(image_registry, "/v2/mlops-infra-test/tiny/tags/list") as response:
            assert tag in json.loads(response.read())["tags"]
        with _registry_get(image_registry, f"/v2/mlops-infra-test/tiny/manifests/{tag}",
                           accept=MANIFEST_V2) as response:
            assert response.headers["Docker-Content-Digest"] == digest

        # gone from the engine, then pulled back: the very same image
        docker_client.images.remove(f"{repository}:{tag}", force=True)
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(f"{repository}:{tag}")
        pulled = docker_client.images.pull(repository, tag=tag)
        assert pulled.id == image_id
        assert f"{repository}@{digest}" in pulled.attrs["RepoDigests"]

        # and a tag that was never pushed is not there to pull
        with pytest.raises(docker.errors.NotFound):
            docker_client.images.pull(repository, tag=f"never-{tag}")
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(f"{repository}:{tag}", force=True)
        if digest is not None:
            with _registry_get(image_registry, f"/v2/mlops-infra-test/tiny/manifests/{digest}",
                               method="DELETE") as response:
                assert response.status == 202

"""Endpoints whose members run on Kubernetes, routed on the cluster (``make kube-cluster``: Kubernetes 1.20, pods on
the host network): our router as a Deployment, and the Gateway API HTTPRoute or Istio VirtualService it would use
where the cluster serves them.

Like tests/test_kube_target.py these skip without a cluster (and must run where MLOPS_REQUIRE_KUBERNETES=1). Each
module run uses a namespace of its own, removed at the end.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from mlops_magics import api
from mlops_magics.endpoints import kube_objects
from mlops_magics.errors import ConflictError, InvalidInputError
from mlops_magics.registry import Registry
from mlops_magics.targets.kube.cluster import Cluster, connect
from tests.infrastructure import KubeCluster
from tests.test_kube_target import HOST, ROWS
from tests.test_kube_target import kreg as kreg  # the registry fixture (its own image build per module)

pytestmark = [pytest.mark.kubernetes, pytest.mark.docker]


@pytest.fixture(scope="module")
def namespace(kreg: Registry, kube_cluster: KubeCluster) -> Iterator[str]:
    """A namespace of this module's own (others may use the cluster meanwhile), removed with what is left in it."""
    from kubernetes import client

    name = f"k19-{uuid.uuid4().hex[:8]}"
    yield name
    cluster = connect()
    client.CoreV1Api(cluster.api).delete_namespace(name, _request_timeout=15)


@pytest.fixture(scope="module")
def members(kreg: Registry, namespace: str) -> Iterator[tuple[str, str]]:
    """Two services of iris:1 in the namespace, for the module (endpoints add them by name)."""
    options = {**HOST, "namespace": namespace}
    names = ("k19-a", "k19-b")
    for name in names:
        api.deploy("iris", target="kubernetes", name=name, target_options=options, registry=kreg)
    yield names
    for name in names:
        api.undeploy(name, registry=kreg)


def _score(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"{url}/score", json.dumps({"data": ROWS}).encode(),
                                     {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["labels"] == [0, 2]
            return response.status, response.headers["x-mlops-member"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _left(cluster: Cluster, endpoint: str, namespace: str) -> list[str]:
    """The router's objects still on the cluster (by its labels), and its pods still running."""
    from kubernetes import client

    selector = f"{kube_objects.ENDPOINT_LABEL}={endpoint}"
    core, apps = client.CoreV1Api(cluster.api), client.AppsV1Api(cluster.api)
    found = [f"Deployment/{d.metadata.name}" for d in apps.list_namespaced_deployment(
        namespace, label_selector=selector).items]
    for kind, listing in (("Service", core.list_namespaced_service), ("ConfigMap", core.list_namespaced_config_map),
                          ("Secret", core.list_namespaced_secret)):
        found += [f"{kind}/{item.metadata.name}" for item in listing(namespace, label_selector=selector).items]
    return found + [f"Pod/{p.metadata.name}" for p in cluster.running_pods(kube_objects.router_name(endpoint),
                                                                           namespace)]


def test_the_router_deployment_honours_weights_switches_under_load_and_goes_with_the_endpoint(
        kreg: Registry, namespace: str, members: tuple[str, str]) -> None:
    made = api.endpoint("k19", add=f"blue={members[0]},green={members[1]}", traffic="blue=70,green=30", auth=True,
                        registry=kreg)
    cluster = connect()
    try:
        name = kube_objects.router_name("k19")
        assert made.router.startswith(f"Deployment {name} in namespace '{namespace}'"), made.router
        recorded = kreg.get_endpoint("k19")
        assert (recorded.target, recorded.config["router"], recorded.config["traffic"]) == (
            "kubernetes", "deployment", "host")
        assert sorted(o for o in _left(cluster, "k19", namespace) if not o.startswith("Pod/")) == [
            f"ConfigMap/{name}", f"Deployment/{name}", f"Secret/{name}-keys", f"Service/{name}"]
        pod = cluster.pods(name, namespace)[0]
        assert pod.spec.security_context.run_as_non_root and pod.spec.containers[0].image == (
            kreg.get_deployment(members[0]).config["image"])  # a member's image: it carries mlops-route
        key = api.endpoint_keys("k19", registry=kreg).primary
        assert key not in json.dumps(pod.to_dict(), default=str)  # the key is a file, never in the pod's spec
        assert _score(made.url)[0] == 401
        auth = {"Authorization": f"Bearer {key}"}
        answered = Counter(_score(made.url, auth)[1] for _ in range(400))
        assert set(answered) == {"blue", "green"} and abs(answered["blue"] / 400 - 0.70) < 0.08, answered

        failures: list[Any] = []
        sent = [0]
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                sent[0] += 1
                try:
                    status, _ = _score(made.url, auth)
                except OSError as exc:
                    failures.append(exc)
                    continue
                if status != 200:
                    failures.append(status)

        threads = [threading.Thread(target=load) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)
            promoted = api.endpoint("k19", traffic="green=100", registry=kreg)  # returns once every pod serves it
            after = [_score(made.url, auth)[1] for _ in range(30)]
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        assert failures == [] and sent[0] > 20
        assert promoted.generation == made.generation + 1 and after == ["green"] * 30
        status = api.endpoint_status("k19", registry=kreg)
        assert status.member("green").answers["live"]["requests"] >= 30 and status.note == ""
        compared = api.compare_traffic("k19", "blue", "green", registry=kreg)  # the pods' records, on this machine
        assert compared.a == "blue" and compared.b == "green"
        rotated = api.endpoint_keys("k19", regenerate="primary", registry=kreg)  # the pods get the new key file
        assert _score(made.url, {"Authorization": f"Bearer {rotated.primary}"})[0] == 200
        assert _score(made.url, auth)[0] == 401
    finally:
        api.delete_endpoint("k19", registry=kreg)
    assert _left(cluster, "k19", namespace) == []
    assert [d.state for d in api.list_deployments(registry=kreg) if d.name in members] == ["running", "running"]


def test_a_router_that_cannot_start_leaves_nothing_and_says_why(kreg: Registry, namespace: str,
                                                                members: tuple[str, str]) -> None:
    cluster = connect()
    recorded = kreg.get_deployment(members[0])
    image = recorded.config["image"]
    config = {**dict(recorded.config), "image": "mlops/no-such-image:0"}
    kreg.record_deployment(recorded.name, f"{recorded.model_name}:{recorded.model_version}", target="kubernetes",
                           state=recorded.state, url=recorded.url, config=config)
    try:
        with pytest.raises(Exception, match=r"(?s)The router of endpoint 'k19-bad' .*did not start; its objects are "
                                            r"removed\..*cannot be pulled"):
            api.endpoint("k19-bad", add=f"blue={members[0]}", router="deployment", registry=kreg)
    finally:
        kreg.record_deployment(recorded.name, f"{recorded.model_name}:{recorded.model_version}",
                               target="kubernetes", state=recorded.state, url=recorded.url,
                               config={**config, "image": image})
    assert _left(cluster, "k19-bad", namespace) == []
    # Once: the endpoint stayed 'creating', routing to the member, and the member could not be undeployed.
    assert kreg.get_endpoint("k19-bad").state == "failed"


def _crd(group: str, kind: str, version: str) -> dict[str, Any]:
    plural = f"{kind.lower()}s"
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}", "labels": {"mlops-magics/test": "k19"},
                         # a *.k8s.io group needs it (the Gateway API's own definitions carry their approval)
                         "annotations": {"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api"}},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                     "versions": [{"name": version, "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}


def _install(cluster: Cluster, body: dict[str, Any]) -> None:
    cluster.apply(body)
    group, version = body["spec"]["group"], body["spec"]["versions"][0]["name"]
    deadline = time.monotonic() + 30
    while body["spec"]["names"]["kind"] not in cluster.api_resources(group).get(version, set()):
        assert time.monotonic() < deadline, f"{body['metadata']['name']} was not served within 30 s"
        time.sleep(0.3)


def _remove(cluster: Cluster, body: dict[str, Any]) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        client.ApiextensionsV1Api(cluster.api).delete_custom_resource_definition(body["metadata"]["name"])
    except ApiException as exc:
        if exc.status != 404:
            raise
    deadline = time.monotonic() + 60
    while cluster.api_resources(body["spec"]["group"]):
        assert time.monotonic() < deadline, f"{body['metadata']['name']} was still served after 60 s"
        time.sleep(0.3)


def test_the_httproute_or_virtualservice_the_cluster_serves_carries_the_weights_and_the_shadow(
        kreg: Registry, namespace: str, members: tuple[str, str]) -> None:
    """With the Gateway API's (then Istio's) resource definitions installed for real, the endpoint picks an HTTPRoute
    (then a VirtualService), applies the weights and the shadow, updates them on each change and deletes them.

    The definitions are minimal (their schemas keep any field) and no gateway controller or mesh runs on this
    cluster: traffic through these objects is not tested here, only what our code asks the cluster for.
    """
    cluster = connect()
    route_crd = _crd(kube_objects.GATEWAY_GROUP, "HTTPRoute", "v1")
    istio_crd = _crd(kube_objects.ISTIO_GROUP, "VirtualService", "v1beta1")
    a, b = members
    with pytest.raises(ConflictError, match=r"does not serve the Gateway API .*--router deployment"):
        api.endpoint("k19r", add=f"blue={a}", router="httproute", registry=kreg)
    _install(cluster, route_crd)
    try:
        made = api.endpoint("k19r", add=f"blue={a},green={b}", traffic="blue=90,green=10", registry=kreg)
        name = kube_objects.address_name("k19r")
        assert made.router.startswith(f"HTTPRoute {name} (Gateway API, gateway.networking.k8s.io/v1) in namespace "
                                      f"'{namespace}'") and "answers are not recorded" in made.router, made.router

        def route() -> dict[str, Any]:
            body = cluster.get("gateway.networking.k8s.io/v1", "HTTPRoute", name, namespace)
            assert body is not None
            return dict(body["spec"]["rules"][0])

        assert [(r["name"], r["port"], r["weight"]) for r in route()["backendRefs"]] == [(a, 80, 90), (b, 80, 10)]
        assert cluster.get("v1", "Service", name, namespace) is not None  # the endpoint's own address
        api.endpoint("k19r", shadow="green=100", registry=kreg)
        assert route()["filters"] == [{"type": "RequestMirror", "requestMirror": {"backendRef": {
            "group": "", "kind": "Service", "name": b, "port": 80}}}]  # v1 mirrors every request: no percent
        api.endpoint("k19r", shadow="green=25", traffic="green=100", registry=kreg)
        assert route()["filters"][0]["requestMirror"]["percent"] == 25
        assert [r["weight"] for r in route()["backendRefs"]] == [0, 100]
        with pytest.raises(InvalidInputError, match="sticky routing is not offered there"):
            api.endpoint("k19r", sticky="x-user", registry=kreg)
        assert api.delete_endpoint("k19r", registry=kreg) == []  # the members were not deployed for it
        assert cluster.get("gateway.networking.k8s.io/v1", "HTTPRoute", name, namespace) is None
        assert cluster.get("v1", "Service", name, namespace) is None
    finally:
        _remove(cluster, route_crd)
    _install(cluster, istio_crd)
    try:
        made = api.endpoint("k19v", add=f"blue={a},green={b}", traffic="blue=80,green=20", shadow="green=50",
                            registry=kreg)
        name = kube_objects.address_name("k19v")
        assert made.router.startswith(f"VirtualService {name} (Istio, networking.istio.io/v1beta1)"), made.router
        body = cluster.get("networking.istio.io/v1beta1", "VirtualService", name, namespace)
        assert body is not None
        host = f"{name}.{namespace}.svc.cluster.local"
        http = body["spec"]["http"][0]
        assert body["spec"]["hosts"] == [host]
        assert [(r["destination"]["host"], r["weight"]) for r in http["route"]] == [
            (f"{a}.{namespace}.svc.cluster.local", 80), (f"{b}.{namespace}.svc.cluster.local", 20)]
        assert http["mirror"] == {"host": f"{b}.{namespace}.svc.cluster.local", "port": {"number": 80}}
        assert http["mirrorPercentage"] == {"value": 50.0}
        api.endpoint("k19v", traffic="green=100", shadow="off", registry=kreg)
        http = cluster.get("networking.istio.io/v1beta1", "VirtualService", name, namespace)["spec"]["http"][0]
        assert [r["weight"] for r in http["route"]] == [100] and "mirror" not in http
        api.delete_endpoint("k19v", registry=kreg)
        assert cluster.get("networking.istio.io/v1beta1", "VirtualService", name, namespace) is None
    finally:
        _remove(cluster, istio_crd)

"""The objects of an endpoint routed on Kubernetes, without a cluster: the router Deployment's objects validated
against Kubernetes' own schemas (strict), the HTTPRoute and VirtualService shapes as the Gateway API and Istio
document them, and the choice of router where no cluster is involved."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from mlops_magics.endpoints import kube_objects, kube_router
from mlops_magics.errors import ConflictError, InvalidInputError

ROUTING: dict[str, Any] = {"generation": 4, "members": [
    {"name": "blue", "service": "iris-blue", "weight": 90, "owned": True},
    {"name": "green", "service": "iris-green", "weight": 10, "owned": True}],
    "shadow": {"name": "green", "percent": 30}, "sticky_header": None}
SERVICES = {"blue": "iris-blue", "green": "iris-green"}


def place(**changes: Any) -> kube_objects.RouterPlace:
    values: dict[str, Any] = {"endpoint": "Iris.Prod", "namespace": "mlops", "image": "mlops/iris:1-0123456789ab",
                              "network": "pod", "port": kube_objects.POD_PORT, "uid": 1000, "gid": 1000, "auth": True}
    return kube_objects.RouterPlace(**{**values, **changes})


@pytest.mark.parametrize("version", ["1.25.0", "1.30.0", "1.37.0"])
@pytest.mark.parametrize("where", [place(), place(network="host", port=41001, host_traffic="/root/.mlops/t",
                                                  auth=False)], ids=["pod-network", "host-network"])
def test_the_router_objects_validate_strictly(where: kube_objects.RouterPlace, version: str) -> None:
    routes = kube_objects.pod_routes("Iris.Prod", ROUTING, {"blue": "http://iris-blue.mlops.svc.cluster.local:80",
                                                            "green": "http://127.0.0.1:40001"}, {"green"})
    body = kube_objects.router_objects(where, json.dumps(routes), {"endpoint": "k1\nk2\n", "member-green": "k3\n"})
    assert [o["kind"] for o in body] == ["Secret", "ConfigMap", "Deployment", "Service"]
    for item in body:
        kubernetes_validate.validate(item, version, strict=True)
    pod = body[2]["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    assert command[:3] == ["python", "-m", "mlops_backend.router.serve"]  # the image's runtime, not a console script
    assert command.count("--routes") == 2 and ("--auth-key-file" in command) == where.auth
    assert "k1" not in json.dumps(body[2]) and "k3" not in json.dumps(body[1])  # keys in the Secret only
    assert routes["members"][1]["key_file"] == kube_objects.member_key_file("green")
    assert routes["members"][0]["key_file"] is None
    assert pod["securityContext"]["runAsNonRoot"] and pod["automountServiceAccountToken"] is False
    assert pod.get("hostNetwork", False) == (where.network == "host")
    probe = pod["containers"][0]["readinessProbe"]
    if where.network == "pod":
        assert probe["httpGet"] == {"path": "/ready", "port": "http"}
    else:  # pods on the host network share the port: the pod's own ready file
        assert probe["exec"]["command"] == ["test", "-f", "/tmp/mlops-ready"]


def test_the_httproute_has_the_weights_and_a_mirror_as_the_gateway_api_documents() -> None:
    body = kube_objects.http_route("iris", "mlops", ROUTING, SERVICES)
    rule = body["spec"]["rules"][0]
    assert body["apiVersion"] == "gateway.networking.k8s.io/v1" and body["kind"] == "HTTPRoute"
    assert rule["backendRefs"] == [{"group": "", "kind": "Service", "name": "iris-blue", "port": 80, "weight": 90},
                                   {"group": "", "kind": "Service", "name": "iris-green", "port": 80, "weight": 10}]
    assert rule["filters"] == [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"group": "", "kind": "Service", "name": "iris-green", "port": 80}, "percent": 30}}]
    assert body["spec"]["parentRefs"] == [{"group": "", "kind": "Service", "name": "mlops-endpoint-iris",
                                           "port": 80}]  # the mesh (GAMMA), by default
    gateway = kube_objects.http_route("iris", "mlops", {**ROUTING, "shadow": {"name": "green", "percent": 100}},
                                      SERVICES, gateway="infra/public")
    assert gateway["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                              "name": "public", "namespace": "infra"}]
    assert "percent" not in gateway["spec"]["rules"][0]["filters"][0]["requestMirror"]  # v1.0: every request


def test_the_virtualservice_has_weights_adding_up_to_100_and_a_mirror_percentage() -> None:
    routing = {**ROUTING, "members": [*ROUTING["members"], {"name": "red", "service": "iris-red", "weight": 0}]}
    body = kube_objects.virtual_service("iris", "mlops", routing, {**SERVICES, "red": "iris-red"},
                                        api_version="networking.istio.io/v1beta1")
    http = body["spec"]["http"][0]
    assert body["spec"]["hosts"] == ["mlops-endpoint-iris.mlops.svc.cluster.local"]
    assert [(r["destination"]["host"], r["weight"]) for r in http["route"]] == [
        ("iris-blue.mlops.svc.cluster.local", 90), ("iris-green.mlops.svc.cluster.local", 10)]
    assert http["mirror"] == {"host": "iris-green.mlops.svc.cluster.local", "port": {"number": 80}}
    assert http["mirrorPercentage"] == {"value": 30.0}


def test_the_router_choice_without_a_cluster() -> None:
    assert kube_router.choose(None, "iris", ROUTING, {}) == "process"  # members not on a cluster: this machine's
    assert kube_router.choose("process", "iris", ROUTING, {}) == "process"
    with pytest.raises(InvalidInputError, match="--router 'nginx': use one of auto, process, deployment"):
        kube_router.choose("nginx", "iris", ROUTING, {})
    with pytest.raises(ConflictError, match=r"cannot route on a cluster: member 'blue' \(service 'iris-blue'\) is not "
                                            r"deployed.*--router process"):
        kube_router.choose("deployment", "iris", ROUTING, {})
    with pytest.raises(InvalidInputError, match="sticky routing is not offered there"):
        kube_router.check("httproute", "iris", {**ROUTING, "sticky_header": "x-user"})
    kube_router.check("deployment", "iris", {**ROUTING, "sticky_header": "x-user"})

"""The Kubernetes objects of an endpoint whose members run on one cluster, as plain dictionaries (pure: no cluster
is needed; the tests check their shapes offline and on a real API server).

Three ways to put weights in front of the members' Services, none of which relies on replica ratios:

- ``deployment``: our router (``mlops-route``, the same as on every other target) as a Deployment and a Service in
  the members' namespace. Its routes come from a ConfigMap (what a pod reads when it starts) and from a file of
  its own scratch space that a change writes at once (a ConfigMap volume takes up to a minute to change in a
  running pod); the router serves the file of highest generation. Keys (the endpoint's, the members') come from a
  Secret, copied at start into memory-backed scratch space, mode 0600.
- ``httproute``: a Gateway API HTTPRoute (``gateway.networking.k8s.io``): ``backendRefs`` weights, a
  ``RequestMirror`` filter for the shadow (every request in v1; ``percent`` where the cluster's API has it).
- ``virtualservice``: an Istio VirtualService (``networking.istio.io``): ``route`` destination weights,
  ``mirror`` and ``mirrorPercentage`` for the shadow.

The HTTPRoute and the VirtualService give the endpoint a stable address of its own, a Service without selector
(``NAME.NAMESPACE.svc``) that the mesh or the gateway answers for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlops_magics.targets.kube.manifests import INSTANCE, MANAGER, READY_FILE, SERVICE_PORT, label_value, object_name

#: The ways an endpoint routes; ``auto`` chooses (see :func:`mlops_magics.endpoints.kube_router.choose`).
ROUTERS = ("auto", "process", "deployment", "httproute", "virtualservice")
#: The in-cluster ones.
IN_CLUSTER = ("deployment", "httproute", "virtualservice")
#: The API groups of the HTTPRoute and the VirtualService, and the versions we write (preferred first).
GATEWAY_GROUP, GATEWAY_VERSIONS = "gateway.networking.k8s.io", ("v1", "v1beta1")
ISTIO_GROUP, ISTIO_VERSIONS = "networking.istio.io", ("v1", "v1beta1", "v1alpha3")
#: Where the router pod reads its routes (the ConfigMap's and its own) and keys, and writes its traffic records.
CONFIG_ROUTES = "/etc/mlops-route"
LIVE = "/run/mlops-route"
KEYS = f"{LIVE}/keys"
SECRET_MOUNT = "/run/mlops-route-secret"
TRAFFIC = "/var/mlops-traffic"
#: The router's container port with pod networking.
POD_PORT = 8080
ENDPOINT_LABEL = "mlops-magics/endpoint"
_KEY_NAME = re.compile(r"[-._a-zA-Z0-9]+")


def router_name(endpoint: str) -> str:
    """The name of the router's objects (Deployment, Service, ConfigMap; ``-keys`` for its Secret)."""
    return object_name(f"mlops-route-{endpoint}")


def address_name(endpoint: str) -> str:
    """The name of the endpoint's own Service with an HTTPRoute or a VirtualService (its stable address)."""
    return object_name(f"mlops-endpoint-{endpoint}")


def member_key_file(member: str) -> str:
    """Where the router pod keeps the key it sends to ``member``."""
    return f"{KEYS}/member-{member}"


@dataclass(frozen=True)
class RouterPlace:
    """Where the router Deployment runs and how: what its pods need besides the routes."""

    endpoint: str
    namespace: str
    #: The image of a member (it carries ``mlops_backend``, hence the router).
    image: str
    #: "pod" or "host", as the members' pods.
    network: str
    #: The router's port: the container's ("pod") or the node's 127.0.0.1 port ("host").
    port: int
    uid: int
    gid: int
    #: With host networking: this machine's traffic folder of the endpoint (the node is this machine).
    host_traffic: str | None = None
    #: Clients must send one of the endpoint's keys.
    auth: bool = False

    @property
    def name(self) -> str:
        """The router's object name."""
        return router_name(self.endpoint)


def labels(endpoint: str, component: str) -> dict[str, str]:
    """The labels of the router's objects: found (and deleted) like a service's by instance and manager."""
    return {"app.kubernetes.io/name": component, INSTANCE: router_name(endpoint),
            "app.kubernetes.io/managed-by": MANAGER, ENDPOINT_LABEL: label_value(endpoint)}


def selector(endpoint: str) -> dict[str, str]:
    """The labels that select the router's pods."""
    return {INSTANCE: router_name(endpoint), "app.kubernetes.io/managed-by": MANAGER}


def pod_routes(endpoint: str, routing: Mapping[str, Any], urls: Mapping[str, str], keyed: set[str]) -> dict[str, Any]:
    """The routes file of the router pods (``urls``: each member's address from inside the cluster; ``keyed``: the
    members that want a key, which the pods keep in their scratch space)."""
    from mlops_magics.endpoints.routing import routes_file

    return routes_file(endpoint, routing, urls, {name: member_key_file(name) for name in keyed})


def config_map(place: RouterPlace, routes_json: str) -> dict[str, Any]:
    """The ConfigMap with the routes file (what a router pod reads when it starts)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": place.name, "namespace": place.namespace,
                         "labels": labels(place.endpoint, "mlops-route")},
            "data": {"routes.json": routes_json}}


def secret(place: RouterPlace, keys: Mapping[str, str] | None) -> dict[str, Any]:
    """The Secret with the keys the router uses: ``endpoint`` (what clients send) and ``member-NAME`` (what it sends
    to a member), one file each. ``keys=None``: the object without its data."""
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                            "metadata": {"name": f"{place.name}-keys", "namespace": place.namespace,
                                         "labels": labels(place.endpoint, "mlops-route")}}
    if keys is not None:
        for name in keys:
            if not _KEY_NAME.fullmatch(name):
                raise ValueError(f"{name!r} cannot name a key file")
        body["stringData"] = dict(keys)
    return body


def router_command(place: RouterPlace) -> list[str]:
    """The router's command line in the pod (no key on it: those are files)."""
    host = "127.0.0.1" if place.network == "host" else "0.0.0.0"  # pod networking: any address of the pod
    command = ["python", "-m", "mlops_backend.router.serve", "--routes", f"{CONFIG_ROUTES}/routes.json",
               "--routes", f"{LIVE}/routes.json", "--host", host, "--port", str(place.port),
               "--traffic-dir", TRAFFIC, "--ready-file", READY_FILE, "--reuse-port"]
    if place.auth:
        command += ["--auth-key-file", f"{KEYS}/endpoint"]
    return command


def deployment(place: RouterPlace) -> dict[str, Any]:
    """The router's Deployment: one pod, unprivileged like the members', rolled without a gap (a successor is
    ready before its predecessor goes)."""
    secure = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    if place.network == "host":
        # pods on the host network share 127.0.0.1:port (SO_REUSEPORT): a probe of a new pod could be answered by
        # the old one; the pod's own ready file says when its own router serves (as for the members)
        ready: dict[str, Any] = {"exec": {"command": ["test", "-f", READY_FILE]}}
        alive: dict[str, Any] = {"httpGet": {"path": "/", "port": place.port, "host": "127.0.0.1"}}
    else:
        ready = {"httpGet": {"path": "/ready", "port": "http"}}
        alive = {"httpGet": {"path": "/", "port": "http"}}
    copy = ("import os, shutil\n"
            f"os.makedirs({KEYS!r}, exist_ok=True)\n"
            f"for name in os.listdir({SECRET_MOUNT!r}):\n"
            "    if not name.startswith('.'):\n"
            f"        shutil.copyfile(os.path.join({SECRET_MOUNT!r}, name), os.path.join({KEYS!r}, name))\n"
            f"        os.chmod(os.path.join({KEYS!r}, name), 0o600)\n")
    traffic: dict[str, Any] = ({"name": "traffic", "hostPath": {"path": place.host_traffic,
                                                               "type": "DirectoryOrCreate"}}
                               if place.host_traffic else {"name": "traffic", "emptyDir": {"sizeLimit": "300Mi"}})
    container: dict[str, Any] = {
        "name": "mlops-route", "image": place.image, "imagePullPolicy": "IfNotPresent",
        "command": router_command(place),
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "startupProbe": {**ready, "periodSeconds": 1, "timeoutSeconds": 2, "failureThreshold": 60},
        "readinessProbe": {**ready, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3},
        "livenessProbe": {**alive, "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3},
        "securityContext": secure,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "live", "mountPath": LIVE},
                         {"name": "routes", "mountPath": CONFIG_ROUTES, "readOnly": True},
                         {"name": "traffic", "mountPath": TRAFFIC}],
    }
    if place.network == "pod":
        container["ports"] = [{"name": "http", "containerPort": place.port, "protocol": "TCP"}]
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False, "enableServiceLinks": False, "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsNonRoot": True, "runAsUser": place.uid, "runAsGroup": place.gid},
        "initContainers": [{
            "name": "keys", "image": place.image, "imagePullPolicy": "IfNotPresent", "command": ["python", "-c", copy],
            "securityContext": secure,
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
            "volumeMounts": [{"name": "secret", "mountPath": SECRET_MOUNT, "readOnly": True},
                             {"name": "live", "mountPath": LIVE}]}],
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    {"name": "live", "emptyDir": {"medium": "Memory", "sizeLimit": "2Mi"}},
                    {"name": "routes", "configMap": {"name": place.name}},
                    {"name": "secret", "secret": {"secretName": f"{place.name}-keys", "defaultMode": 0o444}},
                    traffic],
    }
    if place.network == "host":
        pod.update(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": place.name, "namespace": place.namespace, "labels": labels(place.endpoint, "mlops-route")},
        "spec": {"replicas": 1, "selector": {"matchLabels": selector(place.endpoint)},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                 "revisionHistoryLimit": 3, "progressDeadlineSeconds": 600,
                 "template": {"metadata": {"labels": labels(place.endpoint, "mlops-route")}, "spec": pod}},
    }


def service(place: RouterPlace) -> dict[str, Any]:
    """The Service in front of the router pods (port 80)."""
    target: int | str = place.port if place.network == "host" else "http"
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": place.name, "namespace": place.namespace,
                         "labels": labels(place.endpoint, "mlops-route")},
            "spec": {"type": "ClusterIP", "selector": selector(place.endpoint),
                     "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": target, "protocol": "TCP"}]}}


def router_objects(place: RouterPlace, routes_json: str, keys: Mapping[str, str] | None) -> list[dict[str, Any]]:
    """The router's objects in the order they are applied (the Deployment after what it mounts)."""
    return [secret(place, keys), config_map(place, routes_json), deployment(place), service(place)]


def address(endpoint: str, namespace: str) -> dict[str, Any]:
    """The endpoint's own Service without selector: the host the mesh (or a gateway) routes for it."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": address_name(endpoint), "namespace": namespace,
                         "labels": {**labels(endpoint, "mlops-endpoint"), INSTANCE: address_name(endpoint)}},
            "spec": {"type": "ClusterIP",
                     "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": SERVICE_PORT, "protocol": "TCP"}]}}


def _parent(gateway: str | None, endpoint: str, namespace: str) -> dict[str, Any]:
    """The HTTPRoute's parent: a Gateway (``NAME`` or ``NAMESPACE/NAME``), else the endpoint's own Service (the
    Gateway API for meshes, GAMMA)."""
    if gateway:
        where, _, name = gateway.rpartition("/")
        return {"group": GATEWAY_GROUP, "kind": "Gateway", "name": name, **({"namespace": where} if where else {})}
    return {"group": "", "kind": "Service", "name": address_name(endpoint), "port": SERVICE_PORT}


def http_route(endpoint: str, namespace: str, routing: Mapping[str, Any], services: Mapping[str, str], *,
               api_version: str = f"{GATEWAY_GROUP}/v1", gateway: str | None = None) -> dict[str, Any]:
    """The HTTPRoute of ``routing``: each member's Service (``services``: object name by member) a backendRef with
    its weight (0 takes nothing, as the Gateway API says), the shadow a ``RequestMirror`` filter (``percent`` only
    below 100: v1.0 and v1.1 mirror every request and know no such field)."""
    refs = [{"group": "", "kind": "Service", "name": services[m["name"]], "port": SERVICE_PORT,
             "weight": int(m["weight"])} for m in routing.get("members") or []]
    rule: dict[str, Any] = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": refs}
    shadow = routing.get("shadow")
    if shadow:
        mirror: dict[str, Any] = {"backendRef": {"group": "", "kind": "Service", "name": services[shadow["name"]],
                                                 "port": SERVICE_PORT}}
        if int(shadow["percent"]) < 100:
            mirror["percent"] = int(shadow["percent"])
        rule["filters"] = [{"type": "RequestMirror", "requestMirror": mirror}]
    return {"apiVersion": api_version, "kind": "HTTPRoute",
            "metadata": {"name": address_name(endpoint), "namespace": namespace,
                         "labels": {**labels(endpoint, "mlops-endpoint"), INSTANCE: address_name(endpoint)},
                         "annotations": {"mlops-magics/generation": str(int(routing.get("generation") or 0))}},
            "spec": {"parentRefs": [_parent(gateway, endpoint, namespace)], "rules": [rule]}}


def virtual_service(endpoint: str, namespace: str, routing: Mapping[str, Any], services: Mapping[str, str], *,
                    api_version: str = f"{ISTIO_GROUP}/v1", gateway: str | None = None) -> dict[str, Any]:
    """The VirtualService of ``routing``: for the endpoint's own host, the members that take traffic as route
    destinations with their weights (adding up to 100, as Istio wants), the shadow as ``mirror`` with
    ``mirrorPercentage``; for the mesh, or a Gateway (``NAMESPACE/NAME``)."""
    def host(service: str) -> str:
        return f"{service}.{namespace}.svc.cluster.local"

    route = [{"destination": {"host": host(services[m["name"]]), "port": {"number": SERVICE_PORT}},
              "weight": int(m["weight"])} for m in routing.get("members") or [] if int(m["weight"]) > 0]
    http: dict[str, Any] = {"name": "weights", "route": route}
    shadow = routing.get("shadow")
    if shadow:
        http["mirror"] = {"host": host(services[shadow["name"]]), "port": {"number": SERVICE_PORT}}
        http["mirrorPercentage"] = {"value": float(shadow["percent"])}
    spec: dict[str, Any] = {"hosts": [host(address_name(endpoint))], "http": [http]}
    if gateway:
        spec["gateways"] = [gateway, "mesh"]
    return {"apiVersion": api_version, "kind": "VirtualService",
            "metadata": {"name": address_name(endpoint), "namespace": namespace,
                         "labels": {**labels(endpoint, "mlops-endpoint"), INSTANCE: address_name(endpoint)},
                         "annotations": {"mlops-magics/generation": str(int(routing.get("generation") or 0))}},
            "spec": spec}

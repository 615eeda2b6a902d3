"""The router of an endpoint whose members run on one Kubernetes cluster, on that cluster.

:func:`choose` picks how the weights are applied: what the cluster offers (a Gateway API HTTPRoute, else an Istio
VirtualService, found by asking the API server which APIs it serves), else our router as a Deployment; never
replica ratios. :func:`serve` creates or changes it for a new routing; :func:`delete` removes it;
:func:`describe` says which is in use.

The router Deployment takes a change within a second or so: the ConfigMap is updated first (what a pod that
starts later reads), then each router pod gets the new routes written into its own scratch file through the
API server (exec; keys on the command's standard input, never on its command line), and the change is done once
every running router pod's ``/ready`` reports the new generation. Its traffic records go to this machine's
endpoint folder directly when the pods use the host network (the node is this machine), else to the pod's scratch
space, fetched on demand (:func:`fetch_traffic`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_magics.endpoints import kube_objects as objects
from mlops_magics.endpoints import router as process_router
from mlops_magics.errors import ConflictError, DeployError, EngineError, InvalidInputError
from mlops_magics.registry import Deployment, Endpoint, Registry
from mlops_magics.targets.base import Steps
from mlops_magics.targets.kube import forward, rollout
from mlops_magics.targets.kube.cluster import Cluster, connect
from mlops_magics.targets.kube.manifests import SERVICE_PORT
from mlops_magics.targets.kube.settings import settings as kube_settings
from mlops_magics.targets.kube.target import own_folder, pod_user
from mlops_magics.targets.process import free_port

#: Seconds the router Deployment may take to roll out, and every router pod to take up a new generation.
ROLLOUT_TIMEOUT = 180.0
SWITCH_TIMEOUT = 20.0
_TRAFFIC_FILE = re.compile(r"traffic-\d+-\d+\.jsonl")


@dataclass(frozen=True)
class ClusterMembers:
    """Members that all run on one cluster and namespace: where, and how their pods network."""

    context: str
    namespace: str
    network: str
    reach: str
    image: str
    #: Each member's Service (object name) and address inside the cluster, by member name.
    services: Mapping[str, str]
    urls: Mapping[str, str]


def cluster_members(endpoint: str, routing: Mapping[str, Any],
                    deployments: Mapping[str, Deployment]) -> tuple[ClusterMembers | None, str]:
    """The members' cluster when every member runs on Kubernetes in one context and namespace, else None and why
    not (in words, for messages)."""
    found: list[tuple[str, Deployment]] = []
    for m in routing.get("members") or []:
        d = deployments.get(m["service"])
        if d is None or d.target != "kubernetes":
            where = "is not deployed" if d is None else f"runs on the {d.target} target"
            return None, f"member {m['name']!r} (service {m['service']!r}) {where}"
        found.append((m["name"], d))
    if not found:
        return None, f"endpoint {endpoint!r} has no member"
    places = {(str(d.config.get("context")), str(d.config.get("namespace"))) for _, d in found}
    if len(places) > 1:
        listed = ", ".join(f"{name}: context {d.config.get('context')!r}, namespace {d.config.get('namespace')!r}"
                           for name, d in found)
        return None, f"the members are not all on one cluster and namespace ({listed})"
    first = found[0][1].config
    return ClusterMembers(
        context=str(first.get("context")), namespace=str(first.get("namespace")),
        network=str(first.get("network") or "pod"), reach=str(first.get("reach") or "port-forward"),
        image=str(first.get("image")),
        services={name: str(d.config.get("object")) for name, d in found},
        urls={name: str(d.url) for name, d in found}), ""


def offered(cluster: Cluster) -> dict[str, str]:
    """What the cluster serves of the ways to route by weight: ``{'httproute': 'gateway.networking.k8s.io/v1',
    'virtualservice': 'networking.istio.io/v1beta1'}`` (API discovery, asked now)."""
    found: dict[str, str] = {}
    for kind, group, versions, name in (("httproute", objects.GATEWAY_GROUP, objects.GATEWAY_VERSIONS, "HTTPRoute"),
                                        ("virtualservice", objects.ISTIO_GROUP, objects.ISTIO_VERSIONS,
                                         "VirtualService")):
        served = cluster.api_resources(group)
        version = next((v for v in versions if name in served.get(v, set())), None)
        if version is not None:
            found[kind] = f"{group}/{version}"
    return found


def choose(requested: str | None, endpoint: str, routing: Mapping[str, Any],
           deployments: Mapping[str, Deployment]) -> str:
    """How the endpoint routes: ``requested``, or with ``auto``/None: a process of this machine unless every
    member runs on one cluster, then an HTTPRoute if the cluster serves the Gateway API, else a VirtualService if
    it serves Istio's, else the router Deployment (with a sticky header, always the router: neither offers one).

    Raises:
        InvalidInputError: an unknown router, or a sticky header with an HTTPRoute or a VirtualService.
        ConflictError: an in-cluster router for members that are not all on one cluster (or, with ``auto``, members
            all on Kubernetes but on different clusters or namespaces); the cluster does not serve the API asked.
    """
    wanted = (requested or "auto").lower()
    if wanted not in objects.ROUTERS:
        raise InvalidInputError(f"--router {requested!r}: use one of {', '.join(objects.ROUTERS)}.")
    if wanted == "process":
        return wanted
    members, why = cluster_members(endpoint, routing, deployments)
    if members is None:
        all_kube = all((deployments.get(m["service"]) is not None and deployments[m["service"]].target ==
                        "kubernetes") for m in routing.get("members") or [])
        if wanted == "auto" and not all_kube:
            return "process"
        raise ConflictError(f"Endpoint {endpoint!r} cannot route on a cluster: {why}. A router on a cluster fronts "
                            "members of that cluster and namespace only: deploy them there (--target kubernetes), "
                            "or route from this machine (--router process).")
    if wanted in ("httproute", "virtualservice") and routing.get("sticky_header"):
        raise InvalidInputError(sticky_refused(wanted, endpoint))
    if wanted == "deployment":
        return wanted
    cluster = connect(members.context)
    served = offered(cluster)
    if wanted == "auto":
        if routing.get("sticky_header"):
            return "deployment"
        return next((k for k in ("httproute", "virtualservice") if k in served), "deployment")
    if wanted not in served:
        api = ("the Gateway API (HTTPRoute in gateway.networking.k8s.io v1 or v1beta1)" if wanted == "httproute" else
               "Istio's VirtualService (networking.istio.io)")
        raise ConflictError(f"The cluster ({cluster.where()}) does not serve {api}: install it, or route with our "
                            "router on the cluster (--router deployment).")
    return wanted


def sticky_refused(kind: str, endpoint: str) -> str:
    """Why a sticky header is refused with an HTTPRoute or a VirtualService."""
    what = "an HTTPRoute" if kind == "httproute" else "a VirtualService"
    return (f"Endpoint {endpoint!r} routes with {what}, whose weights cannot keep a client on one member by a "
            f"header (Istio's consistent hashing ignores the weights): sticky routing is not offered there. Use our "
            f"router on the cluster: delete the endpoint keeping its members (delete_endpoint({endpoint!r}, "
            "keep_members=True)), then create it again with --router deployment.")


def check(kind: str, endpoint: str, routing: Mapping[str, Any]) -> None:
    """Refuse a routing the way ``kind`` cannot serve, before it is recorded.

    Raises:
        InvalidInputError: a sticky header with an HTTPRoute or a VirtualService.
    """
    if kind in ("httproute", "virtualservice") and routing.get("sticky_header"):
        raise InvalidInputError(sticky_refused(kind, endpoint))


# -- serving ----------------------------------------------------------------------------------


def serve(reg: Registry, endpoint: Endpoint, kind: str, deployments: Mapping[str, Deployment], steps: Steps,
          gateway: str | None = None) -> tuple[str, dict[str, Any]]:
    """Make the cluster route ``endpoint.routing`` (creating the router or object on first use); the endpoint's
    URL and what the registry records of its router.

    Raises:
        ConflictError: the members are not on one cluster.
        DeployError: the router Deployment did not roll out (what was created is removed), a router pod did not
            take up the generation, or the cluster refused an object.
    """
    members, why = cluster_members(endpoint.name, endpoint.routing, deployments)
    if members is None:
        raise ConflictError(f"Endpoint {endpoint.name!r} routes on a cluster ({kind}), but {why}: its members must "
                            "run on that cluster and namespace (--target kubernetes).")
    config = dict(endpoint.config)
    if config.get("router") in objects.IN_CLUSTER and (config.get("context"), config.get("namespace")) != (
            members.context, members.namespace):
        raise ConflictError(f"Endpoint {endpoint.name!r} routes on context {config.get('context')!r}, namespace "
                            f"{config.get('namespace')!r}; its members now run on context {members.context!r}, "
                            f"namespace {members.namespace!r}: a router fronts members of its own cluster only.")
    cluster = connect(members.context)
    if kind == "deployment":
        return _serve_deployment(reg, endpoint, config, members, cluster, deployments, steps)
    return _serve_route(endpoint, config, kind, members, cluster, steps, gateway)


def _keys(reg: Registry, endpoint: Endpoint, deployments: Mapping[str, Deployment]) -> tuple[dict[str, str], set[str]]:
    """The key files the router pods keep (``endpoint``, ``member-NAME``) and the members that want a key."""
    keys: dict[str, str] = {}
    if endpoint.config.get("auth"):
        own = reg.endpoint_keys.get(endpoint.name)
        keys["endpoint"] = f"{own.primary}\n{own.secondary}\n"
    keyed: set[str] = set()
    for m in endpoint.routing.get("members") or []:
        d = deployments[m["service"]]
        if d.config.get("auth") or d.config.get("key_file"):
            member_keys = reg.keys.get(d.name)
            keys[f"member-{m['name']}"] = f"{member_keys.primary}\n"
            keyed.add(m["name"])
    return keys, keyed


def _serve_deployment(reg: Registry, endpoint: Endpoint, config: dict[str, Any], members: ClusterMembers,
                      cluster: Cluster, deployments: Mapping[str, Deployment],
                      steps: Steps) -> tuple[str, dict[str, Any]]:
    keys, keyed = _keys(reg, endpoint, deployments)
    routes = objects.pod_routes(endpoint.name, endpoint.routing, members.urls, keyed)
    name = objects.router_name(endpoint.name)
    existing = config.get("router") == "deployment" and cluster.get("apps/v1", "Deployment", name,
                                                                      members.namespace) is not None
    if existing:
        place = _place(endpoint, config, members)
        cluster.apply(objects.secret(place, keys))
        cluster.apply(objects.config_map(place, json.dumps(routes, indent=1)))  # what a pod started later reads
        steps.say(f"switching the router pods of {endpoint.name} to generation {endpoint.generation}")
        switch(cluster, place, routes, keys)
        return str(config["url"]), config
    uid, gid = pod_user()
    port = free_port() if members.network == "host" else objects.POD_PORT
    host_traffic = process_router.traffic_folder(reg.home, endpoint.name) if members.network == "host" else None
    place = objects.RouterPlace(endpoint=endpoint.name, namespace=members.namespace, image=members.image,
                                network=members.network, port=port, uid=uid, gid=gid,
                                host_traffic=None if host_traffic is None else str(host_traffic),
                                auth=bool(endpoint.config.get("auth")))
    if host_traffic is not None:
        own_folder(host_traffic, uid, gid)
    body = objects.router_objects(place, json.dumps(routes, indent=1), keys)
    try:
        for item in body:
            steps.say(f"applying {item['kind']}/{item['metadata']['name']}")
            cluster.apply(item)
        _wait_rollout(reg, cluster, place, members, deployments, endpoint, steps)
        switch(cluster, place, routes, keys)
    except BaseException:
        steps.say("removing the router's objects")
        cluster.delete_service(name, members.namespace)
        cluster.wait_pods_gone(name, members.namespace, timeout=60)
        raise
    url = (f"http://127.0.0.1:{port}" if members.network == "host" else
           f"http://{name}.{members.namespace}.svc.cluster.local:{SERVICE_PORT}")
    recorded = {"router": "deployment", "context": cluster.context, "namespace": members.namespace,
                "object": name, "network": members.network,
                "reach": "direct" if members.network == "host" and members.reach == "direct" else "port-forward",
                "port": port, "image": members.image, "traffic": "host" if host_traffic is not None else "pod",
                "url": url, "objects": [f"{o['kind']}/{o['metadata']['name']}" for o in body]}
    for stale in ("pid", "pid_stamp"):
        config.pop(stale, None)
    return url, {**config, **recorded}


def _place(endpoint: Endpoint, config: Mapping[str, Any], members: ClusterMembers) -> objects.RouterPlace:
    uid, gid = pod_user()
    return objects.RouterPlace(endpoint=endpoint.name, namespace=str(config["namespace"]), image=str(config["image"]),
                               network=str(config["network"]), port=int(config["port"]), uid=uid, gid=gid,
                               auth=bool(config.get("auth")))


def _wait_rollout(reg: Registry, cluster: Cluster, place: objects.RouterPlace, members: ClusterMembers,
                  deployments: Mapping[str, Deployment], endpoint: Endpoint, steps: Steps) -> None:
    """The kube target's rollout wait (and its explanations of a pod that cannot start), for the router."""
    from mlops_magics.packaging.spec import deploy_spec

    first = deployments[next(iter(endpoint.routing["members"]))["service"]]
    spec = dataclasses.replace(deploy_spec(reg, place.name, f"{first.model_name}:{first.model_version}"),
                               progress=steps, script_line_offset=None)
    chosen = kube_settings({"namespace": members.namespace, "cpu": 0.05, "memory_gb": 0.0625,
                            "memory_gb_limit": 0.25})
    try:
        rollout.wait(cluster, place.name, spec, chosen, timeout=ROLLOUT_TIMEOUT)
    except DeployError as exc:
        raise DeployError(f"The router of endpoint {endpoint.name!r} (Deployment {place.name} in namespace "
                          f"{place.namespace!r}, image {place.image}) did not start; its objects are removed. "
                          f"{exc}") from None


_SWITCH = """
import json, os, sys, time, urllib.request
payload = json.loads(sys.stdin.readline())
os.makedirs(KEYS, exist_ok=True)
def put(path, text):
    fresh = os.path.join(os.path.dirname(path), '.' + os.path.basename(path) + '.tmp')
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as handle:
        handle.write(text)
    os.replace(fresh, path)
for name, text in payload['keys'].items():
    put(os.path.join(KEYS, name), text)
put(os.path.join(LIVE, 'routes.json'), json.dumps(payload['routes']))
wanted, seen = payload['routes']['generation'], None
keys = [k for k in payload['keys'].get('endpoint', '').splitlines() if k]
deadline = time.monotonic() + TIMEOUT
def accepted(key):
    request = urllib.request.Request(URL + '/endpoint', headers={'Authorization': 'Bearer ' + key})
    try:
        with urllib.request.urlopen(request, timeout=2):
            return True
    except Exception:
        return False
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(URL + '/ready', timeout=2) as answer:
            seen = json.loads(answer.read()).get('generation')
    except Exception:
        pass
    if seen == wanted and all(accepted(key) for key in keys):  # the endpoint's keys taken up too
        print(seen)
        sys.exit(0)
    time.sleep(0.05)
print(seen)
sys.exit(3)
"""


def switch(cluster: Cluster, place: objects.RouterPlace, routes: Mapping[str, Any], keys: Mapping[str, str],
           timeout: float = SWITCH_TIMEOUT) -> list[str]:
    """Write ``routes`` (and ``keys``) into every running router pod's scratch space and wait until each serves
    their generation and accepts the endpoint's keys (asked on the pod's own address); the pods switched.

    Raises:
        DeployError: a pod did not take it up within ``timeout`` seconds (its log says why).
    """
    code = (f"KEYS, LIVE, TIMEOUT = {objects.KEYS!r}, {objects.LIVE!r}, {timeout!r}\n"
            f"URL = 'http://127.0.0.1:{place.port}'\n" + _SWITCH)
    payload = json.dumps({"routes": routes, "keys": dict(keys)})
    done: list[str] = []
    for pod in cluster.running_pods(place.name, place.namespace):
        running = any(s.name == "mlops-route" and s.state.running is not None
                      for s in pod.status.container_statuses or [])
        if not running or pod.metadata.deletion_timestamp is not None:
            continue  # starting (it reads the ConfigMap, updated first) or stopping
        try:
            cluster.run_python(pod.metadata.name, place.namespace, code, container="mlops-route",
                               stdin_line=payload, timeout=timeout + 10, doing="switching the routes")
        except EngineError as exc:
            raise DeployError(f"The router pod {pod.metadata.name} of endpoint {place.endpoint!r} did not take up "
                              f"generation {routes['generation']}: {exc} Its log: kubectl logs -n {place.namespace} "
                              f"{pod.metadata.name} -c mlops-route") from None
        done.append(str(pod.metadata.name))
    return done


def _serve_route(endpoint: Endpoint, config: dict[str, Any], kind: str, members: ClusterMembers, cluster: Cluster,
                 steps: Steps, gateway: str | None) -> tuple[str, dict[str, Any]]:
    api_version = str(config.get("api_version") or "") if config.get("router") == kind else ""
    if not api_version:
        served = offered(cluster)
        if kind not in served:
            raise ConflictError(f"The cluster ({cluster.where()}) no longer serves the {kind} API this endpoint "
                                "routes with.")
        api_version = served[kind]
    chosen_gateway = config.get("gateway") if config.get("router") == kind else gateway
    make = objects.http_route if kind == "httproute" else objects.virtual_service
    body = make(endpoint.name, members.namespace, endpoint.routing, members.services, api_version=api_version,
                gateway=chosen_gateway)
    planned = cluster.apply(body, dry_run=True)
    _check_kept(body, planned, endpoint.name)
    address = objects.address(endpoint.name, members.namespace)
    steps.say(f"applying {body['kind']}/{body['metadata']['name']} (generation {endpoint.generation})")
    cluster.apply(address)
    cluster.apply(body)
    name = objects.address_name(endpoint.name)
    url = f"http://{name}.{members.namespace}.svc.cluster.local:{SERVICE_PORT}"
    recorded = {"router": kind, "context": cluster.context, "namespace": members.namespace, "object": name,
                "api_version": api_version, "kind": body["kind"], "gateway": chosen_gateway, "url": url}
    return url, {**config, **recorded}


def _check_kept(body: Mapping[str, Any], planned: Mapping[str, Any], endpoint: str) -> None:
    """Refuse when the cluster would drop the mirror's ``percent`` (a Gateway API before v1.2 prunes it: every
    request would be copied).

    Raises:
        ConflictError: it would.
    """
    if body["kind"] != "HTTPRoute":
        return
    asked = [f for r in body["spec"]["rules"] for f in r.get("filters") or []]
    kept = [f for r in (planned.get("spec") or {}).get("rules") or [] for f in r.get("filters") or []]
    for mine, theirs in zip(asked, kept, strict=False):
        if "percent" in mine["requestMirror"] and "percent" not in (theirs.get("requestMirror") or {}):
            raise ConflictError(f"The cluster's Gateway API mirrors every request (its HTTPRoute has no mirror "
                                f"percent before v1.2): copy them all (%endpoint {endpoint} --shadow NAME=100), or "
                                "route with our router on the cluster (--router deployment).")


# -- what is there --------------------------------------------------------------------------------


def is_in_cluster(config: Mapping[str, Any]) -> bool:
    """Whether the endpoint's router is on a cluster (as the registry records it)."""
    return config.get("router") in objects.IN_CLUSTER


def running(config: Mapping[str, Any]) -> bool:
    """Whether the in-cluster router is there (the Deployment has a ready pod; the route object exists)."""
    try:
        cluster = connect(config.get("context"))
        if config.get("router") == "deployment":
            body = cluster.get("apps/v1", "Deployment", str(config["object"]), str(config["namespace"]))
            return body is not None and int((body.get("status") or {}).get("availableReplicas") or 0) > 0
        return cluster.get(str(config["api_version"]), str(config["kind"]), str(config["object"]),
                           str(config["namespace"])) is not None
    except EngineError:
        return False


def local_url(config: Mapping[str, Any]) -> str | None:
    """Where this machine reaches the router Deployment (its URL, or a port forward to a ready router pod); None
    for an HTTPRoute or a VirtualService (their address is the mesh's or the gateway's)."""
    if config.get("router") != "deployment":
        return None
    if config.get("reach") == "direct":
        return str(config["url"])
    return forward.forwarder(connect(config.get("context")), str(config["object"]), str(config["namespace"]),
                             int(config["port"])).url


def describe(config: Mapping[str, Any], home: Path, endpoint: str) -> str:
    """Which router is in use, in words."""
    kind = config.get("router")
    where = f"in namespace {config.get('namespace')!r} (context {config.get('context')!r})"
    if kind == "deployment":
        records = (f"recording answers in {process_router.traffic_folder(home, endpoint)}"
                   if config.get("traffic") == "host" else "recording answers in its pod (fetched when read)")
        return f"Deployment {config.get('object')} {where}, our mlops-route, {records}"
    if kind in ("httproute", "virtualservice"):
        what = "HTTPRoute" if kind == "httproute" else "VirtualService"
        api = "Gateway API" if kind == "httproute" else "Istio"
        parent = f", gateway {config['gateway']}" if config.get("gateway") else ", for the mesh"
        return (f"{what} {config.get('object')} ({api}, {config.get('api_version')}) {where}{parent}; answers are not "
                "recorded (the cluster's proxies route): %compare_traffic and the shadow comparison need our router "
                "(--router deployment)")
    return "none"


def delete(config: Mapping[str, Any], home: Path, endpoint: str) -> list[str]:
    """Remove the endpoint's objects from the cluster (idempotent); ``Kind/name`` of what was removed. The router
    pods' traffic records are fetched first when they are kept in the pods.

    Raises:
        EngineError: the cluster does not answer.
    """
    cluster = connect(config.get("context"))
    namespace = str(config["namespace"])
    name = str(config["object"])
    if config.get("router") == "deployment":
        forward.stop(cluster.context, name, namespace)
        if config.get("traffic") == "pod":
            with contextlib.suppress(EngineError):  # no pod to read: what was fetched before stays
                fetch_traffic(config, home, endpoint)
        gone = cluster.delete_service(name, namespace)
        cluster.wait_pods_gone(name, namespace, timeout=60)
        return gone
    gone = []
    if cluster.delete(str(config["api_version"]), str(config["kind"]), name, namespace):
        gone.append(f"{config['kind']}/{name}")
    return gone + cluster.delete_service(name, namespace)


def fetch_traffic(config: Mapping[str, Any], home: Path, endpoint: str) -> int:
    """Copy the router pods' traffic files into this machine's traffic folder of the endpoint (a file of the same
    name is replaced: the pods' files only grow), when the records are kept in the pods; how many files.

    Raises:
        EngineError: a pod could not be read.
    """
    if config.get("router") != "deployment" or config.get("traffic") != "pod":
        return 0
    cluster = connect(config.get("context"))
    folder = process_router.traffic_folder(home, endpoint)
    folder.mkdir(parents=True, exist_ok=True)
    copied = 0
    for pod in cluster.running_pods(str(config["object"]), str(config["namespace"])):
        if pod.status.phase != "Running":
            continue
        archive = cluster.fetch_tree(pod.metadata.name, str(config["namespace"]), objects.TRAFFIC,
                                     container="mlops-route")
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and _TRAFFIC_FILE.fullmatch(name):
                    data = tar.extractfile(member)
                    if data is not None:
                        fresh = folder / f".{name}.fetched"
                        fresh.write_bytes(data.read())
                        fresh.replace(folder / name)
                        copied += 1
    return copied


def wait_settled(config: Mapping[str, Any], key: str | None) -> None:
    """The router Deployment's records of the answers it gave so far are written (as for the process)."""
    url = local_url(config)
    if url is not None:
        process_router.settle(url, key)


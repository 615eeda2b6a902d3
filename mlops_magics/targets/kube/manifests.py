"""The Kubernetes objects of a deployment, as plain dictionaries: a Namespace, a Deployment, a Service, a
HorizontalPodAutoscaler, a Secret with the keys, a PersistentVolumeClaim for collected data.

Pure functions of what is deployed and how (no cluster is needed): ``%deploy --dry-run`` writes these, the
target applies them with server-side apply, and the tests validate them against Kubernetes' own schemas.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlops_magics.packaging.context import APP_ROOT
from mlops_magics.packaging.spec import DeploySpec
from mlops_magics.targets.kube.settings import KubeSettings

MANAGER = "mlops-magics"
#: Where a pod sees its data folder (collected data), its keys, and its scratch space.
DATA = "/var/mlops-data"
KEYS = "/run/mlops-keys"
SECRET_MOUNT = "/run/mlops-secret"
SCRIPT = f"{APP_ROOT}/score.py"
#: With host networking: the file the server writes once it listens (in the pod's own scratch space).
READY_FILE = "/tmp/mlops-ready"
#: The port pods listen on with pod networking; the Service's port.
POD_PORT = 5001
SERVICE_PORT = 80
#: Label and annotation keys.
INSTANCE = "app.kubernetes.io/instance"
MODEL = "mlops-magics/model"
VERSION = "mlops-magics/version"
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]")


def object_name(service: str) -> str:
    """``service`` as a Kubernetes object name (RFC 1123, at most 53 characters: room for suffixes). A name that
    had to change gets a short hash of the original, so two services never share objects."""
    name = re.sub(r"[^a-z0-9-]+", "-", service.lower()).strip("-")[:53].strip("-") or "service"
    if name != service:
        name = f"{name[:46].strip('-')}-{hashlib.sha256(service.encode()).hexdigest()[:6]}"
    return name


def label_value(text: str) -> str:
    """``text`` as a label value (at most 63 characters of letters, digits, '-', '_', '.', alphanumeric at the
    ends); a value that had to change gets a short hash of the original."""
    value = _LABEL_VALUE.sub("-", text)[:63].strip("-_.")
    if value != text:
        value = f"{value[:56].strip('-_.')}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"
    return value


def selector(service: str) -> dict[str, str]:
    """The labels that select a service's pods (and find all its objects)."""
    return {INSTANCE: object_name(service), "app.kubernetes.io/managed-by": MANAGER}


def labels(spec: DeploySpec) -> dict[str, str]:
    """Every object's labels: the app, this service, the manager, the model and version served."""
    return {"app.kubernetes.io/name": "mlops-serve", **selector(spec.service),
            MODEL: label_value(spec.version.name), VERSION: str(spec.version.version)}


@dataclass(frozen=True)
class Layout:
    """What the manifests need besides the spec and the settings: where things are."""

    #: The image reference the nodes pull (or have).
    image: str
    #: The port the server listens on (the node's port with host networking).
    port: int
    #: The user and group the server runs as (never root).
    uid: int
    gid: int
    #: The node's folder for collected data (``data_volume='host'``).
    host_data: str | None = None
    #: The sha256 of the keys (a changed key rolls the pods: they copy the keys at start).
    keys_digest: str | None = None
    #: The autoscaling API group version the cluster serves (``autoscaling/v2``, else ``autoscaling/v2beta2``).
    hpa_api: str = "autoscaling/v2"


def namespace(spec: DeploySpec, settings: KubeSettings) -> dict[str, Any]:
    """The namespace, labelled as managed by mlops-magics (applied only when it is missing)."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": settings.namespace, "labels": {"app.kubernetes.io/managed-by": MANAGER}}}


def collects(spec: DeploySpec, settings: KubeSettings) -> bool:
    """Whether the pods record what they score, on a data volume (``collect`` on, and a ``data_volume`` to keep
    it)."""
    return spec.collect and settings.volume != "none"


def server_command(spec: DeploySpec, settings: KubeSettings, port: int) -> list[str]:
    """The server's command line in the pod (never a key: those come from a file)."""
    host = "127.0.0.1" if settings.network == "host" else "0.0.0.0"  # pod networking: any address of the pod
    model_dir = f"{APP_ROOT}/azureml-models/{spec.version.name}/{spec.version.version}"
    command = ["python", "-m", "mlops_backend.cli", "--entry_script", SCRIPT, "--model_dir", model_dir,
               "--host", host, "--port", str(port), "--worker_count", str(spec.workers), "--reuse-port",
               "--scoring-timeout-ms", str(settings.scoring_timeout_ms),
               "--max-concurrent-requests", str(settings.max_concurrent_requests),
               "--max-request-wait-ms", str(settings.max_request_wait_ms), "--ready-file", READY_FILE,
               "--verbose-errors"]
    if collects(spec, settings):
        command += ["--collect-dir", f"{DATA}/collected", "--sample-rate", repr(spec.sample_rate)]
    return command


def _quantity_cpu(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def _quantity_memory(gb: float) -> str:
    return f"{round(gb * 1024)}Mi"


def _probe(path: str, settings: KubeSettings, port: int, *, startup: bool = False) -> dict[str, Any]:
    if settings.network == "host" and path == "/ready":
        # Pods on the host network share 127.0.0.1:port (SO_REUSEPORT): an HTTP probe of a new pod would be
        # answered by the old one, and the rollout would retire the old one before the new one listens. The
        # pod's own ready file says when its own server is ready.
        check: dict[str, Any] = {"exec": {"command": ["test", "-f", READY_FILE]}}
    else:
        get: dict[str, Any] = {"path": path, "port": port if settings.network == "host" else "http"}
        if settings.network == "host":
            get["host"] = "127.0.0.1"  # the node's loopback: a host-network pod listens there only
        check = {"httpGet": get}
    if startup:  # init() may take a while: the other probes start once it is done
        return {**check, "periodSeconds": 1, "timeoutSeconds": settings.timeout_seconds,
                "failureThreshold": settings.startup_seconds}
    return {**check, "initialDelaySeconds": settings.initial_delay_seconds,
            "periodSeconds": settings.period_seconds, "timeoutSeconds": settings.timeout_seconds,
            "successThreshold": settings.success_threshold if path == "/ready" else 1,
            "failureThreshold": settings.failure_threshold}


def deployment(spec: DeploySpec, settings: KubeSettings, layout: Layout) -> dict[str, Any]:
    """The Deployment: rolling updates that never take a serving pod away before its successor is ready."""
    name = object_name(spec.service)
    resources: dict[str, Any] = {"requests": {"cpu": _quantity_cpu(settings.cpu),
                                              "memory": _quantity_memory(settings.memory_gb)}}
    limits = {key: quantity for key, quantity in (
        ("cpu", None if settings.cpu_limit is None else _quantity_cpu(settings.cpu_limit)),
        ("memory", None if settings.memory_gb_limit is None else _quantity_memory(settings.memory_gb_limit)))
        if quantity is not None}
    if limits:
        resources["limits"] = limits
    env = [{"name": key, "value": value} for key, value in {
        "SERVICE_NAME": spec.service, "MLOPS_MODEL_NAME": spec.version.name,
        "MLOPS_MODEL_VERSION": str(spec.version.version), "HOME": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1"}.items()]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    if collects(spec, settings):  # the data folder holds collected data only: without it, no volume to provision
        env.append({"name": "MLOPS_DATA_DIR", "value": DATA})  # named only where it is (the root is read-only)
        mounts.append({"name": "data", "mountPath": DATA})
        volumes.append({"name": "data", "hostPath": {"path": layout.host_data, "type": "DirectoryOrCreate"}}
                       if settings.volume == "host" else
                       {"name": "data", "persistentVolumeClaim": {"claimName": f"{name}-data"}})
    init: list[dict[str, Any]] = []
    secure = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": settings.read_only_root,
              "capabilities": {"drop": ["ALL"]}}
    if spec.auth:
        # The server wants its key file readable by its user alone; a Secret volume is root's (or group-readable
        # with fsGroup), so an init container copies the keys into memory-backed scratch space, mode 0600.
        env.append({"name": "MLOPS_AUTH_KEY_FILE", "value": f"{KEYS}/keys"})
        mounts.append({"name": "keys", "mountPath": KEYS, "readOnly": True})
        volumes += [{"name": "keys", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                    {"name": "secret", "secret": {"secretName": f"{name}-keys", "defaultMode": 0o444}}]
        copy = ("import os, shutil; shutil.copyfile('" + SECRET_MOUNT + "/keys', '" + KEYS + "/keys'); "
                "os.chmod('" + KEYS + "/keys', 0o600)")
        init.append({"name": "keys", "image": layout.image, "imagePullPolicy": "IfNotPresent",
                     "command": ["python", "-c", copy], "securityContext": secure,
                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                   "limits": {"cpu": "100m", "memory": "64Mi"}},
                     "volumeMounts": [{"name": "secret", "mountPath": SECRET_MOUNT, "readOnly": True},
                                      {"name": "keys", "mountPath": KEYS}]})
    container: dict[str, Any] = {
        "name": "mlops-serve", "image": layout.image, "imagePullPolicy": "IfNotPresent",
        "command": server_command(spec, settings, layout.port), "env": env, "resources": resources,
        "workingDir": APP_ROOT,  # as in Azure's images: scripts open files relative to the app root
        "startupProbe": _probe("/ready", settings, layout.port, startup=True),
        "readinessProbe": _probe("/ready", settings, layout.port),
        "livenessProbe": _probe("/", settings, layout.port),
        "securityContext": secure, "volumeMounts": mounts,
    }
    if settings.network == "pod":  # a host-network pod declares no port: the scheduler would refuse a second one
        container["ports"] = [{"name": "http", "containerPort": layout.port, "protocol": "TCP"}]
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False, "enableServiceLinks": False, "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsNonRoot": True, "runAsUser": layout.uid, "runAsGroup": layout.gid,
                            **({"fsGroup": layout.gid} if collects(spec, settings) and settings.volume == "claim"
                               else {})},
        "containers": [container], "volumes": volumes,
    }
    if init:
        pod["initContainers"] = init
    if settings.network == "host":
        pod.update(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
    annotations = {"mlops-magics/model-ref": spec.version.ref,
                   "mlops-magics/script-sha256": hashlib.sha256(spec.script.encode()).hexdigest()}
    if layout.keys_digest:
        annotations["mlops-magics/keys-sha256"] = layout.keys_digest
    body: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": labels(spec),
                     "annotations": {"mlops-magics/model-ref": spec.version.ref}},
        "spec": {
            "selector": {"matchLabels": selector(spec.service)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "revisionHistoryLimit": 3, "progressDeadlineSeconds": max(600, settings.startup_seconds * 2),
            "template": {"metadata": {"labels": labels(spec), "annotations": annotations}, "spec": pod},
        },
    }
    if not settings.autoscale:  # with autoscaling the autoscaler owns the count: applying one would fight it
        body["spec"]["replicas"] = settings.replicas
    return body


def service(spec: DeploySpec, settings: KubeSettings, layout: Layout) -> dict[str, Any]:
    """The Service in front of the pods (port 80 to the server's port)."""
    target: int | str = layout.port if settings.network == "host" else "http"
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": object_name(spec.service), "namespace": settings.namespace, "labels": labels(spec)},
            "spec": {"type": "ClusterIP", "selector": selector(spec.service),
                     "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": target, "protocol": "TCP"}]}}


def autoscaler(spec: DeploySpec, settings: KubeSettings, layout: Layout) -> dict[str, Any]:
    """The HorizontalPodAutoscaler: CPU utilization of the request, scaling at most every ``refresh_seconds``."""
    policy = {"periodSeconds": settings.refresh_seconds}
    return {
        "apiVersion": layout.hpa_api, "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": object_name(spec.service), "namespace": settings.namespace, "labels": labels(spec)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": object_name(spec.service)},
            "minReplicas": settings.min_replicas, "maxReplicas": settings.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": settings.target_utilization}}}],
            "behavior": {"scaleUp": {"policies": [{"type": "Percent", "value": 100, **policy}]},
                         "scaleDown": {"policies": [{"type": "Percent", "value": 50, **policy}]}},
        },
    }


def secret(spec: DeploySpec, settings: KubeSettings, keys: tuple[str, str] | None) -> dict[str, Any]:
    """The Secret with the primary and secondary keys, one per line. ``keys=None``: the object without its data
    (what ``--dry-run`` writes: keys never go to a file in plain text)."""
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": f"{object_name(spec.service)}-keys", "namespace": settings.namespace,
                     "labels": labels(spec)},
    }
    if keys is not None:
        body["stringData"] = {"keys": f"{keys[0]}\n{keys[1]}\n"}
    return body


def claim(spec: DeploySpec, settings: KubeSettings) -> dict[str, Any]:
    """The PersistentVolumeClaim for collected data (``data_volume='claim'``): it outlives pods and updates."""
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": f"{object_name(spec.service)}-data", "namespace": settings.namespace,
                     "labels": labels(spec)},
        "spec": {"accessModes": ["ReadWriteMany" if settings.autoscale or settings.replicas > 1 else
                                 "ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    if settings.storage_class:
        body["spec"]["storageClassName"] = settings.storage_class
    return body


def reader(service: str, namespace: str, image: str, uid: int, gid: int) -> dict[str, Any]:
    """A pod that mounts a service's data claim read-only and waits, so that its collected data can be copied
    out once the servers are gone (their last records are written when they stop)."""
    name = object_name(service)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{name}-reader", "namespace": namespace,
                     "labels": {**selector(service), "app.kubernetes.io/component": "data-reader"}},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0, "activeDeadlineSeconds": 600,
            "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "fsGroup": gid},
            "containers": [{
                "name": "mlops-serve", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["python", "-c", "import time; time.sleep(600)"],
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "500m",
                                                                                      "memory": "256Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "data", "mountPath": DATA, "readOnly": True}],
            }],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": f"{name}-data", "readOnly": True}}],
        },
    }


def manifests(spec: DeploySpec, settings: KubeSettings, layout: Layout,
              keys: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """Every object of the deployment, in the order they are applied (the Deployment after what it uses)."""
    objects = [namespace(spec, settings)]
    if spec.auth:
        objects.append(secret(spec, settings, keys))
    if collects(spec, settings) and settings.volume == "claim":
        objects.append(claim(spec, settings))
    objects += [deployment(spec, settings, layout), service(spec, settings, layout)]
    if settings.autoscale:
        objects.append(autoscaler(spec, settings, layout))
    return objects


def kinds(objects: Sequence[Mapping[str, Any]]) -> list[str]:
    """``Kind/name`` of each object, for messages."""
    return [f"{o['kind']}/{o['metadata']['name']}" for o in objects]

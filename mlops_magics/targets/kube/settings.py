"""What a Kubernetes deployment is asked to be: replicas, autoscaling, resources, probes, auth, networking.

Settings come as keyword options (``%deploy --target kubernetes --autoscale 1,4``, ``deploy(..., target_options=)``)
under their own names or Azure's AKS deployment-configuration names (``autoscale_max_replicas``, ``cpu_cores``...):
:data:`AKS_NAMES` maps each AKS name to ours, so an ``AksWebservice.deploy_configuration(...)`` carries over as is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from mlops_magics.errors import InvalidInputError
from mlops_magics.registry.refs import did_you_mean

#: Azure ML's AKS deployment configuration names -> ours (``None``: accepted, and what it means is in the docs).
AKS_NAMES: dict[str, str | None] = {
    "autoscale_enabled": "autoscale",
    "autoscale_min_replicas": "min_replicas",
    "autoscale_max_replicas": "max_replicas",
    "autoscale_target_utilization": "target_utilization",
    "autoscale_refresh_seconds": "refresh_seconds",
    "num_replicas": "replicas",
    "cpu_cores": "cpu",
    "memory_gb": "memory_gb",
    "cpu_cores_limit": "cpu_limit",
    "memory_gb_limit": "memory_gb_limit",
    "auth_enabled": "auth",
    "primary_key": "primary_key",
    "secondary_key": "secondary_key",
    "scoring_timeout_ms": "scoring_timeout_ms",
    "replica_max_concurrent_requests": "max_concurrent_requests",
    "max_request_wait_time": "max_request_wait_ms",
    "period_seconds": "period_seconds",
    "initial_delay_seconds": "initial_delay_seconds",
    "timeout_seconds": "timeout_seconds",
    "success_threshold": "success_threshold",
    "failure_threshold": "failure_threshold",
    "collect_model_data": "collect",
    "namespace": "namespace",
}

#: Namespaces and object names: RFC 1123 labels.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)*$")


@dataclass(frozen=True)
class KubeSettings:
    """How a model is deployed on Kubernetes. Defaults follow Azure's AKS defaults where the two agree."""

    #: The kubeconfig context (None: the current one) and the namespace (created if missing).
    context: str | None = None
    namespace: str = "mlops"
    #: Pods to run without autoscaling; with it, the autoscaler decides between the bounds.
    replicas: int = 1
    autoscale: bool = False
    min_replicas: int = 1
    max_replicas: int = 10
    #: Average CPU use, in percent of the request, the autoscaler aims at.
    target_utilization: int = 70
    #: How often the autoscaler may change the replica count, in seconds (its scaling policies' period).
    refresh_seconds: int = 1
    #: What each pod asks for (the scheduler places it where that is free) and may use at most (None: no limit).
    cpu: float = 0.1
    memory_gb: float = 0.5
    cpu_limit: float | None = None
    memory_gb_limit: float | None = None
    auth: bool = False
    #: Keys to use instead of generated ones (AKS lets them be given).
    primary_key: str | None = None
    secondary_key: str | None = None
    scoring_timeout_ms: int = 60000
    max_concurrent_requests: int = 1
    max_request_wait_ms: int = 500
    #: The readiness and liveness probes (a startup probe covers the entry script's init() instead of Azure's fixed
    #: 310 s initial delay, so a service is ready as soon as it is).
    period_seconds: int = 10
    initial_delay_seconds: int = 0
    timeout_seconds: int = 2
    success_threshold: int = 1
    failure_threshold: int = 3
    #: Seconds init() may take before the pod counts as failed to start.
    startup_seconds: int = 120
    collect: bool = False
    #: "pod": ordinary pod networking behind the Service. "host": pods on the node's network, bound to 127.0.0.1 on
    #: ``port`` (a single-node cluster on this machine without a network plugin, as in the tests).
    network: str = "pod"
    #: The container port ("pod") or the node's 127.0.0.1 port ("host"; None: a free one).
    port: int | None = None
    #: How this machine reaches the service: "direct" (its URL: host networking, or this machine is in the cluster)
    #: or "port-forward" (through the API server, as ``kubectl port-forward``). Default: direct with host networking.
    reach: str | None = None
    #: Where collected data lives: "host" (a folder of the node: this machine's service data folder, for a cluster
    #: on this machine), "claim" (a PersistentVolumeClaim), "none". Default: "host" with host networking, else "claim".
    data_volume: str | None = None
    storage_class: str | None = None
    #: ``HOST[:PORT]/REPO``: push the image there first and pull it from there (None: the nodes have it already).
    image_registry: str | None = None
    #: Run with a read-only root filesystem (the server writes only to /tmp and its data folder).
    read_only_root: bool = True

    @property
    def reaching(self) -> str:
        """How this machine reaches the service, in effect."""
        return self.reach or ("direct" if self.network == "host" else "port-forward")

    @property
    def volume(self) -> str:
        """The data volume kind in effect."""
        return self.data_volume or ("host" if self.network == "host" else "claim")

    def check(self) -> KubeSettings:
        """``self`` when every setting is in range.

        Raises:
            InvalidInputError: a setting is out of range; the message says which and what would do.
        """
        if not _DNS_LABEL.fullmatch(self.namespace) or len(self.namespace) > 63:
            raise InvalidInputError(f"Namespace {self.namespace!r} is not a valid Kubernetes name: use lowercase "
                                    "letters, digits and '-', at most 63 characters (e.g. 'mlops').")
        counts = {"replicas": self.replicas, "min_replicas": self.min_replicas, "max_replicas": self.max_replicas}
        for key, value in counts.items():
            if not 1 <= value <= 1000:
                raise InvalidInputError(f"{key}={value} is out of range: use 1 to 1000 pods.")
        if self.min_replicas > self.max_replicas:
            raise InvalidInputError(f"--autoscale {self.min_replicas},{self.max_replicas}: the minimum is above the "
                                    "maximum; give MIN,MAX with MIN <= MAX (e.g. 1,4).")
        if not 1 <= self.target_utilization <= 100:
            raise InvalidInputError(f"target_utilization={self.target_utilization} is out of range: give a percent "
                                    "of the CPU request, 1 to 100 (Azure's default is 70).")
        if not 1 <= self.refresh_seconds <= 1800:
            raise InvalidInputError(f"refresh_seconds={self.refresh_seconds} is out of range: use 1 to 1800.")
        for key in ("cpu", "memory_gb"):
            if not getattr(self, key) > 0:
                raise InvalidInputError(f"{key}={getattr(self, key)} must be above 0 (e.g. cpu=0.5, memory_gb=1).")
        for request, limit in (("cpu", "cpu_limit"), ("memory_gb", "memory_gb_limit")):
            if getattr(self, limit) is not None and getattr(self, limit) < getattr(self, request):
                raise InvalidInputError(f"{limit}={getattr(self, limit)} is below {request}={getattr(self, request)}:"
                                        " a pod cannot be limited to less than it asks for.")
        for key in ("scoring_timeout_ms", "max_concurrent_requests", "max_request_wait_ms", "period_seconds",
                    "timeout_seconds", "success_threshold", "failure_threshold", "startup_seconds"):
            if getattr(self, key) < 1:
                raise InvalidInputError(f"{key}={getattr(self, key)} must be 1 or more.")
        if self.initial_delay_seconds < 0:
            raise InvalidInputError(f"initial_delay_seconds={self.initial_delay_seconds} must be 0 or more.")
        if self.network not in ("pod", "host"):
            raise InvalidInputError(f"network={self.network!r}: use 'pod' (ordinary pod networking) or 'host' (a "
                                    "single-node cluster on this machine without a network plugin).")
        if self.reaching not in ("direct", "port-forward"):
            raise InvalidInputError(f"reach={self.reach!r}: use 'direct' (the service's URL) or 'port-forward' "
                                    "(through the API server).")
        if self.volume not in ("host", "claim", "none"):
            raise InvalidInputError(f"data_volume={self.data_volume!r}: use 'host', 'claim' or 'none'.")
        if self.volume == "host" and self.network != "host":
            raise InvalidInputError("data_volume='host' keeps collected data in a folder of the node, which is this "
                                    "machine only with network='host'; use data_volume='claim' on another cluster.")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise InvalidInputError(f"port={self.port} is out of range: use 1 to 65535.")
        if self.image_registry is not None and not _REGISTRY.fullmatch(self.image_registry):
            raise InvalidInputError(f"--registry {self.image_registry!r} is not HOST[:PORT]/REPO (e.g. "
                                    "'127.0.0.1:5000/mlops' or 'myregistry.azurecr.io/models').")
        return self


_FIELDS = {f.name: f for f in fields(KubeSettings)}


def settings(options: Mapping[str, Any] | None = None, *, base: KubeSettings | None = None) -> KubeSettings:
    """Settings from ``options`` (our names or Azure's AKS names), over ``base`` (default: the defaults), checked.

    Raises:
        InvalidInputError: an unknown name (with the close ones), a value of the wrong type, or one out of range.
    """
    values: dict[str, Any] = {}
    for key, value in (options or {}).items():
        name = AKS_NAMES.get(key, key)
        if name not in _FIELDS:
            known = sorted({*_FIELDS, *AKS_NAMES})
            raise InvalidInputError(f"Unknown Kubernetes setting {key!r}.{did_you_mean(key, known)} Settings: "
                                    f"{', '.join(sorted(_FIELDS))} (or Azure's AKS names: "
                                    f"{', '.join(sorted(AKS_NAMES))}).")
        values[name] = _typed(name, value)
    return replace(base or KubeSettings(), **values).check()


def _typed(name: str, value: Any) -> Any:
    """``value`` as the setting ``name`` takes it (text from a command line is converted)."""
    kind = str(_FIELDS[name].type)
    if value is None:
        if "None" not in kind:
            raise InvalidInputError(f"{name} cannot be None.")
        return None
    try:
        if kind.startswith("bool"):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
    except (TypeError, ValueError):
        words = {"bool": "true or false", "int": "a whole number", "float": "a number"}[kind.split(" ")[0]]
        raise InvalidInputError(f"{name}={value!r} is not {words}.") from None
    return str(value)


def autoscale_bounds(text: str) -> tuple[int, int]:
    """``MIN,MAX`` of ``--autoscale`` as two integers.

    Raises:
        InvalidInputError: it is not two integers separated by a comma.
    """
    match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", text)
    if not match:
        raise InvalidInputError(f"--autoscale {text!r} is not MIN,MAX: give the fewest and the most pods, e.g. 1,4.")
    return int(match[1]), int(match[2])

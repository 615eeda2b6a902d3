"""The deployment target contract."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mlops_magics.errors import ConflictError
from mlops_magics.registry import Deployment, InferenceConfig, ModelVersion, Registry
from mlops_magics.targets.process import claim_port, free_port


@dataclass(frozen=True)
class DeploySpec:
    """What to deploy and how."""

    service: str
    version: ModelVersion
    script: str
    #: Lines above the script in the notebook cell it came from (None: generated, not from a cell).
    script_line_offset: int | None
    inference: InferenceConfig
    port: int | None = None
    workers: int = 1
    auth: bool = False
    #: Run in a virtual environment built from the inference environment only (local target).
    isolated: bool = False
    #: CPU cores and memory (Docker syntax: 512m, 1g) a container may use; None: no limit.
    cpu: float | None = None
    memory: str | None = None
    #: Image settings (container targets): base image (None: the configured default), build if missing.
    base_image: str | None = None
    build: bool = True
    #: Record each scored request (input, output, latency, status) in the service's data folder, this share of them.
    collect: bool = False
    sample_rate: float = 1.0
    #: Called with each build step while an image builds (container targets).
    progress: Callable[[Any], None] | None = field(default=None, compare=False, repr=False)


def data_dir(home: Path, service: str) -> Path:
    """The data folder of ``service``: it outlives processes, containers and generations (the containers' volume)."""
    return home / "deployments" / service / "volume" / "data"


def server_options(spec: DeploySpec, collect_dir: str) -> tuple[list[str], dict[str, str]]:
    """The ``mlops-serve`` flags and environment every target gives its server for ``spec``."""
    env = {"SERVICE_NAME": spec.service, "MLOPS_MODEL_NAME": spec.version.name,
           "MLOPS_MODEL_VERSION": str(spec.version.version)}
    flags = ["--collect-dir", collect_dir, "--sample-rate", repr(spec.sample_rate)] if spec.collect else []
    return flags, env


def new_key_file(registry: Registry, spec: DeploySpec) -> Path | None:
    """Give a new service that requires a key its primary and secondary keys; return its key file (None: no auth)."""
    if not spec.auth:
        return None
    registry.keys.create(spec.service)
    return registry.keys.path(spec.service)


def on_free_port(spec: DeploySpec, start: Callable[[int], Deployment], attempts: int = 3) -> Deployment:
    """Start a new service with ``start(port)`` while holding its port (:func:`~.process.claim_port`): the port
    ``spec`` names, or a free one (another if a racing deployment took it first).

    Raises:
        ConflictError: the port is in use by another service.
    """
    for attempt in range(attempts):
        port = spec.port or free_port()
        try:
            with claim_port(port, spec.service):
                return start(port)
        except ConflictError:
            if spec.port is not None or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


class DeploymentTarget(Protocol):
    """Where a model runs. Every method's contract is written on it."""

    name: str

    def deploy(self, spec: DeploySpec) -> Deployment:
        """Start the service and block until it answers its health check.

        Raises:
            DeployError: it did not become healthy; the message has the reason and the log tail.
                Nothing is left running and the failed attempt is recorded.
        """

    def delete(self, deployment: Deployment) -> None:
        """Stop and remove the service. Idempotent: deleting a stopped or deleted one is not an error."""

    def status(self, deployment: Deployment) -> str:
        """The live state, checked now: 'running', 'unhealthy' or 'stopped'."""

    def logs(self, deployment: Deployment, tail: int) -> str:
        """The last ``tail`` lines of the service's log."""

    def log_file(self, deployment: Deployment) -> tuple[Path, str]:
        """The server log file on this machine, and the entry script's path as its tracebacks name it."""

    def replace(self, deployment: Deployment, spec: DeploySpec) -> Deployment:
        """Serve ``spec`` in place of ``deployment`` at the same address; the old one serves until the new one
        is healthy.

        Raises:
            DeployError: the new one failed; the old one keeps serving.
        """

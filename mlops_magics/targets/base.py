"""The deployment target contract."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from mlops_magics.errors import ConflictError
from mlops_magics.packaging.spec import DeploySpec
from mlops_magics.registry import Deployment, Registry
from mlops_magics.targets.process import claim_port, free_port


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

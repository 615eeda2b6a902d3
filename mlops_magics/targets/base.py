"""The deployment target contract."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias, runtime_checkable

from mlops_magics.errors import ConflictError
from mlops_magics.packaging.engine import BuildStep
from mlops_magics.packaging.spec import DeploySpec
from mlops_magics.registry import Deployment, Registry
from mlops_magics.targets.process import claim_port, free_port


@dataclass(frozen=True)
class Status:
    """Where a slow step (deploy, reload, update) is: what it does now and the seconds since it began."""

    what: str
    elapsed: float


#: What a progress callback of a deployment gets: image build steps and the deployment's own steps.
ProgressEvent: TypeAlias = BuildStep | Status
Progress: TypeAlias = Callable[[ProgressEvent], None]


class Steps:
    """Tells a progress callback what a deployment does, as :class:`Status` events; passes build steps through.

    ``say(what)`` reports a new step now; ``tick()`` (called while waiting) repeats the current one with its
    elapsed time, at most every ``every`` seconds. A callback that raises is not the deployment's problem: it is
    dropped, and the deployment goes on.
    """

    def __init__(self, progress: Callable[[Any], None] | None, every: float = 0.5) -> None:
        self.progress, self.every = progress, every
        self.started = self.said = time.monotonic()
        self.what = ""

    @classmethod
    def of(cls, progress: Callable[[Any], None] | None) -> Steps:
        """``progress`` itself when it is a :class:`Steps` already (one clock for the whole operation)."""
        return progress if isinstance(progress, Steps) else cls(progress)

    @property
    def elapsed(self) -> float:
        """Seconds since the operation began."""
        return time.monotonic() - self.started

    def __call__(self, event: ProgressEvent) -> None:
        if self.progress is not None:
            try:
                self.progress(event)
            except Exception:  # noqa: BLE001 - a broken display must not fail a deployment
                self.progress = None

    def say(self, what: str) -> None:
        """Report that the operation now does ``what``."""
        self.what, self.said = what, time.monotonic()
        self(Status(what, self.elapsed))

    def tick(self) -> None:
        """Repeat the current step with its elapsed time, if ``every`` seconds passed since the last report."""
        if time.monotonic() - self.said >= self.every:
            self.said = time.monotonic()
            self(Status(self.what, self.elapsed))


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


@runtime_checkable
class DeliversKeys(Protocol):
    """A target whose servers do not read the registry's key file themselves (the pods of a cluster): it is told
    when a service's keys changed, and makes its servers accept the new ones before it returns."""

    def keys_changed(self, deployment: Deployment) -> None:
        """Deliver the service's current keys to its servers."""


@runtime_checkable
class Describes(Protocol):
    """A target that says more about a live deployment than its state (a cluster's ready pods, its autoscaler)."""

    def describe(self, deployment: Deployment) -> str:
        """One line about the deployment now ('' when there is nothing to add)."""


@runtime_checkable
class FollowsLogs(Protocol):
    """A target whose servers' logs are not files of this machine (a cluster's pods): it streams them itself."""

    def follow(self, deployment: Deployment, timeout: float | None) -> Iterator[str]:
        """Yield the service's new log lines as they come, until ``timeout`` seconds pass (None: until it stops)."""


@runtime_checkable
class Reaches(Protocol):
    """A target whose services this machine may not reach at their recorded URL (a cluster's Service)."""

    def local_url(self, deployment: Deployment) -> str:
        """An address on this machine that reaches the service now (a port forward, started if need be)."""


@runtime_checkable
class Collects(Protocol):
    """A target whose services collect somewhere this machine does not read directly (a cluster's volume)."""

    def fetch_collected(self, deployment: Deployment) -> None:
        """Copy what the service collected into its data folder on this machine (``data_dir``)."""

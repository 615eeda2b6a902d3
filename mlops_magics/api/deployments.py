"""Deploying, watching, calling and stopping services: the API behind %deploy, %deployments, %undeploy, %logs,
%reload, %update, %call and %keys."""

from __future__ import annotations

import datetime
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from mlops_magics.errors import ConflictError, DeployError, InvalidInputError, MlopsError, NotFoundError
from mlops_magics.packaging.spec import deploy_spec
from mlops_magics.registry import Deployment, Registry, cards, or_default, parse_ref
from mlops_magics.registry.refs import check_name
from mlops_magics.registry.secrets import ServiceKeys
from mlops_magics.targets import DeploymentTarget, get_target
from mlops_magics.targets.base import DeliversKeys, Describes, FollowsLogs, Progress, Reaches, Steps
from mlops_magics.targets.client import as_table, post_score, request_body
from mlops_magics.targets.local import map_script_lines, serving_since
from mlops_magics.targets.process import alive, process_stamp


@dataclass(frozen=True, eq=False, repr=False)
class Service(Deployment):
    """A deployment as the API returns it: the registry's record, and what SDK v1 code calls on a ``Webservice``.

    The record's fields and properties (``state``, ``scoring_uri``, ``swagger_uri``, ``port``...) are as they were
    when it was returned, as a frozen value: call :meth:`refresh` for the state now. The methods act on the service
    by name, each through the API function of the same meaning (:func:`call`, :func:`reload`, :func:`undeploy`,
    :func:`logs`, :func:`keys`). Unlike Azure's, :meth:`reload` returns the reloaded service rather than changing
    this object.
    """

    #: The registry that holds it (None: the default registry at the time of each call).
    registry: Registry | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, deployment: Deployment, registry: Registry | None) -> Service:
        """The registry's record ``deployment``, with the methods of a service that acts through ``registry``."""
        return cls(**{f.name: getattr(deployment, f.name) for f in fields(Deployment)}, registry=registry)

    def __eq__(self, other: object) -> bool:
        """Equal to a service or a registry record with the same fields (the registry it acts through aside)."""
        if not isinstance(other, Deployment):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(Deployment))

    __hash__ = None  # type: ignore[assignment]  # its config is a mapping: as unhashable as the record

    def run(self, input_data: Any) -> Any:
        """Score ``input_data`` and return the answer as the service sent it (decoded JSON), as Azure's
        ``Webservice.run`` does: a JSON string or bytes is sent as it is; rows (a list, an array, a DataFrame) go
        as ``{"data": rows}``, a dict as JSON. See :func:`call` for the errors."""
        return call(self.name, input_data, table=False, registry=self.registry)

    def reload(self) -> Service:
        """Serve the current entry script, assets and environment (see :func:`reload`); return the service now."""
        return reload(self.name, registry=self.registry)

    def update(self, model: str) -> Service:
        """Serve another model version, ``NAME:VERSION`` or ``NAME@ALIAS`` (see :func:`update`)."""
        return update(self.name, model, registry=self.registry)

    def delete(self) -> None:
        """Stop and remove the service (see :func:`undeploy`); idempotent."""
        undeploy(self.name, registry=self.registry)

    def get_logs(self, num_lines: int = 5000) -> str:
        """The last ``num_lines`` lines of the server's log (see :func:`logs`)."""
        return logs(self.name, tail=num_lines, registry=self.registry)

    def get_keys(self) -> ServiceKeys:
        """The primary and secondary keys (unpack them: ``primary, secondary = service.get_keys()``).

        Raises:
            NotFoundError: the service requires no key (deployed without ``auth``).
        """
        return keys(self.name, registry=self.registry)

    def regen_key(self, key: str) -> ServiceKeys:
        """Replace the ``'Primary'`` or ``'Secondary'`` key with a new one (see :func:`keys`); the other stays valid."""
        return keys(self.name, regenerate=key.lower(), registry=self.registry)

    def refresh(self) -> Service:
        """The service as it is now, its state checked (see :func:`get_deployment`)."""
        return get_deployment(self.name, registry=self.registry)


class DeploymentList(list[Deployment]):
    """Deployments, shown as a table; ``hidden`` counts the deleted ones left out; ``details`` says more about
    some (a cluster's ready pods and autoscaler), by name."""

    hidden: int = 0

    def __init__(self, *items: Any) -> None:
        super().__init__(*items)
        self.details: dict[str, str] = {}

    @property
    def hidden_note(self) -> str:
        """What was left out, and how to see it ('' when nothing was)."""
        if not self.hidden:
            return ""
        return (f"{self.hidden} deleted deployment{'s' if self.hidden > 1 else ''} not shown: %deployments --all "
                "shows them.")

    def __repr__(self) -> str:
        if not self:
            return " ".join(filter(None, ["No live deployments." if self.hidden else "No deployments.",
                                          self.hidden_note]))
        return "\n".join(f"{d.name:20} {d.model_name}:{d.model_version:<6} {d.target:8} {d.state:10} {d.url or ''}"
                         + (f"  ({self.details[d.name]})" if self.details.get(d.name) else "")
                         for d in self) + (f"\n({self.hidden_note})" if self.hidden else "")

    def _repr_html_(self) -> str:
        note = f"<p><small>{self.hidden_note}</small></p>" if self.hidden else ""
        return (cards.deployments_html(self, self.details) if self else "<p><em>No live deployments.</em></p>") + note


def deploy(
    ref: str,
    *,
    target: str = "local",
    name: str | None = None,
    port: int | None = None,
    workers: int = 1,
    auth: bool = False,
    isolated: bool = False,
    cpu: float | None = None,
    memory: str | None = None,
    base_image: str | None = None,
    build: bool = True,
    require_validation: bool = False,
    collect: bool = False,
    sample_rate: float | None = None,
    target_options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    registry: Registry | None = None,
) -> Service:
    """Deploy a model version with its entry script, assets and environment; block until it is healthy.

    Args:
        ref: ``NAME`` (latest), ``NAME:VERSION`` or ``NAME@ALIAS``.
        target: where to run it: ``local`` (a process) or ``docker`` (a container of the model's image); others
            come as plugins (see :mod:`mlops_magics.targets`).
        name: the service name (default: the model name).
        port: the port (default: a free one).
        workers: worker processes.
        auth: require a key (``Authorization: Bearer KEY``); the Deployment carries it.
        isolated: run in a virtual environment built from the model's environment spec only (cached by
            its hash), to prove the spec complete (local target).
        cpu: CPU cores the container may use (``docker``; default: the version's profile recommendation,
            else no limit).
        memory: memory the container may use, Docker syntax (``512m``, ``1g``; default: as for ``cpu``).
        base_image: the image's base (``docker``; default ``$MLOPS_BASE_IMAGE`` or an official slim Python).
        build: build the image when the engine does not have it (``docker``); off: use the built one only.
        require_validation: refuse a version whose last validation did not pass (or that has none).
        collect: record every scored request (time, request id, input, output, latency, status) in the service's
            data folder, off the request path; entry scripts' ``ModelDataCollector`` writes there too. See
            :mod:`mlops_magics.monitoring` to read it.
        sample_rate: record this share of the requests (0 < R <= 1; implies ``collect``).
        target_options: the target's own settings by name: for ``kubernetes`` replicas, autoscaling, namespace,
            context, resources, probes, image registry... (ours or Azure's AKS deployment-configuration names, see
            :mod:`mlops_magics.targets.kube.settings`).
        progress: called with each step: a :class:`~mlops_magics.targets.base.Status` (what it does now, seconds
            since the start) every half second while it works, and each build step while an image builds.

    Returns:
        The running deployment, as recorded in the registry, with a service's methods (``run``, ``reload``,
        ``delete``, ``get_logs``...: see :class:`Service`).

    Raises:
        NotFoundError: no such model, version, alias or target.
        ConflictError: a live deployment already has that name; validation is required and the version
            has not passed it.
        DeployError: the service did not become healthy (reason and log tail in the message); nothing
            is left running and the failed attempt is recorded.
        EngineError: ``docker`` and no engine is reachable.
        BuildError: the image build failed (the message names the step and quotes its output).
    """
    if workers < 1:
        raise InvalidInputError(f"--workers {workers} is invalid: use 1 or more.")
    if sample_rate is not None and not 0.0 < sample_rate <= 1.0:
        raise InvalidInputError(f"--sample-rate {sample_rate} is out of range: give a share in (0, 1], e.g. 0.1 to "
                                "record one request in ten.")
    if target == "local" and (cpu is not None or memory is not None):
        raise InvalidInputError("--cpu and --memory limit containers: deploy with --target docker to apply them "
                                "(a local process runs without limits).")
    reg = or_default(registry)
    if require_validation:
        require_validated(reg, ref)
    if target in ("docker", "edge") and cpu is None and memory is None:
        cpu, memory = _profiled_limits(reg, ref)
    service = check_name(name or parse_ref(ref).name)
    existing = {d.name: d for d in reg.deployments()}.get(service)
    if existing is not None and existing.is_live and _still_serving(reg, existing):
        doing = "being deployed by another process" if existing.state == "creating" else "already deployed"
        raise ConflictError(
            f"Service {service!r} is {doing} ({existing.model_name}:{existing.model_version} on "
            f"{existing.target}, {existing.url or existing.state}). Use %update {service} --model {ref}, "
            f"%reload {service}, or pick another --name."
        )
    steps = Steps.of(progress)
    steps.say(f"checking {ref}")
    options = {"cpu": cpu, "memory": memory, "base_image": base_image, "build": build, "progress": steps,
               "target_options": dict(target_options or {}),
               "collect": collect or sample_rate is not None,
               "sample_rate": 1.0 if sample_rate is None else sample_rate}
    spec = deploy_spec(reg, service, ref, port=port, workers=workers, auth=auth, isolated=isolated, **options)
    deployer = get_target(target, reg)
    # Exactly one of several kernels deploying this name gets past the claim; the others get a ConflictError.
    me = claimant()
    reg.claim_deployment(service, spec.version.ref, target=target, claimant=me, checked=existing)
    try:
        return Service.of(deployer.deploy(spec), reg)
    finally:
        reg.release_claim(service, me, existing)  # a no-op once the target recorded the deployment


def require_validated(registry: Registry, ref: str) -> None:
    """Refuse a version whose last validation did not pass (or that has none).

    Raises:
        ConflictError: naming what failed and how to validate.
    """
    version = registry.get(ref)
    problem = registry.validation_problem(version)
    if problem == "has never been validated":
        raise ConflictError(f"{version.ref} {problem}, and validation is required. Run %validate {version.ref} "
                            "--data X --labels y --metric ... first.")
    if problem:  # validating it again on the same data repeats the verdict
        raise ConflictError(f"{version.ref} {problem}, and validation is required: deploy a version that passes "
                            "(register a better model and %validate it).")


def claimant() -> str:
    """This process, as a deployment claim names it: 'pid/stamp'."""
    return f"{os.getpid()}/{process_stamp(os.getpid())}"


def _still_serving(reg: Registry, d: Deployment) -> bool:
    """Whether a live record really is live: its process answers, or (being created) its deployer still runs."""
    if d.state == "creating":
        pid, _, stamp = str(d.config.get("claimant", "")).partition("/")
        return pid.isdigit() and alive(int(pid), None if stamp in ("", "None") else stamp)
    return _target(reg, d).status(d) != "stopped"


def _profiled_limits(reg: Registry, ref: str) -> tuple[float | None, str | None]:
    """The CPU and memory a profile under real limits recommended for the version (None, None: no profile)."""
    report = reg.reports(reg.get(ref)).get("profile")
    if not report or not report.get("limits_applied") or report.get("recommendedCpu") is None:
        return None, None
    return float(report["recommendedCpu"]), f"{math.ceil(float(report['recommendedMemoryInGB']) * 1024)}m"


def _target(reg: Registry, deployment: Deployment) -> DeploymentTarget:
    return get_target(deployment.target, reg)


def reachable_url(deployment: Deployment, registry: Registry | None = None) -> str:
    """An address on this machine that reaches the deployment now (its URL, or a cluster's port forward)."""
    target = _target(or_default(registry), deployment)
    if isinstance(target, Reaches):
        return target.local_url(deployment)
    return str(deployment.url)


def list_deployments(*, include_deleted: bool = False, registry: Registry | None = None) -> DeploymentList:
    """The deployments, their states checked against reality now (process alive and answering).

    Args:
        include_deleted: also list the undeployed ones (by default they are left out and counted in ``.hidden``).
    """
    reg = or_default(registry)
    found = DeploymentList()
    for d in reg.deployments():
        if d.state == "deleted" and not include_deleted:
            found.hidden += 1
            continue
        if d.is_live:
            creating = d.state == "creating" and _still_serving(reg, d)  # its deployer is at work: leave it be
            target = _target(reg, d)
            state = d.state if creating else target.status(d)
            if state != d.state:
                d = reg.set_deployment_state(d.name, state)
            if isinstance(target, Describes) and d.is_live:
                found.details[d.name] = target.describe(d)
        found.append(Service.of(d, reg))
    return found


def get_deployment(name: str, *, registry: Registry | None = None) -> Service:
    """The deployment named ``name``, its state checked against reality now (as :func:`list_deployments` does).

    Raises:
        NotFoundError: no deployment has that name; the message suggests close ones.
    """
    reg = or_default(registry)
    d = reg.get_deployment(name)
    if d.is_live and not (d.state == "creating" and _still_serving(reg, d)):
        state = _target(reg, d).status(d)
        if state != d.state:
            d = reg.set_deployment_state(d.name, state)
    return Service.of(d, reg)


def undeploy(name: str | None = None, *, all_services: bool = False,
             registry: Registry | None = None) -> list[str]:
    """Stop and remove a deployment (or all of them). Idempotent: a stopped one is simply marked deleted.

    Returns:
        The names of the deployments that were removed.

    Raises:
        NotFoundError: no deployment has that name.
    """
    reg = or_default(registry)
    if all_services:
        from mlops_magics.api.endpoints import delete_endpoint  # late: endpoints deploy through this module

        for endpoint in reg.endpoints():  # nothing is left routing to services that are gone
            if endpoint.is_live:
                delete_endpoint(endpoint.name, keep_members=True, registry=reg)
        targets = [d for d in reg.deployments() if d.state != "deleted"]
    elif name:
        targets = [reg.get_deployment(name)]
        _not_routed_to(reg, name)
    else:
        raise InvalidInputError("Name the service to undeploy, or use --all.")
    for d in targets:
        if d.state != "deleted":
            _target(reg, d).delete(d)
    return [d.name for d in targets]


def _not_routed_to(reg: Registry, service: str) -> None:
    """Refuse to undeploy a service a live endpoint sends requests to (its clients would get errors).

    Raises:
        ConflictError: naming the endpoint, the member and what to do.
    """
    for endpoint in reg.endpoints_routing_to(service):
        shadow = endpoint.routing.get("shadow") or {}
        for m in endpoint.routing.get("members") or []:
            if m["service"] != service:
                continue
            if m["weight"] > 0:
                raise ConflictError(f"Service {service!r} is member {m['name']!r} of endpoint {endpoint.name!r} and "
                                    f"takes {m['weight']}% of its traffic: move it first (%endpoint {endpoint.name} "
                                    f"--traffic OTHER=100), remove the member (%endpoint {endpoint.name} --remove "
                                    f"{m['name']}), or delete the endpoint (%endpoint {endpoint.name} --delete).")
            if shadow.get("name") == m["name"]:
                raise ConflictError(f"Service {service!r} is the shadow of endpoint {endpoint.name!r}: stop the "
                                    f"copies first (%endpoint {endpoint.name} --shadow off).")


def logs(name: str, *, tail: int = 50, registry: Registry | None = None) -> str:
    """The last ``tail`` lines of a deployment's server log (tracebacks point at the script cell's lines)."""
    reg = or_default(registry)
    d = reg.get_deployment(name)
    return str(_target(reg, d).logs(d, tail))


def follow(name: str, *, timeout: float | None = None, poll: float = 0.2,
           registry: Registry | None = None) -> Iterator[str]:
    """Yield the deployment's new log lines as they are written (script lines mapped to the cell's).

    Ends when ``timeout`` seconds pass, or when the service is no longer running; the caller may stop
    earlier (in a notebook: interrupt the kernel).
    """
    reg = or_default(registry)
    d = reg.get_deployment(name)
    target = _target(reg, d)
    if isinstance(target, FollowsLogs):
        yield from target.follow(d, timeout)
        return
    log, script = target.log_file(d)
    offset = log.stat().st_size if log.exists() else 0
    deadline = None if timeout is None else time.monotonic() + timeout
    partial = ""
    while deadline is None or time.monotonic() < deadline:
        if log.exists() and log.stat().st_size > offset:
            with open(log, encoding="utf-8", errors="replace") as fh:
                fh.seek(offset)
                chunk = fh.read()
                offset = fh.tell()
            *lines, partial = (partial + chunk).split("\n")
            for line in lines:
                yield map_script_lines(line, script, d.config.get("script_line_offset"))
        elif _target(reg, d).status(d) == "stopped":
            return
        time.sleep(poll)


def reload(name: str, *, progress: Progress | None = None,
           registry: Registry | None = None) -> Service:
    """Serve the current entry script, assets and environment without re-registering (Azure's ``reload()``).

    The running service keeps answering until the reloaded one is ready. A container deployment gets a new
    image: only the layers after the change are rebuilt.
    """
    reg = or_default(registry)
    d = reg.get_deployment(name)
    return Service.of(_replace(reg, d, f"{d.model_name}:{d.model_version}", progress), reg)


def update(name: str, model: str, *, progress: Progress | None = None,
           registry: Registry | None = None) -> Service:
    """Switch a deployment to another model version; the old one serves until the new one is ready."""
    reg = or_default(registry)
    return Service.of(_replace(reg, reg.get_deployment(name), model, progress), reg)


def _replace(reg: Registry, d: Deployment, ref: str, progress: Progress | None) -> Deployment:
    steps = Steps.of(progress)
    steps.say(f"checking {d.name}")
    state = _target(reg, d).status(d) if d.is_live else d.state
    if state in ("stopped", "deleted", "failed"):
        raise ConflictError(f"Service {d.name!r} is not running ({state}): deploy it with %deploy {ref} "
                            f"--name {d.name}.")
    container = {key: d.config[key] for key in ("cpu", "memory", "base_image", "collect", "sample_rate")
                 if d.config.get(key) is not None}
    spec = deploy_spec(reg, d.name, ref, port=int(d.config["port"]), workers=int(d.config.get("workers", 1)),
                       auth=bool(d.auth_key), isolated=bool(d.config.get("isolated")), progress=steps,
                       **container)
    try:
        return _target(reg, d).replace(d, spec)
    except DeployError:  # the old generation serves on: its record says that a newer script failed to start
        now = reg.get_deployment(d.name)
        if now.is_live and now.config.get("pid") == d.config.get("pid") and now.config.get(
                "container") == d.config.get("container"):
            reg.record_deployment(now.name, f"{now.model_name}:{now.model_version}", target=now.target,
                                  state=now.state, url=now.url,
                                  config={**now.config, "failed_replace": {"at": time.time(), "ref": spec.version.ref}})
        raise


def call(name: str, data: Any, *, timeout: float = 60, request_id: str | None = None, table: bool = True,
         registry: Registry | None = None) -> Any:
    """Score ``data`` with a deployed service; return its answer (a DataFrame when it is a list of records).

    ``request_id`` is sent as ``x-request-id``: collected records carry it, and labels attach to it. With
    ``table=False`` the answer is returned as the service sent it (decoded JSON), never as a DataFrame.

    Raises:
        NotFoundError: no deployment has that name; the message suggests close ones.
        ConflictError: the service is not serving (undeployed, failed, or its server stopped); the message says
            since when and gives the %deploy line that deploys it again. Checked before connecting.
        MlopsError: the service is not reachable or answered with an error (status and message quoted).
    """
    reg = or_default(registry)
    d = reg.get_deployment(name)
    if not d.is_live:  # undeployed, failed or found stopped: say so, with when and how to deploy it again
        raise ConflictError(cards.not_serving(d))
    if not d.url:
        raise ConflictError(f"Service {name!r} has no address ({d.state}).")
    target = _target(reg, d)
    url = target.local_url(d) if isinstance(target, Reaches) else d.url
    try:
        status, value = post_score(url, request_body(data), key=d.auth_key, service=name, timeout=timeout,
                                   request_id=request_id)
    except MlopsError as exc:  # not reachable: if its server is gone, record that and say so
        if target.status(d) != "stopped":
            raise
        raise ConflictError(cards.not_serving(reg.set_deployment_state(name, "stopped"))) from exc
    if status >= 400:
        message = value.get("message", value) if isinstance(value, dict) else value
        raise MlopsError(f"Service {name!r} answered {status}: {message}{_older_script_note(d, status)}")
    return as_table(value) if table else value


def _older_script_note(d: Deployment, status: int) -> str:
    """For an error answer after a failed reload or update: which script answered, and why not the new one."""
    failed = d.config.get("failed_replace")
    if status < 500 or not isinstance(failed, dict):
        return ""
    when = datetime.datetime.fromtimestamp(float(failed.get("at", 0))).strftime("%H:%M:%S")
    return (f"\n(This answer comes from the script of {serving_since(d)}, which still serves {d.model_name}:"
            f"{d.model_version}: the %reload/%update to {failed.get('ref')} at {when} failed to start, so the "
            f"script saved since is not serving. Fix it and run %reload {d.name}.)")


#: Seconds a running server takes at most to notice a rewritten key file (it checks the file once a second).
KEY_PICKUP_SECONDS = 1.5


def keys(name: str, *, regenerate: str | None = None, registry: Registry | None = None) -> ServiceKeys:
    """The primary and secondary keys of a service deployed with ``auth`` (Azure's ``get_keys`` / ``regen_key``).

    Either key is accepted. To rotate without downtime: move clients to one key, regenerate the other, and the
    other way round. Keys live in a 0600 file under ``$MLOPS_HOME/secrets`` (never in the database), which the
    server reads itself; a running service accepts a regenerated key by the time this returns.

    Args:
        regenerate: ``'primary'`` or ``'secondary'``: replace that key with a new one (the other stays valid).

    Raises:
        NotFoundError: no such deployment, or it requires no key.
        InvalidInputError: ``regenerate`` names no key.
    """
    reg = or_default(registry)
    d = reg.get_deployment(name)
    if not d.auth_keys:
        raise NotFoundError(f"Service {name!r} requires no key: it was deployed without --auth. Deploy it with "
                            "--auth to require one.")
    if regenerate is None:
        return reg.keys.get(name)
    if d.is_live and d.config.get("key_on_command_line"):
        raise ConflictError(f"Service {name!r} was started by an older mlops-magics, which gave its server the key "
                            f"itself: a regenerated key would not reach it. Run %reload {name} first (the new server "
                            "reads the key file, with no downtime), then regenerate.")
    found = reg.keys.regenerate(name, regenerate)
    target = _target(reg, d)
    if d.is_live and isinstance(target, DeliversKeys):
        target.keys_changed(d)
    elif d.is_live:
        time.sleep(KEY_PICKUP_SECONDS)
    return found



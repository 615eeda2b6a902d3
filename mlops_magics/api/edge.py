"""Edge devices: a deployment's IoT Edge manifest, cutting and restoring a simulated device's link, its status.

The API behind ``%edge`` and ``mlops edge``; ``%deploy MODEL --target edge`` deploys (see
:mod:`mlops_magics.targets.edge.target`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from mlops_backend.collection_store import read_stats
from mlops_backend.edge.agent import parse_bytes

from mlops_magics import display
from mlops_magics.edge.manifest import RegistryCredential, set_modules_instructions, validate_manifest
from mlops_magics.edge.module import module_image
from mlops_magics.errors import ConflictError, InvalidInputError, NotFoundError
from mlops_magics.registry import Deployment, Registry, or_default
from mlops_magics.targets.base import Status, Steps
from mlops_magics.targets.edge.device import Device
from mlops_magics.targets.edge.target import DEFAULT_DEVICE as DEFAULT_DEVICE
from mlops_magics.targets.edge.target import FIRST_PORT, EdgeSettings, EdgeTarget, module_manifest, read_status

#: Where a real device keeps a module's data when the manifest does not say (``--data-volume``).
DEVICE_DATA = "/var/lib/mlops-edge"


def edge_options(target: str, *, device: str | None = None, quantize: str | None = None,
                 max_buffer: str | None = None, mqtt: bool | None = None) -> dict[str, Any]:
    """The edge settings that the flags of ``%deploy`` / ``mlops deploy`` give.

    Raises:
        InvalidInputError: edge flags for another target, or a bad value.
    """
    options = {key: value for key, value in {"device": device, "quantize": quantize, "max_buffer": max_buffer,
                                             "mqtt": mqtt}.items() if value is not None}
    if options and target != "edge":
        raise InvalidInputError("--device, --quantize, --max-buffer and --no-mqtt are for --target edge.")
    EdgeSettings.of(options)  # checked now, before anything is built
    return options


@dataclass(frozen=True)
class EdgeManifest:
    """A deployment manifest written for a real IoT Edge device, validated, and how to apply it."""

    service: str
    manifest: dict[str, Any]
    path: Path | None
    image: str
    served: str
    instructions: str

    def json(self) -> str:
        """The manifest as the file holds it."""
        return json.dumps(self.manifest, indent=2)

    def __repr__(self) -> str:
        where = f"Wrote {self.path}" if self.path else "The manifest"
        return (f"{where}: IoT Edge deployment manifest (schema 2.0, validated; createOptions checked) running "
                f"module {self.service!r} ({self.served}, image {self.image}).\n{self.instructions}")

    def _repr_html_(self) -> str:
        where = f"Wrote <code>{escape(str(self.path))}</code>" if self.path else "The manifest"
        return (f"<div><p>{where}: IoT Edge deployment manifest (schema 2.0, validated; createOptions checked) "
                f"running module <strong>{escape(self.service)}</strong> ({escape(self.served)}, image "
                f"<code>{escape(self.image)}</code>).</p><pre>{escape(self.instructions)}</pre></div>")


@dataclass(frozen=True)
class ModuleStatus:
    """One module of a device: its deployment's state and what its agent has buffered and forwarded."""

    service: str
    model: str
    source: str
    state: str
    port: int
    agent: dict[str, Any]
    restarts: int

    @property
    def buffered(self) -> int:
        """Records on the device not yet forwarded."""
        return int(self.agent.get("buffered_records") or 0)

    @property
    def forwarded(self) -> int:
        """Records the hub has acknowledged."""
        return int(self.agent.get("forwarded_records") or 0)

    @property
    def evicted(self) -> int:
        """Records dropped from a full buffer (oldest first)."""
        return int(self.agent.get("evicted_records") or 0)

    def row(self) -> dict[str, Any]:
        """The module as a table row."""
        agent = self.agent
        sync = agent.get("last_sync")
        max_bytes = int(agent.get("max_buffer_bytes") or 0)
        return {
            "module": self.service, "model": self.model + (f" (of {self.source})" if self.source != self.model else ""),
            "state": self.state, "port": self.port,
            "buffered": (f"{self.buffered:,} ({display.human_size(int(agent.get('buffered_bytes') or 0))} of "
                         f"{display.human_size(max_bytes)})") if agent else "not collecting",
            "forwarded": f"{self.forwarded:,}" if agent else "",
            "evicted": f"{self.evicted:,}" if agent else "",
            "last sync": _ago(sync) if sync else ("never" if agent else ""),
            "restarts": self.restarts,
        }


@dataclass(frozen=True)
class EdgeStatus:
    """A simulated device: its link, its broker, its modules."""

    device: str
    online: bool
    address: str
    host_address: str
    broker: bool
    modules: list[ModuleStatus] = field(default_factory=list)
    note: str = ""

    def module(self, service: str) -> ModuleStatus:
        """The module of ``service``.

        Raises:
            NotFoundError: the device runs no such module.
        """
        for found in self.modules:
            if found.service == service:
                return found
        raise NotFoundError(f"Device {self.device!r} runs no module {service!r} (modules: "
                            f"{', '.join(m.service for m in self.modules) or 'none'}).")

    def _head(self) -> str:
        link = "online" if self.online else "OFFLINE (link cut: modules score on the device and buffer)"
        broker = f", MQTT broker on {self.address}:1883" if self.broker else ", no MQTT broker"
        return f"{self.device}: {link}; device {self.address}, this machine {self.host_address}{broker}"

    def __repr__(self) -> str:
        lines = [self._head()]
        for module in self.modules:
            row = module.row()
            lines.append(f"  {row['module']}: {row['model']} {row['state']} on port {row['port']}; buffered "
                         f"{row['buffered']}" + (f", forwarded {row['forwarded']}, evicted {row['evicted']}, last "
                                                 f"sync {row['last sync']}" if module.agent else "")
                         + (f", {module.restarts} restarts" if module.restarts else ""))
        if not self.modules:
            lines.append("  no modules (%deploy MODEL --target edge --device " + self.device + ")")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = [m.row() for m in self.modules]
        body = display.table(rows) if rows else "<p>No modules.</p>"
        note = f"<p>{escape(self.note)}</p>" if self.note else ""
        return f"<div><p><strong>{escape(self._head())}</strong></p>{body}{note}</div>"


@dataclass(frozen=True)
class EdgeDevices:
    """Every simulated device of the registry."""

    devices: list[EdgeStatus]

    def __repr__(self) -> str:
        if not self.devices:
            return "No edge devices: %deploy MODEL --target edge --device NAME makes one."
        return "\n".join(repr(d) for d in self.devices)

    def _repr_html_(self) -> str:
        if not self.devices:
            return "<p>No edge devices: <code>%deploy MODEL --target edge --device NAME</code> makes one.</p>"
        return "".join(d._repr_html_() for d in self.devices)


def _ago(moment: float) -> str:
    seconds = max(0.0, time.time() - float(moment))
    stamp = datetime.fromtimestamp(float(moment), tz=timezone.utc).astimezone().strftime("%H:%M:%S")
    return f"{stamp} ({seconds:.0f} s ago)"


def _edge_deployments(reg: Registry, device: str | None = None) -> list[Deployment]:
    return [d for d in reg.deployments() if d.target == "edge" and d.is_live
            and (device is None or (d.config.get("settings") or {}).get("device") == device)]


def _status(reg: Registry, target: EdgeTarget, device: Device, note: str = "") -> EdgeStatus:
    devices = target.devices()
    modules = []
    for deployment in _edge_deployments(reg, device.name):
        volume = Path(deployment.config["volume"])
        children = read_status(volume / "module.json").get("children") or {}
        modules.append(ModuleStatus(
            service=deployment.name, model=f"{deployment.model_name}:{deployment.model_version}",
            source=str(deployment.config.get("source") or f"{deployment.model_name}:{deployment.model_version}"),
            state=target.status(deployment), port=int(deployment.config.get("port") or FIRST_PORT),
            agent=read_status(volume / "agent.json") if deployment.config.get("hub") else {},
            restarts=sum(int(c.get("restarts") or 0) for c in children.values() if isinstance(c, dict))))
    return EdgeStatus(device=device.name, online=devices.online(device), address=device.address,
                      host_address=device.host_address, broker=devices.broker_running(device), modules=modules,
                      note=note)


def edge_status(device: str | None = None, *, registry: Registry | None = None) -> EdgeStatus | EdgeDevices:
    """A simulated device's link, broker and modules, read now; every device without ``device``.

    Each module: its state, buffered, forwarded and evicted records, last sync, restarts.

    Raises:
        NotFoundError: no such device.
    """
    reg = or_default(registry)
    target = EdgeTarget(reg)
    if device is None:
        return EdgeDevices([_status(reg, target, d) for d in target.devices().all()])
    return _status(reg, target, target.devices().get(device))


def edge_offline(device: str = DEFAULT_DEVICE, *, registry: Registry | None = None) -> EdgeStatus:
    """Cut the simulated device's link to this machine (its ``eth0`` goes down).

    The modules go on scoring on the device (what reaches them there: their MQTT input, the device's own
    address); their agents buffer what they collect, and forward it when the link returns (:func:`edge_online`).
    This machine cannot reach the modules meanwhile: ``%call`` says the device is offline.

    Raises:
        NotFoundError: no such device. DeployError: not root, or the device is not running.
    """
    reg = or_default(registry)
    target = EdgeTarget(reg)
    found = target.devices().get(device)
    target.devices().set_online(found, False)
    return _status(reg, target, found, note="Link cut. %edge online " + device + " restores it; what the modules "
                                            "collect meanwhile is buffered on the device and forwarded then.")


def edge_online(device: str = DEFAULT_DEVICE, *, wait: float = 60.0, progress: Callable[[Status], None] | None = None,
                registry: Registry | None = None) -> EdgeStatus:
    """Restore the simulated device's link, and wait until its modules have forwarded what they buffered.

    It waits ``wait`` seconds at most (0: not at all), until the agents have forwarded (or evicted) every record the
    device's servers collected.

    Raises:
        NotFoundError: no such device. DeployError: not root, or the device is not running.
    """
    if wait < 0:
        raise InvalidInputError(f"--wait {wait:g} is invalid: give 0 (do not wait) or more seconds.")
    reg = or_default(registry)
    target = EdgeTarget(reg)
    devices = target.devices()
    found = devices.ensure(device)
    devices.set_online(found, True)
    forwarding = [d for d in _edge_deployments(reg, device) if d.config.get("hub")]
    for deployment in forwarding:
        target.fetch_collected(deployment)  # starts a hub that went (a restarted machine) on its port
    steps = Steps.of(progress)
    deadline = time.monotonic() + wait
    pending = _pending(forwarding)
    if pending and wait:
        steps.say(f"forwarding {pending:,} buffered records")
    started = time.monotonic()
    while pending and time.monotonic() < deadline:
        time.sleep(0.2)
        pending = _pending(forwarding)
        steps.tick()
    took = time.monotonic() - started
    if not forwarding:
        note = "Link restored."
    elif pending:
        note = (f"Link restored; {pending:,} records still buffered after {took:.0f} s (the agents go on "
                "forwarding: %edge status " + device + " shows them).")
    else:
        note = f"Link restored; every record collected on the device is forwarded ({took:.1f} s)."
    return _status(reg, target, found, note=note)


def _pending(deployments: Sequence[Deployment]) -> int:
    """Records the modules of ``deployments`` collected that their agents have neither forwarded nor evicted:
    the device's collection counters (every record its servers kept) less what its agent's status counts."""
    total = 0
    for deployment in deployments:
        volume = Path(deployment.config["volume"])
        kept = 0
        for path in (volume / "collected" / "stats").glob("*.bin"):
            counters = read_stats(path)
            kept += int(counters["received"] - counters["sampled_out"] - counters["dropped"])
        agent = read_status(volume / "agent.json")
        total += max(0, kept - int(agent.get("forwarded_records") or 0) - int(agent.get("evicted_records") or 0))
    return total


def remove_device(device: str, *, registry: Registry | None = None) -> str:
    """Remove a simulated device: its broker, its container, its link and its folder.

    Raises:
        ConflictError: modules are deployed on it (undeploy them first).
    """
    reg = or_default(registry)
    live = _edge_deployments(reg, device)
    if live:
        raise ConflictError(f"Device {device!r} runs {', '.join(d.name for d in live)}: %undeploy "
                            f"{' '.join(d.name for d in live)} first.")
    EdgeTarget(reg).devices().remove(device)
    return f"Removed edge device {device!r}."


def edge_manifest(
    name: str,
    *,
    output: str | Path | None = None,
    image: str | None = None,
    data_volume: str | None = None,
    hub: str | None = None,
    mqtt: str | None = None,
    cpu: float | None = None,
    memory: str | None = None,
    port: int | None = None,
    quantize: str | None = None,
    registry_credentials: Sequence[RegistryCredential] = (),
    progress: Callable[[Any], None] | None = None,
    registry: Registry | None = None,
) -> EdgeManifest:
    """An IoT Edge deployment manifest (schema 2.0) for a real device, validated, written to ``output``.

    ``name`` is an edge deployment (its module image, limits and port, as deployed) or a model reference (its
    module image is built now, as ``%deploy --target edge`` would). The manifest runs the module with its data at
    ``data_volume`` on the device (default ``/var/lib/mlops-edge/<module>``), its port published, no key (a
    simulated device's key file stays on this machine).

    Args:
        output: the file to write (default: only returned).
        image: the image as the device pulls it (``myregistry.azurecr.io/iris:2``): push the module image there.
        data_volume: the device's folder for the module's data.
        hub: where the module's agent forwards what it collects (``http://HOST:PORT`` of a hub this machine or
            another runs: ``python -m mlops_backend.edge.hub``); None: it collects nothing.
        mqtt: an MQTT broker the module takes input messages from, ``HOST[:PORT]``; None: HTTP only.
        cpu, memory, port: override the deployment's (or set them for a model reference).
        quantize: ``int8``, for a model reference.
        registry_credentials: registries the device logs in to (passwords as variable references only).

    Raises:
        NotFoundError: no such deployment or model. InvalidInputError: a bad setting (``ManifestError`` when the
        manifest would not validate, with the JSON path and the schema's reason).
    """
    reg = or_default(registry)
    deployment = next((d for d in reg.deployments() if d.name == name and d.target == "edge" and d.is_live), None)
    if deployment is not None:
        config = deployment.config
        service, tag, entry = deployment.name, str(config["image"]), str(config.get("entry") or "")
        model, version = deployment.model_name, deployment.model_version
        served = f"{model}:{version}"
        cpu = config.get("cpu") if cpu is None else cpu
        memory = config.get("memory") if memory is None else memory
        port = int(config.get("port") or FIRST_PORT) if port is None else port
        collect, sample_rate = bool(config.get("collect")), float(config.get("sample_rate") or 1.0)
        max_buffer = parse_bytes(str((config.get("settings") or {}).get("max_buffer") or "256m"))
        workers = int(config.get("workers") or 1)
    else:
        try:
            built = module_image(name, registry=reg, quantize=quantize, progress=progress)
        except NotFoundError as exc:
            raise NotFoundError(f"{exc} (%edge manifest takes an edge deployment or a model reference).") from None
        service, tag, entry = built.model.version.name, built.tag, built.entry
        model, version, served = built.model.version.name, built.model.version.version, built.model.version.ref
        port, collect, sample_rate = port or FIRST_PORT, hub is not None, 1.0
        max_buffer, workers = parse_bytes("256m"), 1
    manifest = module_manifest(
        service, image or tag, entry, model, version, port=port, workers=workers, collect=collect and hub is not None,
        sample_rate=sample_rate, cpu=cpu, memory=memory, data_volume=data_volume or f"{DEVICE_DATA}/{service}",
        max_buffer_bytes=max_buffer, hub_url=hub, mqtt=mqtt, registry_credentials=registry_credentials)
    validate_manifest(manifest)
    path = None
    if output is not None:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = path.with_name(f".{path.name}.tmp")
        fresh.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(fresh, path)
    instructions = set_modules_instructions(manifest, path or "deployment.json")
    if image is None:
        instructions = (f"# The device pulls {tag}: push it to a registry the device reaches (docker tag {tag} "
                        "REGISTRY/REPO:TAG; docker push ...) and give --image REGISTRY/REPO:TAG.\n" + instructions)
    return EdgeManifest(service=service, manifest=manifest, path=path, image=image or tag, served=served,
                        instructions=instructions)

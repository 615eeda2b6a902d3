"""The ``edge`` target: a lean ONNX module image run on a simulated IoT Edge device from its deployment manifest.

``%deploy iris --target edge --device sim-1 --cpu 0.5 --memory 256m --collect``:

1. the module image (:func:`mlops_magics.edge.module.module_image`): the ONNX version of the model (converted and
   parity-checked on the way when the version is not ONNX; ``--quantize int8`` serves an int8 version), onnxruntime,
   numpy and the edge runtime, no scikit-learn;
2. the device (:class:`~mlops_magics.targets.edge.device.Devices`): made, or linked again, with its broker when this
   machine has ``mosquitto``;
3. with ``--collect``, the hub on this machine (:mod:`mlops_backend.edge.hub`), bound to this machine's end of the
   device's link, storing what the device forwards into the service's own collection folder (``%collected`` reads
   it as for any target);
4. the deployment manifest (:func:`~mlops_magics.edge.manifest.build_manifest`, validated against the IoT Edge
   schema 2.0 and its ``createOptions`` checked), and the module container created from exactly that manifest's
   ``createOptions`` (limits, binds, command, environment), joined to the device's network namespace. Docker takes
   no published port in a shared namespace, so the manifest's port bindings are checked to map each port to itself
   (what a device's own address then serves) and left out, with the exposed ports; nothing else is changed.

The module is reached at the device's address (``http://10.213.N.2:PORT``) while the link is up; ``%edge offline``
cuts it: the module goes on scoring for what runs on the device (its MQTT input, its own address), its agent
buffers, and forwards when the link returns. An update restarts the module, as the IoT Edge agent does: the old
container stops, the new one starts; if the new one fails, the old one is started again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_backend.edge.agent import parse_bytes

from mlops_magics.edge.manifest import (
    MODULE_DATA,
    RegistryCredential,
    build_manifest,
    json_path,
    validate_manifest,
)
from mlops_magics.edge.module import ModuleImage, module_image
from mlops_magics.errors import ConflictError, DeployError, InvalidInputError
from mlops_magics.packaging import engine as docker_engine
from mlops_magics.packaging.context import APP_ROOT, base_image
from mlops_magics.packaging.spec import DeploySpec
from mlops_magics.registry import Deployment, Registry
from mlops_magics.targets.base import Steps, data_dir, new_key_file
from mlops_magics.targets.docker import check_limits, get_container, log_since, remove_container
from mlops_magics.targets.edge.device import BROKER_PORT, Device, Devices, check_name
from mlops_magics.targets.local import (
    START_TIMEOUT,
    answers_ready,
    map_script_lines,
    replace_failed,
    script_record,
    start_failure,
    tail,
)
from mlops_magics.targets.process import alive, process_stamp, stop_group

#: The device a deployment goes to when ``--device`` is not given.
DEFAULT_DEVICE = "sim-1"
#: The first port a device's modules listen on (the next free one for a second module).
FIRST_PORT = 5001
#: Where a module sees its service's key folder (read-only).
SECRETS = "/run/mlops-secrets"
SCRIPT = f"{APP_ROOT}/score.py"
#: The target's own settings (``target_options``) and what each is.
SETTINGS = {
    "device": "the simulated device to run on (default sim-1; made when it does not exist)",
    "quantize": "'int8' to serve an int8 quantization of the ONNX version (its accuracy is shown)",
    "max_buffer": "the device's buffer of collected records, Docker size (default 256m; oldest evicted past it)",
    "mqtt": "take input messages from the device's MQTT broker (default: when this machine has mosquitto)",
}
_STOP_GRACE = 10
#: The edge agent's restart policies as Docker's (``on-unhealthy`` has no Docker twin: restarted whenever it ends).
_RESTART = {"always": "unless-stopped", "on-failure": "on-failure", "on-unhealthy": "unless-stopped", "never": "no"}
_LOG_TAIL = 30
_HUB_START_S = 20.0


@dataclass(frozen=True)
class EdgeSettings:
    """The edge target's settings of one deployment."""

    device: str = DEFAULT_DEVICE
    quantize: str | None = None
    max_buffer: str = "256m"
    mqtt: bool | None = None

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> EdgeSettings:
        """The settings ``options`` give.

        Raises:
            InvalidInputError: an unknown setting, or a bad value.
        """
        unknown = sorted(set(options) - set(SETTINGS))
        if unknown:
            known = "; ".join(f"{k}: {v}" for k, v in SETTINGS.items())
            raise InvalidInputError(f"--target edge has no setting {', '.join(map(repr, unknown))}. Its settings: "
                                    f"{known}.")
        device = check_name(str(options.get("device") or DEFAULT_DEVICE))
        quantize = options.get("quantize") or None
        if quantize is not None and quantize != "int8":
            raise InvalidInputError(f"--quantize {quantize!r} is not supported: give int8, or leave it out to serve "
                                    "the float ONNX model.")
        max_buffer = str(options.get("max_buffer") or "256m")
        try:
            size = parse_bytes(max_buffer)
        except ValueError as exc:
            raise InvalidInputError(f"--max-buffer: {exc}") from None
        if size < 64 * 1024:
            raise InvalidInputError(f"--max-buffer {max_buffer} is too small: give 64k or more (256m by default).")
        mqtt = options.get("mqtt")
        if isinstance(mqtt, str):
            mqtt = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(mqtt.lower())
            if mqtt is None:
                raise InvalidInputError(f"--set mqtt={options['mqtt']!r} is not true or false.")
        return cls(device=device, quantize=quantize, max_buffer=max_buffer, mqtt=mqtt)

    def as_options(self) -> dict[str, Any]:
        """The settings as ``target_options`` (what the deployment's record keeps)."""
        return {"device": self.device, "quantize": self.quantize, "max_buffer": self.max_buffer, "mqtt": self.mqtt}


def module_container_name(home: Path, service: str, generation: int) -> str:
    """The module container of a service's ``generation`` (named after the registry too, as the docker target's)."""
    return f"mlops-edge-{service}-{generation}-{hashlib.sha256(str(home).encode()).hexdigest()[:8]}"


def container_config(manifest: Mapping[str, Any], module: str, parsed: Mapping[str, Any], device: Device,
                     *, name: str) -> dict[str, Any]:
    """The Docker create config of ``module`` on ``device``: the manifest's image, env and ``createOptions``.

    In the device's namespace the module's ports are the device's: every port binding must publish a port as
    itself, and the bindings and exposed ports are left out (Docker refuses them with a shared namespace).

    Raises:
        InvalidInputError: a binding publishes a port under another number (a real device's engine could; the
            simulated device cannot), or the manifest sets a network mode of its own.
    """
    modules = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
    entry = modules[module]
    options = json.loads(json.dumps(parsed))  # a copy: the manifest's own stays as it is
    host = dict(options.pop("HostConfig", {}) or {})
    where = json_path("modulesContent", "$edgeAgent", "properties.desired", "modules", module, "settings",
                      "createOptions")
    for port, bindings in (host.pop("PortBindings", None) or {}).items():
        for binding in bindings or []:
            published = str((binding or {}).get("HostPort") or port.split("/")[0])
            if published != port.split("/")[0]:
                raise InvalidInputError(
                    f"The manifest publishes the module's port {port} as {published} ({where}.HostConfig."
                    "PortBindings): a simulated device serves its modules' ports as they are. Deploy with the same "
                    "port, or use the manifest on a real device.")
    if host.get("NetworkMode") not in (None, "", "default", "bridge", "azure-iot-edge"):
        raise InvalidInputError(f"The manifest gives the module NetworkMode {host['NetworkMode']!r} ({where}): the "
                                "simulated device runs modules in its own network.")
    host["NetworkMode"] = device.network_mode
    # The device's edge agent restarts modules as the manifest's policy says; the simulated device has Docker do it.
    host["RestartPolicy"] = {"Name": _RESTART.get(str(entry.get("restartPolicy") or "always"), "unless-stopped")}
    options.pop("ExposedPorts", None)
    env = [f"{key}={value['value']}" for key, value in (entry.get("env") or {}).items()]
    config = {**options, "Image": entry["settings"]["image"], "HostConfig": host}
    config["Env"] = [*config.get("Env", []), *env]
    config["Labels"] = {**config.get("Labels", {}), "mlops.edge.module": module, "mlops.edge.device": device.name}
    config["name"] = name
    return config


def module_manifest(
    service: str,
    image: str,
    entry: str,
    model: str,
    model_version: int | str,
    *,
    port: int = FIRST_PORT,
    workers: int = 1,
    collect: bool = False,
    sample_rate: float = 1.0,
    cpu: float | None = None,
    memory: str | None = None,
    data_volume: str,
    device_name: str | None = None,
    max_buffer_bytes: int | None = None,
    hub_url: str | None = None,
    mqtt: str | None = None,
    key_file: Path | None = None,
    generation: int = 1,
    registry_credentials: Sequence[RegistryCredential] = (),
) -> dict[str, Any]:
    """The deployment manifest of a model module: the simulated device's, or (without ``key_file`` and with a
    device's own ``data_volume``) one for a real device.

    Args:
        service, image, entry: the module's name, image and the image's entry module (``ModuleImage.entry``).
        model, model_version: the served version (the module twin's desired properties).
        port, workers: the scoring server's port in the module and its worker processes.
        collect, sample_rate: record what the module scores, this share of it.
        cpu, memory: the module's limits.
        data_volume: the device's folder for the module's data, bound at :data:`MODULE_DATA`.
        device_name: the device's name for the hub (default: the device's host name).
        max_buffer_bytes: the bound of the device's buffer of collected records.
        hub_url: where the module's agent forwards what it collected (None: it does not forward).
        mqtt: the MQTT broker the module takes input messages from, ``HOST:PORT`` (None: HTTP only).
        key_file: the service's key file on this machine (the simulated device binds its folder read-only).
        registry_credentials: registries a real device logs in to (passwords as variable references).

    Raises:
        InvalidInputError: a bad setting (``ManifestError`` when the result would not validate).
    """
    model_dir = f"{APP_ROOT}/azureml-models/{model}/{model_version}"
    command = ["python", "-m", entry, "--entry_script", SCRIPT, "--model_dir", model_dir, "--host", "0.0.0.0",
               "--port", str(port), "--worker_count", str(workers), "--reuse-port",
               "--ready-file", f"{MODULE_DATA}/ready-{generation}", "--log-dir", f"{MODULE_DATA}/logs",
               "--verbose-errors"]
    if collect:
        command += ["--collect-dir", f"{MODULE_DATA}/collected", "--sample-rate", repr(sample_rate)]
    env: dict[str, str | int | float | bool] = {
        "MLOPS_EDGE_DATA": MODULE_DATA, "SERVICE_NAME": service, "MLOPS_MODEL_NAME": model,
        "MLOPS_MODEL_VERSION": str(model_version), "HOME": "/tmp", "MLOPS_DATA_DIR": MODULE_DATA}
    if device_name:
        env["MLOPS_EDGE_DEVICE"] = device_name
    if max_buffer_bytes is not None:
        env["MLOPS_EDGE_MAX_BUFFER_BYTES"] = str(max_buffer_bytes)
    if hub_url is not None:
        env["MLOPS_EDGE_HUB"] = hub_url
    if mqtt is not None:
        env["MLOPS_EDGE_MQTT"] = mqtt
        env["MLOPS_EDGE_SCORE_URL"] = f"http://127.0.0.1:{port}/score"
    extra: dict[str, Any] = {}
    if key_file is not None:
        command += ["--auth-key-file", f"{SECRETS}/{key_file.name}"]
        extra = {"HostConfig": {"Binds": [f"{data_volume}:{MODULE_DATA}:rw", f"{key_file.parent}:{SECRETS}:ro"]}}
    return build_manifest(service, image, model=model, model_version=model_version, cpu=cpu, memory=memory,
                          port=port, data_volume=data_volume, command=command, env=env,
                          sample_rate=sample_rate if collect else 0.0, registry_credentials=registry_credentials,
                          extra_create_options=extra or None)


class EdgeTarget:
    """Deployments as IoT Edge style modules on simulated devices of the local Docker engine."""

    name = "edge"

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        """The docker SDK client (connected on first use).

        Raises:
            EngineError: no engine answers.
        """
        if self._engine is None:
            self._engine = docker_engine.client()
        return self._engine

    def devices(self, base: str | None = None) -> Devices:
        """This registry's simulated devices (made from ``base``, default the configured base image)."""
        return Devices(self.registry.home, self.engine, base_image(base, False))

    # -- the contract -----------------------------------------------------------------------

    def deploy(self, spec: DeploySpec) -> Deployment:
        settings = EdgeSettings.of(spec.target_options)
        check_limits(spec.cpu, spec.memory)
        if spec.isolated:
            raise InvalidInputError("--isolated applies to the local target: a module is isolated already.")
        steps = Steps.of(spec.progress)
        image = self._image(spec, settings)
        steps.say(f"starting edge device {settings.device}")
        devices = self.devices(spec.base_image)
        device = devices.ensure(settings.device)
        port = self._port(spec, device)
        mqtt = self._broker(devices, device, settings)
        key_file = new_key_file(self.registry, spec)
        hub: dict[str, Any] | None = None
        try:
            if spec.collect:
                hub = self._start_hub(spec.service, device, steps)
            return self._start(spec, settings, image, device, port, key_file, hub, mqtt, generation=1)
        except BaseException:
            if hub is not None:
                self._stop_hub(hub)
            self.registry.keys.remove(spec.service)
            raise

    def replace(self, deployment: Deployment, spec: DeploySpec) -> Deployment:
        import docker

        config = deployment.config
        recorded = dict(config.get("settings") or {})
        settings = EdgeSettings.of({**recorded, **{k: v for k, v in spec.target_options.items() if v is not None}})
        if settings.device != recorded.get("device", DEFAULT_DEVICE):
            raise InvalidInputError(f"{deployment.name!r} runs on device {recorded.get('device')!r}: an update "
                                    f"keeps its device. Undeploy it and deploy it to {settings.device!r}.")
        steps = Steps.of(spec.progress)
        image = self._image(spec, settings)
        devices = self.devices(config.get("base_image"))
        device = devices.ensure(settings.device)
        mqtt = self._broker(devices, device, settings)
        key_file = Path(config["key_file"]) if config.get("key_file") else None
        hub = config.get("hub")
        if spec.collect and hub is None:
            hub = self._start_hub(spec.service, device, steps)
        elif hub is not None:
            hub = self._ensure_hub(deployment.name, device, hub)
        old = self._container(str(config.get("container") or ""))
        steps.say("stopping the module (as the IoT Edge agent does, an update restarts it)")
        if old is not None:
            with contextlib.suppress(docker.errors.APIError):
                old.stop(timeout=_STOP_GRACE)
        try:
            started = self._start(spec, settings, image, device, int(config["port"]), key_file, hub, mqtt,
                                  generation=int(config.get("generation", 1)) + 1, keep_record=deployment)
        except DeployError as exc:
            if old is not None:
                steps.say("starting the previous module again")
                with contextlib.suppress(docker.errors.APIError):
                    old.start()
                    self._wait_port(device, int(config["port"]), 60.0)
            raise replace_failed(deployment, spec, exc) from None
        if old is not None:
            self._remove(old.id)
        return started

    def delete(self, deployment: Deployment) -> None:
        config = deployment.config
        if config.get("container"):
            self._remove(str(config["container"]))
        if config.get("hub"):
            self._stop_hub(config["hub"])
        self.registry.keys.remove(deployment.name)
        self.registry.set_deployment_state(deployment.name, "deleted")

    def status(self, deployment: Deployment) -> str:
        import docker

        from mlops_magics.errors import EngineError

        try:
            container = self._container(str(deployment.config.get("container") or ""))
        except EngineError:
            return deployment.state
        if container is None:
            return "stopped"
        state = container.attrs["State"]
        if not state.get("Running") or state.get("Restarting"):
            return "unhealthy" if state.get("Restarting") else "stopped"
        device = self._device(deployment)
        if device is None:
            return "stopped"
        with contextlib.suppress(docker.errors.APIError, DeployError):
            if not self.devices().online(device):
                # cut off from this machine: what the module says of itself, on the device's volume
                module = read_status(self._volume(deployment) / "module.json")
                serve = (module.get("children") or {}).get("serve") or {}
                return "running" if serve.get("running") else "unhealthy"
        return "running" if answers_ready(int(deployment.config["port"]), host=device.address) else "unhealthy"

    def log_file(self, deployment: Deployment) -> tuple[Path, str]:
        return self._volume(deployment) / "logs" / "server.log", SCRIPT

    def logs(self, deployment: Deployment, lines: int) -> str:
        log, script = self.log_file(deployment)
        text = map_script_lines(tail(log, lines), script, deployment.config.get("script_line_offset"))
        container = self._container(str(deployment.config.get("container") or ""), quiet=True)
        if container is not None:
            module = [line for line in container.logs(tail=200).decode(errors="replace").splitlines()
                      if "mlops-edge-module[" in line][-10:]
            if module:
                text += "\n[mlops] The module's supervisor:\n" + "\n".join(module)
            if container.attrs["State"].get("OOMKilled"):
                text += (f"\n[mlops] The module was killed for lack of memory (limit "
                         f"{deployment.config.get('memory')}). Deploy it with more --memory.")
        return text

    def describe(self, deployment: Deployment) -> str:
        """The device, its link, and what the module's agent has buffered."""
        device = self._device(deployment)
        if device is None:
            return ""
        try:
            online = self.devices().online(device)
        except Exception:  # noqa: BLE001 - a description must not fail the listing
            online = False
        agent = read_status(self._volume(deployment) / "agent.json")
        parts = [f"device {device.name} ({'online' if online else 'OFFLINE'})"]
        if agent:
            parts.append(f"{agent.get('buffered_records', 0):,} buffered, {agent.get('forwarded_records', 0):,} "
                         f"forwarded, {agent.get('evicted_records', 0):,} evicted")
        return ", ".join(parts)

    def local_url(self, deployment: Deployment) -> str:
        """The module's address on the device's link, while the link is up.

        Raises:
            DeployError: the device is offline (this machine cannot reach it; the module goes on scoring there).
        """
        device = self._device(deployment)
        online = True
        if device is not None:
            with contextlib.suppress(DeployError, OSError):
                online = self.devices().online(device)
        if device is not None and not online:
            raise _Offline(device.name)
        return str(deployment.url)

    def fetch_collected(self, deployment: Deployment) -> None:
        """The forwarded records are in the service's folder already (the hub writes there); the device's counters
        (what its server collected) are copied next to them while the device is online."""
        folder = data_dir(self.registry.home, deployment.name) / "collected"
        (folder / "stats").mkdir(parents=True, exist_ok=True)
        device = self._device(deployment)
        if device is None or not deployment.config.get("hub"):
            return
        hub = deployment.config["hub"]
        if deployment.is_live:
            with contextlib.suppress(DeployError, OSError):
                self._ensure_hub(deployment.name, device, hub)
        with contextlib.suppress(Exception):
            if not self.devices().online(device):
                return
        for path in (self._volume(deployment) / "collected" / "stats").glob("*.bin"):
            with contextlib.suppress(OSError):
                copy = folder / "stats" / f".{path.name}.tmp"
                copy.write_bytes(path.read_bytes())
                os.replace(copy, folder / "stats" / path.name)

    # -- parts ----------------------------------------------------------------------------------

    def _image(self, spec: DeploySpec, settings: EdgeSettings) -> ModuleImage:
        Steps.of(spec.progress).say(f"building the lean module image of {spec.version.ref} (ONNX, onnxruntime, "
                                    "numpy; no scikit-learn)")
        return module_image(spec.version.ref, registry=self.registry, quantize=settings.quantize,
                            base=spec.base_image, progress=spec.progress, engine=self.engine)

    def _device(self, deployment: Deployment) -> Device | None:
        name = (deployment.config.get("settings") or {}).get("device")
        if not name:
            return None
        from mlops_magics.errors import NotFoundError

        try:
            return self.devices().get(str(name))
        except NotFoundError:
            return None

    def _volume(self, deployment: Deployment) -> Path:
        return Path(deployment.config["volume"])

    def _port(self, spec: DeploySpec, device: Device) -> int:
        """The module's port on the device: ``--port``, else the first one no other module of the device has."""
        taken = {int(d.config.get("port") or 0): d.name for d in self.registry.deployments()
                 if d.target == self.name and d.is_live and d.name != spec.service
                 and (d.config.get("settings") or {}).get("device") == device.name}
        if spec.port is not None:
            if spec.port in taken:
                raise ConflictError(f"Port {spec.port} of device {device.name!r} is taken by {taken[spec.port]!r}: "
                                    "pick another --port, or leave it out to get a free one.")
            if spec.port == BROKER_PORT:
                raise ConflictError(f"Port {BROKER_PORT} of a device is its MQTT broker's: pick another --port.")
            return spec.port
        port = FIRST_PORT
        while port in taken:
            port += 1
        return port

    def _broker(self, devices: Devices, device: Device, settings: EdgeSettings) -> bool:
        if settings.mqtt is False:
            return False
        started = devices.start_broker(device)
        if settings.mqtt and not started:
            raise DeployError("--set mqtt=true needs an MQTT broker on the device, and this machine has no "
                              "mosquitto: apt-get install mosquitto (or deploy without mqtt).")
        return started

    # -- the hub ----------------------------------------------------------------------------------

    def _hub_folder(self, service: str) -> Path:
        return self.registry.home / "deployments" / service / "hub"

    def _start_hub(self, service: str, device: Device, steps: Steps, port: int = 0) -> dict[str, Any]:
        """Start the hub this service's module forwards to; return what its record keeps."""
        folder = self._hub_folder(service)
        folder.mkdir(parents=True, exist_ok=True)
        ready = folder / "ready"
        ready.unlink(missing_ok=True)
        collected = data_dir(self.registry.home, service) / "collected"
        (collected / "stats").mkdir(parents=True, exist_ok=True)
        steps.say(f"starting the hub for {service!r} on {device.host_address} (this machine's end of the link)")
        with open(folder / "hub.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "mlops_backend.edge.hub", "--root", str(folder / "devices"),
                 "--device-folder", f"{device.name}={collected}", "--host", device.host_address, "--port", str(port),
                 "--ready-file", str(ready)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + _HUB_START_S
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    process.kill()
                process.wait()
                raise DeployError(f"The hub of {service!r} did not start on {device.host_address}: "
                                  f"{tail(folder / 'hub.log', 5).strip() or 'no output'} (whole log: "
                                  f"{folder / 'hub.log'}).")
            time.sleep(0.05)
        _, _, bound = ready.read_text().strip().partition(" ")
        _HUBS[process.pid] = process
        return {"pid": process.pid, "stamp": process_stamp(process.pid), "host": device.host_address,
                "port": int(bound), "log": str(folder / "hub.log")}

    def _ensure_hub(self, service: str, device: Device, hub: Mapping[str, Any]) -> dict[str, Any]:
        """The hub, started again on its port when it is not running (a restarted machine)."""
        if alive(int(hub["pid"]), hub.get("stamp")):
            return dict(hub)
        gone = _HUBS.pop(int(hub["pid"]), None)
        if gone is not None:
            gone.poll()  # reaped: it ended
        fresh = self._start_hub(service, device, Steps(None), port=int(hub["port"]))
        deployment = self.registry.get_deployment(service)
        self.registry.record_deployment(service, f"{deployment.model_name}:{deployment.model_version}",
                                        target=self.name, state=deployment.state, url=deployment.url,
                                        config={**deployment.config, "hub": fresh})
        return fresh

    def _stop_hub(self, hub: Mapping[str, Any]) -> None:
        pid = int(hub["pid"])
        stop_group(pid, hub.get("stamp"), grace=5.0, started=_HUBS.pop(pid, None))

    # -- the module -------------------------------------------------------------------------------

    def _manifest(self, spec: DeploySpec, settings: EdgeSettings, image: ModuleImage, device: Device, port: int,
                  key_file: Path | None, hub: Mapping[str, Any] | None, mqtt: bool, generation: int) -> dict[str, Any]:
        served = image.model.version
        return module_manifest(
            spec.service, image.tag, image.entry, served.name, served.version, port=port, workers=spec.workers,
            collect=spec.collect, sample_rate=spec.sample_rate, cpu=spec.cpu, memory=spec.memory,
            data_volume=str(device.volume / spec.service), device_name=device.name,
            max_buffer_bytes=parse_bytes(settings.max_buffer),
            hub_url=None if hub is None else f"http://{hub['host']}:{hub['port']}",
            mqtt=f"127.0.0.1:{BROKER_PORT}" if mqtt else None, key_file=key_file, generation=generation)

    def _start(self, spec: DeploySpec, settings: EdgeSettings, image: ModuleImage, device: Device, port: int,
               key_file: Path | None, hub: Mapping[str, Any] | None, mqtt: bool, *, generation: int,
               keep_record: Deployment | None = None) -> Deployment:
        import docker

        steps = Steps.of(spec.progress)
        volume = device.volume / spec.service
        (volume / "logs").mkdir(parents=True, exist_ok=True)
        ready = volume / f"ready-{generation}"
        ready.unlink(missing_ok=True)
        manifest = self._manifest(spec, settings, image, device, port, key_file, hub, mqtt, generation)
        parsed = validate_manifest(manifest)[spec.service]
        name = module_container_name(self.registry.home, spec.service, generation)
        folder = self.registry.home / "deployments" / spec.service
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "deployment.json").write_text(json.dumps(manifest, indent=2))
        served = image.model.version
        config: dict[str, Any] = {
            "container": None, "container_name": name, "image": image.tag, "image_id": image.image.image_id,
            "port": port, "cpu": spec.cpu, "memory": spec.memory, "workers": spec.workers, "volume": str(volume),
            "generation": generation, "key_file": None if key_file is None else str(key_file),
            "script_line_offset": None, "base_image": spec.base_image, "collect": spec.collect,
            "sample_rate": spec.sample_rate, "settings": settings.as_options(), "hub": dict(hub) if hub else None,
            "mqtt": mqtt, "source": spec.version.ref, "served": served.ref, "entry": image.entry,
            "manifest": str(folder / "deployment.json"),
            "quantization": None if image.quantization is None else image.quantization.lines(),
            **script_record(spec),
        }
        create = container_config(manifest, spec.service, parsed, device, name=name)
        create.pop("name")
        create["Labels"].update({"mlops.service": spec.service, "mlops.model": served.ref,
                                 "mlops.home": str(self.registry.home)})
        with contextlib.suppress(docker.errors.NotFound):  # a leftover of a crashed attempt
            self.engine.containers.get(name).remove(force=True)
        steps.say(f"starting module {spec.service} on device {device.name} ({device.address}:{port})")
        try:
            created = self.engine.api.create_container_from_config(create, name=name)
            self.engine.api.start(created["Id"])
        except docker.errors.ImageNotFound:
            raise DeployError(f"Image {image.tag} is not on this Docker engine any more: deploy again to build "
                              "it.") from None
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                self.engine.api.remove_container(name, force=True)
            self._failed(spec, served.ref, config, keep_record)
            raise DeployError(f"Docker refused to start module {spec.service!r} from its manifest: "
                              f"{exc.explanation}") from None
        config["container"] = created["Id"]
        try:
            self._wait_ready(spec, created["Id"], ready, config)
        except DeployError:
            self._remove(created["Id"])
            self._failed(spec, served.ref, config, keep_record)
            raise
        except BaseException:
            self._remove(created["Id"])
            raise
        try:
            return self.registry.record_deployment(spec.service, served.ref, target=self.name, state="running",
                                                   url=f"http://{device.address}:{port}", config=config)
        except BaseException:
            self._remove(created["Id"])
            raise

    def _failed(self, spec: DeploySpec, served: str, config: dict[str, Any], keep_record: Deployment | None) -> None:
        if keep_record is None:
            self.registry.record_deployment(spec.service, served, target=self.name, state="failed", url=None,
                                            config=config)

    def _wait_ready(self, spec: DeploySpec, container_id: str, ready: Path, config: dict[str, Any]) -> None:
        import docker

        steps = Steps.of(spec.progress)
        steps.say("waiting until the module's server is ready (onnxruntime, the model, init())")
        log_path = Path(config["volume"]) / "logs" / "server.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            try:
                state = self.engine.api.inspect_container(container_id)["State"]
            except docker.errors.NotFound:
                raise DeployError(f"Deployment {spec.service!r} failed: its module container was removed while it "
                                  "started (by another process). Deploy it again.") from None
            if state["Status"] in ("exited", "dead") or time.monotonic() > deadline:
                if state.get("OOMKilled") or state.get("ExitCode") == 137:
                    reason = (f"the module was killed for lack of memory (--memory {spec.memory}); deploy it with "
                              "more --memory")
                elif state["Status"] in ("exited", "dead"):
                    reason = f"the module exited with status {state.get('ExitCode')}"
                else:
                    reason = f"the module's server was not ready after {START_TIMEOUT:.0f} s and was stopped"
                log = log_since(log_path, offset) or self.engine.api.logs(container_id, tail=_LOG_TAIL).decode(
                    errors="replace")
                raise start_failure(spec, reason, map_script_lines(log, SCRIPT, None), log_path)
            steps.tick()
            time.sleep(0.05)

    def _wait_port(self, device: Device, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not answers_ready(port, host=device.address):
            time.sleep(0.2)

    def _container(self, container_id: str, *, quiet: bool = False) -> Any:
        return get_container(self.engine, container_id, quiet=quiet)

    def _remove(self, container_id: str) -> None:
        remove_container(self.engine, container_id)


class _Offline(DeployError):
    def __init__(self, device: str) -> None:
        super().__init__(f"Edge device {device!r} is offline (%edge offline cut its link): this machine cannot reach "
                         f"its modules, which go on scoring on the device and buffer what they collect. %edge online "
                         f"{device} restores the link.")


#: The hubs this process started (reaped when stopped).
_HUBS: dict[int, subprocess.Popen[bytes]] = {}


def read_status(path: Path) -> dict[str, Any]:
    """A status file of a module (``module.json``, ``agent.json``) as a dict; empty when it is missing or torn."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}

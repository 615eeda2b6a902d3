"""Azure IoT Edge deployment manifests (schema 2.0) for a model module: built, validated, explained.

A manifest has three parts under ``modulesContent``: ``$edgeAgent`` (the runtime, the two system modules and
our model module, whose container is described by ``createOptions``: a JSON *string* of Docker's container
create options), ``$edgeHub`` (routes between modules and to the cloud, ``$upstream``, and how long messages are
kept while the device is offline) and the model module's twin (its desired properties: which model version it
serves, the collection's sample rate).

The module twin stores each string value in at most 4 KB, so IoT Edge splits a long ``createOptions`` into
chunks, ``createOptions``, ``createOptions01``, ``createOptions02``... (at most eight, as the Azure portal writes
them); the edge agent joins the fields in name order and refuses a gap in the numbering. :func:`split_create_options`
and :func:`join_create_options` do the same.

:func:`validate_manifest` checks a manifest against the published JSON schema (SchemaStore's, shipped in
``schema/``) and then what the schema cannot check: each module's ``createOptions`` parsed as JSON and the keys we
set (limits, ports, binds) checked for type and sense. A broken manifest is refused with the schema's own message
and the JSON path of the offending value.

Secrets never appear in a manifest we write: a registry password is a ``${VARIABLE}`` reference (the notation of
IoT Edge's deployment templates), substituted from the environment only when the manifest is sent to a hub (see
:func:`set_modules_instructions`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from mlops_magics.errors import InvalidInputError
from mlops_magics.packaging.limits import MIN_MEMORY, MIN_NANO_CPUS, nano_cpus, parse_memory

SCHEMA_FILE = Path(__file__).parent / "schema" / "azure-iot-edge-deployment-2.0.schema.json"
#: The system modules' official images (IoT Edge 1.5 LTS).
EDGE_AGENT_IMAGE = "mcr.microsoft.com/azureiotedge-agent:1.5"
EDGE_HUB_IMAGE = "mcr.microsoft.com/azureiotedge-hub:1.5"
#: The ports edgeHub publishes in every reference manifest (AMQPS, MQTTS, HTTPS/WebSockets).
EDGE_HUB_CREATE_OPTIONS = {"HostConfig": {"PortBindings": {p: [{"HostPort": p.split("/")[0]}]
                                                           for p in ("443/tcp", "5671/tcp", "8883/tcp")}}}
SCHEMA_VERSION = "1.1"
#: The port the scoring server listens on inside the module (as in the other images).
MODULE_PORT = 5001
#: Where the module sees the device's data volume (buffer, collected records, logs).
MODULE_DATA = "/var/mlops-data"
#: The model module's message endpoints: requests come in on INPUT, results go out on OUTPUT.
INPUT = "score"
OUTPUT = "predictions"
#: Seconds edgeHub keeps messages for ``$upstream`` while the device is offline (IoT Edge's default).
DEFAULT_TTL_SECONDS = 7200
#: The module twin keeps each string value in at most this many bytes; longer createOptions are chunked.
CHUNK_BYTES = 4096
MAX_CHUNKS = 8
#: Docker's restart policy belongs to the edge agent; these HostConfig keys would fight it or the limits we set.
_REFUSED_HOST_CONFIG = {"RestartPolicy": "set the module's restartPolicy in the manifest instead (the edge agent "
                                         "restarts modules; a Docker restart policy would fight it)"}
_MODULE_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CHUNK_KEY = re.compile(r"^(createOptions|createoptions)([0-9]*)$")
_PORT_KEY = re.compile(r"^([0-9]{1,5})/(tcp|udp|sctp)$")
_TWIN_KEY = re.compile(r"^[^.$ ]+$")


class ManifestError(InvalidInputError):
    """A deployment manifest that is not valid; ``path`` is the JSON path of the offending value."""

    def __init__(self, message: str, *, path: str, reason: str) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class RegistryCredential:
    """How the device logs in to an image registry; the password is the name of a variable, never a value.

    The manifest gets ``"password": "${PASSWORD_VARIABLE}"``; substitute it from the environment only when sending
    the manifest to a hub (``envsubst``, as :func:`set_modules_instructions` shows), never in a file you keep.
    """

    name: str
    address: str
    username: str
    password_variable: str

    def as_manifest(self) -> dict[str, str]:
        """The ``registryCredentials`` entry: address, username, and the password as a reference."""
        return {"address": self.address, "username": self.username, "password": f"${{{self.password_variable}}}"}


# -- createOptions --------------------------------------------------------------------------------------------


def create_options(
    *,
    cpu: float | None = None,
    memory: str | None = None,
    port: int = MODULE_PORT,
    host_port: int | None = None,
    binds: Sequence[str] = (),
    network_mode: str | None = None,
    command: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Docker container create options for the model module (the object ``createOptions`` encodes).

    Args:
        cpu: cores the module may use (``HostConfig.NanoCpus``).
        memory: Docker size (``256m``): ``HostConfig.Memory``, and ``MemorySwap`` the same (no swap).
        port: the port the server listens on inside the module (exposed).
        host_port: the device's port published for it (``PortBindings``; default: the same). Not with a host or
            container network mode, which Docker refuses to combine with published ports.
        binds: ``HOST_PATH:CONTAINER_PATH[:ro|rw]`` volume binds (the device's data volume).
        network_mode: ``HostConfig.NetworkMode`` (``host``, ``container:NAME``, a network's name); None: IoT Edge's.
        command: ``Cmd``: the image's command replaced (the scoring server's arguments).
        labels: container labels.
        extra: further create options merged in (``HostConfig`` merged key by key); checked as the rest is.

    Raises:
        InvalidInputError: a limit, port, bind or network mode that does not make sense.
    """
    host: dict[str, Any] = {}
    if cpu is not None:
        if not 0.01 <= cpu <= 1024:
            raise InvalidInputError(f"--cpu {cpu} is out of range: give 0.01 cores or more (0.5 is half a core).")
        host["NanoCpus"] = nano_cpus(cpu)
    if memory is not None:
        host["Memory"] = host["MemorySwap"] = parse_memory(memory)
    options: dict[str, Any] = {"ExposedPorts": {f"{port}/tcp": {}}}
    if network_mode is not None:
        host["NetworkMode"] = network_mode
    if not _shares_a_namespace(network_mode):
        host["PortBindings"] = {f"{port}/tcp": [{"HostPort": str(host_port or port)}]}
    if binds:
        host["Binds"] = list(binds)
    if command is not None:
        options["Cmd"] = list(command)
    if labels:
        options["Labels"] = dict(labels)
    options["HostConfig"] = host
    for key, value in (extra or {}).items():
        if key == "HostConfig" and isinstance(value, Mapping):
            host.update(value)
        else:
            options[key] = value
    problems = list(_create_options_problems(options))
    if problems:
        where, reason = problems[0]
        raise InvalidInputError(f"The module's createOptions are not valid at {where}: {reason}.")
    return options


def _shares_a_namespace(network_mode: str | None) -> bool:
    return network_mode is not None and (network_mode == "host" or network_mode.startswith("container:"))


def split_create_options(text: str, *, chunk_bytes: int = CHUNK_BYTES) -> dict[str, str]:
    """``createOptions`` as IoT Edge stores it: one field, or chunks ``createOptions``, ``createOptions01``...

    Chunks are at most ``chunk_bytes`` bytes of UTF-8 each, cut between characters.

    Raises:
        InvalidInputError: the text needs more than eight chunks (IoT Edge's limit as the portal writes it).
    """
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for char in text:
        width = len(char.encode())
        if size + width > chunk_bytes:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    chunks.append("".join(current))
    if len(chunks) > MAX_CHUNKS:
        raise InvalidInputError(f"The module's createOptions take {len(text.encode())} bytes: more than "
                                f"{MAX_CHUNKS} chunks of {chunk_bytes} bytes, which IoT Edge does not take. Shorten "
                                "them (fewer labels, binds or environment entries in createOptions).")
    return {("createOptions" if i == 0 else f"createOptions{i:02d}"): chunk for i, chunk in enumerate(chunks)}


def join_create_options(settings: Mapping[str, Any], *, path: str = "settings") -> str:
    """The whole ``createOptions`` text of a module's ``settings``, its chunks joined as the edge agent joins them.

    Raises:
        ManifestError: a chunk is not a string, or the numbering has a gap (``createOptions02`` without ``01``).
    """
    found = sorted((key, value) for key, value in settings.items() if _CHUNK_KEY.match(key))
    parts = []
    for expected, (key, value) in enumerate(found):
        number = _CHUNK_KEY.match(key)[2]  # type: ignore[index]  # matched above
        if (expected == 0 and number) or (expected and (not number or int(number) != expected)):
            want = "createOptions" if expected == 0 else f"createOptions{expected:02d}"
            raise ManifestError(f"The deployment manifest is not valid at {path}.{key}: expected {want} next (the "
                                "chunks of createOptions are numbered 01, 02... without a gap).",
                                path=f"{path}.{key}", reason=f"expected {want}")
        if not isinstance(value, str):
            raise ManifestError(f"The deployment manifest is not valid at {path}.{key}: {value!r} is not of type "
                                "'string' (createOptions is JSON encoded as a string).", path=f"{path}.{key}",
                                reason="not a string")
        parts.append(value)
    return "".join(parts)


# -- the manifest -----------------------------------------------------------------------------------------------


def build_manifest(
    module: str,
    image: str,
    *,
    model: str,
    model_version: int | str,
    cpu: float | None = None,
    memory: str | None = None,
    port: int = MODULE_PORT,
    host_port: int | None = None,
    data_volume: str | None = None,
    network_mode: str | None = None,
    command: Sequence[str] | None = None,
    env: Mapping[str, str | int | float | bool] | None = None,
    sample_rate: float = 1.0,
    twin: Mapping[str, Any] | None = None,
    restart_policy: str = "always",
    status: str = "running",
    time_to_live_secs: int = DEFAULT_TTL_SECONDS,
    registry_credentials: Sequence[RegistryCredential] = (),
    extra_create_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An IoT Edge deployment manifest (schema 2.0) running ``image`` as the model module ``module``.

    The result is validated (:func:`validate_manifest`) before it is returned.

    Args:
        module: the module's name on the device (letters, digits, ``-`` and ``_``).
        image: the module image (``REGISTRY/REPO:TAG`` for a real device).
        model, model_version: the version served, in the module twin's desired properties.
        cpu, memory: the module's limits (``HostConfig.NanoCpus``, ``Memory``: ``0.5``, ``"256m"``).
        port, host_port: the scoring server's port in the module, and the device's port published for it.
        data_volume: the device's folder for the module's data (buffer, collection, logs), bound at
            :data:`MODULE_DATA`; None: no bind.
        network_mode: ``HostConfig.NetworkMode``; with ``host`` or ``container:NAME`` no port is published.
        command: the module's command (``Cmd``), replacing the image's.
        env: the module's environment variables (IoT Edge's module-level ``env``).
        sample_rate: the share of scored requests collected, in the module twin (0 to 1).
        twin: further desired properties of the module twin (objects and scalars: a twin takes no arrays).
        restart_policy: ``always``, ``on-failure``, ``on-unhealthy`` or ``never`` (the edge agent's).
        status: ``running`` or ``stopped``.
        time_to_live_secs: how long edgeHub keeps the module's messages for ``$upstream`` while offline.
        registry_credentials: registries the device logs in to (passwords as variable references only).
        extra_create_options: more Docker create options for the module (checked).

    Raises:
        InvalidInputError: a bad name, limit, port, sample rate, policy or credential; ``ManifestError`` if the
            result would not validate.
    """
    if not _MODULE_NAME.match(module):
        raise InvalidInputError(f"Module name {module!r} is not valid: use letters, digits, '-' and '_' only.")
    if not 0.0 <= sample_rate <= 1.0:
        raise InvalidInputError(f"--sample-rate {sample_rate} is out of range: give a share from 0 to 1.")
    if not 0 <= time_to_live_secs <= 4294967295:
        raise InvalidInputError(f"time_to_live_secs {time_to_live_secs} is out of range: 0 to 4294967295 seconds.")
    credentials: dict[str, Any] = {}
    for credential in registry_credentials:
        if not _VARIABLE.match(credential.password_variable):
            raise InvalidInputError(
                f"The password of registry {credential.name!r} must be given as the name of an environment variable "
                f"that holds it (like ACR_PASSWORD), not as {'a value' if credential.password_variable else 'nothing'}"
                ": a manifest is a file that is copied and shared, and never holds a secret.")
        credentials[credential.name] = credential.as_manifest()
    binds = [f"{data_volume}:{MODULE_DATA}:rw"] if data_volume else []
    options = create_options(cpu=cpu, memory=memory, port=port, host_port=host_port, binds=binds,
                             network_mode=network_mode, command=command, extra=extra_create_options)
    module_entry: dict[str, Any] = {
        "version": "1.0",
        "type": "docker",
        "status": status,
        "restartPolicy": restart_policy,
        "settings": {"image": image, **split_create_options(json.dumps(options, separators=(",", ":")))},
    }
    if env:
        module_entry["env"] = {name: {"value": value} for name, value in env.items()}
    runtime_settings: dict[str, Any] = {"minDockerVersion": "v1.25"}
    if credentials:
        runtime_settings["registryCredentials"] = credentials
    desired_twin = {"model": {"name": model, "version": str(model_version)}, "sampleRate": sample_rate,
                    **dict(twin or {})}
    manifest = {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "schemaVersion": SCHEMA_VERSION,
                    "runtime": {"type": "docker", "settings": runtime_settings},
                    "systemModules": {
                        "edgeAgent": {"type": "docker", "settings": {"image": EDGE_AGENT_IMAGE, "createOptions": "{}"}},
                        "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                                    "settings": {"image": EDGE_HUB_IMAGE,
                                                 "createOptions": json.dumps(EDGE_HUB_CREATE_OPTIONS,
                                                                             separators=(",", ":"))}},
                    },
                    "modules": {module: module_entry},
                }
            },
            "$edgeHub": {
                "properties.desired": {
                    "schemaVersion": SCHEMA_VERSION,
                    "routes": routes(module),
                    "storeAndForwardConfiguration": {"timeToLiveSecs": time_to_live_secs},
                }
            },
            module: {"properties.desired": desired_twin},
        }
    }
    validate_manifest(manifest)
    return manifest


def routes(module: str) -> dict[str, str]:
    """edgeHub's routes for the model module: its results to ``$upstream``; leaf devices' messages to its input."""
    return {
        f"{module}ToUpstream": f"FROM /messages/modules/{module}/outputs/{OUTPUT} INTO $upstream",
        f"devicesTo{module}": (f"FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO "
                               f'BrokeredEndpoint("/modules/{module}/inputs/{INPUT}")'),
    }


def module_create_options(manifest: Mapping[str, Any], module: str) -> dict[str, Any]:
    """The create options of ``module`` in ``manifest``, chunks joined and parsed (what a device starts it with).

    Raises:
        ManifestError: no such module, or its create options are not a JSON object.
    """
    desired = manifest.get("modulesContent", {}).get("$edgeAgent", {}).get("properties.desired", {})
    entry = (desired.get("modules") or {}).get(module) or (desired.get("systemModules") or {}).get(module)
    if entry is None:
        known = sorted([*(desired.get("modules") or {}), *(desired.get("systemModules") or {})])
        raise ManifestError(f"The manifest has no module {module!r}. Modules: {', '.join(known) or 'none'}.",
                            path=_module_path(module, True),
                            reason="no such module")
    return _parsed_options(entry.get("settings") or {}, _module_path(module, entry is (desired.get("modules")
                                                                                         or {}).get(module)))


_PLAIN_KEY = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")


def json_path(*parts: str | int) -> str:
    """A JSON path written as jsonschema writes its own (``$.a['b.c'][0]``), so our paths read like the schema's."""
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if _PLAIN_KEY.match(part) else f"[{part!r}]"
    return path


def _module_path(module: str, user_module: bool) -> str:
    return json_path("modulesContent", "$edgeAgent", "properties.desired",
                     "modules" if user_module else "systemModules", module)


def _parsed_options(settings: Mapping[str, Any], module_path: str) -> dict[str, Any]:
    text = join_create_options(settings, path=f"{module_path}.settings")
    if not text.strip():
        return {}
    try:
        options = json.loads(text)
    except ValueError as exc:
        reason = f"it is not JSON ({exc})"
        raise ManifestError(f"The deployment manifest is not valid at {module_path}.settings.createOptions: {reason}.",
                            path=f"{module_path}.settings.createOptions", reason=reason) from None
    if not isinstance(options, dict):
        reason = f"it holds a {type(options).__name__}, not a JSON object"
        raise ManifestError(f"The deployment manifest is not valid at {module_path}.settings.createOptions: {reason}.",
                            path=f"{module_path}.settings.createOptions", reason=reason)
    return options


# -- validation -------------------------------------------------------------------------------------------------


@cache
def schema() -> dict[str, Any]:
    """The IoT Edge deployment manifest schema 2.0 (SchemaStore's, shipped with the package)."""
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return loaded


def validate_manifest(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Check ``manifest`` against the IoT Edge schema 2.0, then every module's createOptions; return the latter.

    Returns:
        Each module's create options (system modules too), chunks joined and parsed, by module name.

    Raises:
        ManifestError: the first problem, with the schema's own message (or ours, for createOptions) and the JSON
            path of the value; how many more the manifest has is said too.
    """
    import jsonschema

    validator = jsonschema.Draft4Validator(schema())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: (len(e.path), list(map(str, e.path))))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        assert best is not None
        more = f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} after this one)" \
            if len(errors) > 1 else ""
        raise ManifestError(f"The deployment manifest is not valid at {best.json_path}: {best.message}{more}.",
                            path=best.json_path, reason=best.message)
    desired = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    parsed: dict[str, dict[str, Any]] = {}
    for user_module, group in ((False, desired["systemModules"]), (True, desired["modules"])):
        for name, entry in group.items():
            module_path = _module_path(name, user_module)
            options = _parsed_options(entry["settings"], module_path)
            for where, reason in _create_options_problems(options):
                path = f"{module_path}.settings.createOptions"
                raise ManifestError(f"The deployment manifest is not valid at {path} -> {where}: {reason}.",
                                    path=f"{path} -> {where}", reason=reason)
            parsed[name] = options
    for name, body in manifest["modulesContent"].items():
        if name.startswith("$"):
            continue
        for where, reason in _twin_problems(body["properties.desired"],
                                            json_path("modulesContent", name, "properties.desired")):
            raise ManifestError(f"The deployment manifest is not valid at {where}: {reason}.", path=where,
                                reason=reason)
    return parsed


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _create_options_problems(options: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, what) for each key we know whose type or value is wrong; keys we do not set are left to Docker."""
    for key, kind in (("Cmd", list), ("Entrypoint", list), ("Env", list), ("ExposedPorts", dict),
                      ("Labels", dict), ("HostConfig", dict), ("User", str), ("WorkingDir", str)):
        if key in options and not isinstance(options[key], kind) and not (key == "Entrypoint"
                                                                            and isinstance(options[key], str)):
            expected = "array" if kind is list else "object" if kind is dict else "string"
            yield key, f"{options[key]!r} is not of type {expected}"
            return
    for key in ("Cmd", "Entrypoint", "Env"):
        if isinstance(options.get(key), list) and not all(isinstance(item, str) for item in options[key]):
            yield key, "every item must be a string"
    for entry in options.get("Env") or ():
        if isinstance(entry, str) and "=" not in entry:
            yield "Env", f"{entry!r} is not NAME=VALUE"
    for port in options.get("ExposedPorts") or {}:
        if not _valid_port_key(port):
            yield f"ExposedPorts.{port}", "not PORT/PROTOCOL with a port from 1 to 65535 (5001/tcp)"
    if any(not isinstance(v, str) for v in (options.get("Labels") or {}).values()):
        yield "Labels", "every label value must be a string"
    host = options.get("HostConfig") or {}
    yield from _host_config_problems(host)


def _valid_port_key(key: str) -> bool:
    match = _PORT_KEY.match(key)
    return bool(match) and 1 <= int(match[1]) <= 65535  # type: ignore[index]  # bool(match) above


def _host_config_problems(host: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for key, why in _REFUSED_HOST_CONFIG.items():
        if key in host:
            yield f"HostConfig.{key}", why
    if "NanoCpus" in host:
        value = host["NanoCpus"]
        if not _is_int(value):
            yield "HostConfig.NanoCpus", f"{value!r} is not an integer (nano-CPUs: 500000000 is half a core)"
        elif value < MIN_NANO_CPUS:
            yield "HostConfig.NanoCpus", f"{value} is below {MIN_NANO_CPUS} (0.01 core): the module could not run"
        if "CpuPeriod" in host or "CpuQuota" in host:
            yield "HostConfig.NanoCpus", "NanoCpus and CpuPeriod/CpuQuota cannot both be set (Docker refuses it)"
    for key in ("Memory", "MemorySwap"):
        if key in host and not _is_int(host[key]):
            yield f"HostConfig.{key}", f"{host[key]!r} is not an integer (bytes: 268435456 is 256m)"
            return
    if "Memory" in host and host["Memory"] < MIN_MEMORY:
        yield "HostConfig.Memory", f"{host['Memory']} bytes is below Docker's minimum of {MIN_MEMORY} (6m)"
    if "MemorySwap" in host and host["MemorySwap"] != -1 and host["MemorySwap"] < host.get("Memory", 0):
        yield "HostConfig.MemorySwap", "must be at least Memory (it counts memory plus swap), or -1 for no limit"
    if "MemorySwap" in host and "Memory" not in host:
        yield "HostConfig.MemorySwap", "is only meaningful with Memory"
    bindings = host.get("PortBindings")
    if bindings is not None:
        if not isinstance(bindings, dict):
            yield "HostConfig.PortBindings", f"{bindings!r} is not of type object"
            return
        for port, targets in bindings.items():
            if not _valid_port_key(port):
                yield f"HostConfig.PortBindings.{port}", "not PORT/PROTOCOL with a port from 1 to 65535 (5001/tcp)"
            if not isinstance(targets, list) or not all(isinstance(t, dict) for t in targets):
                yield f"HostConfig.PortBindings.{port}", "must be an array of {\"HostPort\": \"PORT\"} objects"
                continue
            for target in targets:
                value = target.get("HostPort", "")
                if not (isinstance(value, str) and (value == "" or (value.isdigit() and 1 <= int(value) <= 65535))):
                    yield (f"HostConfig.PortBindings.{port}.HostPort",
                           f"{value!r} is not a port from 1 to 65535 as a string")
        mode = host.get("NetworkMode")
        if bindings and isinstance(mode, str) and _shares_a_namespace(mode):
            yield "HostConfig.PortBindings", (f"ports cannot be published with NetworkMode {mode!r} (Docker refuses "
                                              "it): leave PortBindings out, the module's ports are the namespace's")
    if "NetworkMode" in host and not (isinstance(host["NetworkMode"], str) and host["NetworkMode"]):
        yield "HostConfig.NetworkMode", f"{host['NetworkMode']!r} is not a network mode"
    binds = host.get("Binds")
    if binds is not None:
        if not isinstance(binds, list):
            yield "HostConfig.Binds", f"{binds!r} is not of type array"
            return
        for i, bind in enumerate(binds):
            parts = bind.split(":") if isinstance(bind, str) else []
            if not 2 <= len(parts) <= 3 or not parts[0] or not parts[1].startswith("/") or (
                    len(parts) == 3 and not set(parts[2].split(",")) <= {"ro", "rw", "z", "Z", "nocopy", "rprivate",
                                                                         "private", "rshared", "shared", "rslave",
                                                                         "slave"}):
                yield f"HostConfig.Binds[{i}]", f"{bind!r} is not SOURCE:/ABSOLUTE/PATH[:ro|rw]"


def _twin_problems(desired: Any, path: str) -> Iterator[tuple[str, str]]:
    """A module twin's desired properties as IoT Hub takes them: objects and scalars, no arrays, plain keys."""
    if isinstance(desired, list):
        yield path, "a module twin takes no arrays (IoT Hub refuses them): use an object keyed by name"
    elif isinstance(desired, dict):
        for key, value in desired.items():
            if not _TWIN_KEY.match(str(key)):
                yield f"{path}[{key!r}]", "a twin's keys cannot contain '.', '$' or spaces"
            yield from _twin_problems(value, f"{path}.{key}" if _PLAIN_KEY.match(str(key)) else f"{path}[{key!r}]")


# -- for users with a real hub ----------------------------------------------------------------------------------


def set_modules_instructions(manifest: Mapping[str, Any], content: str | Path = "deployment.json", *,
                             hub_name: str = "HUB_NAME", device_id: str = "DEVICE_ID") -> str:
    """How to apply the manifest to a real IoT Edge device through its hub with the Azure CLI.

    When the manifest references variables (a registry password, ``${NAME}``), the text says to substitute them
    from the environment into a temporary copy, send it, and delete the copy, so the secret never stays in a file.
    """
    variables = sorted(set(_REFERENCE.findall(json.dumps(manifest))))
    lines = ["# Apply this deployment to a real IoT Edge device (needs the Azure CLI and its azure-iot extension):",
             "az extension add --name azure-iot   # once"]
    target = str(content)
    if variables:
        lines += [f"# The manifest refers to {', '.join(variables)}: set {'them' if len(variables) > 1 else 'it'} "
                  "without echoing (read -rs NAME; export NAME), then",
                  f"envsubst '{' '.join('${' + v + '}' for v in variables)}' < {content} "
                  "> /tmp/deployment.resolved.json"]
        target = "/tmp/deployment.resolved.json"
    lines.append(f"az iot edge set-modules --hub-name {hub_name} --device-id {device_id} --content {target}")
    if variables:
        lines.append("rm -f /tmp/deployment.resolved.json   # the resolved copy holds the secret")
    lines.append(f"az iot hub module-identity list --hub-name {hub_name} --device-id {device_id} -o table   "
                 "# the modules, once the device has them")
    return "\n".join(lines)

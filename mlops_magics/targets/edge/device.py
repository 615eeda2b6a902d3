"""A simulated edge device: a network namespace of its own, linked to this machine by a cable it can cut.

The device is a small container of the local Docker engine (``--network none``: it has only ``lo``) that holds
the device's network namespace; its modules run in containers that join that namespace, started from the
deployment manifest's own ``createOptions``. A veth pair is its link: ``eth0`` inside the device at
``10.213.N.2``, the host end at ``10.213.N.1``, where this machine's side (the collection hub) listens.
Cutting the link (``offline``) takes the device's ``eth0`` down: inside, scoring on the device goes on, and
the device's agent sees the hub unreachable and buffers; outside, the device's address stops answering. The
device's broker (Debian's ``mosquitto``, as IoT Edge's hub speaks MQTT) runs in the same namespace, from this
machine's binary, when it is installed.

Everything of a device is on this machine under ``$MLOPS_HOME/edge/devices/<name>/``: ``device.json`` (what
was created), ``volume/`` (the modules' data: the buffer, the collection) and ``broker.log``. Creating and
linking need root (a veth and ``nsenter``), as the simulation needs; the message says so when it is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlops_magics.errors import DeployError, InvalidInputError, NotFoundError
from mlops_magics.targets.process import alive, process_stamp, stop_group

#: The devices' links: 10.213.N.0/30, N from 0 to 255.
SUBNET = "10.213"
MAX_DEVICES = 256
BROKER_PORT = 1883
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


def check_name(name: str) -> str:
    """A device's name: lower-case letters, digits and dashes, at most 32.

    Raises:
        InvalidInputError: it is not.
    """
    if not _NAME.match(name):
        raise InvalidInputError(f"Device name {name!r} is not valid: use lower-case letters, digits and dashes "
                                "(at most 32, not starting or ending with a dash), like sim-1.")
    return name


def devices_root(home: Path) -> Path:
    """Where this registry's devices keep what they are."""
    return home / "edge" / "devices"


@dataclass(frozen=True)
class Device:
    """A simulated device as created: its container, its link's index and ends."""

    name: str
    container: str
    index: int
    folder: str

    @property
    def address(self) -> str:
        """The device's address on its link (where this machine reaches its modules)."""
        return f"{SUBNET}.{self.index}.2"

    @property
    def host_address(self) -> str:
        """This machine's end of the link (where the device reaches this machine)."""
        return f"{SUBNET}.{self.index}.1"

    @property
    def host_interface(self) -> str:
        """The host end's interface name."""
        return f"mledge{self.index}"

    @property
    def volume(self) -> Path:
        """The device's data folder (bound into its modules)."""
        return Path(self.folder) / "volume"

    @property
    def network_mode(self) -> str:
        """What a module container's ``NetworkMode`` is on this device (it joins the device's namespace)."""
        return f"container:{self.container}"


def container_name(home: Path, name: str) -> str:
    """The device container's name: after the registry too (two registries' ``sim-1`` are two devices)."""
    return f"mlops-edge-{name}-{hashlib.sha256(str(home).encode()).hexdigest()[:8]}"


def _need_root() -> None:
    if os.geteuid() != 0:
        raise DeployError("A simulated edge device needs root on this machine (it makes a veth link and enters "
                          "the device's network namespace): run Jupyter as root, or use a real device with the "
                          "manifest (%edge manifest).")
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            raise DeployError(f"A simulated edge device needs {tool!r} (Debian packages iproute2 and util-linux): "
                              "apt-get install iproute2 util-linux.")


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise DeployError(f"{' '.join(command)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


class Devices:
    """The simulated devices of one registry on the local Docker engine."""

    def __init__(self, home: Path, engine: Any, base_image: str) -> None:
        self.home, self.engine, self.base_image = home, engine, base_image
        self.root = devices_root(home)

    # -- what exists --------------------------------------------------------------------------

    def get(self, name: str) -> Device:
        """The device called ``name``.

        Raises:
            NotFoundError: there is none.
        """
        path = self.root / check_name(name) / "device.json"
        try:
            return Device(**json.loads(path.read_text()))
        except FileNotFoundError:
            known = ", ".join(sorted(p.name for p in self.root.glob("*") if (p / "device.json").exists())) or "none"
            raise NotFoundError(f"No edge device {name!r} (devices: {known}): %deploy MODEL --target edge --device "
                                f"{name} creates it.") from None

    def all(self) -> list[Device]:
        """Every device of this registry."""
        found = []
        for path in sorted(self.root.glob("*/device.json")):
            with contextlib.suppress(ValueError, TypeError, OSError):
                found.append(Device(**json.loads(path.read_text())))
        return found

    def _taken(self) -> set[int]:
        used = {d.index for d in self.all()}
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir("/sys/class/net"):
                if name.startswith("mledge") and name[6:].isdigit():
                    used.add(int(name[6:]))
        return used

    # -- life -----------------------------------------------------------------------------------

    def ensure(self, name: str) -> Device:
        """The device ``name``, created (container, link) when it does not exist, its link restored when it went
        (a restarted engine or machine), running.

        Raises:
            DeployError: it cannot be made here (no root, no ``ip``, the engine refused).
        """
        import docker

        _need_root()
        check_name(name)
        try:
            device = self.get(name)
        except NotFoundError:
            device = None
        if device is not None:
            try:
                container = self.engine.containers.get(device.container)
                if container.status != "running":
                    container.start()
            except docker.errors.NotFound:
                device = None  # its container went: made again, with the same folder
        if device is None:
            device = self._create(name)
        self._link(device)
        return device

    def _create(self, name: str) -> Device:
        import docker

        free = sorted(set(range(MAX_DEVICES)) - self._taken())
        if not free:
            raise DeployError(f"This machine has {MAX_DEVICES} simulated devices already: remove one "
                              "(%edge remove NAME).")
        folder = self.root / name
        (folder / "volume").mkdir(parents=True, exist_ok=True)
        cname = container_name(self.home, name)
        with contextlib.suppress(docker.errors.NotFound):
            self.engine.containers.get(cname).remove(force=True)
        try:
            container = self.engine.containers.run(
                self.base_image, ["python3", "-c", "import signal; signal.pause()"], detach=True, name=cname,
                network_mode="none", hostname=name, restart_policy={"Name": "unless-stopped"},
                labels={"mlops.edge.device": name, "mlops.home": str(self.home)})
        except docker.errors.ImageNotFound:
            raise DeployError(f"The device image {self.base_image} is not on this Docker engine: set "
                              "MLOPS_BASE_IMAGE to one it has (make docker-engine builds mlops-base:bookworm)."
                              ) from None
        except docker.errors.APIError as exc:
            raise DeployError(f"Docker refused to start edge device {name!r}: {exc.explanation}") from None
        device = Device(name=name, container=container.id, index=free[0], folder=str(folder))
        fresh = folder / "device.json.tmp"
        fresh.write_text(json.dumps(asdict(device)))
        fresh.replace(folder / "device.json")
        return device

    def _pid(self, device: Device) -> int:
        container = self.engine.containers.get(device.container)
        pid = int(container.attrs["State"].get("Pid") or 0)
        if not pid:
            raise DeployError(f"Edge device {device.name!r} is not running (its container is "
                              f"{container.status}): %edge status {device.name} says more.")
        return pid

    def _inside(self, device: Device, *command: str) -> str:
        return _run("nsenter", "-t", str(self._pid(device)), "-n", *command)

    def _link(self, device: Device) -> None:
        """Make the device's link when it has none (its container is new, or was restarted)."""
        inside = self._inside(device, "ip", "-o", "link")
        if " eth0" in inside or "eth0@" in inside:
            return
        host = device.host_interface
        with contextlib.suppress(DeployError):
            _run("ip", "link", "del", host)  # a host end left from the device's previous container
        peer = f"{host}d"
        _run("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
        try:
            _run("ip", "link", "set", peer, "netns", str(self._pid(device)))
            self._inside(device, "ip", "link", "set", peer, "name", "eth0")
            self._inside(device, "ip", "addr", "add", f"{device.address}/30", "dev", "eth0")
            self._inside(device, "ip", "link", "set", "lo", "up")
            self._inside(device, "ip", "link", "set", "eth0", "up")
            _run("ip", "addr", "add", f"{device.host_address}/30", "dev", host)
            _run("ip", "link", "set", host, "up")
        except BaseException:
            with contextlib.suppress(DeployError):
                _run("ip", "link", "del", host)
            raise

    def set_online(self, device: Device, online: bool) -> None:
        """Restore (``online``) or cut the device's link to this machine."""
        self._inside(device, "ip", "link", "set", "eth0", "up" if online else "down")

    def online(self, device: Device) -> bool:
        """True when the device's link is up."""
        try:
            state = self._inside(device, "ip", "-o", "link", "show", "eth0")
        except DeployError:
            return False
        return ",UP" in state or "<UP" in state

    def remove(self, name: str) -> None:
        """Remove the device: its broker, its container (its link goes with its namespace) and its folder."""
        import docker

        try:
            device = self.get(name)
        except NotFoundError:
            return
        self.stop_broker(device)
        with contextlib.suppress(docker.errors.NotFound):
            self.engine.containers.get(device.container).remove(force=True)
        with contextlib.suppress(DeployError):
            _run("ip", "link", "del", device.host_interface)
        shutil.rmtree(device.folder, ignore_errors=True)

    # -- the device's broker ------------------------------------------------------------------

    def broker_running(self, device: Device) -> bool:
        """True when the device's broker process runs."""
        found = _read_pid(Path(device.folder) / "broker.pid")
        return found is not None and alive(*found)

    def start_broker(self, device: Device) -> bool:
        """Start the device's MQTT broker (in its namespace, on port 1883) unless it runs; False when this machine
        has no ``mosquitto`` (apt-get install mosquitto)."""
        if self.broker_running(device):
            return True
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if binary is None:
            return False
        folder = Path(device.folder)
        config = folder / "broker.conf"
        config.write_text(f"listener {BROKER_PORT} 0.0.0.0\nallow_anonymous true\npersistence false\n")
        with open(folder / "broker.log", "ab") as log:
            process = subprocess.Popen(["nsenter", "-t", str(self._pid(device)), "-n", binary, "-c", str(config)],
                                       stdout=log, stderr=log, start_new_session=True)
        _BROKERS[process.pid] = process
        (folder / "broker.pid").write_text(f"{process.pid} {process_stamp(process.pid)}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listening = self._inside(device, "cat", "/proc/net/tcp")
            if f":{BROKER_PORT:04X} 00000000:0000 0A" in listening.upper():
                return True
            if process.poll() is not None:
                break
            time.sleep(0.05)
        raise DeployError(f"The MQTT broker of edge device {device.name!r} did not start: see "
                          f"{folder / 'broker.log'}.")

    def stop_broker(self, device: Device) -> None:
        """Stop the device's broker (nothing when it does not run)."""
        path = Path(device.folder) / "broker.pid"
        found = _read_pid(path)
        if found is not None:
            stop_group(*found, grace=5.0, started=_BROKERS.pop(found[0], None))
        path.unlink(missing_ok=True)


#: The brokers this process started (reaped when stopped).
_BROKERS: dict[int, subprocess.Popen[bytes]] = {}


def _read_pid(path: Path) -> tuple[int, str | None] | None:
    try:
        pid, _, stamp = path.read_text().strip().partition(" ")
        return int(pid), stamp or None
    except (FileNotFoundError, ValueError):
        return None

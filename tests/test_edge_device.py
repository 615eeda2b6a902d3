"""The simulated edge device, for real: a container of the local Docker engine with a network namespace of its own,
a veth link to this machine that is really cut, and Debian's mosquitto in the device's namespace.

They need a Docker engine with the base image and root (the veth, nsenter): without them they skip saying so,
and fail instead where MLOPS_REQUIRE_DOCKER is set (CI runs as root with an engine)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_magics.errors import InvalidInputError, NotFoundError
from mlops_magics.targets.edge.device import Device, Devices, check_name
from tests.infrastructure import docker_engine, give_up

BASE = os.environ.get("MLOPS_BASE_IMAGE", "mlops-base:bookworm")


def _devices_or_skip(home: Path) -> Devices:
    client = docker_engine(BASE, "A simulated edge device is a container of a real Docker engine.")
    if os.geteuid() != 0 or shutil.which("ip") is None:
        give_up("MLOPS_REQUIRE_DOCKER", "A simulated edge device needs root and iproute2 (a veth link, nsenter): "
                "run the tests as root.")
    return Devices(home, client, BASE)


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[Devices]:
    made = _devices_or_skip(tmp_path / "home")
    try:
        yield made
    finally:
        for device in made.all():
            made.remove(device.name)


def _connect_from(devices: Devices, device: Device, host: str, port: int) -> int:
    """errno of a TCP connection from inside the device (0: connected, 111: refused, 101: unreachable)."""
    container = devices.engine.containers.get(device.container)
    code = f"import socket; s = socket.socket(); s.settimeout(2); print(s.connect_ex(({host!r}, {port})))"
    return int(container.exec_run(["python3", "-c", code]).output.decode().strip())


def test_a_device_has_its_own_link_that_is_really_cut_and_restored(devices: Devices) -> None:
    device = devices.ensure("sim-1")
    assert (device.address, device.host_address) == ("10.213.0.2", "10.213.0.1")
    with socket.socket() as listener:  # this machine's side, on the host end of the link
        listener.bind((device.host_address, 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert _connect_from(devices, device, device.host_address, port) == 0
        assert _connect_from(devices, device, "127.0.0.1", port) == 111  # the device's own lo, not this machine's
        devices.set_online(device, False)
        assert not devices.online(device)
        assert _connect_from(devices, device, device.host_address, port) == 101  # the network is unreachable
        devices.set_online(device, True)
        assert devices.online(device)
        assert _connect_from(devices, device, device.host_address, port) == 0


def test_ensure_is_idempotent_and_restores_a_lost_link(devices: Devices) -> None:
    first = devices.ensure("sim-1")
    assert devices.ensure("sim-1") == first and devices.get("sim-1") == first
    second = devices.ensure("sim-2")
    assert second.index != first.index and {d.name for d in devices.all()} == {"sim-1", "sim-2"}
    devices.engine.containers.get(first.container).restart(timeout=1)  # a restart loses the namespace's veth
    again = devices.ensure("sim-1")
    assert again == first and devices.online(again)
    assert _connect_from(devices, again, again.host_address, 9) == 111  # linked again: refused, not unreachable


def test_the_devices_broker_listens_in_its_namespace(devices: Devices) -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        give_up("MLOPS_REQUIRE_MQTT", "Debian's mosquitto is not installed (apt-get install mosquitto): the device's "
                "broker cannot run.")
    device = devices.ensure("sim-1")
    assert devices.start_broker(device) and devices.broker_running(device)
    with socket.create_connection((device.address, 1883), timeout=5):
        pass  # this machine reaches the broker at the device's address
    assert _connect_from(devices, device, "127.0.0.1", 1883) == 0  # and the device's modules on their own lo
    devices.stop_broker(device)
    assert not devices.broker_running(device)


def test_removing_a_device_leaves_nothing(devices: Devices) -> None:
    device = devices.ensure("sim-1")
    devices.remove("sim-1")
    import docker

    with pytest.raises(docker.errors.NotFound):
        devices.engine.containers.get(device.container)
    assert subprocess.run(["ip", "link", "show", device.host_interface], capture_output=True).returncode != 0
    assert not Path(device.folder).exists()
    with pytest.raises(NotFoundError, match="No edge device 'sim-1'"):
        devices.get("sim-1")
    devices.remove("sim-1")  # idempotent


@pytest.mark.parametrize("name", ["Sim", "-a", "a_b", "x" * 33, ""])
def test_a_bad_device_name_says_what_a_name_is(name: str) -> None:
    with pytest.raises(InvalidInputError, match="lower-case letters, digits and dashes"):
        check_name(name)


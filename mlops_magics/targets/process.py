"""Processes and ports on this machine (Linux ``/proc``): who is alive, who listens, who may take a port.

A process is named by its pid *and* its start stamp (boot id + start time), so that a pid reused by an
unrelated process after a server died is never mistaken for the server, let alone signalled.

A port belongs to one service: generations of the same service share it through ``SO_REUSEPORT`` while
one replaces the other, but a different service must never bind it too (the kernel would split the
traffic between two models). :func:`claim_port` checks who listens under a per-user lock, held until the
new server listens, so that two deployments racing for one port cannot both pass the check.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from mlops_magics.errors import ConflictError

#: How long :func:`claim_port` waits for another deployment holding the port's lock.
PORT_LOCK_TIMEOUT = 300.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def process_stamp(pid: int) -> str | None:
    """What tells this process from any later one with the same pid: boot id and start time (None: no such pid)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return f"{_boot_id()}:{fields[19]}"  # field 22 of stat: start time in clock ticks since boot


def alive(pid: int, stamp: str | None = None) -> bool:
    """True while process ``pid`` runs (a zombie does not); with ``stamp``, only if it is still the same process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return stamp is None
    if state == "Z":  # our own dead child, not reaped yet
        return False
    return stamp is None or process_stamp(pid) == stamp


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            queue += [int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
    return found


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    found.add(target[8:-1])
    return found


def is_listening(pid: int, port: int) -> bool:
    """True while ``pid`` or one of its children holds a listening socket on ``port``."""
    inodes = _listening_inodes(port)
    return any(_socket_inodes(member) & inodes for member in process_tree(pid)) if inodes else False


def listeners(port: int) -> list[int]:
    """The pids of the processes that hold a listening socket on ``port`` (those this user may inspect)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return []
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return sorted(pid for pid in pids if _socket_inodes(pid) & inodes)


def wait_until_not_listening(pid: int, port: int, timeout: float = 5.0) -> None:
    """Block until ``pid`` (and its children) no longer listen on ``port``, it exits, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(pid) and is_listening(pid, port):
        time.sleep(0.005)


def _describe(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = ""
    return f"pid {pid} ({command[:80]})" if command else f"pid {pid}"


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _lock_dir() -> Path:
    """A folder of port locks for this user, shared by every registry (SO_REUSEPORT only joins sockets of one user).

    Raises:
        ConflictError: the folder exists but is not this user's own private folder (another user made it).
    """
    folder = Path(tempfile.gettempdir()) / f"mlops-{os.getuid()}"
    folder.mkdir(exist_ok=True, mode=0o700)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ConflictError(f"{folder} is not a folder of this user (owner uid {info.st_uid}, "
                            f"{stat.filemode(info.st_mode)}): remove it, and mlops-magics makes its own.")
    if info.st_mode & 0o077:
        os.chmod(folder, 0o700)  # ours, but open to others (made by an older version): close it
    (folder / "ports").mkdir(exist_ok=True, mode=0o700)
    return folder / "ports"


@contextlib.contextmanager
def claim_port(port: int, service: str, *, owner: Iterable[int] = (), timeout: float = PORT_LOCK_TIMEOUT
               ) -> Iterator[None]:
    """Hold ``port`` for ``service`` while its server starts: keep the lock until the server listens.

    Args:
        port: the TCP port on 127.0.0.1.
        service: the service that will listen there (named in errors).
        owner: the pids of the generation being replaced; their listening sockets are the service's own.
            Empty: a new service, so nothing may listen on the port.
        timeout: seconds to wait for another deployment that holds the port's lock.

    Raises:
        ConflictError: another process listens on the port (named with its command line), or another
            deployment held the port's lock past ``timeout``.
    """
    lock = _lock_dir() / f"{port}.lock"
    fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConflictError(f"Port {port} is being taken by another deployment right now (waited "
                                        f"{timeout:g} s): pick another --port.") from None
                time.sleep(0.05)
        ours = {member for pid in owner for member in process_tree(pid)}
        others = [pid for pid in listeners(port) if pid not in ours]
        if others or (not ours and not listeners(port) and _port_in_use(port)):
            who = ", ".join(_describe(pid) for pid in others[:3]) or "a process this user cannot see"
            raise ConflictError(f"Port {port} is in use by another service ({who}): {service!r} would share its "
                                "traffic. Pick another --port, or leave it out to get a free one.")
        yield
    finally:
        os.close(fd)


def stop_group(pid: int, stamp: str | None = None, *, grace: float = 10.0,
               started: subprocess.Popen[bytes] | None = None) -> None:
    """Stop the process group ``pid`` (a server started in a session of its own): SIGTERM, then SIGKILL after
    ``grace`` seconds; ``started``, when this process started it, is reaped.

    With ``stamp`` (:func:`process_stamp` at start), a pid that now belongs to another process is left alone.
    """
    if stamp is not None and not alive(pid, stamp):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    if started is not None:
        started.wait()

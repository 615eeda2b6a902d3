"""The router of an endpoint, run as a process of this machine (``mlops-route``), beside the deployments it
fronts (a local process, a Docker container on the host network, or a cluster's service through the address
this machine reaches it at).

Its folder is ``$MLOPS_HOME/endpoints/<endpoint>/``: ``routes.json`` (what it serves, rewritten whole and renamed
into place; the router takes it up between two requests), ``traffic/`` (what each member answered), ``ready``
and ``router.log``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_magics.errors import DeployError
from mlops_magics.targets.local import tail
from mlops_magics.targets.process import alive, claim_port, free_port, process_stamp, stop_group

#: Seconds the router has to start, and to take up a new routes file.
START_TIMEOUT = 30.0
SWITCH_TIMEOUT = 10.0
_STOP_GRACE = 10.0
_STARTED: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class RouterProcess:
    """A running router: its process (pid and start stamp) and address."""

    pid: int
    stamp: str | None
    port: int

    @property
    def url(self) -> str:
        """Where clients send requests."""
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        """What the registry records of it."""
        return {"router": "process", "pid": self.pid, "pid_stamp": self.stamp, "port": self.port}


def folder(home: Path, endpoint: str) -> Path:
    """The endpoint's folder on this machine."""
    return home / "endpoints" / endpoint


def traffic_folder(home: Path, endpoint: str) -> Path:
    """Where the router records what each member answered."""
    return folder(home, endpoint) / "traffic"


def write_routes(home: Path, endpoint: str, routes: dict[str, Any]) -> Path:
    """Write the routes file whole and rename it into place (the router never reads half of one)."""
    place = folder(home, endpoint)
    place.mkdir(parents=True, exist_ok=True)
    path = place / "routes.json"
    fresh = place / f".routes.{os.getpid()}.tmp"
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(routes, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    fresh.replace(path)
    return path


def start(home: Path, endpoint: str, port: int | None = None, key_file: Path | None = None) -> RouterProcess:
    """Start the endpoint's router on ``port`` (default: a free one) with the routes file written already;
    block until it serves. With ``key_file``, clients must send one of its keys (the router reads the file: a key
    never goes on a command line).

    Raises:
        ConflictError: the port is in use.
        DeployError: it exited or did not serve within :data:`START_TIMEOUT` (the log's tail in the message).
    """
    place = folder(home, endpoint)
    chosen = port or free_port()
    ready = place / "ready"
    log = place / "router.log"
    command = [sys.executable, "-m", "mlops_backend.router.serve", "--routes", str(place / "routes.json"),
               "--port", str(chosen), "--host", "127.0.0.1", "--traffic-dir", str(place / "traffic"),
               "--ready-file", str(ready), "--reuse-port"]
    if key_file is not None:
        command += ["--auth-key-file", str(key_file)]
    with claim_port(chosen, f"endpoint {endpoint}"):
        with open(log, "ab") as err:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        _STARTED[process.pid] = process
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            code = process.poll()
            if code is not None or time.monotonic() > deadline:
                stop(process.pid)
                reason = f"exited with status {code}" if code is not None else (
                    f"did not serve within {START_TIMEOUT:.0f} s")
                raise DeployError(f"The router of endpoint {endpoint!r} {reason}. Its log ({log}):\n"
                                  f"{tail(log, 20)}")
            time.sleep(0.02)
    return RouterProcess(process.pid, process_stamp(process.pid), chosen)


def running(config: Any) -> bool:
    """Whether the recorded router process still runs."""
    pid = config.get("pid")
    return bool(pid) and alive(int(pid), config.get("pid_stamp"))


def stop(pid: int, stamp: str | None = None) -> None:
    """Stop a router: SIGTERM (it answers what it has, finishes its shadow copies, writes its records), then
    SIGKILL after a grace period. A pid that now belongs to another process is left alone."""
    if stamp is not None and not alive(pid, stamp):
        return
    stop_group(pid, grace=_STOP_GRACE, started=_STARTED.pop(pid, None))


def ask(url: str, path: str, timeout: float = 5.0, key: str | None = None) -> Any:
    """GET ``path`` of the router, as JSON (``key``: the endpoint's, when it has keys).

    Raises:
        OSError: it did not answer (urllib's errors are OSErrors).
    """
    request = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


#: Seconds to wait for the router to write the records of the answers it gave before it was asked.
SETTLE_TIMEOUT = 2.0


def settle(url: str, key: str | None = None, summary: dict[str, Any] | None = None,
           timeout: float = SETTLE_TIMEOUT) -> bool:
    """Wait until the router has written the traffic records of every answer it gave so far (it writes them a
    few times a second), so that what is read next holds them; ``summary``: its ``/endpoint`` asked already.
    True when they are written, False after ``timeout`` seconds or when it does not answer (what is on disk
    then is what there is)."""
    deadline = time.monotonic() + timeout
    try:
        counts = (summary if summary is not None else ask(url, "/endpoint", key=key)).get("traffic") or {}
        wanted = int(counts.get("recorded") or 0)
        while int(counts.get("written") or 0) + int(counts.get("lost") or 0) < wanted:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
            counts = ask(url, "/endpoint", key=key).get("traffic") or {}
    except (OSError, ValueError):
        return False
    return True


def wait_generation(url: str, generation: int, endpoint: str, timeout: float = SWITCH_TIMEOUT) -> None:
    """Block until the router serves ``generation`` (it takes up a routes file within a fifth of a second).

    Raises:
        DeployError: it did not within ``timeout`` seconds (its log says why: a routes file it refused).
    """
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            seen = ask(url, "/ready", timeout=2).get("generation")
            if seen == generation:
                return
        time.sleep(0.05)
    raise DeployError(f"The router of endpoint {endpoint!r} still serves generation {seen} after {timeout:.0f} s, "
                      f"not {generation}: see its log (%endpoint {endpoint} --log).")

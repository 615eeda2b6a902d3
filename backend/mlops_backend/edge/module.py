"""The edge module's main process (the module image's CMD): the scoring server, the agent, the MQTT bridge.

``python -m mlops_backend.edge.module [mlops-serve arguments...]`` starts, each in a process group of its own:

- ``serve``: ``mlops-serve`` with the arguments given; when the module forwards (``MLOPS_EDGE_HUB`` is set), plus
  ``--collect-dir $MLOPS_EDGE_DATA/collected`` and ``--collect-segment-s 1`` unless the arguments or the
  environment (``MLOPS_COLLECT_DIR``, ``MLOPS_COLLECT_SEGMENT_S``) set them (without a hub nothing is collected
  unless the arguments say so: a module does not fill its device with records nobody takes);
- ``agent`` (:mod:`mlops_backend.edge.agent`), when ``MLOPS_EDGE_HUB`` is set: buffer
  ``$MLOPS_EDGE_DATA/buffer.sqlite``, status ``$MLOPS_EDGE_DATA/agent.json``, device ``MLOPS_EDGE_DEVICE`` (default:
  the host name), bound ``MLOPS_EDGE_MAX_BUFFER_BYTES``;
- ``mqtt`` (:mod:`mlops_backend.edge.mqtt`), when ``MLOPS_EDGE_MQTT`` is set, scoring through the server's port.

``MLOPS_EDGE_DATA`` (default ``/var/lib/mlops-edge``) is the device's volume. A child that ends is restarted, its
group killed first (no stray worker keeps the port), after a backoff that doubles from 0.5 s to 30 s (back to 0.5 s
after a minute up); each exit and restart is logged. ``$MLOPS_EDGE_DATA/module.json`` says each child's pid,
restarts and last exit. SIGTERM or SIGINT: every child gets SIGTERM, SIGKILL after 30 s; then exit 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mlops_backend import DEFAULT_PORT

DEFAULT_DATA = "/var/lib/mlops-edge"
_FIRST_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0
_STEADY_S = 60.0
_GRACE_S = 30.0


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = _FIRST_BACKOFF_S
    due: float = 0.0
    last_exit: int | None = None
    history: list[int] = field(default_factory=list)

    @property
    def running(self) -> bool:
        """Started and not reaped."""
        return self.process is not None and self.process.returncode is None


def _has(args: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(f"{flag}=") for a in args)


def _value(args: Sequence[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(f"{flag}="):
            return a.split("=", 1)[1]
    return None


def children(serve_args: Sequence[str], environ: Mapping[str, str]) -> list[Child]:
    """The processes to supervise for these ``mlops-serve`` arguments and this environment."""
    data = Path(environ.get("MLOPS_EDGE_DATA") or DEFAULT_DATA)
    args = list(serve_args)
    collect = _value(args, "--collect-dir") or environ.get("MLOPS_COLLECT_DIR")
    forwards = bool(environ.get("MLOPS_EDGE_HUB"))
    if collect is None and forwards:
        collect = str(data / "collected")
        args += ["--collect-dir", collect]
    if collect is not None and not _has(args, "--collect-segment-s") and not environ.get("MLOPS_COLLECT_SEGMENT_S"):
        args += ["--collect-segment-s", "1"]
    python = sys.executable
    found = [Child("serve", [python, "-m", "mlops_backend.cli", *args])]
    if forwards and collect is not None:
        found.append(Child("agent", [python, "-m", "mlops_backend.edge.agent", "--collect-dir", collect,
                                     "--buffer", environ.get("MLOPS_EDGE_BUFFER") or str(data / "buffer.sqlite"),
                                     "--status-file", environ.get("MLOPS_EDGE_STATUS_FILE") or str(data / "agent.json"),
                                     "--device", environ.get("MLOPS_EDGE_DEVICE") or socket.gethostname()]))
    if environ.get("MLOPS_EDGE_MQTT"):
        port = _value(args, "--port") or environ.get("PORT") or str(DEFAULT_PORT)
        url = environ.get("MLOPS_EDGE_SCORE_URL") or f"http://127.0.0.1:{port}/score"
        key = _value(args, "--auth-key-file")
        found.append(Child("mqtt", [python, "-m", "mlops_backend.edge.mqtt", "--score-url", url,
                                    *(["--key-file", key] if key else [])]))
    return found


def _say(message: str) -> None:
    print(f"mlops-edge-module[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


class Supervisor:
    """Starts the children, restarts those that end, stops them all when :attr:`stop` is set."""

    def __init__(self, children: list[Child], status_file: Path | None) -> None:
        self.children = children
        self.status_file = status_file
        self.stop = threading.Event()
        self._written: dict[str, Any] = {}

    def _start(self, child: Child) -> None:
        try:
            child.process = subprocess.Popen(child.argv, start_new_session=True)
        except OSError as exc:
            _say(f"cannot start {child.name}: {exc.strerror or exc}; trying again in {child.backoff:g} s")
            child.due = time.monotonic() + child.backoff
            child.backoff = min(_MAX_BACKOFF_S, child.backoff * 2)
            return
        child.started_at = time.monotonic()
        _say(f"started {child.name} (pid {child.process.pid})")

    def _reap(self) -> None:
        """Collect every ended process (children, and orphans handed to us when we are PID 1)."""
        by_pid = {c.process.pid: c for c in self.children if c.running and c.process is not None}
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = by_pid.get(pid)
            if child is None or child.process is None:
                continue
            child.process.returncode = os.waitstatus_to_exitcode(status)
            self._ended(child)

    def _ended(self, child: Child) -> None:
        assert child.process is not None
        code = child.process.returncode
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.process.pid, signal.SIGKILL)  # what it left behind (its workers) goes with it
        child.last_exit = code
        if self.stop.is_set():
            return
        now = time.monotonic()
        if now - child.started_at >= _STEADY_S:
            child.backoff = _FIRST_BACKOFF_S
        child.due = now + child.backoff
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with {code}"
        _say(f"{child.name} (pid {child.process.pid}) {how}; restarting it in {child.backoff:g} s")
        child.backoff = min(_MAX_BACKOFF_S, child.backoff * 2)
        child.restarts += 1

    def run(self) -> None:
        """Supervise until :attr:`stop` is set, then stop every child."""
        for child in self.children:
            self._start(child)
        while not self.stop.is_set():
            self._reap()
            now = time.monotonic()
            for child in self.children:
                if not child.running and now >= child.due and not self.stop.is_set():
                    self._start(child)
            self._write_status()
            self.stop.wait(0.1)
        self._stop_all()

    def _stop_all(self) -> None:
        for child in self.children:
            if child.running and child.process is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + _GRACE_S
        while any(c.running for c in self.children) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for child in self.children:
            if child.running and child.process is not None:
                _say(f"{child.name} did not stop within {_GRACE_S:g} s of SIGTERM: killing it")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
        self._write_status()

    def status(self) -> dict[str, Any]:
        """Each child's pid, whether it runs, its restarts and last exit status."""
        return {"pid": os.getpid(), "stopping": self.stop.is_set(),
                "children": {c.name: {"pid": c.process.pid if c.process is not None else None, "running": c.running,
                                      "restarts": c.restarts, "last_exit": c.last_exit} for c in self.children}}

    def _write_status(self) -> None:
        state = self.status()
        if self.status_file is None or state == self._written:
            return
        temporary = self.status_file.with_name(f".{self.status_file.name}.tmp")
        try:
            temporary.write_bytes(orjson.dumps({**state, "updated": time.time()}))
            os.replace(temporary, self.status_file)
        except OSError as exc:
            _say(f"cannot write {self.status_file}: {exc.strerror or exc}")
            return
        self._written = state


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: supervise until SIGTERM or SIGINT, then exit 0."""
    args = list(sys.argv[1:] if argv is None else argv)
    data = Path(os.environ.get("MLOPS_EDGE_DATA") or DEFAULT_DATA)
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _say(f"cannot use the device volume {data} (MLOPS_EDGE_DATA): {exc.strerror or exc}.")
        return 2
    supervised = children(args, os.environ)
    supervisor = Supervisor(supervised, data / "module.json")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: supervisor.stop.set())
    optional = (("agent", "MLOPS_EDGE_HUB"), ("mqtt", "MLOPS_EDGE_MQTT"))
    off = [f"no {name}: {variable} unset" for name, variable in optional if not os.environ.get(variable)]
    _say(f"supervising {', '.join(c.name for c in supervised)}" + (f" ({'; '.join(off)})" if off else ""))
    supervisor.run()
    _say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

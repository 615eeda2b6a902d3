"""Start a real ``mlops-serve`` process on a free 127.0.0.1 port and talk HTTP to it."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent / "entry_scripts"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample ``name`` of a Prometheus text exposition whose labels include ``labels``
    (None: no such sample). Label order and number formatting (``3`` or ``3.0``) do not matter."""
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) == name:
            have = dict(_LABEL.findall(match.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                found.append(float(match.group(3)))
    assert len(found) <= 1, f"{len(found)} samples {name} with labels {labels}: {found}"
    return found[0] if found else None


@dataclass
class Reply:
    """One HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def message(self) -> str:
        return str(self.json()["message"])


@dataclass
class Served:
    """A running server."""

    port: int
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: Mapping[str, str] | None = None, timeout: float = 30) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body.encode() if isinstance(body, str) else body,
                         headers=dict(headers or {}))
            response = conn.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def post_json(self, path: str, value: Any, headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("POST", path, json.dumps(value), {"Content-Type": "application/json", **(headers or {})})

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


def mlops_serve() -> str:
    exe = shutil.which("mlops-serve", path=os.path.dirname(sys.executable))
    assert exe, "mlops-serve is installed beside the interpreter"
    return exe


def start(script: str | Path | None, *args: str, env: Mapping[str, str] | None = None, port: int | None = None,
          logs: Path, cwd: Path | None = None) -> Served:
    """Start the server (do not wait for it) in ``cwd`` (default: this process's); ``script=None`` leaves the entry
    script to the environment."""
    port = free_port() if port is None else port
    path = None if script is None else script if isinstance(script, Path) else SCRIPTS / script
    name = "env" if path is None else path.stem
    logs.mkdir(parents=True, exist_ok=True)
    stdout, stderr = logs / f"{name}-{port}.out", logs / f"{name}-{port}.err"
    script_args = [] if path is None else ["--entry_script", str(path)]
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(
            [mlops_serve(), *script_args, "--port", str(port), *args],
            stdout=out, stderr=err, env={**os.environ, **(env or {})}, cwd=cwd,
        )
    return Served(port, process, stdout, stderr)


def wait_healthy(served: Served, timeout: float = 30) -> None:
    """Block until GET / answers 200; fail with the server's log if it exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise AssertionError(f"mlops-serve exited with {served.process.returncode}:\n{served.log()}")
        try:
            if served.request("GET", "/", timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"mlops-serve did not become healthy in {timeout} s:\n{served.log()}")


def stop(served: Served, timeout: float = 15) -> int:
    """SIGTERM, then SIGKILL after ``timeout``; return the exit status."""
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
        try:
            served.process.wait(timeout)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()
    return served.process.returncode


@contextmanager
def serving(
    script: str | Path | None, *args: str, logs: Path, env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[Served]:
    """A healthy server for the duration of the block (started in ``cwd``), stopped after it."""
    served = start(script, *args, env=env, logs=logs, cwd=cwd)
    try:
        wait_healthy(served)
        yield served
    finally:
        stop(served)


def raw_headers(served: Served, method: str, path: str, body: bytes | str | None = None,
                headers: Mapping[str, str] | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, every header line as sent (repeats kept, names lowercased) and body of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        conn.request(method, path, body=body.encode() if isinstance(body, str) else body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, [(k.lower(), v) for k, v in response.getheaders()], response.read()
    finally:
        conn.close()


@dataclass
class StreamedReply:
    """What a client of ``streaming.py`` saw: the head, the first part, and the rest once the gate was opened."""

    status: int
    headers: dict[str, str]
    first: bytes
    rest: bytes


def read_streamed(served: Served, gate: Path, **request: Any) -> StreamedReply:
    """POST to ``streaming.py``; read its first part, only then create ``gate`` (which the generator waits for),
    then read the rest. A server that buffers the answer sends nothing until the generator gives up waiting, and
    its second part then says so."""
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    try:
        conn.request("POST", "/score", body=json.dumps({"gate": str(gate), **request}).encode())
        response = conn.getresponse()
        first = response.readline()
        gate.touch()
        return StreamedReply(response.status, {k.lower(): v for k, v in response.getheaders()}, first,
                             response.read())
    finally:
        conn.close()

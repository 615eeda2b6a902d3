"""`make quickstart`'s script, run for real: the whole loop told as a story, in a registry of its own, and nothing
left running afterwards, also when interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mlops_magics.registry import Registry
from tests.checkout import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.serve]

SCRIPT = ROOT / "examples" / "quickstart.py"


def _processes_in(folder: Path) -> list[str]:
    """The processes working in ``folder`` or naming it on their command line (a server and its workers), the
    quickstart itself aside."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone, or not ours to look at
        if cwd.startswith(str(folder)) or (str(folder) in command and SCRIPT.name not in command):
            found.append(f"{proc.name}: {command}")
    return found


def _start(home: Path, user_home: Path, **settings: str) -> subprocess.Popen[str]:
    env = {**os.environ, "MLOPS_HOME": str(user_home), **settings}  # the user's registry: the quickstart keeps off it
    return subprocess.Popen([sys.executable, str(SCRIPT), "--home", str(home)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def test_the_quickstart_runs_the_whole_loop_and_leaves_nothing_running(tmp_path: Path) -> None:
    home, user_home = tmp_path / "quickstart", tmp_path / "user"
    process = _start(home, user_home)
    out, _ = process.communicate(timeout=240)
    assert process.returncode == 0, out
    story = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.strip()}
    assert f"in a registry of its own: {home}" in out and "your ~/.mlops is not touched" in out
    assert "iris-quickstart:1 (sklearn" in story["register"]
    assert "iris-quickstart:2 (ONNX of :1): parity PASSED" in story["onnx"] and "x faster" in out
    assert "accuracy>=0.9 PASSED" in story["validate"] and "alias production -> iris-quickstart:2" in out
    assert "iris-quickstart@production -> http://127.0.0.1:" in story["deploy"]
    assert "45 rows in 9 HTTP requests" in story["score"] and "45 rows on disk" in story["collect"]
    assert "drift against the training data: none" in story["collect"]
    assert "DRIFT in petal length (cm)" in story["drift"]
    assert "nothing left running" in story["undeploy"] and "make lab" in out
    assert not user_home.exists(), "the quickstart touched MLOPS_HOME"
    deployments = Registry(home).deployments()
    assert [(d.name, d.state) for d in deployments] == [("iris-quickstart", "deleted")]
    assert _processes_in(home) == []


def test_an_interrupted_quickstart_stops_its_server(tmp_path: Path) -> None:
    home = tmp_path / "quickstart"
    # The server writes what it collected once a minute instead of every 0.5 s: once deployed, the quickstart waits
    # (up to 10 s) for its records, so the Ctrl-C lands while it serves, however busy the machine.
    process = _start(home, tmp_path / "user", MLOPS_COLLECT_FLUSH_S="60")
    watchdog = threading.Timer(240, process.kill)
    watchdog.start()
    lines = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.lstrip().startswith("deploy"):  # serving now: Ctrl-C
                process.send_signal(signal.SIGINT)
                break
        rest, _ = process.communicate(timeout=120)
    finally:
        watchdog.cancel()
    out = "".join(lines) + rest
    assert process.returncode == 130, out
    assert "Interrupted: stopping what was started." in out and "\n  drift " not in out  # stopped mid-loop
    assert "iris-quickstart: stopped, nothing left running" in out  # it was serving, and was stopped
    assert _processes_in(home) == []
    assert [d.state for d in Registry(home).deployments()] == ["deleted"]

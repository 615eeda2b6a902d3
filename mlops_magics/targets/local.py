"""The ``local`` target: ``mlops-serve`` as a process on this machine, laid out like an Azure deployment.

Each deployment lives in ``$MLOPS_HOME/deployments/<service>/<generation>/``::

    app/score.py (+ assets)                      the entry script's folder (the app root)
    azureml-models/<name>/<version>/<files>      the model, hard links to the registry's verified files
    server.log, access.log                       the server's stderr and stdout

The process starts in its own session, so it outlives the kernel; the registry keeps its pid and port.
It binds with SO_REUSEPORT, so a reload or update starts the new generation on the same port and
stops the old one only once the new one is ready.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import mlops_backend

from mlops_magics.errors import DeployError, InvalidInputError
from mlops_magics.packaging.layout import write_layout
from mlops_magics.packaging.spec import DeploySpec
from mlops_magics.registry import Deployment, Registry
from mlops_magics.targets.base import data_dir, new_key_file, on_free_port, server_options
from mlops_magics.targets.client import post_score
from mlops_magics.targets.process import (
    alive,
    claim_port,
    free_port,
    is_listening,
    process_stamp,
    wait_until_not_listening,
)

__all__ = ["START_TIMEOUT", "LocalTarget", "answers_ready", "free_port", "is_listening", "map_script_lines", "tail",
           "wait_until_not_listening"]

#: Seconds to wait for a new service to answer /ready.
START_TIMEOUT = 120.0
#: Servers started by this process, kept so that they are reaped (not left as zombies) when they stop.
_STARTED: dict[int, subprocess.Popen[bytes]] = {}
_STOP_GRACE = 10.0
_LOG_TAIL = 30


def answers_ready(port: int, timeout: float = 1.0) -> bool:
    """True when a server on 127.0.0.1:``port`` answers GET /ready with 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def map_script_lines(text: str, script: Path | str, offset: int | None) -> str:
    """Rewrite ``File ".../score.py", line N`` as the notebook cell's line (N + offset)."""
    if offset is None:
        return text
    pattern = re.compile(rf'File "{re.escape(str(script))}", line (\d+)')
    return pattern.sub(lambda m: f"score script cell, line {int(m.group(1)) + offset}", text)


class LocalTarget:
    """Deployments as local ``mlops-serve`` processes."""

    name = "local"

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.root = registry.home / "deployments"

    # -- layout -----------------------------------------------------------------------------

    def layout(self, spec: DeploySpec, folder: Path) -> Path:
        """Write the app, environment and model folders of ``spec`` under ``folder``; return the script's path."""
        return write_layout(self.registry, spec, folder)

    # -- the contract -----------------------------------------------------------------------

    def deploy(self, spec: DeploySpec) -> Deployment:
        key_file = new_key_file(self.registry, spec)
        try:
            return on_free_port(spec, lambda port: self._start(spec, port, key_file, generation=1))
        except BaseException:
            self.registry.keys.remove(spec.service)
            raise

    def replace(self, deployment: Deployment, spec: DeploySpec) -> Deployment:
        config = deployment.config
        old_pid, old_folder, port = int(config["pid"]), config["folder"], int(config["port"])
        old_stamp = config.get("pid_stamp")
        key_file = Path(config["key_file"]) if config.get("key_file") else None
        with claim_port(port, deployment.name, owner=[old_pid] if alive(old_pid, old_stamp) else []):
            started = self._start(spec, port, key_file, generation=int(config.get("generation", 1)) + 1,
                                  keep_record=deployment)
        # The new generation serves now; the old one drains its requests and exits in the background.
        if alive(old_pid, old_stamp):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(old_pid, signal.SIGTERM)
            wait_until_not_listening(old_pid, port)  # from here on, only the new one accepts
        threading.Thread(target=self._retire, args=(old_pid, old_stamp, old_folder), daemon=True,
                         name=f"retire-{deployment.name}").start()
        return started

    def _retire(self, pid: int, stamp: str | None, folder: str) -> None:
        self.stop(pid, stamp)
        shutil.rmtree(folder, ignore_errors=True)

    def launch(self, spec: DeploySpec, folder: Path, port: int, key_file: Path | None) -> subprocess.Popen[bytes]:
        """Lay ``spec`` out in ``folder`` and start its server there; block until it is ready.

        ``key_file``: the service's key file (the server reads it; a key never goes on the command line).

        Raises:
            DeployError: the server exited or was not ready in time (it is stopped); the message has the
                reason and the log tail mapped to the script cell's lines.
        """
        if folder.exists():
            shutil.rmtree(folder)
        python, env = self._interpreter(spec, folder)
        script = self.layout(spec, folder)
        ready = folder / "ready"
        command = [python, "-m", "mlops_backend.cli", "--entry_script", str(script),
                   "--model_dir", str(folder / "azureml-models" / spec.version.name / str(spec.version.version)),
                   "--port", str(port), "--worker_count", str(spec.workers), "--host", "127.0.0.1",
                   "--reuse-port", "--ready-file", str(ready), "--verbose-errors"]
        if key_file is not None:
            command += ["--auth-key-file", str(key_file)]
        flags, server_env = server_options(spec, str(data_dir(self.registry.home, spec.service) / "collected"))
        command += flags
        env.update(server_env)
        with open(folder / "server.log", "wb") as err, open(folder / "access.log", "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                       cwd=folder / "app", start_new_session=True)
        _STARTED[process.pid] = process
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while not ready.exists():
                code = process.poll()
                if code is not None or time.monotonic() > deadline:
                    reason = (f"exited with status {code}" if code is not None
                              else f"was not ready after {START_TIMEOUT:.0f} s and was stopped")
                    log = map_script_lines(tail(folder / "server.log", _LOG_TAIL), script, spec.script_line_offset)
                    raise DeployError(f"Deployment {spec.service!r} of {spec.version.ref} failed: the server "
                                      f"{reason}.\nLog tail ({folder / 'server.log'}):\n{log}")
                time.sleep(0.02)
        except BaseException:  # not ready, or the wait was interrupted (a kernel interrupt): nothing stays running
            self.stop(process.pid)
            raise
        return process

    def _interpreter(self, spec: DeploySpec, folder: Path) -> tuple[str, dict[str, str]]:
        """The Python to run the server with, and its environment variables.

        Isolated: the spec's own virtual environment, with a copy of the server's package beside the app
        (nothing from the kernel's site-packages is visible). Otherwise: the kernel's Python.
        """
        env = dict(os.environ)
        if not spec.isolated:
            return sys.executable, env
        if not spec.inference.environment:
            raise InvalidInputError(
                f"--isolated needs an environment for {spec.version.ref}: set one with "
                f"%environment {spec.version.name} --from-kernel, or %%environment {spec.version.name}.")
        from mlops_magics.authoring.environment import Environment
        from mlops_magics.targets import venv

        python = venv.ensure(Environment.from_dict(spec.inference.environment), self.registry.home / "envs")
        runtime = folder / "runtime"
        runtime.mkdir(parents=True)
        shutil.copytree(Path(mlops_backend.__file__).parent, runtime / "mlops_backend",
                        ignore=shutil.ignore_patterns("__pycache__"))
        env["PYTHONPATH"] = str(runtime)
        env.pop("PYTHONHOME", None)
        return str(python), env

    def _start(self, spec: DeploySpec, port: int, key_file: Path | None, *, generation: int,
               keep_record: Deployment | None = None) -> Deployment:
        folder = self.root / spec.service / f"gen-{generation}"
        config: dict[str, Any] = {"pid": None, "port": port, "folder": str(folder), "workers": spec.workers,
                                  "generation": generation, "key_file": None if key_file is None else str(key_file),
                                  "isolated": spec.isolated, "script_line_offset": spec.script_line_offset,
                                  "collect": spec.collect, "sample_rate": spec.sample_rate}
        try:
            process = self.launch(spec, folder, port, key_file)
        except DeployError:
            if keep_record is None:  # a failed update leaves the running deployment's record alone
                self.registry.record_deployment(spec.service, spec.version.ref, target=self.name, state="failed",
                                                url=None, config=config)
            raise
        try:
            return self.registry.record_deployment(
                spec.service, spec.version.ref, target=self.name, state="running", url=f"http://127.0.0.1:{port}",
                config={**config, "pid": process.pid, "pid_stamp": process_stamp(process.pid)})
        except BaseException:  # unrecorded, it could never be undeployed: stop it
            self.stop(process.pid)
            raise

    def stop(self, pid: int, stamp: str | None = None) -> None:
        """Stop the server process group ``pid``: SIGTERM, then SIGKILL after a grace period.

        With ``stamp`` (:func:`~mlops_magics.targets.process.process_stamp` at start), a pid that now belongs to
        another process is left alone: nothing is signalled.
        """
        if stamp is not None and not alive(pid, stamp):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        process = _STARTED.pop(pid, None)
        if process is not None:
            process.wait()

    def delete(self, deployment: Deployment) -> None:
        pid = deployment.config.get("pid")
        if pid:
            self.stop(int(pid), self._stamp(deployment))
        self.registry.keys.remove(deployment.name)
        self.registry.set_deployment_state(deployment.name, "deleted")

    def status(self, deployment: Deployment) -> str:
        pid = deployment.config.get("pid")
        if not pid or not alive(int(pid), self._stamp(deployment)):
            return "stopped"
        return "running" if answers_ready(int(deployment.config["port"])) else "unhealthy"

    @staticmethod
    def _stamp(deployment: Deployment) -> str | None:
        """The start stamp of the deployment's process; records older than stamps give the server's command line
        a chance to prove the pid is still ours."""
        stamp = deployment.config.get("pid_stamp")
        if stamp:
            return str(stamp)
        pid = int(deployment.config["pid"])
        try:
            ours = b"mlops_backend.cli" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return process_stamp(pid) if ours else "not-ours"

    def log_file(self, deployment: Deployment) -> tuple[Path, str]:
        folder = Path(deployment.config["folder"])
        return folder / "server.log", str(folder / "app" / "score.py")

    def logs(self, deployment: Deployment, lines: int) -> str:
        folder = Path(deployment.config["folder"])
        return map_script_lines(tail(folder / "server.log", lines), folder / "app" / "score.py",
                                deployment.config.get("script_line_offset"))

    def trial(self, spec: DeploySpec, body: bytes) -> tuple[int, Any, str]:
        """Start ``spec``'s server in a throw-away folder, POST ``body`` to /score once, stop it.

        Nothing is recorded in the registry and nothing stays running.

        Returns:
            The status, the answer (JSON decoded) and the last lines of the server log, with the entry script's
            lines mapped to the notebook cell's.

        Raises:
            DeployError: the server did not start (import or init() failed); the log tail is in the message.
        """
        trials = self.registry.home / "trials"
        trials.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=trials) as tmp:
            folder, port = Path(tmp), free_port()
            process = self.launch(spec, folder, port, None)
            try:
                status, value = post_score(f"http://127.0.0.1:{port}", body, key=None, service=spec.version.ref)
            finally:
                self.stop(process.pid)
            log = map_script_lines(tail(folder / "server.log", _LOG_TAIL), folder / "app" / "score.py",
                                   spec.script_line_offset)
        return status, value, log

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
import hashlib
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
from mlops_magics.targets.base import Steps, data_dir, new_key_file, on_free_port, server_options
from mlops_magics.targets.client import post_score
from mlops_magics.targets.process import (
    alive,
    claim_port,
    free_port,
    is_listening,
    process_stamp,
    stop_group,
    wait_until_not_listening,
)

__all__ = ["START_TIMEOUT", "LocalTarget", "StartFailure", "answers_ready", "free_port", "is_listening",
           "map_script_lines", "replace_failed", "script_record", "serving_since", "start_failure", "tail",
           "wait_until_not_listening"]

#: Seconds to wait for a new service to answer /ready.
START_TIMEOUT = 120.0
#: Servers started by this process, kept so that they are reaped (not left as zombies) when they stop.
_STARTED: dict[int, subprocess.Popen[bytes]] = {}
_STOP_GRACE = 10.0
_LOG_TAIL = 30


def answers_ready(port: int, timeout: float = 1.0, host: str = "127.0.0.1") -> bool:
    """True when a server on ``host``:``port`` (default 127.0.0.1) answers GET /ready with 200."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
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


_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line \d+, in ')
_CELL_FRAME = re.compile(r"^  (score script cell, line \d+|File \"[^\"]*score\.py\", line \d+), in ")


def script_traceback(log: str) -> tuple[str, str, str]:
    """What a server log that ends in a failed start says about the entry script, without the server's frames.

    Returns:
        (phase, where, traceback): ``'import'``, ``'init'`` or ``''`` (the server itself failed); the script's
        line that raised and the exception (``'cell line 5: RuntimeError: no model'``, '' when unknown); the
        traceback of the script's own frames (and of the libraries it called), '' when there is none.
    """
    phase = "init" if re.search(r"init\(\) of \S+ failed", log) else (
        "import" if "Importing the entry script" in log else "")
    said = list(re.finditer(r"mlops-serve\[\d+\]: (init\(\) of|Importing the entry script)", log))
    start = log.find("Traceback (most recent call last):", said[-1].end() if said else 0)
    if start < 0:
        return phase, "", ""
    block = log[start:].split("\nThe above exception was the direct cause")[0]
    kept: list[str] = []
    skipping = False
    for line in block.splitlines():
        frame = _FRAME.match(line)
        if frame:
            skipping = "mlops_backend" in frame["file"] or frame["file"].startswith("<frozen ")
        elif _CELL_FRAME.match(line) or not line.startswith("    "):
            skipping = False
        if line.startswith("mlops-serve["):
            break
        if not skipping and line.strip():
            kept.append(line)
    cells = [line.strip() for line in kept if _CELL_FRAME.match(line)]
    error = next((line for line in reversed(kept) if not line.startswith(" ")), "")
    place = ""
    if cells:
        found = re.search(r"line (\d+)", cells[-1])
        place = f"cell line {found[1]}" if cells[-1].startswith("score script cell") and found else (
            f"score.py line {found[1]}" if found else "")
    where = f"{place}: {error}" if place and error else error
    return phase, where, "\n".join(kept)


class StartFailure(DeployError):
    """A new server did not start: why (``reason``), the script's part (``where``), its own ``traceback``."""

    def __init__(self, message: str, *, reason: str, phase: str, where: str, traceback: str, log: Path | str) -> None:
        super().__init__(message)
        self.reason, self.phase, self.where, self.traceback, self.log = reason, phase, where, traceback, log


def start_failure(spec: DeploySpec, reason: str, log_text: str, log_path: Path | str) -> StartFailure:
    """The error of a deployment whose server did not start: the reason, the script's line that raised and its
    own traceback (the server's frames left out), and where the whole log is (a file, or the command that shows
    it)."""
    phase, where, trace = script_traceback(log_text)
    summary = f"its entry script failed at {phase}" + (f" ({where})" if where else "") if phase else "it did not start"
    body = f"\nThe script's traceback:\n{trace}" if trace else f"\nLog tail:\n{log_text}"
    if trace and ("FileNotFoundError" in trace or "No such file" in trace) and "Contents of the model" in log_text:
        body += "\n" + log_text[log_text.index("Contents of the model"):].split("mlops-serve[")[0].rstrip()
    message = (f"Deployment {spec.service!r} of {spec.version.ref} failed: {reason}: {summary}. Nothing "
               f"is left running.{body}\nWhole log: {log_path}")
    return StartFailure(message, reason=reason, phase=phase, where=where, traceback=trace, log=log_path)


def script_record(spec: DeploySpec) -> dict[str, Any]:
    """What a deployment's record keeps about the script it serves: its sha256, where it came from, and when
    this generation started (epoch seconds)."""
    return {"script_sha256": hashlib.sha256(spec.script.encode()).hexdigest(),
            "script_origin": "generated" if spec.inference.script is None else "saved", "started_at": time.time()}


def serving_since(deployment: Deployment) -> str:
    """When the generation that serves ``deployment`` started, as local time (HH:MM:SS, with the date if not
    today)."""
    import datetime

    started = deployment.config.get("started_at")
    when = (datetime.datetime.fromtimestamp(float(started)) if started is not None
            else deployment.updated_at.astimezone().replace(tzinfo=None))
    today = datetime.datetime.now().date()
    return when.strftime("%H:%M:%S" if when.date() == today else "%Y-%m-%d %H:%M:%S")


def replace_failed(deployment: Deployment, spec: DeploySpec, failure: DeployError) -> DeployError:
    """The error of a reload or update whose new server did not start: what failed, and what still serves."""
    doing = (f"Reload of {deployment.name!r}" if spec.version.ref == f"{deployment.model_name}:"
             f"{deployment.model_version}" else f"Update of {deployment.name!r} to {spec.version.ref}")
    still = (f"{deployment.name!r} still serves {deployment.model_name}:{deployment.model_version} with the script "
             f"of {serving_since(deployment)}")
    if not isinstance(failure, StartFailure):
        return DeployError(f"{doing} failed; {still}.\n{failure}")
    what = (f"the new script failed at {failure.phase}" + (f" ({failure.where})" if failure.where else "")
            if failure.phase else f"the new one did not start ({failure.reason})")
    body = f"\nThe script's traceback:\n{failure.traceback}" if failure.traceback else ""
    return DeployError(f"{doing} failed: {what}; {still}. Fix the script and run %reload {deployment.name} again."
                       f"{body}\nWhole log of the failed start: {failure.log}")


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
            try:
                started = self._start(spec, port, key_file, generation=int(config.get("generation", 1)) + 1,
                                      keep_record=deployment)
            except DeployError as exc:
                raise replace_failed(deployment, spec, exc) from None
        # The new generation serves now; the old one drains its requests and exits in the background.
        Steps.of(spec.progress).say("stopping the previous server (it finishes the requests it holds)")
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
        steps = Steps.of(spec.progress)
        if folder.exists():
            shutil.rmtree(folder)
        if spec.isolated:
            steps.say("preparing the isolated environment")
        python, env = self._interpreter(spec, folder)
        steps.say(f"laying out {spec.version.ref}")
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
        steps.say(f"starting mlops-serve on port {port} (importing the entry script and the model's libraries, "
                  "init())")
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while not ready.exists():
                code = process.poll()
                if code is not None or time.monotonic() > deadline:
                    reason = (f"exited with status {code}" if code is not None
                              else f"was not ready after {START_TIMEOUT:.0f} s and was stopped")
                    log = map_script_lines(tail(folder / "server.log", _LOG_TAIL), script, spec.script_line_offset)
                    raise start_failure(spec, f"the server {reason}", log, folder / "server.log")
                steps.tick()
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
                                  "collect": spec.collect, "sample_rate": spec.sample_rate, **script_record(spec)}
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
        stop_group(pid, grace=_STOP_GRACE, started=_STARTED.pop(pid, None))

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

"""The ``docker`` target: the model's image, built with the docker SDK, run as a container with CPU and memory
limits (Azure's container-instance and local-Docker deployments).

Each service has a folder ``$MLOPS_HOME/deployments/<service>/volume/`` mounted in its containers at
``/var/mlops-data``: the server writes its logs (``logs/server.log``, ``logs/access.log``) and collected data
there, so they survive container restarts and replacements. Containers share the host's network (the
engine here has no bridge) and bind 127.0.0.1 only, with SO_REUSEPORT: an update starts the new container
on the same port and stops the old one once the new one is ready. They run as the calling user, so the
files on the volume are the user's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from mlops_magics.errors import DeployError, EngineError, InvalidInputError
from mlops_magics.packaging import engine as docker_engine
from mlops_magics.packaging.context import APP_ROOT
from mlops_magics.packaging.image import build_context, write_spec_context
from mlops_magics.packaging.limits import parse_memory
from mlops_magics.packaging.spec import DeploySpec
from mlops_magics.registry import Deployment, Image, Registry
from mlops_magics.targets.base import Steps, data_dir, new_key_file, on_free_port, server_options
from mlops_magics.targets.local import (
    START_TIMEOUT,
    answers_ready,
    map_script_lines,
    replace_failed,
    script_record,
    start_failure,
    tail,
)
from mlops_magics.targets.process import claim_port, wait_until_not_listening

VOLUME = "/var/mlops-data"
#: Where a container sees its service's key folder (read-only).
SECRETS = "/run/mlops-secrets"
SCRIPT = f"{APP_ROOT}/score.py"
_STOP_GRACE = 10
_LOG_TAIL = 30


def check_limits(cpu: float | None, memory: str | None) -> tuple[int | None, int | None]:
    """Nano-CPUs and bytes for Docker, after checking them against this machine.

    Raises:
        InvalidInputError: a limit is not positive or exceeds the machine.
    """
    nano = None
    if cpu is not None:
        cores = os.cpu_count() or 1
        if not 0.01 <= cpu <= cores:
            raise InvalidInputError(f"--cpu {cpu} is out of range: this machine has {cores} cores; use 0.01-{cores}.")
        nano = int(cpu * 1e9)
    return nano, None if memory is None else parse_memory(memory)


def container_name(home: Path, service: str, generation: int) -> str:
    """The container of a service's ``generation``: named after the registry too (two registries on one engine,
    each with a service of the same name, as two tutorials have, must never take each other's containers)."""
    return f"mlops-{service}-{generation}-{hashlib.sha256(str(home).encode()).hexdigest()[:8]}"


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class DockerTarget:
    """Deployments as Docker containers of the model's image."""

    name = "docker"

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.root = registry.home / "deployments"
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        """The docker SDK client (connected on first use).

        Raises:
            EngineError: no engine answers.
        """
        if self._engine is None:
            self._engine = docker_engine.client()
        return self._engine

    # -- images -----------------------------------------------------------------------------

    def image(self, spec: DeploySpec) -> Image:
        """The image of ``spec``: written, and built unless the engine already has it (or ``spec.build`` is off).

        Raises:
            DeployError: ``spec.build`` is off and the image is not on the engine.
            BuildError: the build failed.
        """
        import docker

        Steps.of(spec.progress).say(f"writing the build context of {spec.version.ref}")
        context = write_spec_context(self.registry, spec, base=spec.base_image)
        if not spec.build:
            try:
                found = self.engine.images.get(context.tag)
            except docker.errors.ImageNotFound:
                raise DeployError(f"Image {context.tag} of {spec.version.ref} is not on this Docker engine: build it "
                                  f"with %build {spec.version.ref}, or deploy without --no-build.") from None
            return self.registry.record_image(context.tag, spec.version, context_digest=context.digest,
                                              image_id=found.id, size=int(found.attrs["Size"]),
                                              base_image=context.base_image, gpu=context.gpu)
        return build_context(self.registry, spec, context, progress=spec.progress, engine=self.engine)

    # -- the contract -----------------------------------------------------------------------

    def deploy(self, spec: DeploySpec) -> Deployment:
        check_limits(spec.cpu, spec.memory)
        if spec.isolated:
            raise InvalidInputError("--isolated applies to the local target: a container is isolated already.")
        if spec.port is not None and _port_taken(spec.port):
            raise DeployError(f"Port {spec.port} is taken by another process on 127.0.0.1: pick another --port, or "
                              "leave it out to get a free one.")
        image = self.image(spec)
        key_file = new_key_file(self.registry, spec)
        try:
            return on_free_port(spec, lambda port: self._start(spec, image, port, key_file, generation=1))
        except BaseException:
            self.registry.keys.remove(spec.service)
            raise

    def replace(self, deployment: Deployment, spec: DeploySpec) -> Deployment:
        import docker

        config = deployment.config
        image = self.image(spec)
        old = self._container(deployment)
        pid = int(old.attrs["State"].get("Pid") or 0) if old is not None else 0
        key_file = Path(config["key_file"]) if config.get("key_file") else None
        with claim_port(int(config["port"]), deployment.name, owner=[pid] if pid else []):
            try:
                started = self._start(spec, image, int(config["port"]), key_file,
                                      generation=int(config.get("generation", 1)) + 1, keep_record=deployment)
            except DeployError as exc:
                raise replace_failed(deployment, spec, exc) from None
        Steps.of(spec.progress).say("stopping the previous container (it finishes the requests it holds)")
        # The new container serves now. The old one stops accepting at once (from here on, only the new one
        # answers), drains its requests and is removed in the background.
        if old is not None:
            with contextlib.suppress(docker.errors.APIError):
                old.kill(signal="SIGTERM")
            if pid:
                wait_until_not_listening(pid, int(config["port"]))
        threading.Thread(target=self._remove, args=(str(config["container"]),), daemon=True,
                         name=f"retire-{deployment.name}").start()
        return started

    def delete(self, deployment: Deployment) -> None:
        container = deployment.config.get("container")
        if container:
            self._remove(str(container))
        self.registry.keys.remove(deployment.name)
        self.registry.set_deployment_state(deployment.name, "deleted")

    def status(self, deployment: Deployment) -> str:
        try:
            container = self._container(deployment)
        except EngineError:
            return deployment.state  # the engine is away: nothing is known, nothing is changed
        if container is None:
            return "stopped"
        state = container.attrs["State"]
        if state.get("Running") and not state.get("Restarting"):
            return "running" if answers_ready(int(deployment.config["port"])) else "unhealthy"
        return "unhealthy" if state.get("Restarting") else "stopped"

    def log_file(self, deployment: Deployment) -> tuple[Path, str]:
        return Path(deployment.config["volume"]) / "logs" / "server.log", SCRIPT

    def logs(self, deployment: Deployment, lines: int) -> str:
        log, script = self.log_file(deployment)
        text = map_script_lines(tail(log, lines), script, deployment.config.get("script_line_offset"))
        container = self._container(deployment, quiet=True)
        if container is not None and container.attrs["State"].get("OOMKilled"):
            text += (f"\n[mlops] The container was killed for lack of memory (limit {deployment.config.get('memory')})."
                     " Deploy it with more --memory.")
        return text

    # -- containers ---------------------------------------------------------------------------

    def _container(self, deployment: Deployment, *, quiet: bool = False) -> Any:
        """The deployment's container, or None when it is gone (or, with ``quiet``, when no engine answers)."""
        return get_container(self.engine, str(deployment.config.get("container") or ""), quiet=quiet)

    def _remove(self, container_id: str) -> None:
        remove_container(self.engine, container_id)

    def _start(self, spec: DeploySpec, image: Image, port: int, key_file: Path | None, *, generation: int,
               keep_record: Deployment | None = None) -> Deployment:
        import docker

        nano_cpus, memory = check_limits(spec.cpu, spec.memory)
        data = data_dir(self.registry.home, spec.service)
        volume = data.parent
        (volume / "logs").mkdir(parents=True, exist_ok=True)
        data.mkdir(exist_ok=True)
        ready = volume / f"ready-{generation}"
        ready.unlink(missing_ok=True)
        model_dir = f"{APP_ROOT}/azureml-models/{spec.version.name}/{spec.version.version}"
        command = ["python", "-m", "mlops_backend.cli", "--entry_script", SCRIPT, "--model_dir", model_dir,
                   "--host", "127.0.0.1", "--port", str(port), "--worker_count", str(spec.workers), "--reuse-port",
                   "--ready-file", f"{VOLUME}/ready-{generation}", "--log-dir", f"{VOLUME}/logs", "--verbose-errors"]
        flags, environment = server_options(spec, f"{VOLUME}/{data.name}/collected")
        command += flags
        environment.update({"HOME": "/tmp", "MLOPS_DATA_DIR": f"{VOLUME}/{data.name}"})
        volumes = {str(volume): {"bind": VOLUME, "mode": "rw"}}
        if key_file is not None:  # the keys' folder, read-only: a regenerated key reaches the server as a new file
            volumes[str(key_file.parent)] = {"bind": SECRETS, "mode": "ro"}
            environment["MLOPS_AUTH_KEY_FILE"] = f"{SECRETS}/{key_file.name}"
        name = container_name(self.registry.home, spec.service, generation)
        config: dict[str, Any] = {
            "container": None, "container_name": name, "image": image.tag, "image_id": image.image_id, "port": port,
            "cpu": spec.cpu, "memory": spec.memory, "workers": spec.workers, "volume": str(volume),
            "generation": generation, "key_file": None if key_file is None else str(key_file),
            "script_line_offset": spec.script_line_offset,
            "base_image": spec.base_image, "collect": spec.collect, "sample_rate": spec.sample_rate,
            **script_record(spec),
        }
        with contextlib.suppress(docker.errors.NotFound):  # a leftover of a crashed attempt
            self.engine.containers.get(name).remove(force=True)
        Steps.of(spec.progress).say(f"starting container {name} on port {port}")
        try:
            container = self.engine.containers.run(
                image.tag, command, detach=True, name=name, network_mode="host", user=f"{os.getuid()}:{os.getgid()}",
                working_dir=APP_ROOT,  # as in Azure's images: scripts open files relative to the app root
                nano_cpus=nano_cpus, mem_limit=memory, memswap_limit=memory, environment=environment,
                volumes=volumes,
                labels={"mlops.service": spec.service, "mlops.model": spec.version.ref,
                        "mlops.home": str(self.registry.home)},
            )
        except docker.errors.ImageNotFound:
            raise DeployError(f"Image {image.tag} is not on this Docker engine any more: build it again with "
                              f"%build {spec.version.ref}.") from None
        except docker.errors.APIError as exc:
            self._failed(spec, config, keep_record)
            raise DeployError(f"Docker refused to start {spec.service!r}: {exc.explanation}") from None
        config["container"] = container.id
        try:
            self._wait_ready(spec, container, ready, config)
        except DeployError:
            self._remove(container.id)
            self._failed(spec, config, keep_record)
            raise
        except BaseException:  # the wait was interrupted (a kernel interrupt, the engine away): nothing stays running
            self._remove(container.id)
            raise
        try:
            container.update(restart_policy={"Name": "on-failure", "MaximumRetryCount": 5})
            return self.registry.record_deployment(spec.service, spec.version.ref, target=self.name,
                                                   state="running", url=f"http://127.0.0.1:{port}", config=config)
        except BaseException:  # unrecorded, it could never be undeployed: remove it
            self._remove(container.id)
            raise

    def _failed(self, spec: DeploySpec, config: dict[str, Any], keep_record: Deployment | None) -> None:
        if keep_record is None:  # a failed update leaves the running deployment's record alone
            self.registry.record_deployment(spec.service, spec.version.ref, target=self.name, state="failed",
                                            url=None, config=config)

    def _wait_ready(self, spec: DeploySpec, container: Any, ready: Path, config: dict[str, Any]) -> None:
        import docker

        steps = Steps.of(spec.progress)
        steps.say("waiting until the server is ready (importing the entry script and the model's libraries, "
                  "init())")
        offset = (Path(config["volume"]) / "logs" / "server.log").stat().st_size if (
            Path(config["volume"]) / "logs" / "server.log").exists() else 0
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            try:
                container.reload()
            except docker.errors.NotFound:
                raise DeployError(f"Deployment {spec.service!r} of {spec.version.ref} failed: its container "
                                  f"{config['container_name']} was removed while it started (by another process: "
                                  "`docker ps -a` shows what runs). Deploy it again.") from None
            state = container.attrs["State"]
            if state["Status"] in ("exited", "dead") or time.monotonic() > deadline:
                if state.get("OOMKilled") or state.get("ExitCode") == 137:
                    reason = (f"the container was killed for lack of memory (--memory {spec.memory}); deploy it "
                              "with more --memory")
                elif state["Status"] in ("exited", "dead"):
                    reason = f"the server exited with status {state.get('ExitCode')}"
                else:
                    reason = f"the server was not ready after {START_TIMEOUT:.0f} s and was stopped"
                log_path = Path(config["volume"]) / "logs" / "server.log"
                log = log_since(log_path, offset) or container.logs(tail=_LOG_TAIL).decode(errors="replace")
                log = map_script_lines(log, SCRIPT, spec.script_line_offset)
                raise start_failure(spec, reason, log, log_path)
            steps.tick()
            time.sleep(0.05)


def log_since(log: Path, offset: int, lines: int = _LOG_TAIL) -> str:
    """The last ``lines`` lines a log got after ``offset`` (what this start wrote; earlier generations append there
    too)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def get_container(engine: Any, container_id: str, *, quiet: bool = False) -> Any:
    """The container ``container_id`` of ``engine``, or None when it is gone (or, with ``quiet``, when no engine
    answers).

    Raises:
        EngineError: no engine answers (without ``quiet``).
    """
    import docker

    if not container_id:
        return None
    try:
        return engine.containers.get(container_id)
    except docker.errors.NotFound:
        return None
    except EngineError:
        if quiet:
            return None
        raise


def remove_container(engine: Any, container_id: str) -> None:
    """Stop (SIGTERM, then SIGKILL after the grace) and remove a container; one that is gone is not an error.

    Raises:
        EngineError: the engine refused.
    """
    import docker

    try:
        container = engine.containers.get(container_id)
        container.stop(timeout=_STOP_GRACE)
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: removal already in progress
            raise EngineError(f"Docker could not remove container {container_id[:12]}: {exc.explanation}") from exc

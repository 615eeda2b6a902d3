"""The real Kubernetes cluster and image registry that tests use: found running, started for the session, or a
skip that says how to get one (a failure where ``MLOPS_REQUIRE_KUBERNETES`` / ``MLOPS_REQUIRE_REGISTRY`` is set,
as in CI). The fixtures of ``tests/conftest.py`` are thin wrappers of :func:`kube_cluster` and
:func:`image_registry`; the scripts they run are ``scripts/kube/`` and ``scripts/image-registry.sh``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.serving import free_port

ROOT = Path(__file__).resolve().parent.parent
KUBE_SCRIPTS = ROOT / "scripts" / "kube"
REGISTRY_SCRIPT = ROOT / "scripts" / "image-registry.sh"
#: Where ``build.sh`` caches the binaries and where ``make kube-cluster`` keeps its cluster (the scripts' defaults).
KUBE_CACHE = Path(os.environ.get("MLOPS_KUBE_CACHE") or "/var/cache/mlops-kube/v1.20.2")
KUBE_STATE = Path(os.environ.get("MLOPS_KUBE_STATE") or "/tmp/mlops-kube")
KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")
#: The address of ``make image-registry`` (the script's default port).
DEFAULT_REGISTRY = f"127.0.0.1:{os.environ.get('MLOPS_REGISTRY_PORT') or 15000}"

#: Seconds: up.sh takes ~25 s here (it waits up to 180 s for the node itself), down.sh 2-3 s, a request 5 s.
#: Under pytest-timeout's 300 s per test (a session fixture's set-up counts towards its first test's).
UP_TIMEOUT = 240
DOWN_TIMEOUT = 120
REGISTRY_TIMEOUT = 60
REQUEST_TIMEOUT = 5

HOW_TO_GET_A_CLUSTER = ("Get one with `sudo make kube-cluster` (it builds Kubernetes v1.20.2 from Debian's source "
                        f"package into {KUBE_CACHE}, ~25 minutes the first time, seconds after that, and starts it; "
                        "it needs the Docker engine of `sudo make docker-engine`), or point MLOPS_KUBECONFIG at a "
                        "cluster's kubeconfig.")
HOW_TO_GET_A_REGISTRY = ("Get one with `sudo make image-registry` (Debian's docker-registry on "
                         f"{DEFAULT_REGISTRY}), or set MLOPS_TEST_IMAGE_REGISTRY=HOST:PORT.")


def required(switch: str) -> bool:
    """Whether the environment variable ``switch`` (``MLOPS_REQUIRE_...``) is on: set, and not 0/false/no."""
    return os.environ.get(switch, "").strip().lower() not in ("", "0", "false", "no")


def give_up(switch: str, why: str) -> NoReturn:
    """Skip, saying why; a failure where ``switch`` is on (CI), since there these tests must run."""
    if required(switch):
        pytest.fail(f"{why} ({switch} is set: these tests must run here.)", pytrace=False)
    pytest.skip(why)


# -- Kubernetes ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeCluster:
    """A Kubernetes cluster that answers: its kubeconfig, the context to use, and whether this session started it
    (then ``state_dir`` holds it, and it is stopped at the end of the session)."""

    kubeconfig: Path
    context: str
    started: bool = False
    state_dir: Path | None = None

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for this cluster (close it: ``with cluster.api_client() as api:``)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig), context=self.context)

    @property
    def env(self) -> dict[str, str]:
        """What a subprocess (or ``monkeypatch.setenv``) needs to find this cluster as its current context."""
        return {"KUBECONFIG": str(self.kubeconfig)}


def docker_engine(base: str, why: str = "These tests need a real Docker engine.") -> Any:
    """The local Docker engine holding the base image ``base``, or a skip saying how to get them (a failure where
    MLOPS_REQUIRE_DOCKER is on, as in CI)."""
    import docker

    from mlops_magics.packaging import engine

    ok, problem = engine.available()
    if not ok:
        give_up("MLOPS_REQUIRE_DOCKER", f"{problem} ({why})")
    client = engine.client()
    try:
        client.images.get(base)
    except docker.errors.ImageNotFound:
        give_up("MLOPS_REQUIRE_DOCKER", f"The base image {base} is not on the Docker engine: build it without a "
                "registry with `sudo make docker-engine`, or set MLOPS_BASE_IMAGE to one you have.")
    return client


def kube_answers(kubeconfig: Path) -> tuple[KubeCluster | None, str]:
    """The cluster of ``kubeconfig`` (its current context) if its API server answers, else None and why not."""
    try:
        from kubernetes import client, config
    except ImportError:
        return None, "the `kubernetes` client is not installed: pip install -e '.[test]'"
    if not kubeconfig.is_file():
        return None, f"{kubeconfig} does not exist"
    try:
        _, active = config.list_kube_config_contexts(config_file=str(kubeconfig))
        context = str(active["name"])
        with config.new_client_from_config(config_file=str(kubeconfig), context=context) as api:
            version = client.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 -- any failure means "does not answer", and the reason is reported
        return None, f"the cluster of {kubeconfig} does not answer: {type(exc).__name__}: {str(exc)[:300]}"
    return KubeCluster(kubeconfig, context), str(version.git_version)


def kube_binaries_cached() -> bool:
    return all(os.access(KUBE_CACHE / "bin" / name, os.X_OK) for name in KUBE_BINARIES)


def _tail(process: subprocess.CompletedProcess[str], lines: int = 15) -> str:
    return "\n".join((process.stderr or "").strip().splitlines()[-lines:])


@contextmanager
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A cluster that answers, for the session: ``$MLOPS_KUBECONFIG``'s, else ``make kube-cluster``'s, else one
    started here with ``scripts/kube/up.sh`` when the binaries are cached (stopped with ``down.sh`` on exit), else
    a skip (a failure under ``MLOPS_REQUIRE_KUBERNETES``) saying how to get one."""
    switch = "MLOPS_REQUIRE_KUBERNETES"
    configured = os.environ.get("MLOPS_KUBECONFIG")
    if configured:
        # A configured cluster that is down is an error to see, never silently replaced by another one.
        cluster, why = kube_answers(Path(configured))
        if cluster is None:
            give_up(switch, f"MLOPS_KUBECONFIG is set, but {why}. Start it (`sudo make kube-cluster` for the "
                            "project's own), or unset MLOPS_KUBECONFIG.")
        yield cluster
        return
    cluster, why = kube_answers(KUBE_STATE / "kubeconfig")
    if cluster is not None:
        yield cluster
        return
    if not kube_binaries_cached():
        give_up(switch, f"No Kubernetes cluster: MLOPS_KUBECONFIG is not set, {why}, and the binaries to start one "
                        f"are not in {KUBE_CACHE}/bin. {HOW_TO_GET_A_CLUSTER}")
    if os.geteuid() != 0:
        give_up(switch, f"No Kubernetes cluster answers ({why}), and starting one with {KUBE_SCRIPTS}/up.sh needs "
                        f"root (the kubelet mounts volumes and drives Docker). {HOW_TO_GET_A_CLUSTER}")
    # Short: the kubelet puts unix sockets under the state dir (up.sh refuses one over 60 characters).
    state = tmp_path_factory.mktemp("kube", numbered=True)
    env = {**os.environ, "MLOPS_KUBE_CACHE": str(KUBE_CACHE)}
    try:
        up = subprocess.run([str(KUBE_SCRIPTS / "up.sh"), str(state)], capture_output=True, text=True, env=env,
                            timeout=UP_TIMEOUT)
    except subprocess.TimeoutExpired:
        subprocess.run([str(KUBE_SCRIPTS / "down.sh"), str(state)], capture_output=True, timeout=DOWN_TIMEOUT)
        give_up(switch, f"{KUBE_SCRIPTS}/up.sh {state} did not finish within {UP_TIMEOUT} s (stopped again).")
    if up.returncode != 0:
        give_up(switch, f"Starting a cluster with {KUBE_SCRIPTS}/up.sh {state} failed (exit {up.returncode}):\n"
                        f"{_tail(up)}")
    try:
        cluster, why = kube_answers(state / "kubeconfig")
        if cluster is None:
            give_up(switch, f"up.sh {state} reported success, but {why}")
        yield KubeCluster(cluster.kubeconfig, cluster.context, started=True, state_dir=state)
    finally:
        down = subprocess.run([str(KUBE_SCRIPTS / "down.sh"), str(state)], capture_output=True, text=True,
                              timeout=DOWN_TIMEOUT)
        # Nothing may be left running: a cluster that does not stop is an error of the session.
        assert down.returncode == 0, f"down.sh {state} failed (exit {down.returncode}):\n{_tail(down)}"


# -- the image registry -------------------------------------------------------------------------------------------


def registry_answers(address: str) -> str | None:
    """None when a distribution registry (API v2) answers at ``address`` (HOST:PORT), else why not."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=REQUEST_TIMEOUT) as response:
            api = response.headers.get("Docker-Distribution-Api-Version", "")
    except urllib.error.HTTPError as exc:
        if exc.code == 401 and exc.headers.get("Docker-Distribution-Api-Version") == "registry/2.0":
            return f"the registry at {address} asks for credentials (the push tests need one without)"
        return f"{address} answers, but not as an image registry (HTTP {exc.code} to GET /v2/)"
    except OSError as exc:  # URLError is one: refused, timed out, no such host
        return f"no image registry answers at {address} ({exc})"
    if api != "registry/2.0":
        return f"{address} answers, but not as an image registry (Docker-Distribution-Api-Version: {api!r})"
    return None


@contextmanager
def image_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address (``127.0.0.1:PORT``) of a registry that answers, for the session: ``$MLOPS_TEST_IMAGE_REGISTRY``,
    else ``make image-registry``'s, else one started here on a free port when Debian's docker-registry is installed
    (stopped on exit), else a skip (a failure under ``MLOPS_REQUIRE_REGISTRY``) saying how to get one."""
    switch = "MLOPS_REQUIRE_REGISTRY"
    configured = os.environ.get("MLOPS_TEST_IMAGE_REGISTRY")
    if configured:
        why = registry_answers(configured)
        if why is not None:
            give_up(switch, f"MLOPS_TEST_IMAGE_REGISTRY is set, but {why}. Start it (`sudo make image-registry` "
                            "for the project's own), or unset MLOPS_TEST_IMAGE_REGISTRY.")
        yield configured
        return
    why = registry_answers(DEFAULT_REGISTRY)
    if why is None:
        yield DEFAULT_REGISTRY
        return
    if shutil.which("docker-registry") is None:
        give_up(switch, f"No image registry: {why}, and Debian's docker-registry is not installed to start one. "
                        f"{HOW_TO_GET_A_REGISTRY}")
    state = tmp_path_factory.mktemp("image-registry", numbered=True)
    env = {**os.environ, "MLOPS_REGISTRY_PORT": str(free_port())}
    start = subprocess.run([str(REGISTRY_SCRIPT), "start", str(state)], capture_output=True, text=True, env=env,
                           timeout=REGISTRY_TIMEOUT)
    try:
        if start.returncode != 0:
            give_up(switch, f"Starting a registry with {REGISTRY_SCRIPT} start {state} failed "
                            f"(exit {start.returncode}):\n{_tail(start)}")
        address = start.stdout.strip().splitlines()[-1]
        yield address
    finally:
        stop = subprocess.run([str(REGISTRY_SCRIPT), "stop", str(state)], capture_output=True, text=True,
                              timeout=REGISTRY_TIMEOUT)
        assert stop.returncode == 0, f"image-registry.sh stop {state} failed:\n{_tail(stop)}"

"""Notebooks that need a Docker engine, root or a Kubernetes cluster skip, saying why, where they cannot have one
(fail where it is required: MLOPS_REQUIRE_DOCKER, MLOPS_REQUIRE_KUBERNETES); cells tagged ``needs-torch`` (PyTorch
is optional: fine-tuning) skip, saying why, where it is not installed (fail where MLOPS_REQUIRE_TORCH is set)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

#: Notebooks that build images and run containers (08: the image its pods run).
NEEDS_DOCKER = {"03_docker.ipynb", "08_kubernetes.ipynb", "10_edge.ipynb"}
#: Notebooks that need root on this machine (10: a simulated edge device's link is a veth pair it makes).
NEEDS_ROOT = {"10_edge.ipynb"}
#: Notebooks that deploy to the cluster of the current kubeconfig context.
NEEDS_KUBERNETES = {"08_kubernetes.ipynb"}
#: The tag of cells that need PyTorch (optional: quantization-aware fine-tuning); they say so when run without it.
NEEDS_TORCH_TAG = "needs-torch"


def _docker_missing() -> str | None:
    from mlops_magics.packaging import engine

    ok, why = engine.available()
    if not ok:
        return why
    import docker

    base = os.environ.get("MLOPS_BASE_IMAGE") or "python:3.11-slim"
    try:
        engine.client().images.get(base)
    except docker.errors.ImageNotFound:
        return (f"The base image {base} is not on the Docker engine: `sudo make docker-engine` builds one without "
                "a registry (or set MLOPS_BASE_IMAGE).")
    return None


def _root_missing() -> str | None:
    if os.geteuid() != 0:
        return "a simulated edge device needs root (its link is a veth pair it makes): run the notebook as root."
    missing = [tool for tool in ("ip", "nsenter") if shutil.which(tool) is None]
    if missing:
        return f"a simulated edge device needs {' and '.join(missing)}: apt-get install iproute2 util-linux."
    return None


def _kubernetes_missing() -> str | None:
    """None when the kubeconfig the notebooks use ($KUBECONFIG, else ~/.kube/config) has a current context whose
    API server answers, else why not and how to get one."""
    from mlops_magics.targets.kube.cluster import kubeconfig_path
    from tests.infrastructure import kube_answers

    cluster, why = kube_answers(Path(kubeconfig_path()))
    if cluster is not None:
        return None
    return (f"no Kubernetes cluster answers: {why}. Point KUBECONFIG at a cluster's kubeconfig; `sudo make "
            "kube-cluster` starts a single-node test cluster (KUBECONFIG=/tmp/mlops-kube/kubeconfig).")


def _required(switch: str) -> bool:
    if switch == "MLOPS_REQUIRE_KUBERNETES":  # as the Kubernetes tests read it: set, and not 0/false/no
        from tests.infrastructure import required

        return required(switch)
    return bool(os.environ.get(switch))


def _skip_torch_cells(items: list[pytest.Item]) -> None:
    cells = [item for item in items
             if NEEDS_TORCH_TAG in getattr(getattr(item, "cell", None), "metadata", {}).get("tags", [])]
    if not cells:
        return
    try:
        if importlib.util.find_spec("torch") is not None:
            return
    except (ImportError, ValueError):  # a finder that refuses it, or a None entry in sys.modules
        pass
    why = "PyTorch is not installed (pip install torch; the CPU build is enough): fine-tuning needs it"
    if _required("MLOPS_REQUIRE_TORCH"):
        raise pytest.UsageError(f"MLOPS_REQUIRE_TORCH is set but the fine-tuning cells cannot run: {why}")
    for item in cells:
        item.add_marker(pytest.mark.skip(reason=f"needs PyTorch: {why}"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _skip_torch_cells(items)
    for needs, missing, what, switch in ((NEEDS_DOCKER, _docker_missing, "Docker", "MLOPS_REQUIRE_DOCKER"),
                                         (NEEDS_ROOT, _root_missing, "root", "MLOPS_REQUIRE_DOCKER"),
                                         (NEEDS_KUBERNETES, _kubernetes_missing, "Kubernetes",
                                          "MLOPS_REQUIRE_KUBERNETES")):
        chosen = [item for item in items if item.path.name in needs]
        if not chosen:
            continue
        why = missing()
        if why is None:
            continue
        if _required(switch):
            raise pytest.UsageError(f"{switch} is set but the {what} notebooks cannot run: {why}")
        for item in chosen:
            item.add_marker(pytest.mark.skip(reason=f"needs {what}: {why}"))

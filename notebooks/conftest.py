"""Notebooks that need a Docker engine skip, saying why, where none is reachable (fail where it is required)."""

from __future__ import annotations

import os

import pytest

#: Notebooks that build images and run containers.
NEEDS_DOCKER = {"03_docker.ipynb"}


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    docker_items = [item for item in items if item.path.name in NEEDS_DOCKER]
    if not docker_items:
        return
    why = _docker_missing()
    if why is None:
        return
    if os.environ.get("MLOPS_REQUIRE_DOCKER"):
        raise pytest.UsageError(f"MLOPS_REQUIRE_DOCKER is set but the Docker notebooks cannot run: {why}")
    for item in docker_items:
        item.add_marker(pytest.mark.skip(reason=f"needs Docker: {why}"))

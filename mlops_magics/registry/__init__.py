"""The embedded model registry (SQLite + content-addressed artifacts)."""

from __future__ import annotations

import threading
from pathlib import Path

from mlops_magics import config
from mlops_magics.registry import index
from mlops_magics.registry.records import (
    AliasEvent,
    ArtifactFile,
    Deployment,
    Endpoint,
    EndpointChange,
    Image,
    InferenceConfig,
    Lineage,
    MeasuredMetric,
    ModelVersion,
    ModelVersionList,
)
from mlops_magics.registry.refs import ModelRef, parse_ref
from mlops_magics.registry.store import Registry

__all__ = [
    "AliasEvent",
    "ArtifactFile",
    "Deployment",
    "Endpoint",
    "EndpointChange",
    "Image",
    "InferenceConfig",
    "Lineage",
    "MeasuredMetric",
    "ModelRef",
    "ModelVersion",
    "ModelVersionList",
    "Registry",
    "default_registry",
    "forget_registry",
    "or_default",
    "parse_ref",
    "registry_at",
]

_open: dict[Path, Registry] = {}
_open_lock = threading.Lock()
#: The home default_registry returned last (a change is recorded in the index of registries in use).
_last_default: Path | None = None


def default_registry() -> Registry:
    """The registry under ``$MLOPS_HOME`` (default ``~/.mlops``), opened once per process and folder.

    When ``$MLOPS_HOME`` names another folder than at the last call, the switch is recorded in the per-user index
    of registries in use (:mod:`.index`): the JupyterLab sidebar follows a kernel's registry with it.
    """
    global _last_default
    home = config.mlops_home()
    with _open_lock:
        registry = _open.get(home)
        if registry is None:
            registry = _open[home] = Registry(home)
        switched, _last_default = home != _last_default, home
    if switched:
        index.record(home)
    return registry


def registry_at(home: Path) -> Registry:
    """The registry under ``home``, opened once per process and folder, for reading another process's registry
    (the Jupyter server reads the one a kernel uses): unlike :func:`default_registry`, it records no use.

    Args:
        home: the registry folder, absolute (check it first: opening a folder makes it a registry).
    """
    home = Path(home).expanduser().resolve()
    with _open_lock:
        registry = _open.get(home)
        if registry is None:
            registry = _open[home] = Registry(home)
        return registry


def or_default(registry: Registry | None) -> Registry:
    """``registry`` itself, or the :func:`default_registry` when it is None (the ``registry=`` argument of the API)."""
    return registry if registry is not None else default_registry()


def forget_registry(home: Path) -> None:
    """Drop the registry of ``home`` that :func:`default_registry` keeps (its database file was replaced)."""
    with _open_lock:
        _open.pop(Path(home).expanduser().resolve(), None)

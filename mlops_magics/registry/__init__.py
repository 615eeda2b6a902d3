"""The embedded model registry (SQLite + content-addressed artifacts)."""

from __future__ import annotations

import threading
from pathlib import Path

from mlops_magics import config
from mlops_magics.registry.records import (
    AliasEvent,
    ArtifactFile,
    Deployment,
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
]

_open: dict[Path, Registry] = {}
_open_lock = threading.Lock()


def default_registry() -> Registry:
    """The registry under ``$MLOPS_HOME`` (default ``~/.mlops``), opened once per process and folder."""
    home = config.mlops_home()
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

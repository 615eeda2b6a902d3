"""Deployment targets: one protocol, one implementation per target, found by name.

Built in: ``local``, ``docker``, ``kubernetes``, ``edge`` and ``fpga`` (imported when first used). Third-party
targets register an entry point in the group ``mlops_magics.targets`` whose object is a class taking the
registry.
"""

from __future__ import annotations

import importlib
import importlib.metadata

from mlops_magics.errors import NotFoundError
from mlops_magics.registry import Registry
from mlops_magics.registry.refs import did_you_mean
from mlops_magics.targets.base import DeploymentTarget
from mlops_magics.targets.local import LocalTarget

__all__ = ["BUILT_IN", "DeploymentTarget", "LocalTarget", "get_target"]

BUILT_IN: dict[str, str] = {"local": "mlops_magics.targets.local:LocalTarget",
                            "docker": "mlops_magics.targets.docker:DockerTarget",
                            "kubernetes": "mlops_magics.targets.kube.target:KubernetesTarget",
                            "edge": "mlops_magics.targets.edge.target:EdgeTarget",
                            "fpga": "mlops_magics.targets.fpga:FpgaTarget"}
ENTRY_POINT_GROUP = "mlops_magics.targets"


def get_target(name: str, registry: Registry) -> DeploymentTarget:
    """The target called ``name``, built in or installed as a plugin.

    Raises:
        NotFoundError: no such target; the message lists the known ones and how to add one.
    """
    if name in BUILT_IN:
        module, cls = BUILT_IN[name].split(":")
        target: DeploymentTarget = getattr(importlib.import_module(module), cls)(registry)
        return target
    plugins = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if name in plugins:
        plugin: DeploymentTarget = plugins[name].load()(registry)
        return plugin
    known = sorted({*BUILT_IN, *plugins})
    raise NotFoundError(
        f"Unknown deployment target {name!r}.{did_you_mean(name, known)} Targets: {', '.join(known)}. A plugin adds "
        f"one with an entry point in the group {ENTRY_POINT_GROUP!r}."
    )

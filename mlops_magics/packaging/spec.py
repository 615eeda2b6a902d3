"""What a deployment or an image is made of: a model version, its entry script, its inference configuration."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlops_magics.authoring import score_script
from mlops_magics.registry import InferenceConfig, ModelVersion, Registry
from mlops_magics.registry.trust import require_trusted


@dataclass(frozen=True)
class DeploySpec:
    """What to deploy and how."""

    service: str
    version: ModelVersion
    script: str
    #: Lines above the script in the notebook cell it came from (None: generated, not from a cell).
    script_line_offset: int | None
    inference: InferenceConfig
    port: int | None = None
    workers: int = 1
    auth: bool = False
    #: Run in a virtual environment built from the inference environment only (local target).
    isolated: bool = False
    #: CPU cores and memory (Docker syntax: 512m, 1g) a container may use; None: no limit.
    cpu: float | None = None
    memory: str | None = None
    #: Image settings (container targets): base image (None: the configured default), build if missing.
    base_image: str | None = None
    build: bool = True
    #: Record each scored request (input, output, latency, status) in the service's data folder, this share of them.
    collect: bool = False
    sample_rate: float = 1.0
    #: Settings of the target itself (the kubernetes target's replicas, autoscaling, namespace...), by name.
    target_options: Mapping[str, Any] = field(default_factory=dict)
    #: Called with each build step while an image builds (container targets).
    progress: Callable[[Any], None] | None = field(default=None, compare=False, repr=False)


def entry_script(registry: Registry, version: ModelVersion) -> tuple[str, bool]:
    """The entry script a deployment of ``version`` runs, and whether it is the generated default (none saved)."""
    saved = registry.inference(version).script
    if saved is not None:
        return saved, False
    return default_script(version), True


def default_script(version: ModelVersion) -> str:
    """The entry script generated for ``version``'s flavor and signature."""
    return score_script.default_script(version.name, version.version, version.flavor, version.flavor_options,
                                       version.signature)


def deploy_spec(registry: Registry, service: str, ref: str, *, port: int | None = None, workers: int = 1,
                auth: bool = False, isolated: bool = False, **options: Any) -> DeploySpec:
    """The spec to serve ``ref`` as ``service``: the version, its entry script and inference configuration.

    ``options`` are the other :class:`DeploySpec` fields (limits, image settings, collection, progress).

    Raises:
        NotFoundError: no such model, version or alias.
        UntrustedModelError: serving the version could run code from its artifact and it is not trusted.
    """
    version = registry.get(ref)
    require_trusted(version)
    script, generated = entry_script(registry, version)
    inference = registry.inference(version)
    return DeploySpec(service=service, version=version, script=script,
                      script_line_offset=None if generated else inference.script_line_offset,
                      inference=inference, port=port, workers=workers, auth=auth, isolated=isolated, **options)

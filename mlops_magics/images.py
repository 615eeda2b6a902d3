"""Images: the API behind %package (and, with a Docker engine, %build)."""

from __future__ import annotations

from pathlib import Path

from mlops_magics.api import _registry
from mlops_magics.authoring import environment
from mlops_magics.packaging.context import BuildContext, base_image, write_context
from mlops_magics.registry import Registry
from mlops_magics.services import _spec


def package(
    ref: str,
    output: str | Path | None = None,
    *,
    base: str | None = None,
    gpu: bool = False,
    extra_steps: str = "",
    wheels: bool = True,
    registry: Registry | None = None,
) -> BuildContext:
    """Write a self-contained, deterministic Docker build context for a model version.

    Args:
        ref: ``NAME`` (latest), ``NAME:VERSION`` or ``NAME@ALIAS``.
        output: the folder (default: ``$MLOPS_HOME/contexts/<name>-<version>``); its content is replaced.
        base: the base image (default: ``$MLOPS_BASE_IMAGE`` or an official slim Python image).
        gpu: use a CUDA-capable base image (recorded with the context).
        extra_steps: Dockerfile instructions run after the base (system packages...).
        wheels: download dependencies as wheels so that the build needs no network.

    Raises:
        NotFoundError: no such model or version.
        MlopsError: the dependencies could not be downloaded.
    """
    reg = _registry(registry)
    version = reg.get(ref)
    spec = _spec(reg, version.name, version.ref, port=None, workers=1, auth=False)
    if spec.inference.environment:
        env = environment.Environment.from_dict(spec.inference.environment)
    else:
        env = environment.from_kernel(spec.script, flavor=version.flavor, framework=version.framework,
                                      serializer=version.flavor_options.get("serializer"))
    folder = Path(output) if output else reg.home / "contexts" / f"{version.name}-{version.version}"
    return write_context(reg, spec, env, folder, base=base_image(base, gpu), gpu=gpu, extra_steps=extra_steps,
                         wheels=wheels)

"""From a deploy spec to a built, recorded image: write the context, build it unless the engine has it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlops_magics.authoring import environment
from mlops_magics.errors import EngineError
from mlops_magics.packaging import engine as docker_engine
from mlops_magics.packaging.context import BuildContext, base_image, write_context
from mlops_magics.packaging.engine import BuildStep
from mlops_magics.packaging.spec import DeploySpec
from mlops_magics.registry import Image, Registry


def spec_environment(spec: DeploySpec) -> environment.Environment:
    """The environment an image of ``spec`` gets: the one set for the model, else one read from the kernel."""
    if spec.inference.environment:
        return environment.Environment.from_dict(spec.inference.environment)
    version = spec.version
    return environment.from_kernel(spec.script, flavor=version.flavor, framework=version.framework,
                                   serializer=version.flavor_options.get("serializer"))


def write_spec_context(
    registry: Registry,
    spec: DeploySpec,
    output: Path | None = None,
    *,
    base: str | None = None,
    gpu: bool = False,
    extra_steps: str | None = None,
    wheels: bool = True,
) -> BuildContext:
    """Write the build context of ``spec`` (default folder: ``$MLOPS_HOME/contexts/<name>-<version>``).

    ``extra_steps`` None means the steps stored for the model (``%%dockerfile_steps``).
    """
    version = spec.version
    folder = output or registry.home / "contexts" / f"{version.name}-{version.version}"
    steps = spec.inference.dockerfile_steps or "" if extra_steps is None else extra_steps
    return write_context(registry, spec, spec_environment(spec), folder, base=base_image(base, gpu), gpu=gpu,
                         extra_steps=steps, wheels=wheels)


def build_context(
    registry: Registry,
    spec: DeploySpec,
    context: BuildContext,
    *,
    no_cache: bool = False,
    progress: Callable[[BuildStep], None] | None = None,
    engine: Any = None,
) -> Image:
    """Build ``context`` unless the engine already holds its tag (same context digest); record the image.

    Raises:
        EngineError: no engine.
        BuildError: a step failed (the message names it and quotes its output).
    """
    import docker

    engine = engine or docker_engine.client()
    if not no_cache:
        try:
            existing = engine.images.get(context.tag)
        except docker.errors.ImageNotFound:
            existing = None
        if existing is not None:
            recorded = {i.tag: i for i in registry.images(spec.version)}.get(context.tag)
            if recorded is not None and recorded.image_id == existing.id:
                return recorded
            return registry.record_image(context.tag, spec.version, context_digest=context.digest,
                                         image_id=existing.id, size=int(existing.attrs["Size"]),
                                         base_image=context.base_image, gpu=context.gpu)
    labels = {"mlops.model": spec.version.ref, "mlops.context": context.digest, "mlops.home": str(registry.home)}
    started = time.perf_counter()
    image_id, _ = docker_engine.build(context.folder, context.tag, labels=labels, no_cache=no_cache,
                                      progress=progress, engine=engine)
    seconds = time.perf_counter() - started
    try:
        size = int(engine.images.get(image_id).attrs["Size"])
    except docker.errors.ImageNotFound:
        raise EngineError(f"The engine built {context.tag} but no longer has it: was it removed meanwhile? "
                          "Build again.") from None
    return registry.record_image(context.tag, spec.version, context_digest=context.digest, image_id=image_id,
                                 size=size, base_image=context.base_image, gpu=context.gpu, build_seconds=seconds)

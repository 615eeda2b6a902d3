"""Images: the API behind %package, %build, %%dockerfile_steps and %images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mlops_magics import display
from mlops_magics.edge.module import remove_build_stage, stage_key_of
from mlops_magics.errors import ConflictError, InvalidInputError
from mlops_magics.packaging import engine
from mlops_magics.packaging.context import BuildContext
from mlops_magics.packaging.engine import BuildStep
from mlops_magics.packaging.image import build_context, write_spec_context
from mlops_magics.packaging.spec import deploy_spec
from mlops_magics.registry import Image, Registry, or_default
from mlops_magics.registry.refs import parse_ref


def package(
    ref: str,
    output: str | Path | None = None,
    *,
    base: str | None = None,
    gpu: bool = False,
    extra_steps: str | None = None,
    wheels: bool = True,
    registry: Registry | None = None,
) -> BuildContext:
    """Write a self-contained, deterministic Docker build context for a model version.

    Args:
        ref: ``NAME`` (latest), ``NAME:VERSION`` or ``NAME@ALIAS``.
        output: the folder (default: ``$MLOPS_HOME/contexts/<name>-<version>``); its content is replaced.
        base: the base image (default: ``$MLOPS_BASE_IMAGE`` or an official slim Python image).
        gpu: use a CUDA-capable base image (recorded with the context).
        extra_steps: Dockerfile instructions run after the base (system packages...); None: the steps stored
            for the model with :func:`set_dockerfile_steps`.
        wheels: download dependencies as wheels so that the build needs no network.

    Raises:
        NotFoundError: no such model or version.
        MlopsError: the dependencies could not be downloaded.
    """
    reg = or_default(registry)
    spec = deploy_spec(reg, "package", ref)
    return write_spec_context(reg, spec, Path(output) if output else None, base=base, gpu=gpu,
                              extra_steps=extra_steps, wheels=wheels)


def build(
    ref: str,
    *,
    base: str | None = None,
    gpu: bool = False,
    extra_steps: str | None = None,
    no_cache: bool = False,
    progress: Callable[[BuildStep], None] | None = None,
    registry: Registry | None = None,
) -> Image:
    """Build a model version's image (tag ``mlops/<name>:<version>-<context digest>``) and record it.

    The context is written first (see :func:`package`); when the engine already holds an image of the same
    digest, nothing is rebuilt. Layers are cached by the engine: after a script-only change only the last
    layer is rebuilt.

    Args:
        no_cache: rebuild every layer.
        progress: called with each build step (number, total, instruction, latest output line).

    Raises:
        EngineError: no Docker engine is reachable (the message says how to start one).
        BuildError: a step failed; the message names it and quotes its output (the full log is in the
            context folder's ``build.log``).
    """
    reg = or_default(registry)
    spec = deploy_spec(reg, "package", ref)
    context = write_spec_context(reg, spec, base=base, gpu=gpu, extra_steps=extra_steps)
    return build_context(reg, spec, context, no_cache=no_cache, progress=progress)


def set_dockerfile_steps(ref: str, steps: str, *, version: int = 0, registry: Registry | None = None) -> int:
    """Store Dockerfile instructions for a model's images (``NAME``: every version, ``NAME:VERSION``: one); ''
    removes them.

    They run right after ``FROM`` (system packages, certificates...), before the Python dependencies.

    Args:
        ref: ``NAME`` or ``NAME:VERSION``.
        version: the version, when ``ref`` is a bare name (0: every version).

    Returns:
        How many instructions were stored.

    Raises:
        InvalidInputError: a line is not a Dockerfile instruction, or tries to change the base (``FROM``);
            ``ref`` names an alias.
        NotFoundError: no such model.
    """
    parsed = parse_ref(ref)
    if parsed.alias is not None:
        raise InvalidInputError(f"{ref!r}: give NAME or NAME:VERSION (the steps belong to versions, not to an alias).")
    version = parsed.version or version
    allowed = {"RUN", "ENV", "COPY", "ADD", "ARG", "LABEL", "WORKDIR", "USER", "SHELL"}
    logical = steps.replace("\\\n", " ")  # continuation lines belong to their instruction
    for number, line in enumerate(logical.splitlines(), 1):
        word = line.strip().split(" ", 1)[0].upper()
        if not word or word.startswith("#"):
            continue
        if word == "FROM":
            raise InvalidInputError("Extra Dockerfile steps cannot change the base image: use --base-image (or "
                                    "MLOPS_BASE_IMAGE) instead of FROM.")
        if word not in allowed:
            raise InvalidInputError(f"Line {number} of the Dockerfile steps starts with {word!r}, which is not an "
                                    f"instruction that can go there; use one of {', '.join(sorted(allowed))}.")
    or_default(registry).set_inference(parsed.name, version, dockerfile_steps=steps.strip() or None)
    return sum(1 for line in logical.splitlines() if line.strip() and not line.strip().startswith("#"))


class ImageList(list[Image]):
    """Built images, shown as a table."""

    def __repr__(self) -> str:
        if not self:
            return "No images built yet: %build NAME builds one."
        return "\n".join(f"{i.tag:45} {i.model_ref:14} {i.size / 1e6:7.1f} MB  {i.base_image}" for i in self)

    def _repr_html_(self) -> str:
        if not self:
            return "<p><em>No images built yet: <code>%build NAME</code> builds one.</em></p>"
        return display.table([{"tag": i.tag, "model": i.model_ref, "size": f"{i.size / 1e6:.1f} MB",
                               "base": i.base_image + (" (GPU)" if i.gpu else ""), "built": display.when(i.built_at)}
                              for i in self])


class RemovedImages(ImageList):
    """The images :func:`remove_images` removed, shown in one line: ``Removed 2 image(s): mlops/iris:1-..., ...``."""

    def __init__(self, images: list[Image], ref: str | None = None) -> None:
        super().__init__(images)
        #: What was asked for: ``NAME``, ``NAME:VERSION``, ``NAME@ALIAS`` or None (every model).
        self.ref = ref

    def __repr__(self) -> str:
        if not self:
            return f"No image built for {self.ref or 'any model'}: nothing to remove."
        return f"Removed {len(self)} image(s): {', '.join(i.tag for i in self)}"

    def _repr_html_(self) -> str:
        from html import escape

        return f"<code>{escape(repr(self))}</code>"


def _select(reg: Registry, ref: str | None) -> list[Image]:
    """Images of one version (``NAME:VERSION``, ``NAME@ALIAS``), of every version (``NAME``), or of all."""
    if not ref:
        return reg.images()
    parsed = parse_ref(ref)
    if parsed.version is None and parsed.alias is None:
        reg.get(ref)  # the model must exist
        return [i for i in reg.images() if i.model_name == parsed.name]
    return reg.images(reg.get(ref))


def list_images(ref: str | None = None, *, registry: Registry | None = None) -> ImageList:
    """The images built for a version (``NAME:VERSION``/``NAME@ALIAS``), a model (``NAME``) or all, newest first."""
    return ImageList(_select(or_default(registry), ref))


def remove_images(ref: str | None = None, *, registry: Registry | None = None) -> RemovedImages:
    """Remove the images built for a version, a model (``NAME``: every version) or all, from engine and registry.

    When none was built (e.g. everything ran as local processes), nothing is removed and no engine is needed.

    Returns:
        The images removed, shown in one line.

    Raises:
        ConflictError: a live deployment's container uses one (undeploy it first).
        EngineError: images were built but no Docker engine is reachable to remove them.
    """
    reg = or_default(registry)
    found = _select(reg, ref)
    if not found:
        return RemovedImages([], ref)
    in_use = {str(d.config.get("image")): d.name for d in reg.deployments() if d.is_live}
    for image in found:
        if image.tag in in_use:
            raise ConflictError(f"Image {image.tag} is used by the live deployment {in_use[image.tag]!r}: "
                                f"%undeploy {in_use[image.tag]} first.")
    engine.client()  # no engine: say so before anything is removed
    for image in found:
        stage = _edge_build_stage(reg, image)
        engine.remove_image(image.tag)
        reg.forget_image(image.tag)
        if stage:  # the edge module's build stage: a cached image no tag holds once the module's is gone
            remove_build_stage(stage)
    return RemovedImages(found, ref)


def _edge_build_stage(reg: Registry, image: Image) -> str:
    """The build stage key of an edge module image (from its context's Dockerfile), or ''."""
    if "-edge-" not in image.tag:
        return ""
    dockerfile = reg.home / "contexts" / f"{image.model_name}-{image.model_version}-edge" / "Dockerfile"
    try:
        return stage_key_of(dockerfile.read_text())
    except OSError:
        return ""

"""The lean module image of an edge deployment: an ONNX model, onnxruntime, numpy and the scoring server.

What makes the other images big, measured on the project's base image (``mlops-base:bookworm``, 191 MB; the
sklearn image is 552 MB, the ONNX-only image 405 MB): the base itself (locales, documentation, the system's pip
and setuptools: about 80 MB a running module never reads), the wheels copied into a layer of their own before
they are installed (a later ``rm`` cannot shrink an earlier layer), pip in the virtual environment, numpy's tests
(17 MB), and onnxruntime's C-API library (``libonnxruntime.so``, 35 MB, which the Python binding does not load:
it is linked statically) and its tools (10 MB). So the image is built in two stages: the first installs
the wheels offline into a virtual environment and removes all of that, checking that what is left still imports;
the second starts ``FROM scratch`` and copies the first stage's whole file system in one layer, then the model and
the entry script in layers of their own (an edited script rebuilds only those). No scikit-learn, no pandas: the
model is served through the generated ONNX entry script, which needs onnxruntime and numpy only.

The image has no pip: nothing is installed on a device. ``importlib.metadata`` lists what it holds.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from html import escape
from pathlib import Path
from typing import Any

from mlops_magics.edge.onnx_version import EdgeModel, QuantizationReport, served_version
from mlops_magics.errors import InvalidInputError
from mlops_magics.packaging.context import (
    APP_ROOT,
    BuildContext,
    base_image,
    context_digest,
    copy_runtime,
    runtime_pins,
    write_requirements,
)
from mlops_magics.packaging.engine import BuildStep
from mlops_magics.packaging.image import build_context, spec_environment
from mlops_magics.packaging.layout import write_layout
from mlops_magics.packaging.spec import DeploySpec, default_script, deploy_spec
from mlops_magics.registry import Image, InferenceConfig, Lineage, Registry

#: What a module needs beyond the model's own libraries, the edge runtime's pure-Python dependencies (the MQTT
#: client of the module's message input and output). Extend it here, or per call with ``extra_requirements``.
MODULE_REQUIREMENTS: tuple[str, ...] = ("paho-mqtt>=2.1",)
#: Distributions a lean module must not hold (the image is refused when its requirements name one).
NOT_IN_A_MODULE = ("scikit-learn", "pandas", "scipy", "skl2onnx", "onnx", "torch")
#: The module's command: the edge runtime when the runtime copied into the image has it, else the scoring server.
EDGE_ENTRY = "mlops_backend.edge.module"
SERVER_ENTRY = "mlops_backend.cli"
VENV = "/opt/mlops-venv"
#: The label of the build stage's images (their value: the stage's key).
STAGE_LABEL = "mlops.edge.stage"

#: What the build stage removes: paths a running module never reads. Globs; a path that is not there is skipped.
PRUNED = (
    "/usr/share/doc", "/usr/share/man", "/usr/share/info", "/usr/share/locale", "/usr/share/lintian",
    "/usr/share/python-wheels", "/var/cache/apt/*", "/var/lib/apt/lists/*", "/var/cache/debconf/*-old",
    # the system's pip, setuptools and wheel (Debian's and the official Python images')
    "/usr/lib/python3/dist-packages/pip", "/usr/lib/python3/dist-packages/pip-*",
    "/usr/lib/python3/dist-packages/setuptools", "/usr/lib/python3/dist-packages/setuptools-*",
    "/usr/lib/python3/dist-packages/pkg_resources", "/usr/lib/python3/dist-packages/_distutils_hack",
    "/usr/lib/python3/dist-packages/wheel", "/usr/lib/python3/dist-packages/wheel-*",
    "/usr/local/lib/python3*/site-packages/pip", "/usr/local/lib/python3*/site-packages/pip-*",
    "/usr/local/lib/python3*/site-packages/setuptools", "/usr/local/lib/python3*/site-packages/setuptools-*",
    "/usr/local/lib/python3*/site-packages/wheel", "/usr/local/lib/python3*/site-packages/wheel-*",
    # parts of the standard library a server never imports
    *(f"{root}/python3*/{part}" for root in ("/usr/lib", "/usr/local/lib")
      for part in ("test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "pydoc_data")),
    # the virtual environment's own pip and setuptools
    f"{VENV}/lib/python3*/site-packages/pip", f"{VENV}/lib/python3*/site-packages/pip-*",
    f"{VENV}/lib/python3*/site-packages/setuptools", f"{VENV}/lib/python3*/site-packages/setuptools-*",
    f"{VENV}/lib/python3*/site-packages/pkg_resources", f"{VENV}/lib/python3*/site-packages/_distutils_hack",
    f"{VENV}/lib/python3*/site-packages/distutils-precedence.pth", f"{VENV}/bin/pip*",
    # onnxruntime's C-API library (the Python binding links everything statically) and its offline tools
    f"{VENV}/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*",
    f"{VENV}/lib/python3*/site-packages/onnxruntime/tools",
    f"{VENV}/lib/python3*/site-packages/onnxruntime/transformers",
    f"{VENV}/lib/python3*/site-packages/onnxruntime/quantization",
)


@dataclass(frozen=True)
class ModuleImage:
    """A built module image: its tag and size, the ONNX version inside, and the conversions behind it."""

    image: Image
    model: EdgeModel
    context: BuildContext
    entry: str

    @property
    def tag(self) -> str:
        """The image's tag (``mlops/<name>:<version>-edge-<digest>``)."""
        return self.image.tag

    @property
    def quantization(self) -> QuantizationReport | None:
        """The int8 report, when the module serves a quantized model."""
        return self.model.quantization

    def __repr__(self) -> str:
        size = f"{self.image.size / 1e6:.0f} MB" if self.image.size else "size unknown"
        lines = [f"<ModuleImage {self.tag}: {self.model.version.ref} (ONNX"
                 f"{', int8' if self.quantization else ''}) of {self.model.source.ref}, {size}, runs {self.entry}>"]
        if self.model.registered:
            lines.append(f"  registered now: {', '.join(self.model.registered)}")
        if self.quantization is not None:
            lines += [f"  {line}" for line in self.quantization.lines()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        size = f"{self.image.size / 1e6:.0f} MB" if self.image.size else "size unknown"
        quantized = self.quantization._repr_html_() if self.quantization is not None else ""
        return (f"<div><p>Module image <code>{escape(self.tag)}</code> ({size}): serves "
                f"<strong>{escape(self.model.version.ref)}</strong> (ONNX) of {escape(self.model.source.ref)}"
                f"{'; registered now: ' + escape(', '.join(self.model.registered)) if self.model.registered else ''}"
                f"</p>{quantized}</div>")


def dockerfile(base: str, model_dir: str, name: str, entry: str, extra_steps: str = "", stage_key: str = "") -> str:
    """The module's Dockerfile: a build stage that installs and prunes, and a flattened ``FROM scratch`` stage.

    The build stage is labelled ``mlops.edge.stage=<stage_key>`` (a digest of what it is built from), so that its
    cached images, which no tag holds once the module image is removed, can be found and removed too.
    """
    steps = extra_steps.strip()
    checks = "import numpy, onnxruntime, mlops_backend.server, mlops_backend.app"
    return "\n".join([
        "# Generated by mlops-magics: an IoT Edge module (ONNX model, onnxruntime, numpy, the scoring server).",
        "# Stage 1 installs the wheels offline and removes what a running module never reads; the build needs no "
        "network.",
        f"FROM {base} AS build",
        *([f"LABEL {STAGE_LABEL}={stage_key}"] if stage_key else []),
        "ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
        *(["# extra steps", steps] if steps else []),
        f"RUN python3 -m venv {VENV}",
        "COPY requirements.txt /tmp/mlops/requirements.txt",
        "COPY wheels/ /tmp/mlops/wheels/",
        f"RUN {VENV}/bin/pip install --no-index --find-links /tmp/mlops/wheels -r /tmp/mlops/requirements.txt "
        "&& rm -rf /tmp/mlops",
        "COPY runtime/ /opt/mlops-runtime/",
        "COPY prune.sh /tmp/prune.sh",
        f'RUN sh /tmp/prune.sh && rm /tmp/prune.sh && PYTHONPATH=/opt/mlops-runtime {VENV}/bin/python -c "{checks}"',
        "# Stage 2: one layer with what is left, then the model and the script in small layers of their own.",
        "FROM scratch",
        "COPY --from=build / /",
        f"ENV PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "
        "PYTHONUNBUFFERED=1 PYTHONPATH=/opt/mlops-runtime",
        f"COPY azureml-models/ {APP_ROOT}/azureml-models/",
        f"COPY app/ {APP_ROOT}/",
        f"ENV AML_APP_ROOT={APP_ROOT} AZUREML_ENTRY_SCRIPT={APP_ROOT}/score.py AZUREML_MODEL_DIR={model_dir} "
        f"SERVICE_NAME={name}",
        f"WORKDIR {APP_ROOT}",
        "EXPOSE 5001",
        f'CMD ["python", "-m", "{entry}", "--entry_script", "{APP_ROOT}/score.py", "--model_dir", "{model_dir}", '
        '"--host", "0.0.0.0", "--port", "5001"]',
        "",
    ])


def prune_script() -> str:
    """The shell script the build stage runs: remove :data:`PRUNED` and numpy's tests."""
    lines = ["set -e", "# Generated by mlops-magics: what a running module never reads."]
    lines += [f"rm -rf {path}" for path in PRUNED]
    lines += [f"find {VENV}/lib -depth -type d -name tests -path '*/numpy/*' -exec rm -rf {{}} +", ""]
    return "\n".join(lines)


def module_requirements(environment_pip: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The module's requirements: the server's runtime, the model's (onnxruntime, numpy), the edge runtime's.

    Raises:
        InvalidInputError: they name a library a lean module must not hold (scikit-learn, pandas...).
    """
    requirements = sorted({*runtime_pins(), *environment_pip, *MODULE_REQUIREMENTS, *extra})
    heavy = [r for r in requirements
             if r.split("==")[0].split(">=")[0].split("[")[0].strip().lower().replace("_", "-") in NOT_IN_A_MODULE]
    if heavy:
        raise InvalidInputError(f"The module's requirements name {', '.join(heavy)}, which a lean edge module does not "
                                "hold: the ONNX version's entry script must need onnxruntime and numpy only. Remove "
                                "its saved environment or script (%environment, %%score_script) or change them.")
    return requirements


def module_spec(registry: Registry, model: EdgeModel) -> DeploySpec:
    """What the module image holds: the served ONNX version with the generated ONNX entry script, nothing else.

    Scripts, environments and assets saved for the model as a whole (``%%score_script iris``) were written for its
    original flavor (they load ``model.pkl`` with scikit-learn) and would make the module neither lean nor working,
    so the module always runs the generated ONNX script (onnxruntime and numpy only).
    """
    spec = deploy_spec(registry, model.version.name, model.version.ref)
    return replace(spec, script=default_script(model.version), script_line_offset=None, inference=InferenceConfig())


def write_module_context(
    registry: Registry,
    model: EdgeModel,
    output: Path | None = None,
    *,
    base: str | None = None,
    extra_requirements: Sequence[str] = (),
    extra_steps: str = "",
    wheels: bool = True,
) -> BuildContext:
    """Write the module image's build context for ``model`` (default folder ``$MLOPS_HOME/contexts/<name>-<v>-edge``).

    Raises:
        InvalidInputError: the served version's environment names scikit-learn, pandas...
        MlopsError: pip could not find wheels.
    """
    version = model.version
    spec = module_spec(registry, model)
    folder = output or registry.home / "contexts" / f"{version.name}-{version.version}-edge"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_layout(registry, spec, folder)
    copy_runtime(folder)
    environment = spec_environment(spec)
    write_requirements(registry, module_requirements(environment.pip, extra_requirements), environment.python,
                       folder, wheels=wheels)
    entry = EDGE_ENTRY if (folder / "runtime" / "mlops_backend" / "edge" / "module.py").exists() else SERVER_ENTRY
    model_dir = f"{APP_ROOT}/azureml-models/{version.name}/{version.version}"
    chosen = base_image(base, False)
    (folder / "prune.sh").write_text(prune_script())
    stage = hashlib.sha256()
    for part in (chosen, extra_steps, (folder / "requirements.txt").read_text(), (folder / "prune.sh").read_text(),
                 context_digest(folder / "runtime")[0]):
        stage.update(part.encode() + b"\0")
    (folder / "Dockerfile").write_text(dockerfile(chosen, model_dir, version.name, entry, extra_steps,
                                                  stage.hexdigest()[:16]))
    (folder / ".dockerignore").write_text("environment/\n")
    digest, files = context_digest(folder)
    tag = f"mlops/{version.name.lower()}:{version.version}-edge-{digest[:12]}"
    return BuildContext(folder, digest, tag, chosen, False, files)


def stage_key_of(dockerfile_text: str) -> str:
    """The key a module Dockerfile labels its build stage with (:data:`STAGE_LABEL`); empty when it has none."""
    match = re.search(rf"^LABEL {re.escape(STAGE_LABEL)}=(\S+)$", dockerfile_text, re.MULTILINE)
    return match[1] if match else ""


def remove_build_stage(key: str, engine: Any = None) -> int:
    """Remove the build stage's cached images labelled ``key`` that no tag holds; return how many went.

    Images still used (a tag, a child, a container) stay: the engine refuses, and that is not an error.
    """
    import docker

    from mlops_magics.packaging import engine as docker_engine

    client = engine or docker_engine.client()
    removed = 0
    for image in client.images.list(all=True, filters={"label": f"{STAGE_LABEL}={key}", "dangling": True}):
        try:
            client.images.remove(image.id, noprune=False)
            removed += 1
        except docker.errors.APIError:
            continue
    return removed


def context_entry(context: BuildContext) -> str:
    """The module command a context's image runs (the edge runtime's, or the scoring server's)."""
    return EDGE_ENTRY if f'"-m", "{EDGE_ENTRY}"' in context.dockerfile else SERVER_ENTRY


def module_image(
    ref: str,
    *,
    registry: Registry,
    quantize: str | None = None,
    data: Any = None,
    labels: Any = None,
    base: str | None = None,
    extra_requirements: Sequence[str] = (),
    no_cache: bool = False,
    provenance: Lineage | None = None,
    progress: Callable[[BuildStep], None] | None = None,
    engine: Any = None,
) -> ModuleImage:
    """Build (or find) the lean module image of ``ref``: its ONNX version, onnxruntime, numpy, the scoring server.

    A version that is not ONNX is converted first and registered as ``%onnx`` does (parity checked; a conversion
    registered before is used again); ``quantize="int8"`` serves an int8 quantization, compared with the float
    model (:class:`QuantizationReport`). The image is recorded with the served version (``%images`` lists it) and
    is not rebuilt when the engine already has its context digest.

    Args:
        ref: ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.
        registry: the registry holding the model.
        quantize: ``"int8"``, or None for the float model.
        data, labels: rows to check the conversions on (default: the input example), and their labels.
        base: the base image of the build stage (default: ``$MLOPS_BASE_IMAGE``, else the official slim Python).
        extra_requirements: further pure-Python requirements of the module (wheels installed offline).
        progress: called with each build step.

    Returns:
        The image, the served version and the conversions behind it.

    Raises:
        NotFoundError, InvalidInputError, UntrustedModelError, ConversionError: as :func:`served_version`.
        EngineError: no Docker engine. BuildError: a step failed (named, with its output).
    """
    model = served_version(registry, ref, quantize=quantize, data=data, labels=labels, provenance=provenance)
    context = write_module_context(registry, model, base=base, extra_requirements=extra_requirements)
    image = build_context(registry, module_spec(registry, model), context, no_cache=no_cache, progress=progress,
                          engine=engine)
    return ModuleImage(image, model, context, context_entry(context))

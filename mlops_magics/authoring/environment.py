"""Environments: what a deployment installs, from a cell (conda YAML or pip lines) or from the kernel.

``from_kernel`` looks at what the entry script imports and what the model's flavor needs, maps the
modules to the distributions that provide them, and pins each to the version installed in this
kernel: the environment that is known to work, because the notebook just ran with it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import platform
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from mlops_magics.authoring.score_script import SERVER_PROVIDED
from mlops_magics.errors import InvalidInputError

#: What every flavor's artifact needs to load, beyond the framework itself.
FLAVOR_NEEDS = {"sklearn": ("joblib",), "pickle": ("cloudpickle",), "pytorch": ("torch",), "onnx": ("onnxruntime",)}


#: The oldest Python the scoring server (``mlops_backend``) runs on: an environment asking for an older one gets this
#: kernel's instead.
OLDEST_PYTHON = (3, 10)

#: Azure ML's serving packages: left out of an environment, because the scoring server provides what entry scripts
#: import from them (and they would pull in Azure's own server).
AZURE_SERVING = ("azureml-defaults", "azureml-core", "azureml-inference-server-http", "azureml-contrib-services",
                 "azureml-monitoring", "azureml-model-management-sdk")

#: What the scoring server provides in their place, in words.
SERVED_INSTEAD = ("azureml.core.model.Model.get_model_path, azureml.contrib.services.aml_request / aml_response "
                  "(AMLRequest, AMLResponse, rawhttp) and azureml.monitoring.ModelDataCollector")


def kernel_python() -> str:
    """This kernel's Python, major.minor: what local deployments run."""
    return ".".join(platform.python_version_tuple()[:2])


@dataclass(frozen=True)
class Environment:
    """A Python version and the packages a deployment installs."""

    python: str
    pip: tuple[str, ...]
    conda: tuple[str, ...] = ()
    channels: tuple[str, ...] = ("conda-forge",)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def requirements_txt(self) -> str:
        """pip's requirements file."""
        return "".join(f"{r}\n" for r in self.pip)

    def write(self, folder: Path, name: str = "mlops-env") -> None:
        """Write ``requirements.txt`` and ``conda.yaml`` (environment ``name``) into ``folder`` (made if missing)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "requirements.txt").write_text(self.requirements_txt())
        (folder / "conda.yaml").write_text(self.conda_yaml(name))

    def conda_yaml(self, name: str = "mlops-env") -> str:
        """A conda environment file with the pip packages under ``pip:``."""
        lines = [f"name: {name}", "channels:", *[f"  - {c}" for c in self.channels], "dependencies:",
                 f"  - python={self.python}", *[f"  - {d}" for d in self.conda], "  - pip", "  - pip:"]
        lines += [f"    - {r}" for r in self.pip]
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        """What the registry stores."""
        return {"python": self.python, "pip": list(self.pip), "conda": list(self.conda),
                "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Environment:
        """The inverse of :meth:`as_dict`."""
        return cls(str(data["python"]), tuple(data.get("pip", ())), tuple(data.get("conda", ())),
                   tuple(data.get("channels", ("conda-forge",))))

    def __repr__(self) -> str:
        lines = [f"Environment: Python {self.python}, {len(self.pip)} pip package(s)"]
        lines += [f"  {r}" for r in (*self.conda, *self.pip)]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _requirement(text: str, where: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise InvalidInputError(f"{where}: {text!r} is not a valid requirement ({exc}). Write e.g. "
                                "scikit-learn==1.5.2 or numpy>=1.26.") from None


def parse(text: str, *, line_offset: int = 0) -> Environment:
    """Read a conda environment YAML or pip requirement lines.

    Raises:
        InvalidInputError: the YAML or a requirement is malformed; the message names the cell line.
    """
    stripped = [line.strip() for line in text.splitlines()]
    if any(line.startswith("dependencies:") for line in stripped):
        return _parse_conda(text)
    pip = []
    for number, line in enumerate(stripped, start=1 + line_offset):
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise InvalidInputError(f"cell line {number}: pip options ({line.split()[0]}) are not supported in an "
                                    "environment; list requirements only.")
        pip.append(str(_requirement(line.split(" #")[0].strip(), f"cell line {number}")))
    kept, notes = without_azure_serving(pip)
    if not kept:
        raise InvalidInputError(" ".join(["The environment is empty: give pip requirement lines or a conda YAML.",
                                          *notes]))
    return Environment(python=kernel_python(), pip=tuple(kept), warnings=tuple(notes))


def _parse_conda(text: str) -> Environment:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"The conda environment is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("dependencies"), list):
        raise InvalidInputError("A conda environment needs a 'dependencies:' list.")
    python = kernel_python()
    notes: list[str] = []
    conda: list[str] = []
    pip: list[str] = []
    for item in data["dependencies"]:
        if isinstance(item, dict) and "pip" in item:
            pip += [str(_requirement(str(r), "pip section")) for r in item["pip"] or []]
        elif isinstance(item, str) and (asked := _PYTHON.match(item.strip())):
            python, notes = choose_python(asked[1] or "")
        elif isinstance(item, str) and item.strip() != "pip":
            conda.append(item.strip())
    channels = tuple(str(c) for c in data.get("channels") or ("conda-forge",))
    pip, left_out = without_azure_serving(pip)
    conda, conda_left_out = without_azure_serving(conda)
    return Environment(python=python, pip=tuple(pip), conda=tuple(conda), channels=channels,
                       warnings=(*notes, *left_out, *conda_left_out))


#: A conda ``python`` dependency: ``python``, ``python=3.8``, ``python==3.8.5``, ``python>=3.8``.
_PYTHON = re.compile(r"python\s*((?:[<>=!~]=?)\s*\S+)?$")


def choose_python(requested: str) -> tuple[str, list[str]]:
    """The Python deployments use for a conda ``python`` spec (``=3.6.2``, ``3.8``, ``>=3.8``), and what was not
    honoured, said with what is done instead.

    Deployments choose Python by minor version: local ones run this kernel's, containers their base image's. A
    version older than the scoring server runs on (:data:`OLDEST_PYTHON`) is replaced by this kernel's; a patch
    level is dropped; a range is met with this kernel's version when it allows it.

    Raises:
        InvalidInputError: the spec is no Python version or range.
    """
    here = kernel_python()
    spec = requested.strip().lstrip("=").strip()
    if not spec:
        return here, []
    exact = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+|\*))?", spec)
    if exact is None:
        try:
            allowed = SpecifierSet(requested.strip())
        except InvalidSpecifier:
            raise InvalidInputError(f"python={spec} is not a Python version: write e.g. python={here} (or "
                                    f"python>={here}).") from None
        if allowed.contains(platform.python_version()):
            return here, []
        return here, [f"python{requested.strip()} cannot be honoured: deployments use Python {here} (this "
                      "kernel's) instead. Check that your pinned packages install on it."]
    major, minor, patch = int(exact[1]), int(exact[2]), exact[3]
    if (major, minor) < OLDEST_PYTHON:
        oldest = ".".join(map(str, OLDEST_PYTHON))
        return here, [f"python={spec} cannot be honoured: the scoring server runs on Python {oldest} or newer. "
                      f"Deployments use Python {here} (this kernel's) instead; check that your pinned packages "
                      f"install on it (old pins often have no wheels for Python {here})."]
    chosen, notes = f"{major}.{minor}", []
    if patch is not None and patch != "*":
        notes.append(f"python={spec}: deployments choose Python by minor version, so they use {chosen} (the patch "
                     "level is the container base image's, or this kernel's for local deployments).")
    if chosen != here:
        notes.append(f"python={chosen} differs from this kernel's Python {here}: local deployments run {here} (and "
                     f"isolated ones refuse {chosen}); a container needs a base image with Python {chosen} "
                     f"(--base-image python:{chosen}-slim).")
    return chosen, notes


def without_azure_serving(requirements: Sequence[str]) -> tuple[list[str], list[str]]:
    """Return ``requirements`` without Azure ML's serving packages, and notes on what was left out or is Azure's.

    Left out: :data:`AZURE_SERVING`. Other ``azureml-*`` packages are kept (installed as listed) with a note: the
    scoring server provides only :data:`SERVED_INSTEAD`.
    """
    kept, dropped, azure = [], [], []
    for text in requirements:
        name = canonicalize_name(re.split(r"[\s\[<>=!~;@]", text.strip(), maxsplit=1)[0])
        if name in AZURE_SERVING:
            dropped.append(name)
        else:
            kept.append(text)
            if name.startswith("azureml-"):
                azure.append(name)
    notes = []
    if dropped:
        listed = ", ".join(dropped)
        notes.append(f"{listed} {'is' if len(dropped) == 1 else 'are'} left out: Azure ML's serving packages are not "
                     f"needed here, the scoring server provides what entry scripts import from them ({SERVED_INSTEAD})."
                     )
    if azure:
        notes.append(f"{', '.join(azure)} {'is an Azure ML package' if len(azure) == 1 else 'are Azure ML packages'}: "
                     "installed as listed, but the scoring server provides only "
                     f"{SERVED_INSTEAD}; anything else that needs an Azure workspace fails outside Azure.")
    return kept, notes


@lru_cache(maxsize=1)
def _distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _imported_modules(source: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
        for name in names:
            top = name.split(".")[0]
            if top not in found:
                found.append(top)
    return found


def from_kernel(script: str, *, flavor: str, framework: str | None, serializer: str | None = None,
                extra: Sequence[str] = ()) -> Environment:
    """The environment this kernel proves works: what the script and the flavor import, pinned.

    Args:
        script: the entry script (its imports are read, it is not run).
        flavor: the model's flavor (adds what loading the artifact needs).
        framework: the distribution the model was trained with (e.g. 'scikit-learn').
        serializer: how the artifact was pickled; 'cloudpickle' (notebook-defined classes) needs it to load.
        extra: more distributions to include.
    """
    wanted: list[str] = []
    for module in _imported_modules(script):
        if module in SERVER_PROVIDED or module in sys.stdlib_module_names:
            continue
        wanted += _distributions().get(module, [module])
    # An ONNX model is served by onnxruntime; the onnx library that wrote it is not needed to load it.
    trained_with = [framework] if framework and not (flavor == "onnx" and framework == "onnx") else []
    wanted += [*FLAVOR_NEEDS.get(flavor, ()), *trained_with,
               *(["cloudpickle"] if serializer == "cloudpickle" else []), *extra]
    pins: dict[str, str] = {}
    warnings = []
    for dist in wanted:
        key = canonicalize_name(dist)
        if key in pins:
            continue
        try:
            pins[key] = f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            warnings.append(f"{dist} is imported but not installed in this kernel; it is left unpinned.")
            pins[key] = dist
    return Environment(python=kernel_python(), pip=tuple(sorted(pins.values())), warnings=tuple(warnings))


def kernel_mismatches(env: Environment, framework: str | None, trained_with: str | None) -> list[str]:
    """Warnings for pins that differ from what the model was trained with (and from this kernel)."""
    found = []
    for text in env.pip:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        try:
            installed = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if framework and name == canonicalize_name(framework) and trained_with and not req.specifier.contains(
                trained_with, prereleases=True):
            found.append(f"{req} does not allow {framework} {trained_with}, the version the model was trained "
                         "with: the deployment may fail to load it or predict differently.")
        elif req.specifier and not req.specifier.contains(installed, prereleases=True):
            found.append(f"{req} differs from this kernel's {req.name} {installed}.")
    return found

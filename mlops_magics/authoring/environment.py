"""Environments: what a deployment installs, from a cell (conda YAML or pip lines) or from the kernel.

``from_kernel`` looks at what the entry script imports and what the model's flavor needs, maps the
modules to the distributions that provide them, and pins each to the version installed in this
kernel: the environment that is known to work, because the notebook just ran with it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from mlops_magics.authoring.score_script import SERVER_PROVIDED
from mlops_magics.errors import InvalidInputError

#: What every flavor's artifact needs to load, beyond the framework itself.
FLAVOR_NEEDS = {"sklearn": ("joblib",), "pickle": ("cloudpickle",), "pytorch": ("torch",), "onnx": ("onnxruntime",)}


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
    if not pip:
        raise InvalidInputError("The environment is empty: give pip requirement lines or a conda YAML.")
    return Environment(python=platform.python_version().rsplit(".", 1)[0], pip=tuple(pip))


def _parse_conda(text: str) -> Environment:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"The conda environment is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("dependencies"), list):
        raise InvalidInputError("A conda environment needs a 'dependencies:' list.")
    python = platform.python_version().rsplit(".", 1)[0]
    conda: list[str] = []
    pip: list[str] = []
    for item in data["dependencies"]:
        if isinstance(item, dict) and "pip" in item:
            pip += [str(_requirement(str(r), "pip section")) for r in item["pip"] or []]
        elif isinstance(item, str) and item.split("=")[0].strip() == "python":
            python = item.split("=", 1)[1].lstrip("=").strip() if "=" in item else python
        elif isinstance(item, str) and item.strip() != "pip":
            conda.append(item.strip())
    channels = tuple(str(c) for c in data.get("channels") or ("conda-forge",))
    return Environment(python=python, pip=tuple(pip), conda=tuple(conda), channels=channels)


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
    return Environment(python=platform.python_version().rsplit(".", 1)[0], pip=tuple(sorted(pins.values())),
                       warnings=tuple(warnings))


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

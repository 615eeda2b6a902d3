"""The layering contract covers the whole package: a new module must take its place in a layer."""

from __future__ import annotations

import pkgutil
import sys
from pathlib import Path

import mlops_magics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _layered() -> set[str]:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in config if c["type"] == "layers")["layers"]
    return {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}


def test_every_module_of_the_package_is_in_a_layer_of_the_contract() -> None:
    modules = {f"mlops_magics.{m.name}" for m in pkgutil.iter_modules(mlops_magics.__path__)}
    modules.discard("mlops_magics.labextension")  # the built sidebar (data files), not Python
    assert modules - _layered() == set(), "add the new module to a layer in pyproject.toml [tool.importlinter]"
    assert _layered() - modules == set(), "a layer names a module that does not exist"

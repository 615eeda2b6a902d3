"""The flavor contract: what saving a model records (SavedModel), what a flavor does (Flavor), where a
model comes from (its framework and version)."""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

PICKLE_FILE = "model.pkl"
SKOPS_FILE = "model.skops"
ONNX_FILE = "model.onnx"
TORCH_FILE = "model.pt"

#: How an in-memory model can be written: ``pickle`` (joblib, or cloudpickle for notebook classes; the default)
#: or ``skops`` (scikit-learn models, loaded without pickle).
FORMATS = ("pickle", "skops")

_DISTRIBUTIONS = {"sklearn": "scikit-learn", "skl2onnx": "skl2onnx", "torch": "torch", "onnx": "onnx"}


@dataclass(frozen=True)
class SavedModel:
    """What a flavor wrote: its name, the framework it belongs to, and options to load it."""

    flavor: str
    framework: str | None = None
    framework_version: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


class Flavor(Protocol):
    """A kind of model the registry knows how to save and load."""

    name: str
    description: str

    def accepts(self, obj: Any) -> bool:
        """True if ``obj`` is of this flavor."""

    def save(self, obj: Any, folder: Path) -> SavedModel:
        """Write ``obj`` into the empty ``folder``.

        Raises:
            SerializationError: it cannot be saved; the message names the part that failed.
        """

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool = False) -> Any:
        """Read the model back from a verified artifact folder.

        Args:
            trusted: the version is trusted (:mod:`mlops_magics.registry.trust`); without it nothing that can run code
                from the artifact is read.

        Raises:
            UntrustedModelError: loading it would run code from the artifact and it is not trusted.
        """


@lru_cache(maxsize=1)
def _package_map() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def framework_of(obj: Any) -> tuple[str | None, str | None]:
    """Return (distribution name, version) of the package that defines ``type(obj)``."""
    top = type(obj).__module__.split(".")[0]
    if top in ("__main__", "builtins"):
        return None, None
    dist = _DISTRIBUTIONS.get(top) or next(iter(_package_map().get(top, [])), top)
    try:
        return dist, importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return top, getattr(sys.modules.get(top), "__version__", None)


def qualified(obj: Any) -> str:
    """The module and class name of ``obj``'s type, as messages name it."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"



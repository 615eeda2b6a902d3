"""SDK v1 notebooks, run locally: ``azureml.core`` backed by our registry and targets.

``%load_ext mlops_magics.azureml`` (or ``import mlops_magics.azureml``) makes these importable in the kernel when
no real ``azureml-core`` is installed (a real one is left alone, and this says so):

- ``azureml.core`` (``Workspace``, ``Model``, ``Environment``, ``Webservice``), ``azureml.core.workspace``,
  ``azureml.core.model`` (``Model``, ``InferenceConfig``), ``azureml.core.environment``,
  ``azureml.core.conda_dependencies`` (``CondaDependencies``), ``azureml.core.webservice`` (``Webservice``,
  ``LocalWebservice``, ``AciWebservice``, ``AksWebservice``; also ``.local``, ``.aci``, ``.aks``),
  ``azureml.core.profile`` (``ModelProfile``), ``azureml.exceptions``;
- the modules deployed entry scripts import, the same files the scoring server ships
  (:data:`mlops_backend.entry.COMPAT_PATH`): ``azureml.monitoring`` (``ModelDataCollector``) and
  ``azureml.contrib.services.aml_request`` / ``aml_response``.

Anything else under ``azureml`` (``azureml.core.Experiment``, ``azureml.core.compute``, ``service.get_token()``)
raises one error naming the call and what to use instead (:mod:`mlops_magics.azureml.unsupported`); other
``azureml.*`` distributions really installed (``azureml-dataprep``...) still import.

The mapping, call by call, is in the modules: :mod:`~mlops_magics.azureml.workspace`,
:mod:`~mlops_magics.azureml.model`, :mod:`~mlops_magics.azureml.environment`,
:mod:`~mlops_magics.azureml.webservice`, :mod:`~mlops_magics.azureml.profile`, and the layout of entry scripts and
source directories in :mod:`~mlops_magics.azureml.staging`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from mlops_backend.entry import COMPAT_PATH

from mlops_magics.azureml.unsupported import UnsupportedSdkImport, message, refuse_import

#: Our modules: SDK module name -> (our module, the names it exports).
PROVIDED: dict[str, tuple[str, tuple[str, ...]]] = {
    "azureml": ("", ()),
    "azureml.core": ("", ("Workspace", "Model", "Environment", "Webservice")),
    "azureml.core.workspace": ("workspace", ("Workspace",)),
    "azureml.core.model": ("model", ("Model", "InferenceConfig", "ModelPackage")),
    "azureml.core.environment": ("environment", ("Environment", "PythonSection", "DockerSection")),
    "azureml.core.conda_dependencies": ("environment", ("CondaDependencies",)),
    "azureml.core.webservice": ("webservice", ("Webservice", "LocalWebservice", "AciWebservice", "AksWebservice")),
    "azureml.core.webservice.webservice": ("webservice", ("Webservice",)),
    "azureml.core.webservice.local": ("webservice", ("LocalWebservice", "LocalWebserviceDeploymentConfiguration")),
    "azureml.core.webservice.aci": ("webservice", ("AciWebservice", "AciServiceDeploymentConfiguration")),
    "azureml.core.webservice.aks": ("webservice", ("AksWebservice", "AksServiceDeploymentConfiguration")),
    "azureml.core.profile": ("profile", ("ModelProfile",)),
    "azureml.exceptions": ("exceptions", ()),  # every name of our exceptions module
    "azureml.contrib": ("", ()),
    "azureml.contrib.services": ("", ()),
}
#: The scoring server's own shims, loaded from its files (one implementation in the kernel and in deployments).
SHIPPED = {
    "azureml.monitoring": COMPAT_PATH / "azureml" / "monitoring" / "__init__.py",
    "azureml.contrib.services.aml_request": COMPAT_PATH / "azureml" / "contrib" / "services" / "aml_request.py",
    "azureml.contrib.services.aml_response": COMPAT_PATH / "azureml" / "contrib" / "services" / "aml_response.py",
}
_PACKAGES = {"azureml", "azureml.core", "azureml.core.webservice", "azureml.contrib", "azureml.contrib.services"}
#: What ``azureml.core`` exports lives in these modules.
_CORE = {"Workspace": "workspace", "Model": "model", "Environment": "environment", "Webservice": "webservice"}
_said: set[str] = set()
#: The ``azureml`` modules imported before :func:`install` (put back by :func:`uninstall`).
_displaced: dict[str, ModuleType] = {}


def real_sdk() -> str | None:
    """The version of a really installed ``azureml-core`` (None: there is none)."""
    try:
        return importlib.metadata.version("azureml-core")
    except importlib.metadata.PackageNotFoundError:
        return None


def _namespace_portions() -> list[str]:
    """The ``azureml`` folders of other installed ``azureml-*`` distributions (not the server's shims)."""
    found = []
    for entry in sys.path:
        folder = Path(entry or ".") / "azureml"
        if folder.is_dir() and Path(entry or ".").resolve() != COMPAT_PATH.resolve():
            found.append(str(folder))
    return found


class SdkLoader(importlib.abc.Loader):
    """Makes one of :data:`PROVIDED`'s modules from our implementation modules."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        name = module.__name__
        home, names = PROVIDED[name]
        if home:
            implementation = importlib.import_module(f"mlops_magics.azureml.{home}")
            exported = names or tuple(getattr(implementation, "__all__", ()))
            for item in exported:
                setattr(module, item, getattr(implementation, item))
            module.__all__ = list(exported)  # type: ignore[attr-defined]
        elif name == "azureml.core":
            for item, where in _CORE.items():
                setattr(module, item, getattr(importlib.import_module(f"mlops_magics.azureml.{where}"), item))
            module.__all__ = list(_CORE)  # type: ignore[attr-defined]
        module.__doc__ = f"SDK v1's {name}, run locally by mlops_magics.azureml."

        def __getattr__(attribute: str) -> Any:
            if attribute.startswith("_"):
                raise AttributeError(attribute)
            refuse_import(name, attribute)

        setattr(module, "__getattr__", __getattr__)  # noqa: B010 -- PEP 562 on a module made here


class SdkFinder:
    """The meta path finder: our ``azureml`` modules, the server's shims, and the clear error for the rest."""

    loader = SdkLoader()

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "azureml" and not fullname.startswith("azureml."):
            return None
        if fullname in SHIPPED:
            file = SHIPPED[fullname]
            return importlib.util.spec_from_file_location(
                fullname, file, submodule_search_locations=[] if file.name == "__init__.py" else None)
        if fullname in PROVIDED:
            spec = importlib.machinery.ModuleSpec(fullname, self.loader, is_package=fullname in _PACKAGES)
            if fullname == "azureml" and spec.submodule_search_locations is not None:
                spec.submodule_search_locations.extend(_namespace_portions())
            return spec
        if fullname.count(".") == 1 and importlib.machinery.PathFinder.find_spec(fullname, _namespace_portions()):
            return importlib.machinery.PathFinder.find_spec(fullname, _namespace_portions())
        raise UnsupportedSdkImport(message(f"import {fullname}", fullname.rsplit(".", 1)[-1]), name=fullname)


FINDER = SdkFinder()


def installed() -> bool:
    """True when ``azureml`` imports come from here."""
    return FINDER in sys.meta_path


def install() -> bool:
    """Make ``azureml.core`` and the rest importable, unless a real azureml-core is installed (then say so).

    Returns:
        True when the local SDK v1 layer is in place.
    """
    version = real_sdk()
    if version is not None:
        if "real" not in _said:
            _said.add("real")
            print(f"azureml-core {version} is installed: `import azureml.core` is the real SDK (it talks to Azure), "
                  "and mlops_magics.azureml leaves it alone. To run SDK v1 notebooks locally, use a kernel without it "
                  "(pip uninstall azureml-core).")
        return False
    if installed():
        return True
    for name in [n for n in sys.modules if n == "azureml" or n.startswith("azureml.")]:
        _displaced[name] = sys.modules.pop(name)  # e.g. the server's shims, imported from its folder in-process
    sys.meta_path.insert(0, FINDER)
    return True


def uninstall() -> None:
    """Take the layer away: ``azureml`` modules are again those imported before it was installed, if any."""
    while FINDER in sys.meta_path:
        sys.meta_path.remove(FINDER)
    for name in [n for n in sys.modules if n == "azureml" or n.startswith("azureml.")]:
        del sys.modules[name]
    sys.modules.update(_displaced)
    _displaced.clear()


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext mlops_magics.azureml``: install the layer and say what it is."""
    if install() and "loaded" not in _said:
        _said.add("loaded")
        print("SDK v1 runs locally: azureml.core (Workspace, Model, Environment, InferenceConfig, Local/Aci/Aks"
              "Webservice) is backed by the registry at $MLOPS_HOME and the local, docker and kubernetes targets.")


install()

__all__ = ["FINDER", "PROVIDED", "SHIPPED", "SdkFinder", "install", "installed", "load_ipython_extension",
           "real_sdk", "uninstall"]

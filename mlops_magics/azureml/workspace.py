"""``azureml.core.Workspace`` in the kernel: a local workspace, the registry under ``$MLOPS_HOME``.

Every workspace name maps to the same local registry (the one ``%models`` and ``mlops`` see): its name,
subscription and resource group are kept only to be shown and to tag collected data as Azure did.
``Workspace.from_config()`` reads a ``config.json`` where SDK v1 looks for it (the folder given, else the working
directory and its parents, also in their ``.azureml/`` and ``aml_config/`` folders) and says once that it maps it
to the local registry; without one it gives the local workspace ``local``, saying so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlops_magics.azureml.exceptions import UserErrorException
from mlops_magics.azureml.unsupported import SdkObject
from mlops_magics.registry import Registry, default_registry

#: The workspace name when none is given or found.
LOCAL = "local"
_said: set[str] = set()


def _say_once(key: str, text: str) -> None:
    if key not in _said:
        _said.add(key)
        print(text)


def _config_file(path: str | os.PathLike[str] | None, file_name: str | None) -> Path | None:
    """The config.json SDK v1 would read: ``path`` itself (a file), else searched from ``path`` (or the working
    directory) upwards, in each folder, its ``.azureml/`` and its ``aml_config/``."""
    names = [file_name] if file_name else ["config.json", "project.json"]
    start = Path(path).expanduser() if path else Path.cwd()
    if start.is_file():
        return start
    for folder in [start.resolve(), *start.resolve().parents]:
        for sub in ("", ".azureml", "aml_config"):
            for name in names:
                candidate = folder / sub / name
                if candidate.is_file():
                    return candidate
    return None


class Workspace(SdkObject):
    """A local workspace: the model registry under ``$MLOPS_HOME`` (SDK v1's ``Workspace``).

    ``Workspace(subscription_id, resource_group, workspace_name)``, ``Workspace.get(name)``,
    ``Workspace.create(name)`` and ``Workspace.from_config()`` all give it; no Azure login happens.
    """

    def __init__(self, subscription_id: str = "local", resource_group: str = "local",
                 workspace_name: str = LOCAL, auth: Any = None, _location: str | None = None,
                 **_ignored: Any) -> None:
        self.subscription_id = subscription_id or "local"
        self.resource_group = resource_group or "local"
        self.name = workspace_name or LOCAL
        self.location = _location or "local"
        #: The registry every call of this workspace uses.
        self.registry: Registry = default_registry()
        _say_once(f"ws:{self.registry.home}:{self.name}",
                  f"Workspace {self.name!r} is the local registry at {self.registry.home} ($MLOPS_HOME): models, "
                  "services and images stay on this machine; nothing is sent to Azure.")

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None, auth: Any = None, _logger: Any = None,
                    _file_name: str | None = None) -> Workspace:
        """The workspace a ``config.json`` names, mapped to the local registry (said once).

        Raises:
            UserErrorException: the config.json is not a JSON object.
        """
        found = _config_file(path, _file_name)
        if found is None:
            _say_once(f"noconfig:{Path.cwd()}", f"No config.json in {path or Path.cwd()} or its parents: using the "
                                                f"local workspace {LOCAL!r}.")
            return cls()
        try:
            data = json.loads(found.read_text())
        except (OSError, ValueError) as exc:
            raise UserErrorException(f"{found} is not a readable JSON workspace configuration ({exc}); write "
                                     '{"subscription_id": ..., "resource_group": ..., "workspace_name": ...}.') from exc
        if not isinstance(data, dict):
            raise UserErrorException(f"{found} holds no JSON object: write "
                                     '{"subscription_id": ..., "resource_group": ..., "workspace_name": ...}.')
        name = str(data.get("workspace_name") or data.get("Workspace name") or LOCAL)
        _say_once(f"config:{found}", f"Read {found}: workspace {name!r} maps to the local registry "
                                     f"({os.environ.get('MLOPS_HOME') or '~/.mlops'}); nothing is sent to Azure.")
        return cls(str(data.get("subscription_id") or "local"), str(data.get("resource_group") or "local"), name)

    @classmethod
    def get(cls, name: str = LOCAL, auth: Any = None, subscription_id: str | None = None,
            resource_group: str | None = None, **_ignored: Any) -> Workspace:
        """The local workspace named ``name``."""
        return cls(subscription_id or "local", resource_group or "local", name)

    @classmethod
    def create(cls, name: str = LOCAL, auth: Any = None, subscription_id: str | None = None,
               resource_group: str | None = None, location: str | None = None, exist_ok: bool = True,
               **_ignored: Any) -> Workspace:
        """A local workspace named ``name`` (there is nothing to create: the registry is made on first use)."""
        return cls(subscription_id or "local", resource_group or "local", name, _location=location)

    @staticmethod
    def list(subscription_id: str | None = None, auth: Any = None, resource_group: str | None = None
             ) -> dict[str, list[Workspace]]:
        """The local workspace, as SDK v1's ``{name: [Workspace]}``."""
        return {LOCAL: [Workspace()]}

    def write_config(self, path: str | os.PathLike[str] | None = None, file_name: str | None = None) -> None:
        """Write this workspace's ``config.json`` (in ``path``/.azureml, as SDK v1 does)."""
        folder = Path(path or Path.cwd()) / ".azureml"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / (file_name or "config.json")).write_text(json.dumps(
            {"subscription_id": self.subscription_id, "resource_group": self.resource_group,
             "workspace_name": self.name}, indent=2))

    def get_details(self) -> dict[str, Any]:
        """Azure's keys where they have a local meaning."""
        return {"id": self.service_context, "name": self.name, "location": self.location,
                "type": "Local", "workspaceid": str(self.registry.home)}

    @property
    def service_context(self) -> str:
        """The ``subscription/resource group/workspace`` path ModelDataCollector tags rows with."""
        return f"{self.subscription_id}/{self.resource_group}/{self.name}"

    @property
    def models(self) -> dict[str, Any]:
        """The latest version of every model, by name (SDK v1's ``ws.models``)."""
        from mlops_magics.azureml.model import Model

        return {m.name: m for m in Model.list(self, latest=True)}

    @property
    def webservices(self) -> dict[str, Any]:
        """The live services, by name (SDK v1's ``ws.webservices``)."""
        from mlops_magics.azureml.webservice import Webservice

        return {s.name: s for s in Webservice.list(self)}

    @property
    def environments(self) -> dict[str, Any]:
        """Environments registered in this kernel (SDK v1's ``ws.environments``)."""
        from mlops_magics.azureml.environment import registered

        return registered()

    def __repr__(self) -> str:
        return (f"Workspace.create(name={self.name!r}, subscription_id={self.subscription_id!r}, "
                f"resource_group={self.resource_group!r})  # local: {self.registry.home}")


def workspace_of(value: Any) -> Workspace:
    """``value`` if it is a Workspace, else a clear error."""
    if not isinstance(value, Workspace):
        raise UserErrorException(f"Expected a Workspace, got {type(value).__name__}: create one with "
                                 "Workspace.from_config() or Workspace.get('local').")
    return value

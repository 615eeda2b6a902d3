"""``azureml.core.Environment`` and ``azureml.core.conda_dependencies.CondaDependencies`` in the kernel.

An environment becomes the model's environment (what ``%%environment`` sets) when a deployment uses it: its
conda specification as SDK v1 writes it (``python.conda_dependencies.serialize_to_string()``). Azure's curated
environments (``Environment.get(ws, "AzureML-...")``) and an environment without dependencies become what the entry
script imports, pinned to this kernel's versions (``%%environment --from-kernel``). ``docker.base_image`` is the
image's base for the docker target.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from mlops_magics.azureml.exceptions import UserErrorException
from mlops_magics.azureml.unsupported import SdkObject

_registered: dict[str, Environment] = {}


def registered() -> dict[str, Environment]:
    """The environments registered in this kernel (``env.register(ws)``), by name."""
    return dict(_registered)


def _read(file_path: str | os.PathLike[str], what: str) -> str:
    try:
        return Path(file_path).expanduser().read_text()
    except OSError as exc:
        raise UserErrorException(f"Cannot read the {what} {str(file_path)!r}: {exc.strerror or exc}. Check the path "
                                 f"(relative to {Path.cwd()}).") from exc


class CondaDependencies(SdkObject):
    """A conda specification: Python version, conda packages, pip packages, channels (SDK v1's class)."""

    def __init__(self, conda_dependencies_file_path: str | os.PathLike[str] | None = None,
                 _underlying_structure: dict[str, Any] | None = None) -> None:
        data: Any = _underlying_structure
        if conda_dependencies_file_path is not None:
            try:
                data = yaml.safe_load(_read(conda_dependencies_file_path, "conda specification"))
            except yaml.YAMLError as exc:
                raise UserErrorException(f"{conda_dependencies_file_path} is not valid YAML: {exc}") from exc
        if data is None:
            data = {"name": "project_environment", "dependencies": [], "channels": ["anaconda", "conda-forge"]}
        if not isinstance(data, dict) or not isinstance(data.get("dependencies", []), list):
            raise UserErrorException("A conda specification needs a 'dependencies:' list.")
        self.name = str(data.get("name") or "project_environment")
        self._channels = [str(c) for c in data.get("channels") or []]
        self._python: str | None = None
        self._conda: list[str] = []
        self._pip: list[str] = []
        for item in data.get("dependencies") or []:
            if isinstance(item, dict) and "pip" in item:
                self._pip += [str(p) for p in item["pip"] or []]
            elif isinstance(item, str) and item.split("=")[0].strip() == "python":
                self._python = item.split("=", 1)[1].lstrip("=").strip() if "=" in item else None
            elif isinstance(item, str) and item.strip() != "pip":
                self._conda.append(item.strip())

    @staticmethod
    def create(pip_packages: list[str] | None = None, conda_packages: list[str] | None = None,
               python_version: str | None = None, pin_sdk_version: bool = True, pip_indexurl: str | None = None,
               channels: list[str] | None = None) -> CondaDependencies:
        """A specification with these packages (SDK v1's ``CondaDependencies.create``)."""
        deps = CondaDependencies()
        if python_version:
            deps.set_python_version(python_version)
        for c in channels or []:
            deps.add_channel(c)
        for p in conda_packages or []:
            deps.add_conda_package(p)
        for p in pip_packages or []:
            deps.add_pip_package(p)
        return deps

    def add_pip_package(self, pip_package: str) -> None:
        """Add (or replace, by name) a pip requirement."""
        self.remove_pip_package(_base(pip_package))
        self._pip.append(pip_package)

    def add_conda_package(self, conda_package: str) -> None:
        """Add (or replace, by name) a conda package."""
        self.remove_conda_package(_base(conda_package))
        self._conda.append(conda_package)

    def remove_pip_package(self, pip_package: str) -> None:
        self._pip = [p for p in self._pip if _base(p) != _base(pip_package)]

    def remove_conda_package(self, conda_package: str) -> None:
        self._conda = [p for p in self._conda if _base(p) != _base(conda_package)]

    def add_channel(self, channel: str) -> None:
        if channel not in self._channels:
            self._channels.append(channel)

    def set_python_version(self, version: str) -> None:
        self._python = version

    def get_python_version(self) -> str | None:
        return self._python

    @property
    def pip_packages(self) -> list[str]:
        return list(self._pip)

    @property
    def conda_packages(self) -> list[str]:
        return list(self._conda)

    @property
    def conda_channels(self) -> list[str]:
        return list(self._channels)

    def serialize_to_string(self) -> str:
        """The conda YAML (what a deployment's environment is set from)."""
        deps: list[Any] = [*([f"python={self._python}"] if self._python else []), *self._conda]
        if self._pip:
            deps += ["pip", {"pip": list(self._pip)}]
        return str(yaml.safe_dump({"name": self.name, "dependencies": deps,
                               **({"channels": self._channels} if self._channels else {})}, sort_keys=False))

    def save(self, path: str | os.PathLike[str] | None = None) -> str:
        """Write the YAML to ``path`` (default ``conda_dependencies.yml``); return the path."""
        target = Path(path or "conda_dependencies.yml")
        target.write_text(self.serialize_to_string())
        return str(target)

    def save_to_file(self, base_directory: str, conda_file_path: str | None = None) -> str:
        return self.save(Path(base_directory) / (conda_file_path or "conda_dependencies.yml"))

    def __repr__(self) -> str:
        return self.serialize_to_string()


def _base(requirement: str) -> str:
    for sep in ("==", ">=", "<=", "~=", "!=", "=", ">", "<", "[", " "):
        requirement = requirement.split(sep)[0]
    return requirement.strip().lower().replace("_", "-")


class PythonSection(SdkObject):
    """``env.python``: the conda dependencies and whether they are user-managed."""

    def __init__(self) -> None:
        self.conda_dependencies: CondaDependencies = CondaDependencies()
        self.user_managed_dependencies = False
        self.interpreter_path = "python"
        self.conda_dependencies_file: str | None = None


class DockerSection(SdkObject):
    """``env.docker``: the base image of the docker target's image (``base_image``)."""

    def __init__(self) -> None:
        self.enabled = True
        self.base_image: str | None = None
        self.base_dockerfile: str | None = None
        self.shm_size: str | None = None
        self.arguments: list[str] = []


class Environment(SdkObject):
    """An environment a deployment installs (SDK v1's ``Environment``)."""

    def __init__(self, name: str = "myenv", **_ignored: Any) -> None:
        self.name = name
        self.version: str | None = None
        self.python = PythonSection()
        self.docker = DockerSection()
        self.environment_variables: dict[str, str] = {}
        self.inferencing_stack_version: str | None = None
        #: Curated (``AzureML-...``) or given no dependencies: the kernel's versions of what the script imports.
        self.from_kernel = False
        #: pip lines when made from a requirements file (``from_pip_requirements``).
        self.pip_requirements: str | None = None

    @staticmethod
    def from_conda_specification(name: str, file_path: str | os.PathLike[str]) -> Environment:
        """The environment of a conda YAML file."""
        env = Environment(name)
        env.python.conda_dependencies = CondaDependencies(file_path)
        return env

    @staticmethod
    def from_pip_requirements(name: str, file_path: str | os.PathLike[str], pip_version: str | None = None
                              ) -> Environment:
        """The environment of a pip requirements file."""
        text = _read(file_path, "requirements file")
        env = Environment(name)
        env.pip_requirements = text
        for line in text.splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                env.python.conda_dependencies.add_pip_package(line)
        return env

    @staticmethod
    def from_existing_conda_environment(name: str, conda_environment_name: str) -> Environment:
        """This kernel's packages (the conda environment of this kernel), as the entry script imports them."""
        env = Environment(name)
        env.from_kernel = True
        return env

    @staticmethod
    def get(workspace: Any, name: str, version: str | None = None, label: str | None = None) -> Environment:
        """An environment registered in this kernel; a curated ``AzureML-...`` one is this kernel's packages.

        Raises:
            UserErrorException: no environment of that name was registered.
        """
        if name in _registered:
            return _registered[name]
        if name.lower().startswith("azureml-"):
            print(f"Environment {name!r} is one of Azure's curated environments: deployments install what the entry "
                  "script imports, at this kernel's versions.")
            env = Environment(name)
            env.from_kernel = True
            return env
        known = ", ".join(sorted(_registered)) or "none"
        raise UserErrorException(f"No environment named {name!r} (registered in this kernel: {known}). Create it "
                                 "with Environment.from_conda_specification / from_pip_requirements, or "
                                 "CondaDependencies.create, and env.register(ws).")

    @staticmethod
    def list(workspace: Any) -> dict[str, Environment]:
        return registered()

    def register(self, workspace: Any) -> Environment:
        """Keep it under its name for ``Environment.get`` in this kernel; return it."""
        self.version = str(int(self.version or 0) + 1)
        _registered[self.name] = self
        return self

    def specification(self) -> str | None:
        """The text ``mlops_magics.api.set_environment`` gets (None: from the kernel)."""
        deps = self.python.conda_dependencies
        if self.from_kernel or self.python.user_managed_dependencies or not (deps.pip_packages or
                                                                              deps.conda_packages):
            return None
        return deps.serialize_to_string()

    def __repr__(self) -> str:
        spec = self.specification()
        body = spec if spec is not None else "  (this kernel's versions of what the entry script imports)\n"
        return f"Environment {self.name!r}:\n{body}"

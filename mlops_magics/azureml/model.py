"""``azureml.core.model``: ``Model`` and ``InferenceConfig`` in the kernel, over :mod:`mlops_magics.api`.

``Model.register`` registers a file or folder under its own name (``model_path``'s basename: the entry script's
``Model.get_model_path(name)`` finds it as it did on Azure; a folder keeps its files under it), trusted (the notebook
registers its own file). ``Model.deploy`` saves the InferenceConfig as the version's entry script, assets and
environment (Azure's layout: :mod:`mlops_magics.azureml.staging`), then deploys to the target its deployment
configuration names. ``Model.package`` writes our build context (``generate_dockerfile=True``) or builds the image;
``Model.profile`` measures with :func:`mlops_magics.api.profile`.
"""

from __future__ import annotations

import builtins
import datetime
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlops_magics import api
from mlops_magics.azureml import staging
from mlops_magics.azureml.environment import Environment
from mlops_magics.azureml.exceptions import (
    ModelNotFoundException,
    ModelPathNotFoundException,
    UserErrorException,
    WebserviceException,
)
from mlops_magics.azureml.staging import translated
from mlops_magics.azureml.unsupported import SdkObject, refuse_argument
from mlops_magics.azureml.workspace import Workspace, workspace_of
from mlops_magics.errors import NotFoundError

#: SDK v1's ``Model.Framework`` names -> our flavors (None: detected from the file).
FRAMEWORKS: dict[str, str | None] = {"ScikitLearn": "sklearn", "Onnx": "onnx", "Pytorch": "pytorch",
                                     "TensorFlow": None, "TfKeras": None, "Custom": None, "Multi": None}
_FLAVOR_FRAMEWORK = {"sklearn": "ScikitLearn", "onnx": "Onnx", "pytorch": "Pytorch"}
#: Tags holding SDK v1 ``properties`` (kept with the version, shown as ``model.properties``).
PROPERTY = "property:"


class InferenceConfig(SdkObject):
    """The entry script, its source directory and its environment (SDK v1's ``InferenceConfig``)."""

    def __init__(self, entry_script: str | None = None, runtime: str | None = None, conda_file: str | None = None,
                 extra_docker_file_steps: str | None = None, source_directory: str | None = None,
                 enable_gpu: bool | None = None, description: str | None = None, base_image: str | None = None,
                 base_image_registry: Any = None, cuda_version: str | None = None,
                 environment: Environment | None = None) -> None:
        if runtime not in (None, "python", "python3"):
            refuse_argument("InferenceConfig", "runtime", runtime, "entry scripts are Python (runtime='python')")
        if base_image_registry is not None and getattr(base_image_registry, "address", None):
            refuse_argument("InferenceConfig", "base_image_registry", base_image_registry,
                            "build the base image on this engine and give base_image (or set MLOPS_BASE_IMAGE)")
        self.entry_script = entry_script
        self.runtime = runtime or "python"
        self.conda_file = conda_file
        self.extra_docker_file_steps = extra_docker_file_steps
        self.source_directory = source_directory
        self.enable_gpu = bool(enable_gpu)
        self.description = description
        self.base_image = base_image
        self.cuda_version = cuda_version
        self.environment = environment
        if entry_script is not None:
            staging.entry_files(self)  # the SDK checks the files when the config is made

    def as_record(self) -> dict[str, Any]:
        """Where its files are, to read them again on ``reload()``."""
        return {"entry_script": self.entry_script, "conda_file": self.conda_file,
                "extra_docker_file_steps": self.extra_docker_file_steps, "enable_gpu": self.enable_gpu,
                "source_directory": (str(Path(self.source_directory).expanduser().resolve())
                                     if self.source_directory is not None else None),
                "entry_script_path": (str(Path(self.entry_script).expanduser().resolve())
                                      if self.source_directory is None and self.entry_script else None),
                "base_image": self.base_image}

    @classmethod
    def from_record(cls, data: Mapping[str, Any], environment: Environment | None = None) -> InferenceConfig:
        return cls(entry_script=data.get("entry_script_path") or data.get("entry_script"),
                   source_directory=data.get("source_directory"), conda_file=data.get("conda_file"),
                   extra_docker_file_steps=data.get("extra_docker_file_steps"), enable_gpu=data.get("enable_gpu"),
                   base_image=data.get("base_image"), environment=environment)

    def base(self) -> str | None:
        """The image's base: ``base_image``, else the environment's ``docker.base_image``."""
        env_base = self.environment.docker.base_image if self.environment is not None else None
        return self.base_image or env_base

    def __repr__(self) -> str:
        return (f"InferenceConfig(entry_script={self.entry_script!r}, source_directory={self.source_directory!r}, "
                f"environment={getattr(self.environment, 'name', None)!r})")


class _Framework:
    SCIKITLEARN = "ScikitLearn"
    ONNX = "Onnx"
    PYTORCH = "Pytorch"
    TENSORFLOW = "TensorFlow"
    TFKERAS = "TfKeras"
    CUSTOM = "Custom"
    MULTI = "Multi"


class Model(SdkObject):
    """A registered model version (SDK v1's ``Model``): ``Model(ws, name)``, ``Model(ws, name, version=2)``,
    ``Model(ws, id="name:2")``."""

    Framework = _Framework

    def __init__(self, workspace: Workspace, name: str | None = None, id: str | None = None,
                 tags: Any = None, properties: Any = None, version: int | None = None, run_id: str | None = None,
                 model_framework: str | None = None, **_ignored: Any) -> None:
        ws = workspace_of(workspace)
        if id is not None:
            name, _, given = id.partition(":")
            version = int(given) if given.isdigit() else version
        if not name:
            raise UserErrorException("Model(ws, name) needs a name or an id ('name:version').")
        with translated(f"Model(ws, {name!r})"):
            try:
                if version is not None:
                    found = api.get_model(f"{name}:{int(version)}", registry=ws.registry)
                elif tags:
                    wanted = [tags] if isinstance(tags, str) else list(tags)
                    filters = [t if isinstance(t, str) else "=".join(map(str, t)) for t in wanted]
                    matching = api.list_models(name, tags=api.parse_tag_filters(filters), registry=ws.registry)
                    if not matching:
                        raise NotFoundError(f"No version of {name!r} has tags {filters}.")
                    found = max(matching, key=lambda v: v.version)
                else:
                    found = api.get_model(name, registry=ws.registry)
            except NotFoundError as exc:
                raise WebserviceException(f"ModelNotFound: Model with name {name}"
                                          f"{'' if version is None else f', version {version}'} not found in the "
                                          f"workspace: {exc}") from exc
        self._bind(ws, found)

    @classmethod
    def _of(cls, workspace: Workspace, version: Any) -> Model:
        model = cls.__new__(cls)
        model._bind(workspace, version)
        return model

    def _bind(self, workspace: Workspace, version: Any) -> None:
        self.workspace = workspace
        self.name: str = version.name
        self.version: int = version.version
        self.id = f"{version.name}:{version.version}"
        all_tags = dict(version.tags)
        self.tags = {k: v for k, v in all_tags.items() if not k.startswith(PROPERTY)}
        self.properties = {k[len(PROPERTY):]: v for k, v in all_tags.items() if k.startswith(PROPERTY)}
        self.description = version.description
        self.created_time = version.created_at if hasattr(version, "created_at") else None
        self.model_framework = _FLAVOR_FRAMEWORK.get(version.flavor, "Custom")
        self.model_framework_version = version.framework_version
        self.url = f"mlops://{self.id}"
        self.created_by = {"userName": version.created_by}
        self._version = version

    # -- registering and finding -----------------------------------------------------------------

    @staticmethod
    def register(workspace: Workspace, model_path: str | os.PathLike[str], model_name: str,
                 tags: Mapping[str, Any] | None = None, properties: Mapping[str, Any] | None = None,
                 description: str | None = None, datasets: Any = None, model_framework: str | None = None,
                 model_framework_version: str | None = None, child_paths: Any = None,
                 sample_input_dataset: Any = None, sample_output_dataset: Any = None,
                 resource_configuration: Any = None) -> Model:
        """Register the file or folder at ``model_path`` as the next version of ``model_name``.

        It keeps its name (``model_path``'s basename), so ``Model.get_model_path(model_name)`` in the entry script
        finds it; a folder registers its files under the folder's name. It is trusted (it is the notebook's own
        file); use :func:`mlops_magics.api.register` to register a file you do not trust.

        Raises:
            ModelPathNotFoundException: nothing at ``model_path``.
            WebserviceException: the registry refused it (the message says why).
        """
        ws = workspace_of(workspace)
        for argument, value, instead in (
                ("datasets", datasets, "record where the data came from in tags or the description"),
                ("sample_input_dataset", sample_input_dataset, "pass a sample to mlops_magics.api.register(sample=)"),
                ("sample_output_dataset", sample_output_dataset, "pass a sample to mlops_magics.api.register(sample=)"),
                ("child_paths", child_paths, "register a folder holding only those files"),
                ("resource_configuration", resource_configuration,
                 "give cpu_cores / memory_gb in the deployment configuration")):
            if value:
                refuse_argument("Model.register", argument, value, instead)
        source = Path(model_path).expanduser()
        if not source.exists():
            raise ModelPathNotFoundException(f"Model path {str(model_path)!r} does not exist (looked in {Path.cwd()}).")
        if model_framework is not None and model_framework not in FRAMEWORKS:
            raise UserErrorException(f"model_framework {model_framework!r} is not one of {', '.join(FRAMEWORKS)}.")
        flavor = FRAMEWORKS.get(model_framework or "") if source.is_file() else None
        all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        all_tags.update({f"{PROPERTY}{k}": str(v) for k, v in (properties or {}).items()})
        with translated(f"Model.register({model_name!r})"):
            version = api.register(path=source, name=model_name, tags=all_tags, description=description or "",
                                   flavor=flavor, trust=True, registry=ws.registry)
        print(f"Registering model {model_name}")
        return Model._of(ws, version)

    @staticmethod
    def list(workspace: Workspace, name: str | None = None, tags: Any = None, properties: Any = None,
             run_id: str | None = None, latest: bool = False, dataset_id: str | None = None, expand: bool = True,
             page_count: int = 255, model_framework: str | None = None) -> builtins.list[Model]:
        """The registered versions (newest first), filtered as SDK v1 filters them."""
        ws = workspace_of(workspace)
        wanted = [tags] if isinstance(tags, str) else list(tags or [])
        filters = [t if isinstance(t, str) else "=".join(map(str, t)) for t in wanted]
        wanted_props = [properties] if isinstance(properties, str) else list(properties or [])
        filters += [f"{PROPERTY}{p}" if isinstance(p, str) else f"{PROPERTY}{p[0]}={p[1]}" for p in wanted_props]
        with translated("Model.list"):
            found = api.list_models(name, tags=api.parse_tag_filters(filters) if filters else None, latest=latest,
                                    registry=ws.registry)
        models = [Model._of(ws, v) for v in found]
        if model_framework is not None:
            models = [m for m in models if m.model_framework == model_framework]
        return sorted(models, key=lambda m: (m.name, -m.version))

    @staticmethod
    def get_model_path(model_name: str, version: int | None = None, _workspace: Workspace | None = None) -> str:
        """The path of a model's file or folder: in a deployment as Azure lays it out (``AZUREML_MODEL_DIR``,
        ``./azureml-models``), else the registry's verified copy (nothing is downloaded).

        Raises:
            ModelNotFoundException: no such model here or in the registry.
        """
        if model_name is None:
            raise WebserviceException("model_name is None")
        if version is not None and not isinstance(version, int):
            raise WebserviceException("version should be an int")
        deployed = _deployed_path(model_name, version)
        if deployed is not None:
            return deployed
        ws = _workspace if isinstance(_workspace, Workspace) else Workspace()
        ref = model_name if version is None else f"{model_name}:{version}"
        try:
            found = api.get_model(ref, registry=ws.registry)
            folder = ws.registry.verified_artifact(found)
        except NotFoundError as exc:
            raise ModelNotFoundException(f"Model {ref} not found: not deployed here ({os.getcwd()}) and not in the "
                                         f"registry {ws.registry.home}: {exc}") from exc
        entries = sorted(folder.iterdir())
        return str(entries[0] if len(entries) == 1 else folder)

    # -- on a version ------------------------------------------------------------------------------

    def add_tags(self, tags: Mapping[str, Any]) -> None:
        """Add or change tags (the version's other fields never change)."""
        with translated(f"Model {self.id}: add_tags"):
            version = api.tag_model(self.id, {str(k): str(v) for k, v in tags.items()},
                                    registry=self.workspace.registry)
        self._bind(self.workspace, version)

    def remove_tags(self, tags: Iterable[str]) -> None:
        with translated(f"Model {self.id}: remove_tags"):
            version = api.tag_model(self.id, None, remove=list(tags), registry=self.workspace.registry)
        self._bind(self.workspace, version)

    def download(self, target_dir: str = ".", exist_ok: bool = False, exists_ok: bool | None = None) -> str:
        """Copy the model's file or folder into ``target_dir``; return its path.

        Raises:
            WebserviceException: it is there already and ``exist_ok`` is False.
        """
        source = Path(Model.get_model_path(self.name, self.version, self.workspace))
        target = Path(target_dir) / source.name
        if target.exists() and not (exist_ok or exists_ok):
            raise WebserviceException(f"File already exists at {target}: pass exist_ok=True to replace it.")
        Path(target_dir).mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
        return str(target)

    def delete(self) -> None:
        """Delete this version (refused while a live service uses it)."""
        with translated(f"Model {self.id}: delete"):
            api.delete_model(self.id, registry=self.workspace.registry)

    def serialize(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "version": self.version, "tags": self.tags,
                "properties": self.properties, "description": self.description}

    def __repr__(self) -> str:
        return (f"Model(workspace={self.workspace.name!r}, name={self.name}, id={self.id}, version={self.version}, "
                f"tags={self.tags}, properties={self.properties})")

    # -- deploying, packaging, profiling -----------------------------------------------------------

    @staticmethod
    def deploy(workspace: Workspace, name: str, models: builtins.list[Model],
               inference_config: InferenceConfig | None = None, deployment_config: Any = None,
               deployment_target: Any = None, overwrite: bool = False,
               show_output: bool = False) -> Any:
        """Deploy one model with an InferenceConfig to the target the deployment configuration names; blocks.

        ``LocalWebservice`` -> a local process, ``AciWebservice`` (and no configuration) -> a Docker container,
        ``AksWebservice`` -> the current Kubernetes context.
        """
        from mlops_magics.azureml.webservice import deploy_service

        return deploy_service(workspace_of(workspace), name, _one(models, "Model.deploy"), inference_config,
                              deployment_config, deployment_target, overwrite, show_output)

    @staticmethod
    def package(workspace: Workspace, models: builtins.list[Model], inference_config: InferenceConfig | None = None,
                generate_dockerfile: bool = False, image_name: str | None = None, image_label: str | None = None
                ) -> ModelPackage:
        """Our build context (``generate_dockerfile=True``) or the built image of a model with an InferenceConfig."""
        ws = workspace_of(workspace)
        model = _one(models, "Model.package")
        staging.stage(ws, model.id, inference_config)
        gpu = bool(inference_config and inference_config.enable_gpu)
        base = inference_config.base() if inference_config is not None else None
        with translated(f"Model.package({model.id})"):
            if generate_dockerfile:
                context = api.package(model.id, base=base, gpu=gpu, registry=ws.registry)
                return ModelPackage(ws, model, context=context)
            image = api.build(model.id, base=base, gpu=gpu, registry=ws.registry)
        return ModelPackage(ws, model, image=image)

    @staticmethod
    def profile(workspace: Workspace, profile_name: str, models: builtins.list[Model],
                inference_config: InferenceConfig, input_dataset: Any = None, cpu: float | None = None,
                memory_in_gb: float | None = None,
                description: str | None = None, *, duration: float | None = None,
                concurrency: Any = None) -> Any:
        """Measure a model under load and recommend CPU and memory (:func:`mlops_magics.api.profile`)."""
        from mlops_magics.azureml.profile import run_profile

        ws = workspace_of(workspace)
        model = _one(models, "Model.profile")
        staging.stage(ws, model.id, inference_config)
        return run_profile(ws, profile_name, model, input_dataset, cpu, memory_in_gb, description, duration,
                           concurrency)


def _one(models: Any, call: str) -> Model:
    items = list(models) if isinstance(models, (list, tuple)) else [models]
    if len(items) != 1 or not isinstance(items[0], Model):
        raise UserErrorException(f"{call} takes a list of one Model here (got {len(items)}): one model per service; "
                                 "deploy each model as its own service (an endpoint puts several behind one address: "
                                 "mlops_magics.api.endpoint).")
    return items[0]


def _deployed_path(model_name: str, version: int | None) -> str | None:
    """Azure's in-deployment resolution (``AZUREML_MODEL_DIR`` or ``./azureml-models``), None when not deployed."""
    root = os.environ.get("AZUREML_MODEL_DIR") or "azureml-models"
    by_name = Path(root) / model_name
    numbered = sorted(int(p.name) for p in by_name.iterdir() if p.name.isdigit()) if by_name.is_dir() else []
    if numbered:
        folder = by_name / str(version if version is not None else numbered[-1])
        if folder.is_dir():
            return _single(folder)
    root_path = Path(os.path.normpath(root))
    if (root_path.parent.name == model_name and root_path.name.isdigit() and version in (None, int(root_path.name))
            and root_path.is_dir()):
        return _single(root_path)
    return None


def _single(folder: Path) -> str:
    entries = sorted(folder.iterdir())
    if len(entries) != 1:
        raise WebserviceException(f"Dir {folder} can contain only 1 file or folder. Found {[e.name for e in entries]}")
    return str(entries[0])


class ModelPackage(SdkObject):
    """What ``Model.package`` made: a build context (``location`` is its folder) or an image (its tag)."""

    def __init__(self, workspace: Workspace, model: Model, *, context: Any = None, image: Any = None) -> None:
        self.workspace = workspace
        self.model = model
        self.context = context
        self.image = image
        self.state = "Succeeded"
        self.created_time = datetime.datetime.now(datetime.timezone.utc)

    @property
    def location(self) -> str:
        """The image tag, or the build context's folder (``generate_dockerfile=True``)."""
        return str(self.image.tag) if self.image is not None else str(self.context.folder)

    def wait_for_creation(self, show_output: bool = False) -> None:
        """Return at once: ``Model.package`` built it already (it blocks)."""
        if show_output:
            what = f"image {self.location}" if self.image is not None else f"build context in {self.location}"
            print(f"Package creation Succeeded: {what}")

    def get_logs(self, decode: bool = True, offset: int = 0) -> str:
        """The build log (an image), or the Dockerfile (a context)."""
        if self.context is not None:
            return str(self.context.dockerfile)
        log = Path(self.workspace.registry.home) / "contexts" / f"{self.model.name}-{self.model.version}" / "build.log"
        return log.read_text() if log.is_file() else f"Built {self.location} (no build log kept)."

    def save(self, output_directory: str) -> None:
        """Copy the build context (Dockerfile and everything it copies) into ``output_directory``."""
        if self.context is None:
            with translated(f"ModelPackage.save({output_directory!r})"):
                self.context = api.package(self.model.id, registry=self.workspace.registry)
        shutil.copytree(self.context.folder, output_directory, dirs_exist_ok=True)

    def pull(self) -> None:
        """Nothing to pull: the image is on this machine's Docker engine already."""
        print(f"{self.location} is on the local Docker engine already.")

    def __repr__(self) -> str:
        return f"ModelPackage({self.model.id}: {self.location}, {self.state})"

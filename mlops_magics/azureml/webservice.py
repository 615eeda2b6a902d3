"""``azureml.core.webservice`` in the kernel: deployment configurations and ``Webservice``, over the API.

=====================================================  ==========================================================
SDK v1                                                 here
=====================================================  ==========================================================
``LocalWebservice.deploy_configuration(port)``         the ``local`` target: a scoring-server process on ``port``
``AciWebservice.deploy_configuration(cpu_cores, ...)`` the ``docker`` target: a container of the model's image
                                                       with ``--cpus``/``--memory``, key auth, data collection
``AksWebservice.deploy_configuration(...)``            the ``kubernetes`` target, current context; every AKS name
                                                       maps (:data:`mlops_magics.targets.kube.settings.AKS_NAMES`)
=====================================================  ==========================================================

A ``Webservice`` reads its deployment from the registry on every access: ``state``, ``scoring_uri`` and ``port``
are always current. ``run(input_data)`` posts the JSON string as it is and returns the decoded answer, as SDK v1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mlops_magics import api
from mlops_magics.api.deployments import reachable_url
from mlops_magics.azureml import staging
from mlops_magics.azureml.exceptions import UserErrorException, WebserviceException
from mlops_magics.azureml.staging import translated
from mlops_magics.azureml.unsupported import SdkObject, refuse_argument
from mlops_magics.azureml.workspace import Workspace, workspace_of
from mlops_magics.errors import MlopsError, NotFoundError
from mlops_magics.registry import Deployment
from mlops_magics.registry.secrets import mask
from mlops_magics.targets.client import post_score

#: Our targets -> SDK v1's compute types.
COMPUTE_TYPES = {"local": "Local", "docker": "ACI", "kubernetes": "AKS"}
#: Our deployment states -> SDK v1's service states.
STATES = {"running": "Healthy", "creating": "Transitioning", "updating": "Transitioning", "unhealthy": "Unhealthy",
          "failed": "Failed", "stopped": "Failed", "deleted": "Deleted"}
#: Settings that place a cloud service (no local meaning): accepted, and said once to be ignored.
PLACEMENT = ("location", "dns_name_label", "enable_app_insights", "vnet_name", "subnet_name", "cmk_vault_base_url",
             "cmk_key_name", "cmk_key_version", "compute_target_name", "blobfuse_enabled")


class Keys(tuple[str, str]):
    """``(primary, secondary)``, as SDK v1's ``get_keys()`` returns them; shown masked in notebook output."""

    def __repr__(self) -> str:
        return f"({mask(self[0])!r}, {mask(self[1])!r})"


# -- deployment configurations ------------------------------------------------------------------------------------


class LocalWebserviceDeploymentConfiguration(SdkObject):
    """A local service: a scoring-server process (the ``local`` target)."""

    target = "local"

    def __init__(self, port: int | None = None) -> None:
        self.port = port
        self.tags: dict[str, str] = {}
        self.description: str | None = None

    def deploy_kwargs(self) -> dict[str, Any]:
        return {"port": self.port}


class AciServiceDeploymentConfiguration(SdkObject):
    """A container instance: a Docker container of the model's image (the ``docker`` target)."""

    target = "docker"

    def __init__(self, cpu_cores: float | None = None, memory_gb: float | None = None, auth_enabled: bool = False,
                 collect_model_data: bool = False, tags: Mapping[str, str] | None = None,
                 description: str | None = None, port: int | None = None) -> None:
        self.cpu_cores = cpu_cores
        self.memory_gb = memory_gb
        self.auth_enabled = bool(auth_enabled)
        self.collect_model_data = bool(collect_model_data)
        self.tags = dict(tags or {})
        self.description = description
        self.port = port

    def deploy_kwargs(self) -> dict[str, Any]:
        memory = f"{max(1, round(float(self.memory_gb) * 1024))}m" if self.memory_gb else None
        return {"cpu": float(self.cpu_cores) if self.cpu_cores else None, "memory": memory, "auth": self.auth_enabled,
                "collect": self.collect_model_data, "port": self.port}


class AksServiceDeploymentConfiguration(SdkObject):
    """A Kubernetes service in the current context (the ``kubernetes`` target), from Azure's AKS names."""

    target = "kubernetes"

    def __init__(self, options: Mapping[str, Any], tags: Mapping[str, str] | None = None,
                 description: str | None = None) -> None:
        self.options = dict(options)
        self.tags = dict(tags or {})
        self.description = description
        for key, value in self.options.items():
            setattr(self, key, value)

    def deploy_kwargs(self) -> dict[str, Any]:
        return {"auth": bool(self.options.get("auth_enabled", True)),
                "collect": bool(self.options.get("collect_model_data")),
                "target_options": {"auth_enabled": bool(self.options.get("auth_enabled", True)), **self.options}}


_noted: set[str] = set()


def _ignored(call: str, given: Mapping[str, Any]) -> None:
    names = sorted(k for k in PLACEMENT if given.get(k) not in (None, False))
    key = f"{call}:{','.join(names)}"
    if names and key not in _noted:
        _noted.add(key)
        print(f"{call}: {', '.join(names)} place a cloud service and have no local meaning: ignored.")


# -- the services ------------------------------------------------------------------------------------------------


class Webservice(SdkObject):
    """A deployed service (SDK v1's ``Webservice``): ``Webservice(ws, name)`` finds one again."""

    _compute_type = ""

    def __new__(cls, workspace: Workspace, name: str) -> Webservice:
        if cls is Webservice:
            record = staging.load_record(workspace_of(workspace), name)
            kind = record.get("compute_type") or COMPUTE_TYPES.get(_deployment(workspace, name).target, "")
            cls = {"Local": LocalWebservice, "ACI": AciWebservice, "AKS": AksWebservice}.get(kind, Webservice)
        return super().__new__(cls)

    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace_of(workspace)
        self.name = name
        _deployment(self.workspace, name)  # raises WebserviceException when there is none
        self._record = staging.load_record(self.workspace, name)

    # -- what it is ------------------------------------------------------------------------------

    def _deployment(self) -> Deployment:
        return _deployment(self.workspace, self.name)

    @property
    def state(self) -> str:
        """``Healthy``, ``Transitioning``, ``Unhealthy``, ``Failed`` or ``Deleted``."""
        return STATES.get(self._deployment().state, self._deployment().state)

    @property
    def scoring_uri(self) -> str | None:
        return self._deployment().scoring_url

    @property
    def swagger_uri(self) -> str | None:
        return self._deployment().swagger_url

    @property
    def port(self) -> int | None:
        port = self._deployment().config.get("port")
        return int(port) if port is not None else None

    @property
    def compute_type(self) -> str:
        return COMPUTE_TYPES.get(self._deployment().target, self._deployment().target)

    @property
    def auth_enabled(self) -> bool:
        return bool(self._deployment().auth_keys)

    @property
    def collect_model_data(self) -> bool:
        return bool(self._deployment().config.get("collect"))

    @property
    def models(self) -> list[Any]:
        from mlops_magics.azureml.model import Model

        d = self._deployment()
        return [Model(self.workspace, d.model_name, version=d.model_version)]

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._record.get("tags") or {})

    @property
    def description(self) -> str | None:
        return self._record.get("description")

    @property
    def created_time(self) -> Any:
        return self._deployment().created_at

    @property
    def updated_time(self) -> Any:
        return self._deployment().updated_at

    @property
    def error(self) -> str | None:
        d = self._deployment()
        return str(d.config.get("error")) if d.state == "failed" and d.config.get("error") else None

    # -- what it does ----------------------------------------------------------------------------

    def run(self, input_data: Any) -> Any:
        """POST ``input_data`` (a JSON string, sent as it is) to the scoring URI; return the decoded answer.

        Raises:
            WebserviceException: the service is not serving, or answered an error (status and content quoted).
        """
        d = self._deployment()
        if not d.is_live or not d.url:
            raise WebserviceException(f"Service {self.name} is not serving ({d.state}): deploy it again with "
                                      f"Model.deploy(ws, {self.name!r}, ...).")
        body = input_data if isinstance(input_data, (str, bytes)) else json.dumps(input_data)
        with translated(f"{type(self).__name__}.run"):
            status, value = post_score(reachable_url(d, self.workspace.registry),
                                       body.encode() if isinstance(body, str) else body, key=d.auth_key,
                                       service=self.name)
        if status >= 400:
            raise WebserviceException(f"Received bad response from service. More information can be found by calling "
                                      f"`.get_logs()` on the webservice object.\nResponse Code: {status}\n"
                                      f"Content: {value}")
        return value

    def reload(self, wait: bool = False) -> None:
        """Read the entry script and source directory from disk again and serve them (the old code serves until
        the new is ready)."""
        d = self._deployment()
        self._restage(f"{d.model_name}:{d.model_version}")
        with translated(f"{type(self).__name__}.reload"):
            api.reload(self.name, registry=self.workspace.registry)

    def update(self, models: list[Any] | None = None, inference_config: Any = None, tags: Mapping[str, str] | None
               = None, description: str | None = None, wait: bool = False, **changes: Any) -> None:
        """Serve another model version and/or another InferenceConfig (or just new tags); no downtime.

        Raises:
            UnsupportedSdkCall: a change of resources or authentication (redeploy with ``overwrite=True``).
        """
        for key, value in changes.items():
            if value is not None:
                refuse_argument(f"{type(self).__name__}.update", key, value,
                                "redeploy with Model.deploy(..., deployment_config=..., overwrite=True)")
        if tags is not None or description is not None:
            self._record = {**self._record, **({"tags": dict(tags)} if tags is not None else {}),
                            **({"description": description} if description is not None else {})}
            staging.save_record(self.workspace, self.name, self._record)
        if models is None and inference_config is None:
            return
        d = self._deployment()
        model = models[0] if models else None
        ref = model.id if model is not None else f"{d.model_name}:{d.model_version}"
        if inference_config is not None:
            self._record = {**self._record, "inference": inference_config.as_record()}
            staging.save_record(self.workspace, self.name, self._record)
            self._environments[self.name] = inference_config.environment
        self._restage(ref)
        with translated(f"{type(self).__name__}.update"):
            if ref == f"{d.model_name}:{d.model_version}":
                api.reload(self.name, registry=self.workspace.registry)
            else:
                api.update(self.name, ref, registry=self.workspace.registry)
        self._record = {**self._record, "model": ref}
        staging.save_record(self.workspace, self.name, self._record)

    #: The Environment objects of the services deployed in this kernel (the record keeps paths only).
    _environments: dict[str, Any] = {}

    def _restage(self, ref: str) -> None:
        from mlops_magics.azureml.model import InferenceConfig

        inference = self._record.get("inference")
        if inference:
            staging.stage(self.workspace, ref, InferenceConfig.from_record(
                inference, environment=self._environments.get(self.name)))

    def delete(self) -> None:
        """Stop the service and remove it (idempotent)."""
        with translated(f"{type(self).__name__}.delete"):
            api.undeploy(self.name, registry=self.workspace.registry)

    def get_logs(self, num_lines: int = 5000, init: bool = False) -> str:
        """The server's log (its last ``num_lines`` lines)."""
        with translated(f"{type(self).__name__}.get_logs"):
            return api.logs(self.name, tail=num_lines, registry=self.workspace.registry)

    def get_keys(self) -> Keys:
        """``(primary, secondary)`` keys of a service deployed with ``auth_enabled=True``."""
        with translated(f"{type(self).__name__}.get_keys"):
            keys = api.keys(self.name, registry=self.workspace.registry)
        return Keys((keys.primary, keys.secondary))

    def regen_key(self, key: str, set_key: str | None = None) -> None:
        """Regenerate the ``'Primary'`` or ``'Secondary'`` key (the other stays valid)."""
        if set_key is not None:
            refuse_argument(f"{type(self).__name__}.regen_key", "set_key", "...",
                            "keys are generated: call regen_key(key) and read the new one with get_keys()")
        if str(key).lower() not in ("primary", "secondary"):
            raise UserErrorException(f"regen_key({key!r}): give 'Primary' or 'Secondary'.")
        with translated(f"{type(self).__name__}.regen_key"):
            api.keys(self.name, regenerate=str(key).lower(), registry=self.workspace.registry)

    def wait_for_deployment(self, show_output: bool = False, timeout_sec: float | None = None) -> None:
        """Return once the service is deployed (Model.deploy blocks already); raise if it failed.

        Raises:
            WebserviceException: the deployment failed (with the log tail).
        """
        d = self._deployment()
        if d.state in ("failed", "stopped", "deleted"):
            raise WebserviceException(f"Service deployment polling reached non-successful terminal state, current "
                                      f"service state: {self.state}\n{self.error or ''}\n{self.get_logs(20)}")
        if show_output:
            print(f"{self.compute_type} service {self.name}: {self.state}, scoring at {self.scoring_uri}")

    def serialize(self) -> dict[str, Any]:
        return {"name": self.name, "computeType": self.compute_type, "state": self.state,
                "scoringUri": self.scoring_uri, "swaggerUri": self.swagger_uri, "tags": self.tags}

    @staticmethod
    def list(workspace: Workspace, compute_type: str | None = None, image_name: str | None = None,
             image_id: str | None = None, model_name: str | None = None, model_id: str | None = None,
             tags: Any = None, properties: Any = None, image_digest: str | None = None) -> list[Webservice]:
        """The live services, filtered as SDK v1 filters them."""
        ws = workspace_of(workspace)
        with translated("Webservice.list"):
            deployments = api.list_deployments(registry=ws.registry)
        found = [Webservice(ws, d.name) for d in deployments if d.is_live
                 and (model_name is None or d.model_name == model_name)
                 and (model_id is None or f"{d.model_name}:{d.model_version}" == model_id)]
        return [s for s in found if compute_type is None or s.compute_type == compute_type.upper()
                or (compute_type == "Local" and s.compute_type == "Local")]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(workspace={self.workspace.name!r}, name={self.name}, "
                f"state={self.state}, scoring_uri={self.scoring_uri})")


class LocalWebservice(Webservice):
    """A local service (a process)."""

    @staticmethod
    def deploy_configuration(port: int | None = None) -> LocalWebserviceDeploymentConfiguration:
        """A local process on ``port`` (default: a free one)."""
        return LocalWebserviceDeploymentConfiguration(port)


class AciWebservice(Webservice):
    """A container-instance service: a Docker container here."""

    @staticmethod
    def deploy_configuration(cpu_cores: float | None = None, memory_gb: float | None = None,
                             tags: Mapping[str, str] | None = None, properties: Mapping[str, str] | None = None,
                             description: str | None = None, location: str | None = None,
                             auth_enabled: bool | None = None, ssl_enabled: bool | None = None,
                             enable_app_insights: bool | None = None, ssl_cert_pem_file: str | None = None,
                             ssl_key_pem_file: str | None = None, ssl_cname: str | None = None,
                             dns_name_label: str | None = None, primary_key: str | None = None,
                             secondary_key: str | None = None, collect_model_data: bool | None = None,
                             cmk_vault_base_url: str | None = None, cmk_key_name: str | None = None,
                             cmk_key_version: str | None = None, vnet_name: str | None = None,
                             subnet_name: str | None = None) -> AciServiceDeploymentConfiguration:
        """A container with ``cpu_cores`` and ``memory_gb`` limits (default: the profile's recommendation, else
        none), key auth and data collection; cloud placement settings are ignored (said once)."""
        given = dict(locals())
        for name in ("ssl_enabled", "ssl_cert_pem_file", "ssl_key_pem_file", "ssl_cname"):
            if given[name]:
                refuse_argument("AciWebservice.deploy_configuration", name, given[name],
                                "the service speaks HTTP on 127.0.0.1; put a TLS proxy in front of it")
        for name in ("primary_key", "secondary_key"):
            if given[name]:
                refuse_argument("AciWebservice.deploy_configuration", name, "...",
                                "keys are generated: read them with service.get_keys(), replace one with regen_key()")
        _ignored("AciWebservice.deploy_configuration", given)
        return AciServiceDeploymentConfiguration(cpu_cores, memory_gb, bool(auth_enabled), bool(collect_model_data),
                                                 {**(tags or {})}, description)


class AksWebservice(Webservice):
    """A Kubernetes service (the current kubectl context)."""

    @staticmethod
    def deploy_configuration(autoscale_enabled: bool | None = None, autoscale_min_replicas: int | None = None,
                             autoscale_max_replicas: int | None = None, autoscale_refresh_seconds: int | None = None,
                             autoscale_target_utilization: int | None = None, collect_model_data: bool | None = None,
                             auth_enabled: bool | None = None, cpu_cores: float | None = None,
                             memory_gb: float | None = None, enable_app_insights: bool | None = None,
                             scoring_timeout_ms: int | None = None, replica_max_concurrent_requests: int | None = None,
                             max_request_wait_time: int | None = None, num_replicas: int | None = None,
                             primary_key: str | None = None, secondary_key: str | None = None,
                             tags: Mapping[str, str] | None = None, properties: Mapping[str, str] | None = None,
                             description: str | None = None, gpu_cores: int | None = None,
                             period_seconds: int | None = None, initial_delay_seconds: int | None = None,
                             timeout_seconds: int | None = None, success_threshold: int | None = None,
                             failure_threshold: int | None = None, namespace: str | None = None,
                             token_auth_enabled: bool | None = None, compute_target_name: str | None = None,
                             cpu_cores_limit: float | None = None, memory_gb_limit: float | None = None,
                             blobfuse_enabled: bool | None = None) -> AksServiceDeploymentConfiguration:
        """Kubernetes settings under Azure's AKS names (key auth on unless ``auth_enabled=False``, as on AKS)."""
        given = dict(locals())
        if token_auth_enabled:
            refuse_argument("AksWebservice.deploy_configuration", "token_auth_enabled", True,
                            "use key auth (auth_enabled=True, the default): there is no token service")
        if gpu_cores:
            refuse_argument("AksWebservice.deploy_configuration", "gpu_cores", gpu_cores,
                            "this layer schedules no GPUs: leave gpu_cores out")
        _ignored("AksWebservice.deploy_configuration", given)
        skip = {"tags", "properties", "description", "token_auth_enabled", "gpu_cores", *PLACEMENT}
        options = {k: v for k, v in given.items() if v is not None and k not in skip}
        return AksServiceDeploymentConfiguration(options, tags, description)


def _deployment(workspace: Workspace, name: str) -> Deployment:
    try:
        return workspace.registry.get_deployment(name)
    except NotFoundError as exc:
        raise WebserviceException(f"WebserviceNotFound: Webservice with name {name} not found in workspace "
                                  f"{workspace.name}: {exc}") from exc


def deploy_service(ws: Workspace, name: str, model: Any, inference_config: Any, deployment_config: Any,
                   deployment_target: Any, overwrite: bool, show_output: bool) -> Webservice:
    """What ``Model.deploy`` does: stage the InferenceConfig, deploy to the configuration's target, record it."""
    config = deployment_config if deployment_config is not None else AciServiceDeploymentConfiguration()
    if not hasattr(config, "deploy_kwargs"):
        raise UserErrorException(f"deployment_config is a {type(config).__name__}: give LocalWebservice, "
                                 "AciWebservice or AksWebservice.deploy_configuration(...).")
    if deployment_target is not None and config.target != "kubernetes":
        raise UserErrorException("deployment_target goes with AksWebservice.deploy_configuration(...) (a cluster); "
                                 "leave it out for local and container services.")
    try:
        existing = ws.registry.get_deployment(name)
    except NotFoundError:
        existing = None
    if existing is not None and existing.is_live:
        if not overwrite:
            raise WebserviceException(f"Service {name} with the same name already exists ({existing.model_name}:"
                                      f"{existing.model_version}, {STATES.get(existing.state, existing.state)}): "
                                      "pass overwrite=True to replace it, or use service.update(...) / delete().")
        with translated(f"Replacing service {name}"):
            api.undeploy(name, registry=ws.registry)
    staging.stage(ws, model.id, inference_config)
    kwargs = {k: v for k, v in config.deploy_kwargs().items() if v is not None}
    if config.target == "docker" and inference_config is not None and inference_config.base():
        kwargs["base_image"] = inference_config.base()
    if show_output:
        print(f"Deploying {model.id} as {name} ({COMPUTE_TYPES[config.target]}: the {config.target} target)...")
    try:
        api.deploy(model.id, target=config.target, name=name, registry=ws.registry, **kwargs)
    except MlopsError as exc:
        raise WebserviceException(f"Service deployment polling reached non-successful terminal state, current "
                                  f"service state: Failed\n{exc}") from exc
    record = {"model": model.id, "compute_type": COMPUTE_TYPES[config.target], "tags": dict(config.tags),
              "description": config.description,
              "inference": inference_config.as_record() if inference_config is not None else None}
    staging.save_record(ws, name, record)
    Webservice._environments[name] = getattr(inference_config, "environment", None)
    service = Webservice(ws, name)
    if show_output:
        service.wait_for_deployment(show_output=True)
    return service

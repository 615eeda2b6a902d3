"""What the local SDK v1 layer refuses, and the one clear error it raises: the call, and what to use instead.

A module's unknown name (``from azureml.core import Experiment``) raises :class:`UnsupportedSdkImport` (an
``ImportError``, so that ``from ... import`` keeps the message); a class's or an object's unknown attribute
(``Webservice.deploy_from_image``, ``service.get_token()``) raises :class:`UnsupportedSdkAttribute` (an
``AttributeError``, so that ``hasattr`` stays False).
"""

from __future__ import annotations

from typing import Any, NoReturn

from mlops_magics.errors import MlopsError

#: What to use instead, for the SDK v1 names notebooks reach for most that have no local meaning here.
INSTEAD: dict[str, str] = {
    "Experiment": "train in the notebook (no runs are tracked here), then Model.register(ws, path, name)",
    "Run": "train in the notebook (no runs are tracked here), then Model.register(ws, path, name)",
    "ScriptRunConfig": "run the training script in the notebook (%run train.py), then Model.register",
    "RunConfiguration": "run the training script in the notebook (%run train.py), then Model.register",
    "Dataset": "read the data with pandas; Model.profile takes request strings (a list, or a file of lines)",
    "Datastore": "read and write files directly; the registry keeps models under $MLOPS_HOME",
    "ComputeTarget": "AksWebservice.deploy_configuration() deploys to the current kubectl context; "
                     "LocalWebservice and AciWebservice need no compute",
    "AksCompute": "AksWebservice.deploy_configuration() deploys to the current kubectl context (no cluster is "
                  "created: deployment_target can be left out)",
    "ComputeInstance": "this kernel is the compute",
    "AmlCompute": "this kernel is the compute",
    "Image": "Model.package(ws, [model], inference_config) builds the image",
    "ContainerImage": "Model.package(ws, [model], inference_config) builds the image",
    "Pipeline": "mlops_magics pipelines (%pipeline) or plain notebook cells",
    "Keyvault": "environment variables",
    "deploy_from_image": "Model.deploy(ws, name, [model], inference_config, deployment_config)",
    "deploy_from_model": "Model.deploy(ws, name, [model], inference_config, deployment_config)",
    "get_token": "get_keys(): deploy with auth_enabled=True (key auth; there is no token auth)",
    "serialize": "the registry records the service: Webservice(ws, name) finds it again",
    "deserialize": "Webservice(ws, name)",
    "get_access_token": "get_keys(): deploy with auth_enabled=True (key auth; there is no token auth)",
    # modules
    "compute": "AksWebservice.deploy_configuration() deploys to the current kubectl context; LocalWebservice and "
               "AciWebservice need no compute (leave deployment_target out)",
    "experiment": "train in the notebook (no runs are tracked here), then Model.register(ws, path, name)",
    "run": "train in the notebook (no runs are tracked here), then Model.register(ws, path, name)",
    "script_run_config": "run the training script in the notebook (%run train.py), then Model.register",
    "runconfig": "run the training script in the notebook (%run train.py), then Model.register",
    "train": "train in the notebook, then Model.register(ws, path, name)",
    "dataset": "read the data with pandas; Model.profile takes request strings (a list, or a file of lines)",
    "datastore": "read and write files directly; the registry keeps models under $MLOPS_HOME",
    "data": "read the data with pandas",
    "image": "Model.package(ws, [model], inference_config) builds the image",
    "pipeline": "mlops_magics pipelines or plain notebook cells",
}

GENERIC = ("the plain API (mlops_magics.api: register, deploy, call, reload, update, undeploy, logs, keys, "
           "package, build, profile) or the %magics")


class UnsupportedSdkCall(MlopsError):
    """An SDK v1 call the local layer does not provide; the message names it and what to use instead."""


class UnsupportedSdkImport(UnsupportedSdkCall, ImportError):
    """An SDK v1 name imported from a module the local layer provides only in part."""


class UnsupportedSdkAttribute(UnsupportedSdkCall, AttributeError):
    """An SDK v1 method or attribute of a class the local layer provides only in part."""


def message(call: str, name: str) -> str:
    """``azureml.core.Experiment is not provided by mlops_magics.azureml ...: use ...``."""
    instead = INSTEAD.get(name, GENERIC)
    return (f"{call} is not provided by mlops_magics.azureml (SDK v1 notebooks run locally; it covers Workspace, "
            f"Model, Environment, CondaDependencies, InferenceConfig, Local/Aci/AksWebservice, Webservice, "
            f"Model.package, Model.profile and ModelDataCollector). Instead: {instead}.")


def refuse_import(module: str, name: str) -> NoReturn:
    """Raise the error for ``from module import name``."""
    raise UnsupportedSdkImport(message(f"{module}.{name}", name), name=module)


def refuse_attribute(owner: str, name: str) -> NoReturn:
    """Raise the error for ``Owner.name``."""
    raise UnsupportedSdkAttribute(message(f"{owner}.{name}", name), name=name)


def refuse_argument(call: str, argument: str, value: Any, instead: str) -> NoReturn:
    """Raise the error for an argument with no local meaning (``ssl_enabled=True``...)."""
    raise UnsupportedSdkCall(f"{call}({argument}={value!r}) is not supported locally: {instead}.")


class SdkClass(type):
    """The metaclass of the SDK classes: an unknown public class attribute is the clear error, not a bare
    ``AttributeError``."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        refuse_attribute(cls.__name__, name)


class SdkObject(metaclass=SdkClass):
    """Base of the SDK objects: an unknown public attribute is the clear error."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        refuse_attribute(type(self).__name__, name)

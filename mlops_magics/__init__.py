"""mlops-magics: a notebook-native MLOps toolkit.

``import mlops_magics`` is cheap: it imports neither IPython, ipywidgets nor any server library.
``%load_ext mlops_magics`` registers the magics in an IPython shell.
"""

from __future__ import annotations

from typing import Any

from mlops_magics.api import (
    alias_history,
    delete_model,
    entry_script,
    generate_score_script,
    get_model,
    list_models,
    load_model,
    register,
    remove_alias,
    set_alias,
    set_environment,
    set_score_script,
    tag_model,
    trust_model,
)
from mlops_magics.errors import (
    BuildError,
    ConflictError,
    ConversionError,
    DeployError,
    EngineError,
    IntegrityError,
    InvalidInputError,
    MlopsError,
    NotFoundError,
    RegistryLockedError,
    SchemaVersionError,
    SerializationError,
    UntrustedModelError,
)
from mlops_magics.registry import ModelVersion, Registry, default_registry
from mlops_magics.services import call, deploy, deployments, keys, logs, reload, undeploy, update


def to_onnx(ref: str, **options: Any) -> Any:
    """Convert a registered model to ONNX, check and time it, register it.

    See :func:`mlops_magics.onnx_convert.convert` for the options.
    """
    from mlops_magics.onnx_convert import convert

    return convert(ref, **options)

def collected(service: str, **options: Any) -> Any:
    """What a deployment collected (``--collect``), as a DataFrame.

    See :func:`mlops_magics.monitoring.collected` for the options.
    """
    from mlops_magics import monitoring

    return monitoring.collected(service, **options)


def monitor(service: str, **options: Any) -> Any:
    """The monitoring dashboard of a deployment: traffic, latency, errors, predictions, accuracy, drift.

    See :func:`mlops_magics.monitoring.monitor` for the options.
    """
    from mlops_magics import monitoring

    return monitoring.monitor(service, **options)


def label(service: str, data: Any, **options: Any) -> Any:
    """Attach ground-truth labels to a deployment's collected requests, by request id.

    See :func:`mlops_magics.monitoring.label`.
    """
    from mlops_magics import monitoring

    return monitoring.label(service, data, **options)


__version__ = "0.1.0"

__all__ = [
    "BuildError",
    "ConflictError",
    "ConversionError",
    "DeployError",
    "EngineError",
    "IntegrityError",
    "InvalidInputError",
    "MlopsError",
    "ModelVersion",
    "NotFoundError",
    "Registry",
    "RegistryLockedError",
    "SchemaVersionError",
    "SerializationError",
    "UntrustedModelError",
    "__version__",
    "alias_history",
    "call",
    "collected",
    "default_registry",
    "delete_model",
    "deploy",
    "deployments",
    "entry_script",
    "generate_score_script",
    "get_model",
    "keys",
    "label",
    "list_models",
    "load_ipython_extension",
    "load_model",
    "logs",
    "monitor",
    "register",
    "reload",
    "remove_alias",
    "set_alias",
    "set_environment",
    "set_score_script",
    "tag_model",
    "to_onnx",
    "trust_model",
    "undeploy",
    "update",
]


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics (``%load_ext mlops_magics``).

    Our ``%alias`` (model aliases) shadows IPython's shell-command ``%alias``, which stays
    available as ``%shell_alias``.
    """
    from mlops_magics.magics import MlopsMagics

    if ipython.find_line_magic("shell_alias") is None:
        shell_alias = ipython.find_line_magic("alias")  # resolves IPython's lazily loaded magics
        if shell_alias is not None:
            ipython.register_magic_function(shell_alias, "line", "shell_alias")
    ipython.register_magics(MlopsMagics)

"""mlops-magics: a notebook-native MLOps toolkit.

``import mlops_magics`` is cheap: it imports neither IPython, ipywidgets nor any server library.
``%load_ext mlops_magics`` registers the magics in an IPython shell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_magics.version import __version__

#: Where each public name lives: imported on first use (PEP 562), so that ``import mlops_magics`` stays cheap.
_LAZY = {
    **dict.fromkeys(
        ("BuildError", "ConflictError", "ConversionError", "DeployError", "EngineError", "IntegrityError",
         "InvalidInputError", "MlopsError", "NotFoundError", "RegistryLockedError", "SchemaVersionError",
         "SerializationError", "UntrustedModelError"), "mlops_magics.errors"),
    **dict.fromkeys(("ModelVersion", "Registry", "default_registry"), "mlops_magics.registry"),
    **dict.fromkeys(
        ("alias_history", "build", "call", "collected", "delete_model", "deploy", "entry_script", "export_model",
         "generate_score_script", "get_model", "keys", "label", "list_deployments", "list_images", "list_models",
         "load_model", "logs", "monitor", "package", "profile", "register", "reload", "remove_alias", "set_alias",
         "set_environment", "set_score_script", "tag_model", "to_onnx", "trust_model", "try_score_script",
         "undeploy", "update", "validate"), "mlops_magics.api"),
}

if TYPE_CHECKING:
    from mlops_magics.api import (
        alias_history,
        build,
        call,
        collected,
        delete_model,
        deploy,
        entry_script,
        export_model,
        generate_score_script,
        get_model,
        keys,
        label,
        list_deployments,
        list_images,
        list_models,
        load_model,
        logs,
        monitor,
        package,
        profile,
        register,
        reload,
        remove_alias,
        set_alias,
        set_environment,
        set_score_script,
        tag_model,
        to_onnx,
        trust_model,
        try_score_script,
        undeploy,
        update,
        validate,
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


def __getattr__(name: str) -> Any:
    """The public names, imported from their modules on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlops_magics' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
    "build",
    "call",
    "collected",
    "default_registry",
    "delete_model",
    "deploy",
    "entry_script",
    "export_model",
    "generate_score_script",
    "get_model",
    "keys",
    "label",
    "list_deployments",
    "list_images",
    "list_models",
    "load_ipython_extension",
    "load_model",
    "logs",
    "monitor",
    "package",
    "profile",
    "register",
    "reload",
    "remove_alias",
    "set_alias",
    "set_environment",
    "set_score_script",
    "tag_model",
    "to_onnx",
    "trust_model",
    "try_score_script",
    "undeploy",
    "update",
    "validate",
]


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics (``%load_ext mlops_magics``).

    Our ``%alias`` (model aliases) shadows IPython's shell-command ``%alias``, which stays
    available as ``%shell_alias``.
    """
    from mlops_magics.magics import MAGICS

    if ipython.find_line_magic("shell_alias") is None:
        shell_alias = ipython.find_line_magic("alias")  # resolves IPython's lazily loaded magics
        if shell_alias is not None:
            ipython.register_magic_function(shell_alias, "line", "shell_alias")
    for family in MAGICS:
        ipython.register_magics(family)

"""mlops-magics: a notebook-native MLOps toolkit.

``import mlops_magics`` is cheap: it imports neither IPython, ipywidgets nor any server library.
``%load_ext mlops_magics`` registers the magics in an IPython shell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_magics.version import __version__

#: The error types and the registry's entry points; every other public name is an API function
#: (:mod:`mlops_magics.api`). Each is imported on first use (PEP 562): ``import mlops_magics`` stays cheap.
_ERRORS = ("BuildError", "ConflictError", "ConversionError", "DeployError", "EngineError", "IntegrityError",
           "InvalidInputError", "MlopsError", "NotFoundError", "RegistryLockedError", "SchemaVersionError",
           "SerializationError", "UntrustedModelError")
_REGISTRY = ("ModelVersion", "Registry", "default_registry")

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports the names
    from mlops_magics.api import *  # noqa: F403
    from mlops_magics.errors import *  # noqa: F403
    from mlops_magics.registry import ModelVersion, Registry, default_registry


def __getattr__(name: str) -> Any:
    """The public names, imported from their modules on first use."""
    import importlib

    if name in _ERRORS:
        home = "mlops_magics.errors"
    elif name in _REGISTRY:
        home = "mlops_magics.registry"
    elif name in __all__:
        home = "mlops_magics.api"
    else:
        raise AttributeError(f"module 'mlops_magics' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [  # noqa: RUF022  (grouped by family, not sorted)
    "__version__", "load_ipython_extension",
    # the registry and its errors
    "ModelVersion", "Registry", "default_registry",
    "BuildError", "ConflictError", "ConversionError", "DeployError", "EngineError", "IntegrityError",
    "InvalidInputError", "MlopsError", "NotFoundError", "RegistryLockedError", "SchemaVersionError",
    "SerializationError", "UntrustedModelError",
    # the API, family by family (mlops_magics.api has them all)
    "register", "list_models", "get_model", "load_model", "trust_model", "set_alias", "remove_alias", "alias_history",
    "tag_model", "delete_model", "export_model", "compare_models",
    "set_score_script", "generate_score_script", "entry_script", "set_environment", "try_score_script",
    "package", "build", "list_images",
    "deploy", "Service", "get_deployment", "list_deployments", "undeploy", "logs", "reload", "update", "call", "keys",
    "kubernetes_manifests", "kubernetes_diff", "scale",
    "endpoint", "endpoint_status", "endpoint_keys", "compare_traffic", "replay", "delete_endpoint", "list_endpoints",
    "edge_manifest", "edge_status", "edge_offline", "edge_online", "remove_device",
    "validate", "to_onnx", "profile",
    "fpga_compile", "fpga_sweep",
    "collected", "label", "monitor",
]  # fmt: skip


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

"""The plain-Python API: every magic and every ``mlops`` verb calls one function here.

One module per family of magics:

- :mod:`~mlops_magics.api.models`: register, list, get, load, trust, tag, delete, compare
- :mod:`~mlops_magics.api.aliases`: point an alias at a version, remove it, its history
- :mod:`~mlops_magics.api.authoring`: the entry script, its assets, the environment, a trial run
- :mod:`~mlops_magics.api.images`: build contexts, images, Dockerfile steps
- :mod:`~mlops_magics.api.deployments`: deploy, list, undeploy, logs, reload, update, call, keys
- :mod:`~mlops_magics.api.clusters`: Kubernetes manifests (dry run), what an apply would change, scaling
- :mod:`~mlops_magics.api.edge`: edge devices: a deployment's IoT Edge manifest, a device's link, its status
- :mod:`~mlops_magics.api.endpoints`: several deployments behind one address (weights, shadow, sticky, rollback)
- :mod:`~mlops_magics.api.quality`: validate, ONNX, profile (each stores its report with the version)
- :mod:`~mlops_magics.api.fpga`: compile for the emulated FPGA engine, sweep number formats
- :mod:`~mlops_magics.api.monitoring`: what deployments collected, labels, the dashboard
- :mod:`~mlops_magics.api.upkeep`: copying a version out; registry backup, restore, check, rebuild
"""

from __future__ import annotations

from mlops_magics.api.aliases import (
    AliasHistory,
    AliasSet,
    alias_history,
    remove_alias,
    set_alias,
)
from mlops_magics.api.authoring import (
    ScriptInfo,
    TrialResult,
    entry_script,
    generate_score_script,
    script_info,
    set_environment,
    set_score_script,
    try_score_script,
)
from mlops_magics.api.clusters import (
    ManifestSet,
    autoscale_bounds,
    kubernetes_diff,
    kubernetes_manifests,
    kubernetes_options,
    scale,
)
from mlops_magics.api.deployments import (
    KEY_PICKUP_SECONDS,
    DeploymentList,
    Service,
    call,
    deploy,
    follow,
    get_deployment,
    keys,
    list_deployments,
    logs,
    reload,
    undeploy,
    update,
)
from mlops_magics.api.edge import (
    DEFAULT_DEVICE,
    EdgeDevices,
    EdgeManifest,
    EdgeStatus,
    ModuleStatus,
    edge_manifest,
    edge_offline,
    edge_online,
    edge_options,
    edge_status,
    remove_device,
)
from mlops_magics.api.endpoints import (
    EndpointStatus,
    MemberStatus,
    compare_traffic,
    delete_endpoint,
    endpoint,
    endpoint_keys,
    endpoint_status,
    list_endpoints,
    replay,
)
from mlops_magics.api.fpga import (
    fpga_compile,
    fpga_options,
    fpga_sweep,
)
from mlops_magics.api.images import (
    ImageList,
    RemovedImages,
    build,
    list_images,
    package,
    remove_images,
    set_dockerfile_steps,
)
from mlops_magics.api.models import (
    Deleted,
    compare_models,
    delete_model,
    get_model,
    list_models,
    load_model,
    parse_moment,
    parse_tag_filters,
    register,
    resolve_variable,
    tag_model,
    trust_model,
    variable_name_for,
)
from mlops_magics.api.monitoring import (
    collected,
    collection_stats,
    label,
    monitor,
)
from mlops_magics.api.quality import (
    profile,
    to_onnx,
    validate,
)
from mlops_magics.api.upkeep import (
    backup_registry,
    check_registry,
    export_model,
    rebuild_registry,
    restore_registry,
)

__all__ = [
    "DEFAULT_DEVICE",
    "KEY_PICKUP_SECONDS",
    "AliasHistory",
    "AliasSet",
    "Deleted",
    "DeploymentList",
    "EdgeDevices",
    "EdgeManifest",
    "EdgeStatus",
    "EndpointStatus",
    "ImageList",
    "ManifestSet",
    "MemberStatus",
    "ModuleStatus",
    "RemovedImages",
    "ScriptInfo",
    "Service",
    "TrialResult",
    "alias_history",
    "autoscale_bounds",
    "backup_registry",
    "build",
    "call",
    "check_registry",
    "collected",
    "collection_stats",
    "compare_models",
    "compare_traffic",
    "delete_endpoint",
    "delete_model",
    "deploy",
    "edge_manifest",
    "edge_offline",
    "edge_online",
    "edge_options",
    "edge_status",
    "endpoint",
    "endpoint_keys",
    "endpoint_status",
    "entry_script",
    "export_model",
    "follow",
    "fpga_compile",
    "fpga_options",
    "fpga_sweep",
    "generate_score_script",
    "get_deployment",
    "get_model",
    "keys",
    "kubernetes_diff",
    "kubernetes_manifests",
    "kubernetes_options",
    "label",
    "list_deployments",
    "list_endpoints",
    "list_images",
    "list_models",
    "load_model",
    "logs",
    "monitor",
    "package",
    "parse_moment",
    "parse_tag_filters",
    "profile",
    "rebuild_registry",
    "register",
    "reload",
    "remove_alias",
    "remove_device",
    "remove_images",
    "replay",
    "resolve_variable",
    "restore_registry",
    "scale",
    "script_info",
    "set_alias",
    "set_dockerfile_steps",
    "set_environment",
    "set_score_script",
    "tag_model",
    "to_onnx",
    "trust_model",
    "try_score_script",
    "undeploy",
    "update",
    "validate",
    "variable_name_for",
]

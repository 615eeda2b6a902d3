"""JSON payloads of the registry and deployments: what the command line prints with --json and what the Jupyter
server extension answers (the adapters' shared JSON). Plain Python: no web framework here. Nothing here loads a
model."""

from __future__ import annotations

import json
import os
import weakref
from pathlib import Path
from typing import Any

from mlops_magics import api
from mlops_magics.registry import (
    Deployment,
    ModelVersion,
    Registry,
    default_registry,
    index,
    or_default,
    registry_at,
    trust,
)


def registry_label(home: Path, parts: int = 0) -> str:
    """A registry folder, short: ``~``-relative; past 32 characters ``…/`` and its last two parts, or its last.

    Args:
        home: the folder.
        parts: keep at least this many of its last parts (to tell it from another folder's label).
    """
    text = str(home)
    user = os.path.expanduser("~")
    if user not in ("", "/") and (text == user or text.startswith(user + os.sep)):
        text = "~" + text[len(user):]
    for keep in (2, 1):
        if len(text) <= 32 or len(home.parts) <= keep + 1 or keep < parts:
            break
        text = "…/" + "/".join(home.parts[-keep:])
    if parts > 2 and len(home.parts) > parts + 1:
        text = min(text, "…/" + "/".join(home.parts[-parts:]), key=len)
    return text


def registry_labels(homes: list[Path]) -> dict[Path, str]:
    """:func:`registry_label` of each folder, with more of its path where two labels would be the same."""
    parts = dict.fromkeys(homes, 0)
    labels = {home: registry_label(home) for home in homes}
    for _ in range(max((len(h.parts) for h in homes), default=0)):
        seen: dict[str, list[Path]] = {}
        for home, label in labels.items():
            seen.setdefault(label, []).append(home)
        clashes = [home for same in seen.values() if len(same) > 1 for home in same]
        if not clashes:
            break
        for home in clashes:
            parts[home] = max(parts[home], 1) + 1
            labels[home] = registry_label(home, parts[home])
    return labels


def registries_json(*, default: Path | None = None) -> dict[str, Any]:
    """The registries in use (per-user index) and the caller's default: what the sidebar offers and follows.

    Args:
        default: the caller's default registry folder; default ``$MLOPS_HOME``.

    Returns:
        ``{"default": {"home", "label"}, "registries": [{"home", "label", "default", "kernels", "processes",
        "used_at"}] (the most recently switched to first), "kernels": {kernel id: home}}``.
    """
    home = default if default is not None else or_default(None).home
    listed: dict[Path, dict[str, Any]] = {}
    kernels: dict[str, str] = {}
    for use in index.in_use():
        entry = listed.setdefault(use.home, {"home": str(use.home), "default": use.home == home, "kernels": [],
                                             "processes": 0, "used_at": use.used_at.isoformat()})
        entry["processes"] += 1
        if use.kernel is not None and use.latest:
            entry["kernels"].append(use.kernel)
            kernels[use.kernel] = str(use.home)
    if home not in listed:
        listed[home] = {"home": str(home), "default": True, "kernels": [], "processes": 0, "used_at": None}
    labels = registry_labels(list(listed))
    for folder, entry in listed.items():
        entry["label"] = labels[folder]
        entry["kernels"].sort()
    return {"default": {"home": str(home), "label": labels[home]}, "registries": list(listed.values()),
            "kernels": kernels}


def registry_for(raw: str | None) -> Registry:
    """The registry a caller (a REST route's ``registry=``) named: the default one when none is named.

    Args:
        raw: the registry folder, absolute; None or empty: the default registry (``$MLOPS_HOME``).

    Raises:
        InvalidInputError: not an absolute path.
        NotFoundError: the folder is not a registry (the message lists the registries in use).
    """
    default = default_registry()
    if not raw:
        return default
    home = index.resolve(raw, default=default.home)
    return default if home == default.home else registry_at(home)


def version_json(v: ModelVersion) -> dict[str, Any]:
    """One version as JSON."""
    return {
        "name": v.name,
        "version": v.version,
        "flavor": v.flavor,
        "framework": v.framework,
        "framework_version": v.framework_version,
        "sha256": v.sha256,
        "size": v.size,
        "files": [f.path for f in v.files],
        "tags": dict(v.tags),
        "aliases": list(v.aliases),
        "description": v.description,
        "created_at": v.created_at.isoformat(),
        "created_by": v.created_by,
        "signature": None if v.signature is None else dict(v.signature),
        "lineage": v.lineage.as_dict(),
        "metrics": dict(v.metrics),
        "measured_metrics": [{"key": m.key, "value": m.value, "source": m.source,
                              "measured_at": m.measured_at.isoformat(), "detail": dict(m.detail)}
                             for m in v.measured_metrics],
        "trust": trust_json(v),
    }


def trust_json(v: ModelVersion) -> dict[str, Any]:
    """Where a version came from, whether loading or serving it can run code, and who trusted it, when."""
    return {
        "trusted": v.trusted,
        "trusted_by": v.trusted_by,
        "trusted_at": None if v.trusted_at is None else v.trusted_at.isoformat(),
        "origin": v.origin,
        "origin_path": v.origin_path,
        "load_risk": trust.load_risk(v),
        "serve_risk": trust.serve_risk(v),
        "status": trust.status(v),
    }


def models_json(*, registry: Registry | None = None) -> list[dict[str, Any]]:
    """Every model with its versions (newest first) and where its aliases point."""
    reg = or_default(registry)
    models: dict[str, dict[str, Any]] = {}
    for v in reg.find():
        entry = models.setdefault(v.name, {"name": v.name, "versions": [], "aliases": {}})
        entry["versions"].append({"version": v.version, "aliases": list(v.aliases), "tags": dict(v.tags),
                                  "flavor": v.flavor, "created_at": v.created_at.isoformat(),
                                  "metrics": v.metric_columns()})
        entry["aliases"].update({alias: v.version for alias in v.aliases})
    for entry in models.values():
        entry["versions"].sort(key=lambda item: -item["version"])
    return sorted(models.values(), key=lambda m: m["name"])


#: The JSON text of models_json per registry connection (one per thread; the entry goes with it), with the
#: change stamp it was made at.
_models_text: weakref.WeakKeyDictionary[Any, tuple[tuple[int, int], str]] = weakref.WeakKeyDictionary()


def models_json_text(*, registry: Registry | None = None) -> str:
    """:func:`models_json` as JSON text, made again only when the registry changed (in any process).

    What the sidebar polls: with 10,000 versions a listing costs about 0.2 s to make and nothing to reuse.
    """
    reg = or_default(registry)
    stamp = reg.change_stamp()
    cached = _models_text.get(reg.db)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    text = json.dumps(models_json(registry=reg), default=str)
    _models_text[reg.db] = (stamp, text)
    return text


def version_detail_json(ref: str, *, registry: Registry | None = None) -> dict[str, Any]:
    """One version in full: its fields, its model's alias history and its stored reports.

    Raises:
        NotFoundError: no such version.
    """
    reg = or_default(registry)
    version = reg.get(ref)
    history = [{"alias": e.alias, "version": e.version, "at": e.at.isoformat(), "by": e.by}
               for e in reg.alias_history(version.name, None)]
    reports = reg.reports(version)
    return {**version_json(version), "alias_history": history, "reports": reports,
            "report_summaries": {kind: report_summary(kind, body) for kind, body in reports.items()}}


def report_summary(kind: str, report: dict[str, Any]) -> str:
    """One line saying what a stored report found (validation, profile, onnx; others as JSON)."""
    if kind == "validation":
        checks = "; ".join(f"{'ok' if c.get('passed') else 'FAIL'} {c.get('check')}" for c in report.get("checks", []))
        return f"{'passed' if report.get('passed') else 'FAILED'} ({checks}) at {report.get('at')}"
    if kind == "profile":
        return (f"recommended cpu={report.get('recommendedCpu')}, memory={report.get('recommendedMemoryInGB')} GB, "
                f"p95 {report.get('recommendedLatencyInMs')} ms")
    if kind == "onnx":
        parity, speed = report.get("parity", {}), report.get("speed", {})
        return (f"from {report.get('source')} ({report.get('converter')}, opset {report.get('opset')}): parity "
                f"{'passed' if parity.get('passed') else 'FAILED'} on {parity.get('rows')} rows; single row "
                f"{speed.get('single_speedup', 0):.1f}x, batch {speed.get('batch_speedup', 0):.1f}x the original")
    return json.dumps(report, default=str)[:300]


def deployment_json(d: Deployment) -> dict[str, Any]:
    """One deployment as JSON (its key is never included)."""
    return {"name": d.name, "model": f"{d.model_name}:{d.model_version}", "model_name": d.model_name,
            "model_version": d.model_version, "target": d.target, "state": d.state, "url": d.url,
            "swagger_url": d.swagger_url, "auth": d.auth_key is not None, "collect": bool(d.config.get("collect")),
            "created_at": d.created_at.isoformat(), "updated_at": d.updated_at.isoformat()}


def deployments_json(*, registry: Registry | None = None) -> list[dict[str, Any]]:
    """Every deployment with its state checked now (deleted ones too: the sidebar shows them as such)."""
    return [deployment_json(d) for d in api.list_deployments(include_deleted=True, registry=registry)]


def logs_json(name: str, tail: int = 100, *, registry: Registry | None = None) -> dict[str, Any]:
    """The end of a deployment's server log.

    Raises:
        NotFoundError: no such deployment.
    """
    return {"name": name, "tail": tail, "log": api.logs(name, tail=tail, registry=registry)}


def undeploy_json(name: str, *, registry: Registry | None = None) -> dict[str, Any]:
    """Stop and remove a deployment (idempotent); what it is now.

    Raises:
        NotFoundError: no such deployment.
    """
    reg = or_default(registry)
    api.undeploy(name, registry=reg)
    return deployment_json(reg.get_deployment(name))

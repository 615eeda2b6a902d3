"""Monitoring deployments: what they collected (``--collect``), labels, drift and the dashboard.

The API behind ``%collected``, ``%label`` and ``%monitor``; :mod:`mlops_magics.monitoring` reads and analyses
the collected files.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from mlops_magics import signature
from mlops_magics.errors import InvalidInputError, NotFoundError
from mlops_magics.monitoring import analysis, collection, store
from mlops_magics.monitoring.collection import LabelResult
from mlops_magics.monitoring.dashboard import MonitorReport
from mlops_magics.monitoring.store import CollectionStats
from mlops_magics.registry import Deployment, Registry, or_default
from mlops_magics.targets import get_target
from mlops_magics.targets.base import Collects, data_dir


def collection_folder(reg: Registry, service: str) -> tuple[Deployment, Path]:
    """A deployment and its folder of collected records (fetched first from a cluster's volume).

    Raises:
        NotFoundError: no such deployment, or it collects nothing (the message says how to collect).
    """
    try:
        deployment = reg.get_deployment(service)
    except NotFoundError as exc:  # the registry's message (close names, live ones first), for collection
        raise NotFoundError(f"{exc} Add --collect to record what it scores.") from None
    folder = data_dir(reg.home, service) / "collected"
    target = get_target(deployment.target, reg) if deployment.is_live else None
    if isinstance(target, Collects):
        target.fetch_collected(deployment)
    if not (folder / "stats").is_dir():
        raise NotFoundError(f"Service {service!r} has collected nothing: it was deployed without --collect. Deploy "
                            f"it with %deploy {deployment.model_name}:{deployment.model_version} --name {service} "
                            "--collect.")
    return deployment, folder


def feature_names(reg: Registry, deployment: Deployment) -> list[str] | None:
    """The feature names of the deployment's model (its input example's columns), or None."""
    try:
        version = reg.get(f"{deployment.model_name}:{deployment.model_version}")
    except NotFoundError:  # deleted since it was undeployed: the records stay readable
        return None
    example = version.input_example or {}
    columns = example.get("columns")
    return [str(c) for c in columns] if isinstance(columns, list) else None


def collected(service: str, *, since: str | float | datetime | None = None, limit: int | None = None,
              designation: str | None = None, registry: Registry | None = None) -> Any:
    """What a deployment recorded, newest last, as a pandas DataFrame.

    One row per input row of each request: ``time`` (UTC), ``request_id``, ``row``, ``status``,
    ``latency_ms``, the features (named after the model's input example when rows are lists), ``prediction``
    and, once attached with :func:`label`, ``label``. A request whose input is not a table gets one row with
    its ``input`` and ``output`` as sent. The writers' counters are in ``frame.attrs["stats"]`` (its ``folder``:
    where the records are, ``$MLOPS_HOME/deployments/<service>/volume/data/collected``); ``frame.attrs["note"]``
    says what the rows are.

    Args:
        since: only records from then on (``'1h'``, ``'30m'``, a datetime...).
        limit: only the newest ``limit`` requests (with ``designation``: rows).
        designation: read what the entry script gave ``ModelDataCollector(designation=...)`` instead: its CSV
            files, all days, in Azure's layout under that folder (``frame.attrs["files"]`` lists them; see
            :func:`mlops_magics.monitoring.collection.csv_frame`).

    Raises:
        NotFoundError: no such deployment, or it collects nothing.
        InvalidInputError: a bad ``since``, ``limit`` or designation.
    """
    reg = or_default(registry)
    deployment, folder = collection_folder(reg, service)
    start = collection.parse_since(since)
    if limit is not None and limit < 1:
        raise InvalidInputError(f"--limit {limit} is invalid: give 1 or more.")
    if designation is not None:
        frame = collection.csv_frame(folder, designation, start, service, limit)
    else:
        frame = collection.records_frame(folder, since=start, limit=limit, names=feature_names(reg, deployment))
    frame.attrs["stats"] = store.stats(service, folder, running=deployment.state == "running")
    return frame.reset_index(drop=True)


def collection_stats(service: str, *, registry: Registry | None = None) -> CollectionStats:
    """How many records a deployment's workers received, wrote, left out, dropped, or lost in a crash."""
    reg = or_default(registry)
    deployment, folder = collection_folder(reg, service)
    return store.stats(service, folder, running=deployment.state == "running")


def label(service: str, data: Any, *, registry: Registry | None = None) -> LabelResult:
    """Attach ground-truth labels to collected requests by request id; a later label replaces an earlier one.

    Args:
        data: a DataFrame with ``request_id`` and ``label`` columns, or a dict or Series by request id. A label
            may be a list, one per row of its request (``{"order-17": [0, 2, 1]}``); a single value labels
            every row of the request.

    Returns:
        How many were attached, how many joined collected requests, which replaced a different earlier label
        and which request ids are not among the records yet (kept: they join when those records arrive).

    Raises:
        NotFoundError: no such deployment, or it collects nothing.
        InvalidInputError: labels in a shape we cannot read, or none of the request ids was ever collected.
    """
    reg = or_default(registry)
    _, folder = collection_folder(reg, service)
    pairs = collection.label_pairs(data)
    seen = {str(r.get("request_id")) for r in store.records(folder)}
    unknown = [rid for rid, _ in pairs if rid not in seen]
    if len(unknown) == len(pairs):
        raise InvalidInputError(f"None of the {len(pairs):,} request ids is among the records of {service!r} (e.g. "
                                f"{unknown[0]!r}). Label the ids the requests were sent with (their x-request-id "
                                f"header), as %collected {service} shows them.")
    earlier = store.labels(folder)
    replaced = [(rid, earlier[rid], value) for rid, value in pairs if rid in earlier and earlier[rid] != value]
    path = store.write_labels(folder, pairs)
    return LabelResult(service, len(pairs), len(pairs) - len(unknown), unknown, path, replaced)


def _baseline(reg: Registry, deployment: Deployment, baseline: str | None, data: Any,
              names: list[str] | None) -> tuple[Any, str]:
    import pandas as pd

    if data is not None:
        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        if names is not None and len(frame.columns) == len(names) and not isinstance(data, pd.DataFrame):
            frame.columns = names
        frame.columns = [str(c) if not isinstance(c, int) else f"x{c}" for c in frame.columns]
        return frame, f"the given data ({len(frame):,} rows)"
    ref = baseline or f"{deployment.model_name}:{deployment.model_version}"
    version = reg.get(ref)
    if version.input_example is None:
        raise InvalidInputError(f"{version.ref} has no registered input example to compare with: pass the training "
                                "data with --data X_train, or --baseline another version.")
    value = signature.rebuild(dict(version.input_example))
    frame = value if isinstance(value, pd.DataFrame) else pd.DataFrame(value)
    if not isinstance(value, pd.DataFrame):
        frame.columns = names if names is not None and len(names) == len(frame.columns) else [
            f"x{i}" for i in range(len(frame.columns))]
    return frame, f"the input example of {version.ref} ({len(frame):,} rows)"


def monitor(service: str, *, baseline: str | None = None, data: Any = None,
            since: str | float | datetime | None = None, registry: Registry | None = None) -> MonitorReport:
    """The monitoring dashboard of a deployment: traffic, latency, errors, predictions, accuracy, drift.

    Request volume, latency percentiles and error rate over time, the predictions, accuracy over time (once
    labels are attached) and per-feature drift (PSI, KS) against a baseline.

    Args:
        baseline: a model version whose input example is the reference (default: the deployed version's).
        data: a reference dataset instead (e.g. the training features): a DataFrame or array.
        since: only what was collected from then on.

    Raises:
        NotFoundError: no such deployment, it collects nothing, or no such baseline version.
        InvalidInputError: nothing collected in the window, or no baseline to compare with.
    """
    reg = or_default(registry)
    deployment, _ = collection_folder(reg, service)
    frame = collected(service, since=since, registry=reg)
    stats = frame.attrs["stats"]
    if frame.empty:
        raise InvalidInputError(f"Service {service!r} has no records{' in that window' if since else ''} yet: send "
                                f"it requests (records are written within a second). {stats!r}")
    names = feature_names(reg, deployment)
    reference, described = _baseline(reg, deployment, baseline, data, names)

    def again() -> MonitorReport:
        return monitor(service, baseline=baseline, data=data, since=since, registry=reg)

    model = f"{deployment.model_name}:{deployment.model_version}"
    return analysis.summarize(frame, reference, service=service, model=model, baseline=described, stats=stats,
                              again=again)

"""Monitoring: what deployments collected (``--collect``), labels, drift and the dashboard.

The API behind ``%collected``, ``%label`` and ``%monitor``. Deployments write under their data folder
(``$MLOPS_HOME/deployments/<service>/volume/data/collected``, see :mod:`mlops_backend.collector`); everything here
reads it directly, so it works while the service runs, after it stopped and after a crash.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops_magics.errors import InvalidInputError, NotFoundError
from mlops_magics.monitoring import store
from mlops_magics.monitoring.dashboard import MonitorReport, bucket_seconds
from mlops_magics.monitoring.drift import FeatureDrift, feature_drift
from mlops_magics.monitoring.store import CollectionStats
from mlops_magics.monitoring.table import BASE_COLUMNS, flatten
from mlops_magics.registry import Deployment, Registry, or_default
from mlops_magics.targets.base import data_dir

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: Columns that are not features (never compared for drift).
_NOT_FEATURES = {*BASE_COLUMNS, "prediction", "label", "input", "output", "error"}
#: A baseline smaller than this makes drift statistics weak: the report says so.
_SMALL_BASELINE = 30


def parse_since(since: str | float | datetime | None) -> float | None:
    """Epoch seconds from ``'90s'``, ``'30m'``, ``'1h'``, ``'2d'``, ``'1w'``, a datetime or epoch seconds.

    Raises:
        InvalidInputError: not one of those.
    """
    if since is None or isinstance(since, (int, float)):
        return since
    if isinstance(since, datetime):
        return since.timestamp()
    match = _SINCE.match(since)
    if not match:
        raise InvalidInputError(f"--since {since!r} is not a duration: use a number and a unit, e.g. 90s, 30m, 1h, "
                                "2d or 1w.")
    return time.time() - float(match[1]) * _UNITS[match[2]]


def _collection(reg: Registry, service: str) -> tuple[Deployment, Path]:
    try:
        deployment = reg.get_deployment(service)
    except NotFoundError:
        names = sorted(d.name for d in reg.deployments())
        raise NotFoundError(f"No deployment named {service!r}. Deployments: "
                            f"{', '.join(map(repr, names)) or 'none'}. Deploy one with %deploy MODEL --collect."
                            ) from None
    folder = data_dir(reg.home, service) / "collected"
    if not (folder / "stats").is_dir():
        raise NotFoundError(f"Service {service!r} has collected nothing: it was deployed without --collect. Deploy "
                            f"it with %deploy {deployment.model_name}:{deployment.model_version} --name {service} "
                            "--collect.")
    return deployment, folder


def _feature_names(reg: Registry, deployment: Deployment) -> list[str] | None:
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
    its ``input`` and ``output`` as sent. The writers' counters are in ``frame.attrs["stats"]``.

    Args:
        since: only records from then on (``'1h'``, ``'30m'``, a datetime...).
        limit: only the newest ``limit`` requests.
        designation: read what the entry script gave ``ModelDataCollector(designation=...)`` instead (its CSV
            files, all days).

    Raises:
        NotFoundError: no such deployment, or it collects nothing.
        InvalidInputError: a bad ``since``, ``limit`` or designation.
    """
    import pandas as pd

    reg = or_default(registry)
    deployment, folder = _collection(reg, service)
    start = parse_since(since)
    if limit is not None and limit < 1:
        raise InvalidInputError(f"--limit {limit} is invalid: give 1 or more.")
    if designation is not None:
        frame = _csv_frame(folder, designation, start, service)
    else:
        found = store.records(folder, since=start)
        chosen = deque(found, maxlen=limit) if limit is not None else list(found)
        rows = flatten(sorted(chosen, key=lambda r: r.get("time", 0)), _feature_names(reg, deployment),
                       store.labels(folder))
        frame = pd.DataFrame(rows, columns=None if rows else list(BASE_COLUMNS))
        frame = frame[[*BASE_COLUMNS, *(c for c in frame.columns if c not in BASE_COLUMNS)]]
        frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True)
    if limit is not None and designation is not None:
        frame = frame.tail(limit)
    frame.attrs["stats"] = store.stats(service, folder, running=deployment.state == "running")
    return frame.reset_index(drop=True)


def _csv_frame(folder: Path, designation: str, start: float | None, service: str) -> Any:
    import pandas as pd

    files = store.csv_files(folder, designation)
    if not files:
        known = store.designations(folder)
        raise InvalidInputError(f"Service {service!r} has no ModelDataCollector data for designation {designation!r}."
                                f" Designations collected: {', '.join(map(repr, known)) or 'none'}.")
    frame = pd.concat([pd.read_csv(p) for p in files], ignore_index=True)
    column = "$aml_dc_scoring_timestamp"
    if start is not None and column in frame:
        stamps = pd.to_datetime(frame[column], utc=True)
        frame = frame[stamps >= pd.Timestamp(start, unit="s", tz="UTC")]
    return frame


def collection_stats(service: str, *, registry: Registry | None = None) -> CollectionStats:
    """How many records a deployment's workers received, wrote, left out, dropped, or lost in a crash."""
    reg = or_default(registry)
    deployment, folder = _collection(reg, service)
    return store.stats(service, folder, running=deployment.state == "running")


class LabelResult:
    """What :func:`label` attached."""

    def __init__(self, service: str, attached: int, matched: int, unknown: Sequence[str], path: Path) -> None:
        self.service, self.attached, self.matched, self.unknown, self.path = service, attached, matched, unknown, path

    def __repr__(self) -> str:
        text = f"{self.service}: {self.attached:,} labels attached, {self.matched:,} to collected requests"
        if self.unknown:
            text += (f"; {len(self.unknown):,} request ids are not among the records (yet), e.g. "
                     f"{self.unknown[0]!r}: kept, they join when those records arrive")
        return text


def _label_pairs(data: Any) -> list[tuple[str, Any]]:
    """(request_id, label) pairs from a mapping, a Series indexed by request id, or a frame with a request_id
    column and one label column."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        if "request_id" not in data:
            raise InvalidInputError("The labels frame needs a 'request_id' column (the x-request-id of each request) "
                                    f"and a label column; it has {', '.join(map(str, data.columns))}.")
        others = [c for c in data.columns if c != "request_id"]
        column = next((c for c in ("label", "labels", "y", "target") if c in others), None)
        if column is None and len(others) == 1:
            column = others[0]
        if column is None:
            raise InvalidInputError(f"Which column holds the labels? Name it 'label' (columns: "
                                    f"{', '.join(map(str, others))}).")
        data = dict(zip(data["request_id"], data[column], strict=True))
    elif isinstance(data, pd.Series):
        data = data.to_dict()
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"Labels must be a mapping request id -> label, a Series indexed by request id or a "
                                f"DataFrame with request_id and label columns, not a {type(data).__name__}.")
    pairs = []
    for key, value in data.items():
        item = value.item() if hasattr(value, "item") else value
        pairs.append((str(key), item.tolist() if hasattr(item, "tolist") else item))
    if not pairs:
        raise InvalidInputError("No labels given.")
    return pairs


def label(service: str, data: Any, *, registry: Registry | None = None) -> LabelResult:
    """Attach ground-truth labels to collected requests by request id (a list labels a request's rows one by one).

    Raises:
        NotFoundError: no such deployment, or it collects nothing.
        InvalidInputError: labels in a shape we cannot read, or none of the request ids was ever collected.
    """
    reg = or_default(registry)
    _, folder = _collection(reg, service)
    pairs = _label_pairs(data)
    seen = {str(r.get("request_id")) for r in store.records(folder)}
    unknown = [rid for rid, _ in pairs if rid not in seen]
    if len(unknown) == len(pairs):
        raise InvalidInputError(f"None of the {len(pairs):,} request ids is among the records of {service!r} (e.g. "
                                f"{unknown[0]!r}). Label the ids the requests were sent with (their x-request-id "
                                f"header), as %collected {service} shows them.")
    path = store.write_labels(folder, pairs)
    return LabelResult(service, len(pairs), len(pairs) - len(unknown), unknown, path)


def _baseline(reg: Registry, deployment: Deployment, baseline: str | None, data: Any,
              names: list[str] | None) -> tuple[Any, str]:
    import pandas as pd

    from mlops_magics import signature

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


def _same(predicted: Any, labels: Any) -> Any:
    """Row-wise equality of predicted classes and labels (1 equals 1.0: a label column with gaps is float)."""
    import pandas as pd

    numbers = pd.to_numeric(predicted, errors="coerce"), pd.to_numeric(labels, errors="coerce")
    if numbers[0].notna().all() and numbers[1].notna().all():
        return numbers[0] == numbers[1]
    return predicted.astype(str) == labels.astype(str)


def _percentiles(values: Any) -> dict[str, float]:
    if not len(values):
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan}
    return {f"p{q}": float(values.quantile(q / 100)) for q in (50, 95, 99)}


def monitor(service: str, *, baseline: str | None = None, data: Any = None,
            since: str | float | datetime | None = None, registry: Registry | None = None) -> MonitorReport:
    """The dashboard of a deployment: request volume, latency percentiles, error rate, predictions, accuracy over
    time (with labels) and per-feature drift (PSI, KS) against a baseline.

    Args:
        baseline: a model version whose input example is the reference (default: the deployed version's).
        data: a reference dataset instead (e.g. the training features): a DataFrame or array.
        since: only what was collected from then on.

    Raises:
        NotFoundError: no such deployment, it collects nothing, or no such baseline version.
        InvalidInputError: nothing collected in the window, or no baseline to compare with.
    """
    import pandas as pd

    reg = or_default(registry)
    deployment, _ = _collection(reg, service)
    frame = collected(service, since=since, registry=reg)
    stats = frame.attrs["stats"]
    if frame.empty:
        raise InvalidInputError(f"Service {service!r} has no records{' in that window' if since else ''} yet: send "
                                f"it requests (records are written within a second). {stats!r}")
    per_request = frame.drop_duplicates("request_id")
    notes: list[str] = []
    span = max(1.0, (frame["time"].max() - frame["time"].min()).total_seconds())
    width = bucket_seconds(span)
    buckets = per_request.set_index("time").resample(f"{width}s")
    series = pd.DataFrame({
        "requests": buckets["status"].count(),
        "errors": buckets["status"].apply(lambda s: int((s >= 400).sum())),
        "p50_ms": buckets["latency_ms"].quantile(0.5),
        "p95_ms": buckets["latency_ms"].quantile(0.95),
        "p99_ms": buckets["latency_ms"].quantile(0.99),
    })
    series["error_rate"] = (series["errors"] / series["requests"]).fillna(0.0)
    ok = frame[frame["status"] < 400]
    kind, predictions, quality, labelled = "values", pd.Series(dtype=float), None, 0
    if "prediction" in ok and ok["prediction"].notna().any():
        values = ok["prediction"].dropna()
        numeric = pd.api.types.is_numeric_dtype(values)
        integral = numeric and bool((values.astype(float) % 1 == 0).all())
        kind = "classes" if not numeric or integral or values.nunique() <= 20 else "values"
        if integral:  # a column with gaps (failed requests) turns 1 into 1.0: classes are whole numbers
            values = values.astype(int)
        predictions = values.value_counts().sort_index() if kind == "classes" else values.astype(float)
        if "label" in ok:
            both = ok.dropna(subset=["prediction", "label"])
            labelled = len(both)
            if labelled:
                if kind == "classes":
                    hits = _same(both["prediction"], both["label"])
                else:
                    hits = (both["prediction"].astype(float) - both["label"].astype(float)).abs()
                quality = float(hits.mean())
                series["quality"] = hits.groupby(both["time"].dt.floor(f"{width}s")).mean().reindex(series.index)
    names = _feature_names(reg, deployment)
    reference, described = _baseline(reg, deployment, baseline, data, names)
    features = [c for c in frame.columns if c not in _NOT_FEATURES and c in reference.columns]
    drift: list[FeatureDrift] = [feature_drift(str(c), reference[c], ok[c]) for c in features]  # scored rows
    if not features:
        notes.append("No feature columns in common between the collected inputs and the baseline: no drift computed.")
    elif len(reference) < _SMALL_BASELINE:
        notes.append(f"The baseline has {len(reference)} rows: drift statistics on so few are weak. Compare with the "
                     "training data: %monitor SERVICE --data X_train.")
    if stats.dropped or stats.lost:
        notes.append(f"{stats.dropped + stats.lost:,} records are missing (dropped or lost in a crash); see below.")

    def again() -> MonitorReport:
        return monitor(service, baseline=baseline, data=data, since=since, registry=reg)

    return MonitorReport(
        service=service, model=f"{deployment.model_name}:{deployment.model_version}",
        start=frame["time"].min(), end=frame["time"].max(), requests=len(per_request), rows=len(frame),
        errors=int((per_request["status"] >= 400).sum()), latency_ms=_percentiles(per_request["latency_ms"]),
        bucket_s=width, series=series, predictions=predictions, prediction_kind=kind, labelled_rows=labelled,
        quality=quality, drift=tuple(drift), baseline=described, stats=stats, notes=tuple(notes), _again=again)


__all__ = ["CollectionStats", "LabelResult", "MonitorReport", "collected", "collection_stats", "label", "monitor",
           "parse_since"]

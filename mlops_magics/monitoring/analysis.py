"""The monitoring dashboard's figures: traffic, latency, errors, predictions, accuracy over time, drift."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from mlops_magics.monitoring.dashboard import MonitorReport, bucket_seconds
from mlops_magics.monitoring.drift import FeatureDrift, feature_drift
from mlops_magics.monitoring.store import CollectionStats
from mlops_magics.monitoring.table import BASE_COLUMNS

#: Columns that are not features (never compared for drift).
_NOT_FEATURES = {*BASE_COLUMNS, "prediction", "label", "input", "output", "error"}
#: A baseline smaller than this makes drift statistics weak: the report says so.
_SMALL_BASELINE = 30


def summarize(frame: Any, reference: Any, *, service: str, model: str, baseline: str, stats: CollectionStats,
              again: Callable[[], MonitorReport]) -> MonitorReport:
    """The dashboard of the collected ``frame`` (not empty), its features compared with ``reference``.

    Args:
        frame: the records, as :func:`mlops_magics.monitoring.collection.records_frame` reads them.
        reference: the baseline's features (a DataFrame).
        baseline: what the reference is, for the report.
        again: computes the dashboard afresh (for its refresh).
    """
    import pandas as pd

    notes: list[str] = []
    per_request = frame.drop_duplicates("request_id")
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
    features = [c for c in frame.columns if c not in _NOT_FEATURES and c in reference.columns]
    drift: list[FeatureDrift] = [feature_drift(str(c), reference[c], ok[c]) for c in features]  # scored rows
    if not features:
        notes.append("No feature columns in common between the collected inputs and the baseline: no drift computed.")
    elif len(reference) < _SMALL_BASELINE:
        notes.append(f"The baseline has {len(reference)} rows: drift statistics on so few are weak. Compare with the "
                     "training data: %monitor SERVICE --data X_train.")
    if stats.dropped or stats.lost:
        notes.append(f"{stats.dropped + stats.lost:,} records are missing (dropped or lost in a crash); see below.")

    return MonitorReport(
        service=service, model=model,
        start=frame["time"].min(), end=frame["time"].max(), requests=len(per_request), rows=len(frame),
        errors=int((per_request["status"] >= 400).sum()), latency_ms=_percentiles(per_request["latency_ms"]),
        bucket_s=width, series=series, predictions=predictions, prediction_kind=kind, labelled_rows=labelled,
        quality=quality, drift=tuple(drift), baseline=baseline, stats=stats, notes=tuple(notes), recompute=again)




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

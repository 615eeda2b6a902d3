"""The monitoring dashboard: traffic, latency, errors, predictions, accuracy and drift of one deployment."""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from typing import Any

from mlops_magics.monitoring.drift import FeatureDrift
from mlops_magics.monitoring.store import CollectionStats

#: Bucket widths the time series may use, in seconds: about 40 buckets cover the window.
_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)


def bucket_seconds(span: float, buckets: int = 40) -> int:
    """A round bucket width giving about ``buckets`` buckets over ``span`` seconds."""
    return next((b for b in _BUCKETS if span / b <= buckets), _BUCKETS[-1])


@dataclass(frozen=True)
class MonitorReport:
    """What a deployment saw over a window; displays itself as a dashboard (``refresh()`` reads it again)."""

    service: str
    model: str
    start: Any
    end: Any
    requests: int
    rows: int
    errors: int
    latency_ms: dict[str, float]
    bucket_s: int
    #: Per time bucket: requests, errors, error_rate, p50_ms, p95_ms, p99_ms, and accuracy (or mae) with labels.
    series: Any
    #: Class counts (classification) or the values themselves (regression).
    predictions: Any
    prediction_kind: str
    labelled_rows: int
    #: accuracy (classification) or mean absolute error (regression) over every labelled row; None without labels.
    quality: float | None
    drift: tuple[FeatureDrift, ...]
    baseline: str
    stats: CollectionStats
    notes: tuple[str, ...] = ()
    #: Computes the same dashboard afresh (what :meth:`refresh` calls).
    recompute: Callable[[], MonitorReport] | None = field(default=None, repr=False, compare=False)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def drifted(self) -> list[str]:
        """The features flagged as drifted."""
        return [d.feature for d in self.drift if d.drifted]

    def refresh(self) -> MonitorReport:
        """The same dashboard over the data collected up to now."""
        if self.recompute is None:
            raise RuntimeError("This report cannot be refreshed.")
        return self.recompute()

    def summary(self) -> str:
        quality = ""
        if self.quality is not None:
            name = "accuracy" if self.prediction_kind == "classes" else "MAE"
            value = f"{self.quality:.1%}" if name == "accuracy" else f"{self.quality:.4g}"
            quality = f", {name} {value} on {self.labelled_rows:,} labelled rows"
        latency = ", ".join(f"{k} {v:.2f} ms" for k, v in self.latency_ms.items())
        return (f"{self.service} ({self.model}): {self.requests:,} requests, {self.rows:,} rows, error rate "
                f"{self.error_rate:.1%}, latency {latency}{quality}")

    def __repr__(self) -> str:
        lines = [self.summary(), f"drift against {self.baseline}:"]
        lines += [f"  {d.feature}: PSI {d.psi:.3f}" + (f", KS {d.ks_statistic:.3f} (p={d.ks_pvalue:.3g})"
                                                       if d.ks_statistic is not None and d.ks_pvalue is not None
                                                       else "")
                  + (" DRIFT" if d.drifted else "") for d in self.drift]
        lines += [f"note: {n}" for n in self.notes]
        lines.append(repr(self.stats))
        return "\n".join(lines)

    def figure(self) -> Any:
        """The dashboard as a matplotlib figure (six panels)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 3, figsize=(13, 6.2), dpi=80)
        (volume, latency, errors), (predicted, quality, drift) = axes
        s = self.series
        when = s.index.tz_convert(None) if getattr(s.index, "tz", None) is not None else s.index  # UTC, plain
        width = self.bucket_s / 86400 * 0.9  # matplotlib dates are in days
        if len(s):
            volume.bar(when, s["requests"], width=width, color="#1f77b4")
            for name, style in (("p50_ms", "o-"), ("p95_ms", "s--"), ("p99_ms", "^:")):
                latency.plot(when, s[name], style, markersize=3, label=name[:-3])
            latency.legend(fontsize=8)
            errors.plot(when, s["error_rate"] * 100, "o-", markersize=3, color="#c62828")
        volume.set_title(f"requests per {self.bucket_s} s", fontsize=10)
        latency.set_title("latency (ms)", fontsize=10)
        errors.set_title("error rate (%)", fontsize=10)
        errors.set_ylim(bottom=0)
        if self.prediction_kind == "classes" and len(self.predictions):
            labels = [str(k) for k in self.predictions.index]
            predicted.bar(labels, self.predictions.values, color="#6a1b9a")
        elif len(self.predictions):
            predicted.hist(self.predictions, bins=30, color="#6a1b9a")
        predicted.set_title("predictions", fontsize=10)
        metric = "accuracy (%)" if self.prediction_kind == "classes" else "mean absolute error"
        if "quality" in s and s["quality"].notna().any():
            values = s["quality"] * (100 if self.prediction_kind == "classes" else 1)
            quality.plot(when, values, "o-", markersize=3, color="#2e7d32")
            if self.prediction_kind == "classes":
                quality.set_ylim(0, 105)
            quality.set_title(f"{metric} over time (labelled rows)", fontsize=10)
        else:
            quality.text(0.5, 0.5, "no labels yet:\n%label SERVICE --data ...", ha="center", va="center",
                         fontsize=10, transform=quality.transAxes)
            quality.set_title(metric, fontsize=10)
            if self.prediction_kind == "classes":  # the same 0-100 % axis as with labels
                quality.set_ylim(0, 105)
        if self.drift:
            names = [d.feature for d in self.drift]
            values = [0.0 if math.isnan(d.psi) else d.psi for d in self.drift]
            colours = ["#c62828" if d.drifted else "#2e7d32" for d in self.drift]
            drift.barh(names, values, color=colours)
            drift.axvline(0.2, color="#555", linestyle="--", linewidth=1)
            drift.invert_yaxis()
        drift.set_title("drift: PSI per feature (red: flagged)", fontsize=10)
        for axis in (volume, latency, errors, quality):
            if len(s):
                half = datetime.timedelta(seconds=self.bucket_s)
                axis.set_xlim(when[0] - half, when[-1] + half)
            locator = mdates.AutoDateLocator(maxticks=6)  # type: ignore[no-untyped-call]
            axis.xaxis.set_major_locator(locator)
            # whole clock times, never a bare "55" (seconds) as a concise formatter gives over short windows
            axis.xaxis.set_major_formatter(mdates.DateFormatter(self.time_format()))  # type: ignore[no-untyped-call]
            axis.tick_params(axis="x", labelsize=7)
            axis.set_xlabel("UTC", fontsize=7)
        fig.tight_layout()
        return fig

    def time_format(self) -> str:
        """How the time axes label their ticks (UTC): with seconds over short windows, the date over long ones."""
        span = (self.series.index[-1] - self.series.index[0]).total_seconds() if len(self.series) > 1 else 0.0
        if span >= 86400:
            return "%m-%d %H:%M"
        return "%H:%M:%S" if self.bucket_s < 60 else "%H:%M"

    def _repr_html_(self) -> str:
        from mlops_magics import display

        chart = display.figure_png(self.figure())
        rows = [d.as_row() for d in self.drift]
        drift = display.table(rows) if rows else "<p><em>No tabular features to compare.</em></p>"
        flagged = self.drifted
        verdict = (f'<p style="color:#c62828"><strong>Drift in {", ".join(map(escape, flagged))}</strong></p>'
                   if flagged else '<p style="color:#2e7d32">No feature drifted.</p>')
        notes = "".join(f"<li>{escape(n)}</li>" for n in self.notes)
        return (f"<div><p><strong>{escape(self.summary())}</strong></p>"
                f'<img src="data:image/png;base64,{chart}" alt="monitoring dashboard"/>'
                f"<p>Drift against {escape(self.baseline)}:</p>{verdict}{drift}"
                f"{'<ul>' + notes + '</ul>' if notes else ''}<p><small>{escape(repr(self.stats))}</small></p></div>")

"""What an ONNX conversion found: parity with the original, speed beside it, the version registered."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from html import escape
from typing import Any

from mlops_magics import display


@dataclass(frozen=True)
class Parity:
    """How closely the ONNX model reproduces the original on the check data."""

    kind: str  # classifier, regressor or other
    rows: int
    label_agreement: float | None
    max_abs_error: float | None
    max_rel_error: float | None
    passed: bool
    tolerance: Mapping[str, float]
    #: Up to five rows where the two differ most: index, native, onnx.
    worst: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Speed:
    """Side-by-side timings in this process (microseconds per single row; rows per second in batches)."""

    single_native_median_us: float
    single_native_p99_us: float
    single_onnx_median_us: float
    single_onnx_p99_us: float
    batch_rows: int
    batch_native_rows_per_s: float
    batch_onnx_rows_per_s: float

    @property
    def single_speedup(self) -> float:
        return self.single_native_median_us / self.single_onnx_median_us

    @property
    def batch_speedup(self) -> float:
        return self.batch_onnx_rows_per_s / self.batch_native_rows_per_s


@dataclass(frozen=True)
class OnnxReport:
    """What a conversion found: converter, parity, speed, and the version registered (if any)."""

    source: str
    converter: str
    opset: int
    quantized: str | None
    parity: Parity
    speed: Speed
    registered: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["speed"].update(single_speedup=self.speed.single_speedup, batch_speedup=self.speed.batch_speedup)
        return body

    def table(self) -> list[dict[str, Any]]:
        """The speed rows: one per path and model."""
        s = self.speed
        return [
            {"measure": "single row, median (us)", "original": round(s.single_native_median_us, 1),
             "onnx": round(s.single_onnx_median_us, 1), "speedup": f"{s.single_speedup:.1f}x"},
            {"measure": "single row, p99 (us)", "original": round(s.single_native_p99_us, 1),
             "onnx": round(s.single_onnx_p99_us, 1),
             "speedup": f"{s.single_native_p99_us / s.single_onnx_p99_us:.1f}x"},
            {"measure": f"batch of {s.batch_rows} (rows/s)", "original": round(s.batch_native_rows_per_s),
             "onnx": round(s.batch_onnx_rows_per_s), "speedup": f"{s.batch_speedup:.1f}x"},
        ]

    def parity_line(self) -> str:
        p = self.parity
        parts = [f"{p.rows} rows"]
        if p.label_agreement is not None:
            parts.append(f"labels agree {p.label_agreement:.1%}")
        if p.max_abs_error is not None:
            parts.append(f"max abs error {p.max_abs_error:.2e}")
        if p.max_rel_error is not None:
            parts.append(f"max rel error {p.max_rel_error:.2e}")
        return f"parity {'PASSED' if p.passed else 'FAILED'}: " + ", ".join(parts)

    def __repr__(self) -> str:
        head = (f"ONNX conversion of {self.source} ({self.converter}, opset {self.opset}"
                f"{', quantized ' + self.quantized if self.quantized else ''}): "
                f"{'registered as ' + self.registered if self.registered else 'not registered'}")
        rows = "\n".join(f"  {r['measure']:28} {r['original']:>12} {r['onnx']:>12} {r['speedup']:>8}"
                         for r in self.table())
        notes = "".join(f"\n  note: {n}" for n in self.notes)
        return (f"{head}\n  {self.parity_line()}\n  {'':28} {'original':>12} {'onnx':>12} {'speedup':>8}\n"
                f"{rows}{notes}")

    def _repr_html_(self) -> str:
        return report_html(self)


def report_html(report: OnnxReport) -> str:
    """The ONNX conversion report: outcome, parity, a speed table and chart, notes."""
    p, s = report.parity, report.speed
    colour = "#2e7d32" if p.passed else "#c62828"
    outcome = (f"registered as <strong>{escape(report.registered)}</strong>" if report.registered
               else "<strong>not registered</strong> (parity failed; --force registers anyway)")
    chart = display.bar_chart_png("original vs ONNX", ["single row (us, median)", "single row (us, p99)"],
                                  {"original": [s.single_native_median_us, s.single_native_p99_us],
                                   "onnx": [s.single_onnx_median_us, s.single_onnx_p99_us]}, "microseconds", log=True)
    image = f'<img src="data:image/png;base64,{chart}" alt="latency chart"/>' if chart else ""
    worst = display.table([dict(w) for w in p.worst]) if p.worst else ""
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
    return (f"<div><p>ONNX conversion of <strong>{escape(report.source)}</strong> ({escape(report.converter)}, "
            f"opset {report.opset}{', quantized ' + escape(report.quantized) if report.quantized else ''}): "
            f"{outcome}</p><p style=\"color:{colour}\">{escape(report.parity_line())}</p>{worst}"
            f"{display.table(report.table())}{image}{'<ul>' + notes + '</ul>' if notes else ''}</div>")

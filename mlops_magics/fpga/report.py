"""What a compiled program is worth: its work per layer, its EMULATED latency, its accuracy beside fp32 on the
user's rows, and the emulator's own speed, measured here; and a sweep of those over number formats.

Two kinds of figures, never mixed: EMULATED ones (cycles, microseconds, utilization: the latency model of
:mod:`mlops_magics.fpga.latency` on its engine, not a measurement on an FPGA) and MEASURED ones (accuracy,
agreement with fp32, the emulator's requests per second in numpy on this machine). Every emulated figure is
labelled ``emulated`` in its name, its column and its text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from html import escape
from typing import Any

import numpy as np

from mlops_magics import display
from mlops_magics.errors import InvalidInputError
from mlops_magics.fpga.compiler import Program
from mlops_magics.fpga.emulator import Emulator
from mlops_magics.fpga.latency import Engine, estimate_latency

#: Seconds the emulator's requests per second are measured for, by default.
RPS_SECONDS = 0.3
#: Rows at most that accuracy and agreement are computed on (more are refused: say --data X[:N]).
MAX_ROWS = 1_000_000
EMULATED_NOTE = ("Latency, cycles and utilization are EMULATED: the latency model of a Brainwave-style engine "
                 "(clock, native dimension, lanes, tile engines), batch 1, not a measurement on an FPGA. Accuracy "
                 "and requests/s are measured here; requests/s is the emulator's own speed in numpy on this machine.")


def rows_of(data: Any, program: Program, option: str = "data") -> np.ndarray:
    """``data`` as float32 rows of the program's input shape (a frame's values, a list, an array).

    Raises:
        InvalidInputError: the rows do not fit the program's input, or there are too many.
    """
    values = getattr(data, "to_numpy", None)
    try:
        array = np.asarray(values() if callable(values) else data, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{option} is not numeric rows: {exc}.") from exc
    shape = program.input_shape
    if array.shape == shape:
        array = array[None]
    if array.ndim == 2 and len(shape) > 1 and array.shape[1] == int(np.prod(shape)):
        array = array.reshape(-1, *shape)  # flat pixels for an image network
    if array.shape[1:] != shape:
        raise InvalidInputError(f"{option} has shape {array.shape}; the program takes rows of shape {shape} "
                                f"(an array (n, {', '.join(map(str, shape))})).")
    if len(array) > MAX_ROWS:
        raise InvalidInputError(f"{option} has {len(array):,} rows; give at most {MAX_ROWS:,} (e.g. {option}[:10000]).")
    return array


def requests_per_second(emulator: Emulator, rows: np.ndarray, seconds: float = RPS_SECONDS) -> float:
    """The emulator's requests per second at batch 1 (one row per call), measured for about ``seconds``."""
    if seconds <= 0 or not len(rows):
        return 0.0
    done, started = 0, time.perf_counter()
    while True:
        for row in rows[:50]:
            emulator.run(row[None])
            done += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed


@dataclass(frozen=True)
class FineTuneSummary:
    """What quantization-aware fine-tuning did, as a program's report shows it (``FpgaReport.finetune``).

    ``accuracy_*`` are the emulated accuracy in ``format``, ``fp32_accuracy_*`` in fp32, of the weights before and
    after tuning, all on the same ``measured_rows`` rows (``measured_on`` says which, and ``overlap_rows`` how many
    of them were also trained on: 0 unless the user allowed it). Fractions in [0, 1]; ``drop_*`` and
    ``fp32_change`` in points, the drops against the original weights in fp32.
    """

    epochs: int
    format: str
    vector_format: str
    tuned_from: str
    tuned_version: str | None
    train_rows: int
    measured_rows: int
    measured_on: str
    overlap_rows: int
    accuracy_before: float
    accuracy_after: float
    fp32_accuracy_before: float
    fp32_accuracy_after: float
    drop_before: float
    drop_after: float
    fp32_change: float
    learning_rate: float
    batch_size: int
    seed: int
    seconds: float
    history: tuple[dict[str, float], ...] = ()

    def line(self) -> str:
        """Before -> after in one line."""
        cost = ", tuning cost fp32 accuracy" if self.fp32_change < 0 else ""
        return (f"{self.format} accuracy {self.accuracy_before:.2%} -> {self.accuracy_after:.2%} (drop vs fp32 "
                f"{self.drop_before:+.2f} -> {self.drop_after:+.2f} points), fp32 {self.fp32_accuracy_before:.2%} -> "
                f"{self.fp32_accuracy_after:.2%} ({self.fp32_change:+.2f} points{cost}), on {self.measured_on}; "
                f"{self.epochs} epochs on {self.train_rows} training rows (learning rate {self.learning_rate:g}, "
                f"batch {self.batch_size}, seed {self.seed}, {self.seconds:.1f} s)")


def _classifier(program: Program) -> bool:
    return any(kind == "label" for kind, _ in program.outputs.values())


@dataclass(frozen=True)
class FpgaReport:
    """A program compiled for the emulated FPGA engine: its work, EMULATED latency, memory, measured accuracy.

    ``layers`` has a row per layer (instructions, tiles, MACs, weight bytes, emulated cycles and microseconds).
    Accuracy fields are None without data (accuracy and the fp32 accuracy need labels too). ``program`` is the
    compiled program itself (not stored).
    """

    source: str
    format: str
    format_description: str
    bits_per_element: float
    vector_format: str
    native_dim: int
    engine: dict[str, Any]
    layers: tuple[dict[str, Any], ...]
    macs: int
    tiles: int
    instructions: int
    weight_bytes: float
    fp32_weight_bytes: float
    emulated_cycles: int
    emulated_us: float
    emulated_utilization: float
    emulated_load_cycles: int
    kind: str
    rows: int | None = None
    accuracy: float | None = None
    fp32_accuracy: float | None = None
    agreement: float | None = None
    max_abs_difference: float | None = None
    emulator_rps: float | None = None
    registered: str | None = None
    notes: tuple[str, ...] = ()
    finetune: FineTuneSummary | None = None
    program: Program | None = field(default=None, compare=False, repr=False)

    @property
    def drop_points(self) -> float | None:
        """fp32 accuracy minus this format's, in percentage points (None without labels)."""
        if self.accuracy is None or self.fp32_accuracy is None:
            return None
        return (self.fp32_accuracy - self.accuracy) * 100

    def as_dict(self) -> dict[str, Any]:
        """The report as the registry stores it (without the program)."""
        body = asdict(self)
        body.pop("program", None)
        body["drop_points"] = self.drop_points
        return body

    def summary(self) -> str:
        """One line: format, accuracy beside fp32, emulated latency, weights."""
        parts = [f"{self.format} on {self.native_dim}-wide tiles"]
        if self.accuracy is not None and self.fp32_accuracy is not None:
            parts.append(f"accuracy {self.accuracy:.2%} vs fp32 {self.fp32_accuracy:.2%} ({self.drop_points:+.2f} "
                         f"points drop) on {self.rows} rows")
        elif self.agreement is not None:
            parts.append(f"labels agree with fp32 on {self.agreement:.2%} of {self.rows} rows")
        if self.finetune is not None:
            t = self.finetune
            parts.append(f"fine-tuned {t.epochs} epochs from {t.tuned_from}: {t.format} accuracy "
                         f"{t.accuracy_before:.2%} -> {t.accuracy_after:.2%}, fp32 {t.fp32_change:+.2f} points")
        parts.append(f"emulated latency {self.emulated_us:.3f} us")
        parts.append(f"weights {self.weight_bytes:,.0f} bytes (fp32 {self.fp32_weight_bytes:,.0f})")
        return ", ".join(parts)

    def _facts(self) -> list[tuple[str, str]]:
        e = self.engine
        facts = [("source", self.source), ("registered as", self.registered or "not registered"),
                 ("format", f"{self.format}: {self.format_description} ({self.bits_per_element:.4g} bits/value); "
                            f"vectors {self.vector_format}"),
                 ("engine (emulated)", f"{e['macs_per_cycle']:,} MACs at {e['clock_mhz']:g} MHz, native dimension "
                                       f"{self.native_dim}, {e['lanes']} lanes, {e['tile_engines']} tile engines "
                                       f"({e['source']})"),
                 ("work per request", f"{self.macs:,} MACs, {self.tiles} tiles, {self.instructions:,} instructions"),
                 ("emulated latency", f"{self.emulated_us:.3f} us emulated ({self.emulated_cycles:,} cycles emulated, "
                                      f"utilization {self.emulated_utilization:.2%} emulated; loading the weights "
                                      f"{self.emulated_load_cycles:,} cycles emulated, once)"),
                 ("weight memory", f"{self.weight_bytes:,.0f} bytes in {self.format} (fp32: "
                                   f"{self.fp32_weight_bytes:,.0f} bytes)")]
        if self.rows is not None:
            measured = [f"{self.rows} rows"]
            if self.accuracy is not None:
                measured.append(f"accuracy {self.accuracy:.2%}")
            if self.fp32_accuracy is not None:
                whose = " of the tuned weights" if self.finetune is not None else ""
                measured.append(f"fp32{whose} {self.fp32_accuracy:.2%} ({self.drop_points:+.2f} points drop)")
            if self.agreement is not None:
                measured.append(f"labels agree with fp32 on {self.agreement:.2%}")
            if self.max_abs_difference is not None:
                measured.append(f"max abs difference from fp32 {self.max_abs_difference:.3g}")
            facts.append(("accuracy (measured)", ", ".join(measured)))
        if self.finetune is not None:
            t = self.finetune
            tuned = f" (the tuned weights: {t.tuned_version})" if t.tuned_version else " (tuned weights not registered)"
            facts.append(("fine-tuning (measured)", f"quantization-aware, from {t.tuned_from}{tuned}: {t.line()}"))
        if self.emulator_rps is not None:
            facts.append(("emulator speed (measured)", f"{self.emulator_rps:,.0f} requests/s at batch 1 in numpy on "
                                                       "this machine (the emulator, not the FPGA)"))
        return facts

    def table(self) -> list[dict[str, Any]]:
        """The layers as display rows (emulated columns say so)."""
        return [{"layer": r["layer"], "kind": r["kind"], "ops": r["ops"], "shape": f"{r['input']} -> {r['output']}",
                 "instructions": r["instructions"], "tiles": r["tiles"], "MACs": f"{r['macs']:,}",
                 "weight bytes": f"{r['weight_bytes']:,.0f}",
                 "emulated cycles": "host" if r["host"] else f"{r['emulated_cycles']:,}",
                 "emulated us": "host" if r["host"] else f"{r['emulated_us']:.3f}", "program": r["program"]}
                for r in self.layers]

    def __repr__(self) -> str:
        registered = f"registered as {self.registered}" if self.registered else "not registered"
        lines = [f"FPGA program of {self.source} ({registered})"]
        lines += [f"  {name}: {value}" for name, value in self._facts()[2:]]
        lines.append("  layers:")
        for row in self.table():
            lines.append(f"    {row['layer']:<16} {row['kind']:<9} {row['shape']:<22} {row['instructions']:>5} instr "
                         f"{row['tiles']:>3} tiles {row['MACs']:>9} MACs {row['weight bytes']:>8} B  "
                         f"{row['emulated us'] + ' us emulated' if row['emulated us'] != 'host' else 'on the host':>19}"
                         f"  {row['program']}")
        lines += [f"  note: {note}" for note in (*self.notes, EMULATED_NOTE)]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        facts = "".join(f"<tr><th style=\"text-align:left;padding-right:1em\">{escape(k)}</th><td>{escape(v)}</td>"
                        "</tr>" for k, v in self._facts())
        notes = "".join(f"<p><small>{escape(n)}</small></p>" for n in (*self.notes, EMULATED_NOTE))
        return (f"<div><p><strong>FPGA program</strong> ({escape(self.format)}) of <strong>{escape(self.source)}"
                f"</strong></p><table>{facts}</table>{display.table(self.table())}{notes}</div>")


def assess(program: Program, fp32: Program, *, source: str, engine: Engine, data: Any = None, labels: Any = None,
           rps_seconds: float = RPS_SECONDS, registered: str | None = None,
           notes: Sequence[str] = (), finetune: FineTuneSummary | None = None) -> FpgaReport:
    """The report of ``program`` beside ``fp32`` (the same network compiled in fp32) on ``data`` and ``labels``;
    ``finetune`` says what fine-tuning did when the program's weights were tuned for it.

    Raises:
        InvalidInputError: rows that do not fit the program; labels without data or of another length.
    """
    latency = estimate_latency(program, engine)
    emulator = Emulator(program)
    kind = "classifier" if _classifier(program) else "regressor"
    rows = accuracy = fp32_accuracy = agreement = difference = None
    timing_rows = np.zeros((1, *program.input_shape), np.float32)
    if labels is not None and data is None:
        raise InvalidInputError("labels were given without data: give the rows (data) they label too.")
    if data is not None:
        x = rows_of(data, program)
        timing_rows = x
        reference = Emulator(fp32)
        scores, fp32_scores = emulator.scores(x), reference.scores(x)
        rows = len(x)
        difference = float(np.max(np.abs(scores - fp32_scores))) if rows else 0.0
        if kind == "classifier":
            predicted, fp32_predicted = emulator.predict(x), reference.predict(x)
            agreement = float(np.mean(predicted == fp32_predicted)) if rows else 1.0
            if labels is not None:
                truth = np.asarray(labels).reshape(-1)
                if len(truth) != rows:
                    raise InvalidInputError(f"labels has {len(truth)} values for {rows} rows of data: give one label "
                                            "per row.")
                accuracy = float(np.mean(predicted == truth))
                fp32_accuracy = float(np.mean(fp32_predicted == truth))
    rps = requests_per_second(emulator, timing_rows, rps_seconds) if rps_seconds > 0 else None
    per_layer = {layer.layer: layer for layer in latency.layers}
    layers = tuple({**row, "host": per_layer[row["layer"]].host, "emulated_cycles": per_layer[row["layer"]].cycles,
                    "emulated_us": per_layer[row["layer"]].microseconds,
                    "input": str(row["input"]), "output": str(row["output"])} for row in program.table())
    e = engine
    return FpgaReport(
        source=source, format=program.format.name, format_description=program.format.description,
        bits_per_element=program.format.bits_per_element, vector_format=program.vector_format.name,
        native_dim=program.native_dim,
        engine={"clock_mhz": e.clock_mhz, "native_dim": e.native_dim, "lanes": e.lanes, "tile_engines": e.tile_engines,
                "dispatch_cycles": e.dispatch_cycles, "macs_per_cycle": e.macs_per_cycle, "source": e.source},
        layers=layers, macs=program.macs, tiles=program.tiles, instructions=program.instruction_count,
        weight_bytes=program.weight_bits / 8, fp32_weight_bytes=fp32.weight_bits / 8,
        emulated_cycles=latency.cycles, emulated_us=latency.microseconds,
        emulated_utilization=latency.utilization, emulated_load_cycles=latency.load_cycles, kind=kind, rows=rows,
        accuracy=accuracy, fp32_accuracy=fp32_accuracy, agreement=agreement, max_abs_difference=difference,
        emulator_rps=rps, registered=registered, notes=tuple(notes), finetune=finetune, program=program)


#: The columns of :attr:`SweepReport.frame`, in order.
SWEEP_COLUMNS = ("format", "bits_per_value", "accuracy", "drop_points", "agreement", "max_abs_difference",
                 "weight_bytes", "emulated_us", "emulated_cycles", "emulator_rps")


@dataclass(frozen=True)
class SweepReport:
    """One compiled program per number format, side by side: measured accuracy drop against EMULATED latency and
    weight memory. ``frame`` is the table as a DataFrame; ``figure()`` the plot."""

    source: str
    native_dim: int
    reports: tuple[FpgaReport, ...]

    def rows(self) -> list[dict[str, Any]]:
        """A row per format (the columns of :data:`SWEEP_COLUMNS`)."""
        return [{"format": r.format, "bits_per_value": r.bits_per_element, "accuracy": r.accuracy,
                 "drop_points": r.drop_points, "agreement": r.agreement, "max_abs_difference": r.max_abs_difference,
                 "weight_bytes": r.weight_bytes, "emulated_us": r.emulated_us, "emulated_cycles": r.emulated_cycles,
                 "emulator_rps": r.emulator_rps} for r in self.reports]

    @property
    def frame(self) -> Any:
        """The table as a pandas DataFrame indexed by nothing (a column per :data:`SWEEP_COLUMNS`)."""
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=list(SWEEP_COLUMNS))

    def as_dict(self) -> dict[str, Any]:
        """The sweep as JSON data."""
        return {"source": self.source, "native_dim": self.native_dim, "formats": self.rows()}

    @property
    def same_latency(self) -> bool:
        """True when every format has the same emulated latency (the model counts the same engine's cycles)."""
        return len({r.emulated_cycles for r in self.reports}) == 1

    def notes(self) -> list[str]:
        """What to know when reading the plot."""
        notes = [EMULATED_NOTE]
        if self.same_latency:
            notes.insert(0, "Every format has the same emulated latency: the latency model counts cycles of one "
                            "engine, whose tiles and instructions do not depend on the number format; narrower "
                            "formats change the weight memory (and would let a real FPGA fit more MACs, which this "
                            "model does not assume).")
        return notes

    def figure(self) -> Any:
        """A matplotlib figure: accuracy drop against weight memory and against emulated latency, per format."""
        figure = display.new_figure(figsize=(9, 3.4), dpi=90)
        left, right = figure.subplots(1, 2)
        drops = [r.drop_points if r.drop_points is not None else 0.0 for r in self.reports]
        ylabel = "accuracy drop vs fp32 (points)" if all(r.drop_points is not None for r in self.reports) else (
            "accuracy drop (no labels: 0)")
        for axes, values, label in ((left, [r.weight_bytes / 1024 for r in self.reports], "weight memory (KiB)"),
                                    (right, [r.emulated_us for r in self.reports], "EMULATED latency (us, batch 1)")):
            axes.scatter(values, drops, color="#1565c0")
            for x, y, r in zip(values, drops, self.reports, strict=True):
                axes.annotate(r.format, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
            axes.axhline(0, color="#999", linewidth=0.8)
            axes.set_xlabel(label)
            axes.set_ylabel(ylabel)
        left.set_title(f"{self.source}: accuracy drop vs weight memory", fontsize=9)
        right.set_title("accuracy drop vs emulated latency", fontsize=9)
        figure.tight_layout()
        return figure

    def _table_rows(self) -> list[dict[str, str]]:
        def share(v: float | None) -> str:
            return "" if v is None else f"{v:.2%}"

        return [{"format": r["format"], "bits/value": f"{r['bits_per_value']:.4g}", "accuracy": share(r["accuracy"]),
                 "drop (points)": "" if r["drop_points"] is None else f"{r['drop_points']:+.2f}",
                 "agrees with fp32": share(r["agreement"]), "weight bytes": f"{r['weight_bytes']:,.0f}",
                 "emulated us": f"{r['emulated_us']:.3f}", "emulated cycles": f"{r['emulated_cycles']:,}",
                 "emulator req/s (measured)": "" if r["emulator_rps"] is None else f"{r['emulator_rps']:,.0f}"}
                for r in self.rows()]

    def __repr__(self) -> str:
        lines = [f"FPGA format sweep of {self.source} (native dimension {self.native_dim}):"]
        for row in self._table_rows():
            lines.append("  " + "  ".join(f"{k} {v}" for k, v in row.items() if v != ""))
        lines += [f"  note: {n}" for n in self.notes()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        png = display.figure_png(self.figure())
        notes = "".join(f"<p><small>{escape(n)}</small></p>" for n in self.notes())
        return (f"<div><p><strong>FPGA format sweep</strong> of <strong>{escape(self.source)}</strong> (native "
                f"dimension {self.native_dim})</p>{display.table(self._table_rows())}"
                f"<img alt=\"accuracy drop vs weight memory and emulated latency\" "
                f"src=\"data:image/png;base64,{png}\"/>{notes}</div>")

"""Model versions side by side: metrics, signature differences, validation and profile results, size, latency.

What ``%compare iris:1 iris:2`` shows (MLflow's run comparison, for registered versions). The first version is
the one the others are compared with: their signatures are diffed against its, and cells that differ from its
are marked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from mlops_magics.display import human_size, when
from mlops_magics.registry.records import ModelVersion

#: Column names a signature difference lists before it summarises (``... and 12 more``).
_SHOWN_NAMES = 8
#: Characters of a cell in the text table.
_TEXT_CELL = 40


@dataclass(frozen=True)
class SignatureDiff:
    """How a version's input signature differs from another's: columns added, removed, retyped."""

    ref: str
    against: str
    #: (column, dtype) in ``ref`` and not in ``against``.
    added: tuple[tuple[str, str], ...] = ()
    #: (column, dtype) in ``against`` and not in ``ref``.
    removed: tuple[tuple[str, str], ...] = ()
    #: (column, dtype in ``against``, dtype in ``ref``).
    changed: tuple[tuple[str, str, str], ...] = ()
    #: The outputs' descriptions (``against``'s, ``ref``'s) when they differ.
    outputs: tuple[str, str] | None = None
    #: Why there is nothing to compare (a version registered without ``--sample`` has no signature).
    missing: str | None = None

    @property
    def same(self) -> bool:
        """True when both have a signature and they agree."""
        return self.missing is None and not (self.added or self.removed or self.changed or self.outputs)

    def summary(self) -> str:
        """One line: 'same as iris:1', or what was added, removed and retyped."""
        if self.missing:
            return self.missing
        if self.same:
            return f"same as {self.against}"
        parts = []
        if self.added:
            parts.append(f"+{len(self.added)}: {_names(f'{c} {t}' for c, t in self.added)}")
        if self.removed:
            parts.append(f"-{len(self.removed)}: {_names(f'{c} {t}' for c, t in self.removed)}")
        if self.changed:
            parts.append(f"~{len(self.changed)}: {_names(f'{c} {a}->{b}' for c, a, b in self.changed)}")
        if self.outputs:
            parts.append(f"outputs {self.outputs[0]} -> {self.outputs[1]}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """The difference as JSON-ready values."""
        return {"ref": self.ref, "against": self.against, "same": self.same, "missing": self.missing,
                "added": [{"column": c, "dtype": t} for c, t in self.added],
                "removed": [{"column": c, "dtype": t} for c, t in self.removed],
                "changed": [{"column": c, "from": a, "to": b} for c, a, b in self.changed],
                "outputs": None if self.outputs is None else {"from": self.outputs[0], "to": self.outputs[1]}}


def _names(items: Any) -> str:
    listed = list(items)
    more = f" and {len(listed) - _SHOWN_NAMES} more" if len(listed) > _SHOWN_NAMES else ""
    return ", ".join(listed[:_SHOWN_NAMES]) + more


def input_columns(signature: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The input columns of a signature and their types (a 2-D tensor's columns are ``[0]``, ``[1]``...)."""
    if not signature:
        return None
    inputs = signature.get("inputs") or {}
    kind = inputs.get("type")
    if kind == "dataframe":
        return {str(c.get("name")): str(c.get("dtype")) for c in inputs.get("columns") or []}
    if kind == "tensor":
        shape, dtype = inputs.get("shape") or [], str(inputs.get("dtype"))
        if len(shape) == 2 and isinstance(shape[1], int) and 0 < shape[1] <= 100_000:
            return {f"[{i}]": dtype for i in range(shape[1])}
        return {"tensor": f"{dtype} {shape}"}
    return {"input": str(kind)}


def describe(schema: Mapping[str, Any] | None) -> str:
    """A short description of one side of a signature ('tensor float64 [-1, 4]', 'dataframe, 13 columns')."""
    if not schema:
        return "none"
    kind = schema.get("type")
    if kind == "dataframe":
        return f"dataframe, {len(schema.get('columns') or [])} columns"
    if kind == "tensor":
        return f"tensor {schema.get('dtype')} {schema.get('shape')}"
    if kind == "series":
        return f"series {schema.get('dtype')}"
    return str(kind)


def signature_diff(version: ModelVersion, against: ModelVersion) -> SignatureDiff:
    """How ``version``'s input signature differs from ``against``'s."""
    mine, theirs = input_columns(version.signature), input_columns(against.signature)
    if mine is None or theirs is None:
        lacking = [v.ref for v, cols in ((against, theirs), (version, mine)) if cols is None]
        return SignatureDiff(version.ref, against.ref, missing=f"no signature for {' and '.join(lacking)} "
                                                                 "(registered without --sample)")
    outputs = (describe((against.signature or {}).get("outputs")), describe((version.signature or {}).get("outputs")))
    return SignatureDiff(
        version.ref, against.ref,
        added=tuple((c, t) for c, t in mine.items() if c not in theirs),
        removed=tuple((c, t) for c, t in theirs.items() if c not in mine),
        changed=tuple((c, theirs[c], t) for c, t in mine.items() if c in theirs and theirs[c] != t),
        outputs=None if outputs[0] == outputs[1] else outputs)


@dataclass(frozen=True)
class ComparisonRow:
    """One line of a comparison: what it shows, the value of each version (None: it has none) and as shown."""

    section: str
    what: str
    values: tuple[Any, ...]
    shown: tuple[str, ...]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        float(value)) else None


@dataclass(frozen=True)
class Comparison:
    """Versions side by side (the first is the one the others are compared with).

    ``rows`` hold the values (numbers stay numbers: ``to_dataframe()`` sorts and plots them); ``signatures`` the
    difference of each other version's input signature from the first's.
    """

    versions: tuple[ModelVersion, ...]
    rows: tuple[ComparisonRow, ...]
    signatures: tuple[SignatureDiff, ...]

    @property
    def refs(self) -> tuple[str, ...]:
        """``NAME:VERSION`` of each version compared, in order."""
        return tuple(v.ref for v in self.versions)

    def row(self, what: str, section: str | None = None) -> ComparisonRow:
        """The row showing ``what`` (in ``section``).

        Raises:
            KeyError: there is none; the message lists the rows.
        """
        for row in self.rows:
            if row.what == what and section in (None, row.section):
                return row
        raise KeyError(f"no row {what!r}; rows: {', '.join(r.what for r in self.rows)}")

    def to_dataframe(self) -> Any:
        """A pandas DataFrame: a column per version, a row per (section, what) (needs pandas)."""
        import pandas as pd

        index = pd.MultiIndex.from_tuples([(r.section, r.what) for r in self.rows], names=["section", "what"])
        return pd.DataFrame({ref: [r.values[i] for r in self.rows] for i, ref in enumerate(self.refs)}, index=index)

    def as_dict(self) -> dict[str, Any]:
        """The comparison as JSON-ready values."""
        return {"versions": list(self.refs),
                "rows": [{"section": r.section, "what": r.what,
                          "values": {ref: _json_value(value) for ref, value in zip(self.refs, r.values, strict=True)}}
                         for r in self.rows],
                "signatures": [d.as_dict() for d in self.signatures]}

    def __repr__(self) -> str:
        header = ["", *self.refs]
        lines: list[list[str]] = [header]
        section = None
        for r in self.rows:
            if r.section != section:
                section = r.section
                lines.append([f"{section}:", *[""] * len(self.refs)])
            lines.append([f"  {r.what}", *(_clip(s) for s in r.shown)])
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        table = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]
        changed = [f"  {d.ref}: {d.summary()}" for d in self.signatures if not d.same]
        return "\n".join([*table, *(["signature differences (in full):", *changed] if changed else [])])

    def _repr_html_(self) -> str:
        cell = "padding:2px 8px;text-align:left;border-bottom:1px solid #eee"
        head = "".join(f'<th style="{cell}">{escape(ref)}</th>' for ref in self.refs)
        body, section = [], None
        for r in self.rows:
            if r.section != section:
                section = r.section
                body.append(f'<tr><th colspan="{len(self.refs) + 1}" style="{cell};background:#f5f5f5">'
                            f'{escape(section)}</th></tr>')
            cells = "".join(
                f'<td style="{cell}{";background:#fff3e0" if i and r.values[i] != r.values[0] else ""}">'
                f'{escape(shown)}</td>' for i, shown in enumerate(r.shown))
            body.append(f'<tr><td style="{cell}">{escape(r.what)}</td>{cells}</tr>')
        changed = "".join(f"<li><strong>{escape(d.ref)}</strong>: {escape(d.summary())}</li>"
                          for d in self.signatures if not d.same)
        return (f"<div><p>{len(self.refs)} versions compared with <strong>{escape(self.refs[0])}</strong> "
                "(cells that differ from it are shaded)</p>"
                f'<table style="border-collapse:collapse;font-size:12px"><thead><tr><th style="{cell}"></th>{head}'
                f"</tr></thead><tbody>{''.join(body)}</tbody></table>"
                + (f"<p>Signature differences</p><ul>{changed}</ul>" if changed else "") + "</div>")


def _clip(text: str) -> str:
    return text if len(text) <= _TEXT_CELL else text[:_TEXT_CELL - 3] + "..."


def _json_value(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def compare(versions: Sequence[ModelVersion], reports: Sequence[Mapping[str, Any]]) -> Comparison:
    """Put versions side by side, with the reports stored for each (by kind: validation, profile, onnx).

    Args:
        versions: two or more versions; the first is the one the others are compared with.
        reports: each version's stored reports, in the same order.
    """
    rows: list[ComparisonRow] = []

    def add(section: str, what: str, values: Sequence[Any], show: Any = None) -> None:
        if all(v is None for v in values):
            return
        shown = tuple("-" if v is None else (show(v) if show else str(v)) for v in values)
        rows.append(ComparisonRow(section, what, tuple(values), shown))

    def metric(value: float) -> str:
        return f"{value:.4g}"

    add("version", "flavor", [v.flavor for v in versions])
    add("version", "framework", [" ".join(x for x in (v.framework, v.framework_version) if x) or None
                                 for v in versions])
    add("version", "created", [v.created_at for v in versions], lambda t: f"{when(t)}")
    add("version", "size (bytes)", [v.size for v in versions], human_size)
    add("version", "aliases", [", ".join(v.aliases) or None for v in versions])
    add("version", "derived from", [v.lineage.derived_from for v in versions])
    registered = sorted({key for v in versions for key in v.metrics})
    for key in registered:
        add("metrics (registered)", key, [v.metrics.get(key) for v in versions], metric)
    measured = sorted({(m.source, m.key) for v in versions for m in v.measured_metrics})
    for source, key in measured:
        add(f"metrics (measured by {source})", key,
            [next((m.value for m in v.measured_metrics if (m.source, m.key) == (source, key)), None) for v in versions],
            metric)
    diffs = tuple(signature_diff(v, versions[0]) for v in versions[1:])
    columns = [input_columns(v.signature) for v in versions]
    add("signature", "inputs", [describe((v.signature or {}).get("inputs")) if v.signature else None
                                for v in versions])
    add("signature", "input columns", [None if c is None else len(c) for c in columns])
    if any(v.signature for v in versions):
        add("signature", f"vs {versions[0].ref}", [None, *(d.summary() for d in diffs)])
    validation = [r.get("validation") for r in reports]
    add("validation", "verdict", [None if r is None else ("passed" if r.get("passed") else "FAILED")
                                  for r in validation])
    add("validation", "checks", [None if r is None else "; ".join(
        f"{'ok' if c.get('passed') else 'FAIL'} {c.get('check')}" for c in r.get("checks", [])) for r in validation])
    add("validation", "rows", [None if r is None else r.get("rows") for r in validation])
    add("validation", "data sha256", [None if r is None else str(r.get("data_sha256", ""))[:12] or None
                                      for r in validation])
    add("validation", "at", [None if r is None else r.get("at") for r in validation])
    profile = [r.get("profile") for r in reports]
    add("profile", "target", [None if p is None else f"{p.get('target')}" + (
        "" if p.get("limits_applied") else " (no CPU/memory limits)") for p in profile])
    add("profile", "recommended", [None if p is None or p.get("recommendedCpu") is None else
                                   f"cpu={p.get('recommendedCpu')}, memory={p.get('recommendedMemoryInGB')} GB"
                                   for p in profile])
    add("profile", "p95 latency (ms)", [None if p is None else _p95(p) for p in profile], lambda ms: f"{ms:.1f}")
    add("profile", "throughput (req/s)", [None if p is None else _number(max(
        (c.get("measuredQueriesPerSecond") or 0 for c in p.get("configurations") or []), default=0) or None)
        for p in profile], lambda q: f"{q:.0f}")
    add("profile", "success rate", [None if p is None else _number(max(
        (c.get("successRate") or 0 for c in p.get("configurations") or []), default=0)) for p in profile],
        lambda s: f"{s:.1%}")
    onnx = [r.get("onnx") for r in reports]
    add("onnx", "converted from", [None if o is None else o.get("source") for o in onnx])
    add("onnx", "single-row speed-up", [None if o is None else _number((o.get("speed") or {}).get("single_speedup"))
                                        for o in onnx], lambda x: f"{x:.1f}x")
    add("onnx", "batch speed-up", [None if o is None else _number((o.get("speed") or {}).get("batch_speedup"))
                                   for o in onnx], lambda x: f"{x:.1f}x")
    add("onnx", "parity", [None if o is None else ("passed" if (o.get("parity") or {}).get("passed") else "FAILED")
                           for o in onnx])
    return Comparison(tuple(versions), tuple(rows), diffs)


def _p95(profile: Mapping[str, Any]) -> float | None:
    """The recommended configuration's p95 latency, else the best p95 any configuration reached."""
    recommended = _number(profile.get("recommendedLatencyInMs"))
    if recommended is not None:
        return recommended
    measured = [p for c in profile.get("configurations") or [] if (p := _number(c.get("latencyPercentile95InMs")))
                is not None]
    return min(measured, default=None)

"""Comparing what two members of an endpoint answered: row-by-row agreement, predictions, latency and errors.

Answers compare on the same requests: a record of one member and a record of the other with the same request
``id`` form a *pair* when one is the answer the client got or the collected one (``live``, ``original``) and the
other a copy's (``shadow``, ``replay``); two ``live`` answers to one id pair too. The request body (on the live or
original record) is split into rows and each answer into one prediction per row the way collected data is
(:func:`mlops_magics.monitoring.table.input_rows`, :func:`~mlops_magics.monitoring.table.predictions`), and a
row agrees when both predictions do (:func:`predictions_agree`). A canary (each member answered its own share of
the requests) has no pairs: its comparison shows predictions, latency and errors side by side, not agreement.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import orjson

from mlops_magics.endpoints.traffic import COLUMNS, KINDS, WITH_INPUT
from mlops_magics.errors import InvalidInputError, NotFoundError
from mlops_magics.monitoring.table import input_rows, predictions

if TYPE_CHECKING:
    import pandas as pd

#: The pairs of record kinds whose answers compare (either way round), the first found for an id wins.
_PAIRS = (("live", "shadow"), ("original", "replay"), ("live", "replay"), ("original", "shadow"), ("live", "live"))
#: More distinct numbers than this are binned (continuous predictions); more distinct other values are cut to the
#: most frequent ones and "(other)".
_MANY_VALUES = 20
_BINS = 10
_OTHER = "(other)"
#: Feature columns the HTML report shows of each differing row (the frame has them all).
_SHOWN_FEATURES = 8


def predictions_agree(x: Any, y: Any, tolerance: float = 1e-6) -> bool:
    """Whether two predictions (JSON values) agree.

    Labels agree when equal: strings, booleans, None and whole numbers (JSON integers: classes); a boolean never
    equals a number. Other numbers agree within a relative ``tolerance``: ``abs(x - y) <= tolerance * max(1, |x|,
    |y|)`` (so an absolute one below 1). Lists agree element by element, dicts key by key, recursively.
    """
    if isinstance(x, bool) or isinstance(y, bool):
        return isinstance(x, bool) and isinstance(y, bool) and x == y
    if isinstance(x, int) and isinstance(y, int):
        return x == y
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        if x == y or (math.isnan(x) and math.isnan(y)):
            return True
        if not (math.isfinite(x) and math.isfinite(y)):
            return False
        return abs(x - y) <= tolerance * max(1.0, abs(x), abs(y))
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(predictions_agree(p, q, tolerance) for p, q in zip(x, y, strict=True))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(predictions_agree(x[k], y[k], tolerance) for k in x)
    return type(x) is type(y) and bool(x == y)


@dataclass(frozen=True, eq=False)
class TrafficComparison:
    """What two members answered, side by side; displays itself as a report (``plot()`` draws it)."""

    a: str
    b: str
    #: Records of each member (every kind) in the traffic compared.
    requests: dict[str, int]
    #: Requests both answered (see the module's docstring); 0 for a canary.
    pairs: int
    #: Pairs whose answers could not be compared (an error answer, a body over 64 KiB not recorded).
    not_comparable: int
    rows_compared: int
    rows_differing: int
    #: The share of compared rows whose predictions agree; None when no row was compared (:attr:`note` says why).
    agreement: float | None
    #: Up to ``examples`` rows that differ, oldest first: id, row, the features, a's prediction, b's prediction.
    disagreements: pd.DataFrame
    #: Share of each member's answered rows per prediction (index: the value, or a quantile bin); columns a, b.
    distribution: pd.DataFrame
    #: "classes" (each value counted) or "bins" (continuous predictions in ~10 quantile bins of both members).
    prediction_kind: str
    #: Per member: p50_ms, p90_ms, p99_ms over the records that got an answer (status > 0).
    latency: pd.DataFrame
    #: Per member: requests, errors (status >= 500, or 0: no answer), error_rate.
    errors: pd.DataFrame
    note: str
    #: Each member's latencies (ms, records that got an answer), for :meth:`plot`.
    latency_samples: dict[str, tuple[float, ...]] = field(default_factory=dict, repr=False)

    def headline(self) -> str:
        """``blue vs green: 97.0% of 1,000 rows agree (30 differ); p50 3.1 vs 3.4 ms; errors 0 vs 2``."""
        if self.agreement is None:
            why = ("the members answered different requests" if not self.pairs else
                   f"none of the {self.pairs:,} request{'s' if self.pairs != 1 else ''} both answered was comparable")
            outcome = f"answers not compared ({why})"
        else:
            rows = self.rows_compared
            outcome = (f"{_percent(self.agreement, self.rows_differing, rows)} of {rows:,} "
                       f"row{' agrees' if rows == 1 else 's agree'} ({self.rows_differing:,} "
                       f"{'differs' if self.rows_differing == 1 else 'differ'})")
        p50 = [_ms(self.latency.loc[m, "p50_ms"]) for m in (self.a, self.b)]
        errors = [int(self.errors.loc[m, "errors"]) for m in (self.a, self.b)]
        return (f"{self.a} vs {self.b}: {outcome}; p50 {p50[0]} vs {p50[1]} ms; "
                f"errors {errors[0]:,} vs {errors[1]:,}")

    def __repr__(self) -> str:
        return self.headline()

    def to_dict(self) -> dict[str, Any]:
        """The comparison as JSON-able values (NaN as None)."""
        distribution = [{"prediction": key, self.a: row[self.a], self.b: row[self.b]}
                        for key, row in self.distribution.iterrows()]
        result = {
            "a": self.a, "b": self.b, "headline": self.headline(), "requests": self.requests, "pairs": self.pairs,
            "not_comparable": self.not_comparable, "rows_compared": self.rows_compared,
            "rows_differing": self.rows_differing, "agreement": self.agreement,
            "disagreements": self.disagreements.to_dict(orient="records"), "distribution": distribution,
            "prediction_kind": self.prediction_kind, "latency": self.latency.to_dict(orient="index"),
            "errors": self.errors.to_dict(orient="index"), "note": self.note,
        }
        converted: dict[str, Any] = _jsonable(result)
        return converted

    def plot(self) -> Any:
        """A matplotlib Figure of two panels: the share of rows per prediction of each member (bars, side by side)
        and each member's latency (the share of requests answered within x ms, on a log axis)."""
        from matplotlib import ticker

        from mlops_magics.display import new_figure

        figure = new_figure(figsize=(11, 3.8), dpi=80)
        shares, latency = figure.subplots(1, 2)
        labels = [str(v) for v in self.distribution.index]
        width = 0.4
        for i, member in enumerate((self.a, self.b)):
            shares.bar([p + (i - 0.5) * width for p in range(len(labels))], list(self.distribution[member]),
                       width, label=member)
        if labels:
            slanted = self.prediction_kind == "bins" or max(map(len, labels)) > 6
            shares.set_xticks(list(range(len(labels))), labels, rotation=30 if slanted else 0,
                              ha="right" if slanted else "center", fontsize=8)
            shares.set_ylim(0, max(1e-9, float(self.distribution[[self.a, self.b]].to_numpy().max())) * 1.25)
            shares.legend(fontsize=8, loc="upper right", ncols=2)  # above the bars: the axis leaves room
        else:
            shares.text(0.5, 0.5, "no predictions recorded", ha="center", va="center", transform=shares.transAxes)
        shares.set_title("predictions" + (" (quantile bins)" if self.prediction_kind == "bins" else ""),
                         fontsize=10)
        shares.set_xlabel("prediction", fontsize=9)
        shares.set_ylabel("share of rows", fontsize=9)
        drawn = False
        for member in (self.a, self.b):
            values = sorted(v for v in self.latency_samples.get(member, ()) if v > 0)
            if values:
                drawn = True
                latency.step(values, [(i + 1) / len(values) for i in range(len(values))], where="post",
                             label=f"{member} ({len(values):,} answers)")
        if drawn:
            latency.set_xscale("log")
            # 1, 2, 5, 10, 20, 50 ... as plain numbers (not 2x10^0), no label on the minor ticks
            latency.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            latency.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
            latency.xaxis.set_minor_formatter(ticker.NullFormatter())
            latency.legend(fontsize=8)
        else:
            latency.text(0.5, 0.5, "no latency recorded", ha="center", va="center", transform=latency.transAxes)
        latency.set_ylim(0, 1.02)
        latency.set_title("latency", fontsize=10)
        latency.set_xlabel("latency (ms, log scale)", fontsize=9)
        latency.set_ylabel("share of answers within x ms", fontsize=9)
        figure.tight_layout()
        return figure

    def _repr_html_(self) -> str:
        from mlops_magics import display

        members = [{"member": m, "requests": f"{self.requests[m]:,}",
                    **{f"{q} ms": _ms(self.latency.loc[m, f"{q}_ms"]) for q in ("p50", "p90", "p99")},
                    "errors": f"{int(self.errors.loc[m, 'errors']):,}",
                    "error rate": f"{self.errors.loc[m, 'error_rate']:.1%}"} for m in (self.a, self.b)]
        parts = [f"<div><p><strong>{escape(self.headline())}</strong></p>"]
        if self.note:
            parts.append(f"<p>{escape(self.note)}</p>")
        parts.append(display.table(members))
        if len(self.distribution):
            title = "Predictions" + (" (quantile bins)" if self.prediction_kind == "bins" else "")
            shares = [{"prediction": str(key), self.a: f"{row[self.a]:.1%}", self.b: f"{row[self.b]:.1%}"}
                      for key, row in self.distribution.iterrows()]
            parts.append(f"<p>{title}: share of rows</p>{display.table(shares)}")
        if len(self.disagreements):
            shown = list(self.disagreements.columns)
            features = shown[2:-2]
            hidden = len(features) - _SHOWN_FEATURES
            if hidden > 0:
                shown = [*shown[:2], *features[:_SHOWN_FEATURES], *shown[-2:]]
            rows = self.disagreements[shown].to_dict(orient="records")
            more = f"; {hidden} more feature columns in .disagreements" if hidden > 0 else ""
            parts.append(f"<p>Rows that differ (the first {len(rows):,} of {self.rows_differing:,}{more})</p>"
                         f"{display.table(rows)}")
        parts.append("<p><small>.plot() draws the predictions and latencies; .to_dict() gives it all as JSON."
                     "</small></p></div>")
        return "".join(parts)


def compare(frame: pd.DataFrame, a: str, b: str, *, feature_names: Sequence[str] | None = None,
            tolerance: float = 1e-6, examples: int = 10, endpoint: str | None = None) -> TrafficComparison:
    """Compare what members ``a`` and ``b`` answered in a traffic frame.

    Args:
        frame: traffic records, as :func:`mlops_magics.endpoints.traffic.read_traffic` reads them.
        a: a member's name (the reference: "blue").
        b: the other member's name ("green").
        feature_names: the names of the features of rows sent as lists (the model's input example's columns);
            ``x0``, ``x1``, ... otherwise.
        tolerance: how far two numbers that are not whole may be apart and agree, relative to the larger (at least
            1): see :func:`predictions_agree`.
        examples: how many differing rows :attr:`TrafficComparison.disagreements` keeps.
        endpoint: the endpoint's name, for the advice in notes.

    Returns:
        The comparison. Agreement is over the rows of the pairs whose both answers succeeded (status 1-399) and
        were recorded; distributions, latency and errors are over all of each member's records.

    Raises:
        InvalidInputError: ``a`` and ``b`` are the same, ``frame`` lacks traffic columns, or a negative
            ``tolerance`` or ``examples``.
        NotFoundError: a member has no record in ``frame``.
    """
    import pandas as pd

    missing = [c for c in COLUMNS if c not in frame.columns and c != "error"]
    if missing:
        raise InvalidInputError(f"The frame has no {', '.join(map(repr, missing))} column: compare the traffic "
                                "records that read_traffic(folder) gives.")
    if a == b:
        raise InvalidInputError(f"Both members are {a!r}: compare two different members of the endpoint.")
    if tolerance < 0 or examples < 0:
        raise InvalidInputError(f"tolerance={tolerance!r}, examples={examples!r}: neither may be negative.")
    present = set(frame["m"])
    for member in (a, b):
        if member not in present:
            known = ", ".join(map(repr, sorted(present))) or "none"
            raise NotFoundError(f"No traffic recorded from member {member!r}. Members with records: {known}. "
                                "Compare members that answered requests (or send some, then compare again).")

    keys = ("id", "m", "kind", "status", "ms", "in", "out")
    records = frame.loc[frame["m"].isin([a, b])]
    mine = [dict(zip(keys, values, strict=True)) for values in zip(*(records[k].tolist() for k in keys), strict=True)]
    inputs: dict[str, Any] = {}  # request id -> its body, from the record that has it (any member)
    primary = frame[frame["kind"].isin(WITH_INPUT)]
    for request, body in zip(primary["id"].tolist(), primary["in"].tolist(), strict=True):
        if body is not None:
            inputs.setdefault(request, body)
    by_id: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for record in mine:
        sides = by_id.setdefault(record["id"], ([], []))
        sides[0 if record["m"] == a else 1].append(record)

    pairs = compared = differing = 0
    reasons: Counter[str] = Counter()
    examples_rows: list[dict[str, Any]] = []
    names = _columns(a, b)
    tables = _Tables(feature_names)
    for request, (mine_a, mine_b) in by_id.items():
        pair = _pair(mine_a, mine_b)
        if pair is None:
            continue
        pairs += 1
        ra, rb = pair
        body = ra["in"] if ra["kind"] in WITH_INPUT else rb["in"]
        if body is None:
            body = inputs.get(request)
        if not (_answered(ra) and _answered(rb)):
            reasons["an error answer"] += 1
            continue
        if any(_truncated(v) for v in (body, ra["out"], rb["out"])):
            reasons["a body over 64 KiB (not recorded)"] += 1
            continue
        for row, features, pa, pb in _rows(tables.rows(body), body, ra["out"], rb["out"]):
            compared += 1
            if predictions_agree(pa, pb, tolerance):
                continue
            differing += 1
            if len(examples_rows) < examples:
                examples_rows.append({"id": request, "row": row,
                                      **{names(k): v for k, v in features.items()}, a: pa, b: pb})

    per_member = {m: [r for r in mine if r["m"] == m] for m in (a, b)}
    values = {m: _member_predictions(per_member[m], inputs, tables) for m in (a, b)}
    distribution, kind = _distribution(a, b, values)
    samples = {m: tuple(float(r["ms"]) for r in per_member[m] if r["status"] > 0 and not math.isnan(r["ms"]))
               for m in (a, b)}
    latency = pd.DataFrame([_quantiles(samples[m]) for m in (a, b)],
                           index=pd.Index([a, b], name="member"), columns=["p50_ms", "p90_ms", "p99_ms"])
    errors = pd.DataFrame([_errors(per_member[m]) for m in (a, b)], index=pd.Index([a, b], name="member"),
                          columns=["requests", "errors", "error_rate"])
    if examples_rows:
        disagreements = pd.DataFrame(examples_rows)
        disagreements = disagreements[["id", "row", *(c for c in disagreements.columns
                                                      if c not in ("id", "row", a, b)), a, b]]
    else:
        disagreements = pd.DataFrame(columns=["id", "row", a, b])
    return TrafficComparison(
        a=a, b=b, requests={m: len(per_member[m]) for m in (a, b)}, pairs=pairs,
        not_comparable=sum(reasons.values()), rows_compared=compared, rows_differing=differing,
        agreement=(compared - differing) / compared if compared else None, disagreements=disagreements,
        distribution=distribution, prediction_kind=kind, latency=latency, errors=errors,
        note=_note(frame, b, pairs, compared, reasons, endpoint), latency_samples=samples)


def member_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per member and record kind: requests, errors (status >= 500, or 0: no answer), error rate, p50/p99 ms.

    Args:
        frame: traffic records, as :func:`mlops_magics.endpoints.traffic.read_traffic` reads them.

    Returns:
        A DataFrame with the columns member, kind, requests, errors, error_rate, p50_ms, p99_ms; one row per
        member and kind, by member name, then kind (live, shadow, replay, original); latencies over the records
        that got an answer (NaN when none did).
    """
    import pandas as pd

    columns = ["member", "kind", "requests", "errors", "error_rate", "p50_ms", "p99_ms"]
    rows: list[dict[str, Any]] = []
    for (member, kind), group in frame.groupby(["m", "kind"], sort=False):
        group_records = group[["status", "ms"]].to_dict(orient="records")
        counts = _errors(group_records)
        answered = [float(r["ms"]) for r in group_records if r["status"] > 0 and not math.isnan(r["ms"])]
        p50, _, p99 = _quantiles(answered)
        rows.append({"member": member, "kind": kind, **counts, "p50_ms": p50, "p99_ms": p99})
    order = {k: i for i, k in enumerate(KINDS)}
    rows.sort(key=lambda r: (str(r["member"]), order.get(r["kind"], len(KINDS)), str(r["kind"])))
    summary = pd.DataFrame(rows, columns=columns)
    return summary.astype({"requests": "int64", "errors": "int64", "error_rate": "float64", "p50_ms": "float64",
                           "p99_ms": "float64"})


# -- pairs and rows --------------------------------------------------------------------------------


def _pair(side_a: list[dict[str, Any]], side_b: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The records of one request id that compare (the first kind pair of :data:`_PAIRS` found), or None."""
    for first, second in _PAIRS:
        for ra in side_a:
            for rb in side_b:
                if (ra["kind"], rb["kind"]) in ((first, second), (second, first)):
                    return ra, rb
    return None


def _answered(record: dict[str, Any]) -> bool:
    return 0 < int(record["status"]) < 400


def _truncated(value: Any) -> bool:
    """A body the router did not record (over 64 KiB): ``{"truncated": true, "bytes": N}``."""
    return isinstance(value, dict) and value.get("truncated") is True and set(value) == {"truncated", "bytes"}


class _Tables:
    """The rows of each request body, split once (the records of a request share their body's object)."""

    def __init__(self, feature_names: Sequence[str] | None) -> None:
        self.feature_names = feature_names
        self.split: dict[int, tuple[Any, list[dict[str, Any]] | None]] = {}  # id(body) -> (body, its rows)

    def rows(self, body: Any) -> list[dict[str, Any]] | None:
        """:func:`input_rows` of ``body`` (None when it is None or not a table)."""
        if body is None:
            return None
        known = self.split.get(id(body))
        if known is None or known[0] is not body:
            known = (body, input_rows(body, self.feature_names))
            self.split[id(body)] = known  # the body is kept with its rows: its id is not reused meanwhile
        return known[1]


def _rows(rows: list[dict[str, Any]] | None, body: Any, out_a: Any,
          out_b: Any) -> list[tuple[int, dict[str, Any], Any, Any]]:
    """(row, features, a's prediction, b's prediction) per input row of ``body`` (split into ``rows``); a body that
    is not a table is one row (its features: the body), and an answer that has no prediction per row is each row's
    prediction as a whole."""
    if not rows:
        return [(0, {} if body is None else {"input": body}, out_a, out_b)]
    split_a, split_b = predictions(out_a, len(rows)), predictions(out_b, len(rows))
    return [(i, features, out_a if split_a is None else split_a[i], out_b if split_b is None else split_b[i])
            for i, features in enumerate(rows)]


def _columns(a: str, b: str) -> Any:
    """How a feature is named among the differing rows' columns (renamed when it clashes with id, row, a, b)."""
    taken = {"id", "row", a, b}
    return lambda name: f"input {name}" if name in taken else name


def _member_predictions(records: list[dict[str, Any]], inputs: dict[str, Any], tables: _Tables) -> list[Any]:
    """The predictions per row of a member's answered records (each request once: its first answer)."""
    seen: set[str] = set()
    found: list[Any] = []
    for record in records:
        if not _answered(record) or record["id"] in seen or _truncated(record["out"]):
            continue
        seen.add(record["id"])
        body = record["in"] if record["in"] is not None else inputs.get(record["id"])
        if _truncated(body):
            continue
        out = record["out"]
        if body is None:  # no body known (an empty request, or its live record is not in the window)
            found.extend(_answer_rows(out))
        else:
            rows = tables.rows(body)
            split = predictions(out, len(rows)) if rows else None
            found.extend(split if split is not None else [out] * len(rows) if rows else [out])
    return found


def _answer_rows(out: Any) -> list[Any]:
    if isinstance(out, list):
        return out
    if isinstance(out, dict):
        lists = [v for v in out.values() if isinstance(v, list)]
        if len(lists) == 1:
            return list(lists[0])
    return [out]


# -- distributions, latency, errors ---------------------------------------------------------------


def _key(value: Any) -> Any:
    """A prediction as a distribution's key: numbers and strings as they are, anything else as its JSON text."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _distribution(a: str, b: str, values: dict[str, list[Any]]) -> tuple[Any, str]:
    """Share of each member's rows per prediction (or per quantile bin of continuous ones), and which it is."""
    import numpy as np
    import pandas as pd

    keys = {m: [_key(v) for v in values[m]] for m in (a, b)}
    everything = keys[a] + keys[b]
    numeric = bool(everything) and all(_number(k) for k in everything)
    if numeric and len(set(everything)) > _MANY_VALUES:
        numbers = np.asarray(everything, dtype=float)
        edges = np.unique(np.quantile(numbers, np.linspace(0, 1, _BINS + 1)))
        labels = [f"{'[' if i == 0 else '('}{lo:.4g}, {hi:.4g}]" for i, (lo, hi) in enumerate(pairwise(edges))]
        shares = {}
        for m in (a, b):
            mine = np.asarray(keys[m], dtype=float)
            bins = np.clip(np.searchsorted(edges, mine, side="left") - 1, 0, len(labels) - 1)
            in_bins = np.bincount(bins, minlength=len(labels))
            shares[m] = in_bins / len(mine) if len(mine) else np.zeros(len(labels))
        frame = pd.DataFrame(shares, index=pd.Index(labels, name="prediction"), columns=[a, b])
        return frame, "bins"
    counts = {m: Counter(keys[m]) for m in (a, b)}
    total = counts[a] + counts[b]
    chosen = sorted(total, key=lambda k: (0, float(k), "") if _number(k) else (1, 0.0, str(k)))
    if not numeric and len(chosen) > _MANY_VALUES:
        kept = {k for k, _ in total.most_common(_MANY_VALUES - 1)}
        chosen = [k for k in chosen if k in kept]
        for m in (a, b):
            others = sum(n for k, n in counts[m].items() if k not in kept)
            counts[m] = Counter({k: n for k, n in counts[m].items() if k in kept})
            counts[m][_OTHER] = others
        chosen.append(_OTHER)
    data = {m: [counts[m][k] / len(keys[m]) if keys[m] else 0.0 for k in chosen] for m in (a, b)}
    frame = pd.DataFrame(data, index=pd.Index(chosen, name="prediction", dtype=object), columns=[a, b])
    return frame, "classes"


def _quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    """p50, p90, p99 (numpy's linear interpolation), NaN without values."""
    import numpy as np

    if not len(values):
        return math.nan, math.nan, math.nan
    p50, p90, p99 = np.percentile(np.asarray(values, dtype=float), [50, 90, 99])
    return float(p50), float(p90), float(p99)


def _errors(records: list[dict[str, Any]]) -> dict[str, Any]:
    """requests, errors (status >= 500, or 0: no answer) and the error rate of some records."""
    failed = sum(1 for r in records if int(r["status"]) >= 500 or int(r["status"]) == 0)
    return {"requests": len(records), "errors": failed, "error_rate": failed / len(records) if records else 0.0}


# -- words -----------------------------------------------------------------------------------------


def _note(frame: Any, b: str, pairs: int, compared: int, reasons: Counter[str], endpoint: str | None) -> str:
    notes: list[str] = []
    if not pairs:
        name = endpoint or "NAME"
        notes.append(f"The members answered different requests: send a shadow copy (%endpoint {name} --shadow "
                     f"{b}=100) or replay collected requests (%replay {name} --to {b}) to compare answers on the "
                     "same requests.")
    elif reasons:
        why = ", ".join(f"{n:,} with {reason}" for reason, n in reasons.most_common())
        left = sum(reasons.values())
        notes.append(f"{left:,} of the {pairs:,} requests both members answered {'was' if left == 1 else 'were'} "
                     f"not compared: {why}." + ("" if compared else " No row was compared."))
    if frame.attrs.get("limited"):
        notes.append(str(frame.attrs.get("note", "")))
    return " ".join(notes)


def _percent(share: float, differing: int, rows: int) -> str:
    """A share as '97.0%', never rounded to 100.0% (or 0.0%) when some rows differ (or agree)."""
    text = f"{share:.1%}"
    if differing and text == "100.0%":
        return ">99.9%"
    if differing < rows and text == "0.0%":
        return "<0.1%"
    return text


def _ms(value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if value < 1:
        return f"{value:.2f}"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy numbers as Python ones, NaN and infinities as None, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

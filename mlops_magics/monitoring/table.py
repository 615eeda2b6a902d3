"""Collected records as a table: one row per scored input row, inputs flattened to feature columns.

Request bodies are read the way scoring clients send them: ``{"data": rows}``, ``{"input_data": ...}``,
a bare list of rows, rows as lists or as records (dicts), pandas' "split" layout (``{"columns", "data"}``) and
columns (``{"feature": [values]}``). The answer becomes a ``prediction`` column when it has one value per row
(a list, or a dict holding one such list). Anything else stays as it came, in ``input`` / ``output``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

#: Keys under which clients put the rows.
_DATA_KEYS = ("data", "input_data", "inputs", "instances")
#: Columns of every table, before the features.
BASE_COLUMNS = ("time", "request_id", "row", "status", "latency_ms")


def input_rows(body: Any, feature_names: Sequence[str] | None) -> list[dict[str, Any]] | None:
    """The rows of a request body as ``{feature: value}`` dicts, or None when the body is not a table."""
    if isinstance(body, dict):
        key = next((k for k in _DATA_KEYS if k in body), None)
        if key is None:
            return None
        body = body[key]
    if isinstance(body, dict):
        if isinstance(body.get("columns"), list) and isinstance(body.get("data"), list):  # pandas "split"
            columns = [str(c) for c in body["columns"]]
            return [dict(zip(columns, row, strict=False)) for row in body["data"] if isinstance(row, list)]
        values = list(body.values())
        if values and all(isinstance(v, list) for v in values) and len({len(v) for v in values}) == 1:
            names = [str(k) for k in body]
            return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
        return None
    if not isinstance(body, list) or not body:
        return None
    if all(isinstance(r, dict) for r in body):
        return [{str(k): v for k, v in r.items()} for r in body]
    if all(isinstance(r, list) for r in body):
        return [_named(r, feature_names) for r in body]
    if all(not isinstance(r, (list, dict)) for r in body):
        return [_named(body, feature_names)]
    return None


def _named(row: list[Any], names: Sequence[str] | None) -> dict[str, Any]:
    if names is not None and len(names) == len(row):
        return dict(zip(names, row, strict=True))
    return {f"x{i}": v for i, v in enumerate(row)}


def predictions(output: Any, rows: int) -> list[Any] | None:
    """One prediction per input row from an answer, or None when the answer has no such shape."""
    if isinstance(output, dict):
        lists = [v for v in output.values() if isinstance(v, list) and len(v) == rows]
        if len(lists) == 1:
            output = lists[0]
        elif rows == 1 and len(output) == 1:
            return [next(iter(output.values()))]
        else:
            return None
    if isinstance(output, list) and len(output) == rows:
        return output
    if rows == 1 and not isinstance(output, (list, dict)):
        return [output]
    return None


def flatten(records: Iterable[dict[str, Any]], feature_names: Sequence[str] | None,
            labels: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per input row (or per request, when its input is not a table), labels joined by request id."""
    out: list[dict[str, Any]] = []
    for record in records:
        base = {"time": record.get("time"), "request_id": record.get("request_id"), "status": record.get("status"),
                "latency_ms": record.get("latency_ms")}
        status = record.get("status") or 0
        body, answer = record.get("input"), record.get("output")
        rows = input_rows(body, feature_names)
        label = labels.get(str(record.get("request_id")))
        if not rows:
            out.append({**base, "row": 0, "input": body, "output": answer,
                        **({"label": label} if label is not None else {})})
            continue
        predicted = predictions(answer, len(rows)) if status < 400 else None
        per_row_labels = label if isinstance(label, list) and len(label) == len(rows) else None
        for i, features in enumerate(rows):
            item = {**base, "row": i, **features}
            if predicted is not None:
                item["prediction"] = predicted[i]
            elif status >= 400:
                item["error"] = answer.get("message") if isinstance(answer, dict) else answer
            else:
                item["output"] = answer
            if label is not None:
                item["label"] = per_row_labels[i] if per_row_labels is not None else label
            out.append(item)
    return out

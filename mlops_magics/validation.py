"""Validation gates: metrics of a version on held-out data, thresholds, a baseline, stored with the version.

A check is ``METRIC``, or ``METRIC OP NUMBER`` with OP one of ``>=``, ``>``, ``<=``, ``<``. Built-in
metrics come from scikit-learn; any other name is a function ``f(y_true, y_pred) -> float`` given by the
caller. Against a baseline version, every metric with a known direction must not be worse than the
baseline's by more than ``max_regression`` (absolute). The result is stored as the version's
``validation`` report; gated aliases (``%alias ... --require-validation``) and ``%deploy
--require-validation`` only accept versions whose last validation passed.
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from html import escape
from typing import Any

from mlops_magics.errors import ConflictError, InvalidInputError
from mlops_magics.registry import or_default

#: Metrics where more is better, and where less is better (the direction a baseline comparison needs).
HIGHER_IS_BETTER = ("accuracy", "balanced_accuracy", "f1", "precision", "recall", "roc_auc", "r2")
LOWER_IS_BETTER = ("rmse", "mse", "mae", "log_loss", "max_error")
_CHECK = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:(>=|<=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))?\s*$")
_OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, ">": operator.gt, "<=": operator.le,
                                                   "<": operator.lt}


@dataclass(frozen=True)
class Check:
    """One line of the verdict."""

    check: str
    value: float | None
    passed: bool


@dataclass(frozen=True)
class ValidationReport:
    """Metrics of a version on given data, the checks against thresholds and a baseline, the verdict."""

    model: str
    rows: int
    data_sha256: str
    metrics: Mapping[str, float]
    checks: tuple[Check, ...]
    passed: bool
    baseline: str | None = None
    baseline_metrics: Mapping[str, float] | None = None
    max_regression: float = 0.0
    at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __repr__(self) -> str:
        head = f"Validation of {self.model} on {self.rows} rows: {'PASSED' if self.passed else 'FAILED'}"
        lines = [f"  {'ok  ' if c.passed else 'FAIL'} {c.check}" + ("" if c.value is None else f"  ({c.value:.4g})")
                 for c in self.checks]
        return "\n".join([head, *lines])

    def _repr_html_(self) -> str:
        colour = "#2e7d32" if self.passed else "#c62828"
        rows = "".join(
            f'<tr><td style="color:{"#2e7d32" if c.passed else "#c62828"};font-weight:bold;padding:2px 8px">'
            f'{"pass" if c.passed else "FAIL"}</td><td style="padding:2px 8px">{escape(c.check)}</td>'
            f'<td style="padding:2px 8px">{"" if c.value is None else f"{c.value:.4g}"}</td></tr>'
            for c in self.checks)
        return (f'<div><p>Validation of <strong>{escape(self.model)}</strong> on {self.rows} rows: '
                f'<strong style="color:{colour}">{"PASSED" if self.passed else "FAILED"}</strong></p>'
                f'<table style="border-collapse:collapse;font-size:12px">{rows}</table></div>')


def parse_check(text: str) -> tuple[str, str | None, float | None]:
    """``"accuracy>=0.9"`` -> ("accuracy", ">=", 0.9); ``"f1"`` -> ("f1", None, None).

    Raises:
        InvalidInputError: not a check.
    """
    match = _CHECK.match(text)
    if not match:
        raise InvalidInputError(f"--metric {text!r} is not a check: write METRIC or METRIC>=NUMBER (>=, >, <=, <), "
                                "e.g. accuracy>=0.9 or rmse<=3.5.")
    name, op, number = match.groups()
    return name, op, None if number is None else float(number)


def _fingerprint(X: Any, y: Any) -> str:
    import numpy as np

    digest = hashlib.sha256()
    for part in (X, y):
        values = part.to_numpy() if hasattr(part, "to_numpy") else np.asarray(part)
        digest.update(str(values.shape).encode() + values.tobytes() if values.dtype != object
                      else repr(values.tolist()).encode())
    return digest.hexdigest()


class _Predictor:
    """predict / predict_proba for any registered flavor (ONNX through onnxruntime)."""

    def __init__(self, model: Any, flavor: str) -> None:
        self.model = model
        self.session: Any = None
        if flavor == "onnx":
            import onnxruntime as ort

            self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def _onnx(self, X: Any) -> list[Any]:
        from mlops_magics.onnx_convert import onnx_feed

        return list(self.session.run(None, onnx_feed(self.session, X)))

    def predict(self, X: Any) -> Any:
        import numpy as np

        if self.session is not None:
            return np.asarray(self._onnx(X)[0]).reshape(len(X), -1).squeeze(axis=1) if len(X) else np.asarray([])
        return self.model.predict(X)

    def proba(self, X: Any) -> Any:
        import numpy as np

        if self.session is not None:
            outputs = self._onnx(X)
            if len(outputs) < 2:
                raise InvalidInputError("roc_auc and log_loss need class probabilities; this ONNX model has none.")
            return np.asarray(outputs[1])
        if not hasattr(self.model, "predict_proba"):
            raise InvalidInputError(f"roc_auc and log_loss need class probabilities; a {type(self.model).__name__} "
                                    "has no predict_proba.")
        return self.model.predict_proba(X)


def compute(predictor: _Predictor, X: Any, y: Any, names: Sequence[str],
            functions: Mapping[str, Callable[[Any, Any], float]]) -> dict[str, float]:
    """The named metrics of the predictor's output on (X, y)."""
    import numpy as np
    from sklearn import metrics as m

    predicted = predictor.predict(X)
    classes = np.unique(np.asarray(y))
    average = "binary" if len(classes) == 2 else "macro"
    found: dict[str, float] = {}
    for name in names:
        if name in functions:
            value = functions[name](y, predicted)
        elif name == "accuracy":
            value = m.accuracy_score(y, predicted)
        elif name == "balanced_accuracy":
            value = m.balanced_accuracy_score(y, predicted)
        elif name in ("f1", "precision", "recall"):
            scorer = {"f1": m.f1_score, "precision": m.precision_score, "recall": m.recall_score}[name]
            value = scorer(y, predicted, average=average, zero_division=0)
        elif name in ("roc_auc", "log_loss"):
            proba = predictor.proba(X)
            if name == "log_loss":
                value = m.log_loss(y, proba)
            else:
                value = (m.roc_auc_score(y, proba[:, 1]) if proba.shape[1] == 2
                         else m.roc_auc_score(y, proba, multi_class="ovr"))
        elif name in ("rmse", "mse"):
            mse = m.mean_squared_error(y, predicted)
            value = math.sqrt(mse) if name == "rmse" else mse
        elif name == "mae":
            value = m.mean_absolute_error(y, predicted)
        elif name == "r2":
            value = m.r2_score(y, predicted)
        elif name == "max_error":
            value = m.max_error(y, predicted)
        else:
            known = ", ".join((*HIGHER_IS_BETTER, *LOWER_IS_BETTER))
            raise InvalidInputError(f"Unknown metric {name!r}: use one of {known}, or pass a function "
                                    f"{name}(y_true, y_pred) (in a notebook: define it, then name it).")
        found[name] = float(value)
    return found


def validate(
    ref: str,
    data: Any,
    labels: Any,
    *,
    metrics: Sequence[str],
    functions: Mapping[str, Callable[[Any, Any], float]] | None = None,
    baseline: str | None = None,
    max_regression: float = 0.0,
    registry: Any = None,
) -> ValidationReport:
    """Compute metrics of a version on (data, labels), check thresholds and a baseline, store the verdict.

    Args:
        ref: ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.
        metrics: checks such as ``"accuracy>=0.9"``, or bare metric names (computed and shown).
        functions: user metrics by name, each ``f(y_true, y_pred) -> float``.
        baseline: a version to compare with (e.g. ``iris@production``); no metric with a known direction
            may be worse by more than ``max_regression``.

    Raises:
        InvalidInputError: no checks, a malformed check, an unknown metric, data and labels of different
            lengths, or a negative ``max_regression``.
        NotFoundError: no such model or baseline.
    """
    from mlops_magics import api

    if not metrics:
        raise InvalidInputError("Give at least one --metric, e.g. --metric 'accuracy>=0.9'.")
    if max_regression < 0:
        raise InvalidInputError(f"--max-regression {max_regression} is negative: give the allowed loss, e.g. 0.01.")
    if len(data) != len(labels):
        raise InvalidInputError(f"--data has {len(data)} rows and --labels {len(labels)}: they must match.")
    parsed = [parse_check(text) for text in metrics]
    names = list(dict.fromkeys(name for name, _, _ in parsed))
    reg = or_default(registry)
    version = reg.get(ref)
    found = compute(_Predictor(api.load_model(version.ref, registry=reg), version.flavor), data, labels, names,
                    functions or {})
    checks = [Check(text.replace(" ", "") if op else f"{name} (no threshold)", found[name],
                    True if op is None or limit is None else _OPS[op](found[name], limit))
              for text, (name, op, limit) in zip(metrics, parsed, strict=True)]
    base_version, base_found = None, None
    if baseline:
        base_version = reg.get(baseline)
        base_found = compute(_Predictor(api.load_model(base_version.ref, registry=reg), base_version.flavor), data,
                             labels, names, functions or {})
        for name in names:
            if name in HIGHER_IS_BETTER:
                ok = found[name] >= base_found[name] - max_regression
                sign = ">="
                limit_text = f"{base_found[name]:.4g} - {max_regression:g}"
            elif name in LOWER_IS_BETTER:
                ok = found[name] <= base_found[name] + max_regression
                sign = "<="
                limit_text = f"{base_found[name]:.4g} + {max_regression:g}"
            else:
                continue
            checks.append(Check(f"{name} {sign} {base_version.ref}'s {limit_text}", found[name], ok))
    report = ValidationReport(
        model=version.ref, rows=len(labels), data_sha256=_fingerprint(data, labels), metrics=found,
        checks=tuple(checks), passed=all(c.passed for c in checks),
        baseline=base_version.ref if base_version else None, baseline_metrics=base_found,
        max_regression=max_regression, at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    reg.set_report(version, "validation", report.as_dict())
    return report


def require_validated(ref: str, *, registry: Any = None) -> None:
    """Refuse a version whose last validation did not pass (or that has none).

    Raises:
        ConflictError: naming what failed and how to validate.
    """
    reg = or_default(registry)
    version = reg.get(ref)
    problem = reg.validation_problem(version)
    if problem:
        raise ConflictError(f"{version.ref} {problem}, and validation is required. Run %validate {version.ref} "
                            "--data X --labels y --metric ... first.")

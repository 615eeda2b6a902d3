"""Metrics of model versions: those given at registration, part of the version, and those measured later.

A version's **registered** metrics (``register(..., metrics={"accuracy": 0.97})``, ``%register --metric
accuracy=0.97``) are what its author claims about it: written with the version, in its row and its manifest,
and never changed, as the rest of the version. **Measured** metrics are added later by what measures the
version on data (``%validate``: source ``validation``), each with its source, when, and on what (rows, data
digest); a new measurement by the same source replaces that source's metrics, as its report is replaced, in
the same transaction.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mlops_magics.errors import InvalidInputError
from mlops_magics.registry.db import Database, stamp, utcnow
from mlops_magics.registry.records import ModelVersion
from mlops_magics.registry.refs import ModelRef, resolve

if TYPE_CHECKING:
    import sqlite_utils

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]{0,63}$")
_SOURCE = re.compile(r"^[a-z][a-z0-9_\-]{0,31}$")
#: Metrics one version may be registered with (one measurement may record as many).
MAX_METRICS = 100
#: The source name of the metrics given at registration.
REGISTERED = "registered"
#: A version's measured metrics as one JSON array, per row of ``versions v`` (values to 17 digits: exact floats).
MEASURED_JSON = (
    "(SELECT json_group_array(json_array(source, key, json(printf('%!.17g', value)), measured_at, json(detail))) "
    "FROM "
    "(SELECT source, key, value, measured_at, detail FROM measured_metrics m "
    "WHERE m.name = v.name AND m.version = v.version ORDER BY source, key))"
)


def check_metric(key: str, value: Any) -> tuple[str, float]:
    """``(key, value)`` once the key is a metric name and the value a finite number.

    Raises:
        InvalidInputError: the key or the value is not valid; the message quotes it and says what is.
    """
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidInputError(
            f"Invalid metric name {str(key)[:80]!r}: start with a letter or '_', then letters, digits, '_', '.', "
            "'-' or '/' (at most 64 characters), e.g. accuracy or val/f1.")
    try:
        if isinstance(value, (bool, str, bytes)):
            raise TypeError(type(value).__name__)
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"Metric {key!r} is {str(value)[:80]!r} ({type(value).__name__}): give a number, "
                                f"e.g. {key}=0.97.") from None
    if not math.isfinite(number):
        raise InvalidInputError(f"Metric {key!r} is {number}: give a finite number, e.g. {key}=0.97.")
    return key, number


def parse_metric(text: str) -> tuple[str, float]:
    """``"accuracy=0.97"`` -> ``("accuracy", 0.97)``.

    Raises:
        InvalidInputError: not ``KEY=NUMBER``; the message quotes the text and shows the form.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidInputError(f"--metric {text[:80]!r} is not KEY=NUMBER: write e.g. --metric accuracy=0.97 "
                                "(repeat --metric for each metric).")
    try:
        number = float(value.strip())
    except ValueError:
        raise InvalidInputError(f"--metric {text[:80]!r}: {value.strip()[:40]!r} is not a number. Write KEY=NUMBER, "
                                f"e.g. --metric {key.strip()}=0.97.") from None
    return check_metric(key.strip(), number)


def metrics_argument(metrics: Mapping[str, Any] | Iterable[str] | None) -> dict[str, float]:
    """Metrics given as ``{"accuracy": 0.97}`` or ``["accuracy=0.97", ...]``, checked.

    Raises:
        InvalidInputError: an invalid name or value, a name given twice with different values, or more than
            :data:`MAX_METRICS`.
    """
    if metrics is None:
        return {}
    if isinstance(metrics, str):
        metrics = [metrics]
    pairs = ([check_metric(str(k), v) for k, v in metrics.items()] if isinstance(metrics, Mapping)
             else [parse_metric(str(item)) for item in metrics])
    found: dict[str, float] = {}
    for key, value in pairs:
        if key in found and found[key] != value:
            raise InvalidInputError(f"Metric {key!r} is given twice ({found[key]:g} and {value:g}): give it once.")
        found[key] = value
    if len(found) > MAX_METRICS:
        raise InvalidInputError(f"{len(found)} metrics given: a version holds at most {MAX_METRICS}.")
    return found


def encode(metrics: Mapping[str, float]) -> str:
    """Registered metrics as the ``versions.metrics`` column stores them."""
    return json.dumps(dict(metrics), sort_keys=True)


def record_measured(database: Database, version: ModelVersion, measured: Mapping[str, Any], *, source: str,
                    detail: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Record what ``source`` measured on ``version``, replacing what it measured before (atomically).

    A value that is not a finite number (NaN, say, from a metric undefined on the data) is left out: the
    report that measured it still shows it.

    Args:
        measured: metric name -> value.
        source: what measured them ('validation').
        detail: on what (rows, data digest...), kept with each metric.

    Returns:
        The metrics recorded.

    Raises:
        InvalidInputError: an invalid source or metric name.
        NotFoundError: the version does not exist (any more).
    """
    if not _SOURCE.match(source) or source == REGISTERED:
        raise InvalidInputError(f"Invalid metric source {source!r}: a lower-case word other than {REGISTERED!r}.")
    kept: dict[str, float] = {}
    for key, value in measured.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            kept[check_metric(str(key), number)[0]] = number
    with database.write() as db:
        resolve(db, ModelRef(version.name, version=version.version))
        replace_measured(db, version.name, version.version, kept, source=source, detail=detail)
    return kept


def replace_measured(db: sqlite_utils.Database, name: str, version: int, measured: Mapping[str, float], *,
                     source: str, detail: Mapping[str, Any] | None) -> None:
    """Replace the metrics ``source`` measured on ``name:version`` (in the transaction ``db`` is in)."""
    db.execute("DELETE FROM measured_metrics WHERE name = ? AND version = ? AND source = ?", [name, version, source])
    now, about = stamp(utcnow()), json.dumps(dict(detail or {}), sort_keys=True, default=str)
    db.conn.executemany(
        "INSERT INTO measured_metrics (name, version, source, key, value, detail, measured_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [[name, version, source, key, value, about, now] for key, value in measured.items()])

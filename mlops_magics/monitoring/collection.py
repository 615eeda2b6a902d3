"""Reading what a deployment collected: its records as a frame, ModelDataCollector's CSV files, labels.

Deployments write under their data folder (``$MLOPS_HOME/deployments/<service>/volume/data/collected``, see
:mod:`mlops_backend.collector`); everything here reads it directly, so it works while the service runs, after
it stopped and after a crash.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlops_magics.errors import InvalidInputError
from mlops_magics.monitoring import store
from mlops_magics.monitoring.table import BASE_COLUMNS, flatten

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(since: str | float | datetime | None) -> float | None:
    """Epoch seconds from ``'90s'``, ``'30m'``, ``'1h'``, ``'2d'``, ``'1w'``, an ISO time (UTC unless it says), a
    datetime or epoch seconds.

    Raises:
        InvalidInputError: not one of those.
    """
    if since is None or isinstance(since, (int, float)):
        return since
    if isinstance(since, datetime):
        return since.timestamp()
    match = _SINCE.match(since)
    if not match:
        try:  # an ISO time, UTC when it names no zone
            moment = datetime.fromisoformat(since.strip())
        except ValueError:
            raise InvalidInputError(f"--since {since!r} is neither a duration nor a time: use a number and a unit "
                                    "(90s, 30m, 1h, 2d, 1w) or an ISO time (2026-12-02T07:00, UTC unless it "
                                    "says otherwise).") from None
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    return time.time() - float(match[1]) * _UNITS[match[2]]


def records_frame(folder: Path, *, since: float | None = None, limit: int | None = None,
                  names: list[str] | None = None) -> Any:
    """The records under ``folder`` from ``since`` on (the newest ``limit`` requests), one row per input row.

    ``limit`` counts requests, not rows: a request of 3 rows gives 3 rows. ``frame.attrs["requests"]`` holds how
    many requests the rows come from, ``frame.attrs["note"]`` says it in words. Times are UTC, to the millisecond.

    ``names``: the feature names for inputs sent as lists (the model's input example's columns).
    """
    import pandas as pd

    found = store.records(folder, since=since)
    chosen = deque(found, maxlen=limit) if limit is not None else list(found)
    rows = flatten(sorted(chosen, key=lambda r: r.get("time", 0)), names, store.labels(folder))
    frame = pd.DataFrame(rows, columns=None if rows else list(BASE_COLUMNS))
    frame = frame[[*BASE_COLUMNS, *(c for c in frame.columns if c not in BASE_COLUMNS)]]
    frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True).dt.floor("ms")
    requests = len(chosen)
    counted = f"; --limit {limit} keeps the newest {limit} requests (not rows)" if limit is not None else ""
    frame.attrs["requests"] = requests
    frame.attrs["note"] = (f"{requests:,} request{'s' if requests != 1 else ''}, {len(frame):,} "
                           f"row{'s' if len(frame) != 1 else ''}: one row per input row{counted}")
    return frame


def csv_frame(folder: Path, designation: str, start: float | None, service: str, limit: int | None = None) -> Any:
    """What an entry script gave ``ModelDataCollector(designation=...)``: its CSV files, all days, from ``start``
    (the newest ``limit`` rows).

    The files are in Azure's layout under ``folder``: ``modeldata/<subscription>/<resource group>/<workspace>/
    <service>/<model>/<version>/<designation>/<yyyy>/<mm>/<dd>/data.csv`` (the first three are ``default`` unless
    the script passes ``workspace="sub/group/name"``). ``frame.attrs["files"]`` lists the files read, oldest day
    first; ``frame.attrs["note"]`` says where they are.

    Raises:
        InvalidInputError: nothing was collected under that designation.
    """
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
    if limit is not None:
        frame = frame.tail(limit)
    frame = frame.reset_index(drop=True)
    days = sorted({str(p.parents[3]) for p in files})  # .../<designation>, above <yyyy>/<mm>/<dd>/data.csv
    where = days[0] if len(days) == 1 else str(folder / "modeldata")
    kept = f"; --limit {limit} keeps the newest {limit} rows" if limit is not None else ""
    frame.attrs["files"] = files
    frame.attrs["note"] = (f"{len(frame):,} row{'s' if len(frame) != 1 else ''} that ModelDataCollector collected as "
                           f"{designation!r}{kept}, from {len(files)} CSV file{'s' if len(files) != 1 else ''} "
                           f"(one a day, <yyyy>/<mm>/<dd>/data.csv) under {where}: .attrs['files'] lists them")
    return frame


class LabelResult:
    """What :func:`label` attached: how many labels, how many joined collected requests, which replaced an earlier
    label of the same request (the latest wins), and the request ids not collected (yet)."""

    def __init__(self, service: str, attached: int, matched: int, unknown: Sequence[str], path: Path,
                 replaced: Sequence[tuple[str, Any, Any]] = ()) -> None:
        self.service, self.attached, self.matched, self.unknown, self.path = service, attached, matched, unknown, path
        #: ``(request_id, earlier label, new label)`` of each label that replaced a different earlier one.
        self.replaced = list(replaced)

    def __repr__(self) -> str:
        text = (f"{self.service}: {self.attached:,} label{'s' if self.attached != 1 else ''} attached, "
                f"{self.matched:,} to collected requests")
        if self.replaced:
            rid, before, after = self.replaced[0]
            example = "e.g. " if len(self.replaced) > 1 else ""
            text += f", {len(self.replaced):,} replaced an earlier label ({example}{rid!r}: {before!r} -> {after!r})"
        if self.unknown:
            if len(self.unknown) == 1:
                text += (f"; 1 request id is not among the records (yet), {self.unknown[0]!r}: kept, it joins when "
                         "that record arrives")
            else:
                text += (f"; {len(self.unknown):,} request ids are not among the records (yet), e.g. "
                         f"{self.unknown[0]!r}: kept, they join when those records arrive")
        return text


def label_pairs(data: Any) -> list[tuple[str, Any]]:
    """(request_id, label) pairs from a mapping, a Series indexed by request id, or a frame with a request_id
    column and one label column. A label may be a list: one per row of that request."""
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

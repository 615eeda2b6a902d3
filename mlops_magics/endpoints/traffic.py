"""Reading an endpoint's traffic records: what each member answered, one record per answer.

The router writes them (``mlops_backend.router.traffic``) under ``$MLOPS_HOME/endpoints/<endpoint>/traffic/`` as
``traffic-<start unix ms>-<pid>.jsonl`` files: JSON lines, one record each::

    {"t": 1796173019.269, "id": "6f1c...", "m": "blue", "kind": "live", "status": 200, "ms": 3.21,
     "in": {...}, "out": {...}, "error": "..."}

``kind`` is ``live`` (the answer the client got), ``shadow`` (a copy's answer, discarded), ``replay`` (sent by
%replay) or ``original`` (the collected answer a replay compares with); ``in`` is on live and original records
only (a shadow or replay record has its request's ``id``); a body over 64 KiB is ``{"truncated": true, "bytes":
N}``; ``error`` says why there was no answer (``status`` 0). Everything here only reads, so it works while the
router runs (a line being written is skipped), after it stopped and after a crash.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from mlops_magics.errors import InvalidInputError

if TYPE_CHECKING:
    import pandas as pd

#: The columns of a traffic frame, in order.
COLUMNS = ("t", "id", "m", "kind", "status", "ms", "in", "out", "error")
#: The record kinds the router and %replay write.
KINDS = ("live", "shadow", "replay", "original")
#: Kinds whose record holds the request body ("in"); the others refer to it by id.
WITH_INPUT = ("live", "original")
#: How many records :func:`read_traffic` keeps when not told (the newest).
DEFAULT_LIMIT = 200_000

_FILE = re.compile(r"^traffic-(\d+)-(\d+)\.jsonl$")


def traffic_files(folder: Path) -> list[Path]:
    """The traffic files of a folder, oldest first (by the start time in their name, then the writer's pid).

    A name that does not follow ``traffic-<start unix ms>-<pid>.jsonl`` sorts by its modification time.
    """
    if not folder.is_dir():
        return []

    def order(path: Path) -> tuple[float, int, str]:
        match = _FILE.match(path.name)
        if match:
            return float(match[1]), int(match[2]), path.name
        try:
            return path.stat().st_mtime * 1000, 0, path.name
        except OSError:
            return 0.0, 0, path.name

    return sorted((p for p in folder.glob("traffic-*.jsonl") if p.is_file()), key=order)


def read_traffic(folder: Path, *, since: float | None = None, kinds: Collection[str] | None = None,
                 members: Collection[str] | None = None, limit: int | None = None) -> pd.DataFrame:
    """Every traffic record of ``folder`` (the newest ``limit``), oldest first, as a frame.

    Files are read newest first and reading stops once ``limit`` records matched, so a full folder (256 MiB) costs
    only what is kept. A line that is not a whole record (the one being written, or a damaged one) is skipped and
    counted. A file the router deleted while it was read (its folder is kept under 256 MiB) is passed over.

    Args:
        folder: the endpoint's traffic folder (``$MLOPS_HOME/endpoints/<endpoint>/traffic``); missing is empty.
        since: only records from this moment on (unix seconds).
        kinds: only records of these kinds (``live``, ``shadow``, ``replay``, ``original``).
        members: only records these members answered.
        limit: keep the newest this many matching records (default :data:`DEFAULT_LIMIT`).

    Returns:
        A DataFrame with the columns :data:`COLUMNS`, sorted by ``t`` (a UTC datetime; records of the same moment
        stay in the order they were written); ``status`` is an integer, ``ms`` a float, ``in``/``out`` the bodies
        as recorded, ``error`` None unless the member gave no answer. ``attrs["skipped"]`` counts the lines
        skipped, ``attrs["files"]`` lists the files read, ``attrs["limited"]`` says whether older records were
        left out, and ``attrs["note"]`` says all that in words.

    Raises:
        InvalidInputError: an unknown kind, or a limit below 1.
    """
    if kinds is not None:
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise InvalidInputError(f"Unknown traffic record kind {', '.join(map(repr, unknown))}: the kinds are "
                                    f"{', '.join(map(repr, KINDS))}.")
    if limit is None:
        limit = DEFAULT_LIMIT
    elif limit < 1:
        raise InvalidInputError(f"limit={limit!r} keeps no record: give a number of records of 1 or more.")
    wanted_kinds = None if kinds is None else set(kinds)
    wanted_members = None if members is None else set(members)

    newest_first: list[list[tuple[Any, ...]]] = []
    read: list[Path] = []
    kept = skipped = 0
    limited = False
    for path in reversed(traffic_files(folder)):
        try:
            if since is not None and path.stat().st_mtime < since:
                continue  # last written to before the window began
            if kept >= limit:
                limited = True  # older records, not read
                break
            records, bad, cut = _read_file(path, limit - kept, since, wanted_kinds, wanted_members)
        except FileNotFoundError:
            continue  # deleted by the router's clean-up since it was listed
        read.append(path)
        skipped += bad
        limited = limited or cut
        kept += len(records)
        newest_first.append(records)
    frame = _frame([record for chunk in reversed(newest_first) for record in chunk])
    read.reverse()
    frame.attrs["skipped"] = skipped
    frame.attrs["files"] = read
    frame.attrs["limited"] = limited
    frame.attrs["note"] = _note(folder, len(frame), len(read), skipped, limit if limited else None)
    return frame


def _read_file(path: Path, wanted: int, since: float | None, kinds: set[str] | None,
               members: set[str] | None) -> tuple[list[tuple[Any, ...]], int, bool]:
    """The newest ``wanted`` matching records of one file (in file order), how many of the lines read were not
    records, and whether matching records may remain in the lines left unread (before the first one read)."""
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    found: list[tuple[Any, ...]] = []
    bad = 0
    for index in range(len(lines) - 1, -1, -1):
        if len(found) == wanted:
            return found[::-1], bad, any(lines[i].strip() for i in range(index + 1))
        line = lines[index]
        if not line.strip():
            continue
        record = _record(line)
        if record is None:
            bad += 1
        elif ((since is None or record[0] >= since) and (kinds is None or record[3] in kinds)
              and (members is None or record[2] in members)):
            found.append(record)
    return found[::-1], bad, False


def _record(line: bytes) -> tuple[Any, ...] | None:
    """One line as a record (a value per column), or None when it is not one (cut short, not JSON, fields
    missing or of the wrong type)."""
    try:
        value = orjson.loads(line)
        t, ident, member, kind, status = value["t"], value["id"], value["m"], value["kind"], value["status"]
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):  # not JSON, or not an object with them
        return None
    if (type(t) not in (int, float) or type(status) is not int or type(ident) is not str
            or type(member) is not str or type(kind) is not str):  # type(): a bool is no number here
        return None
    ms = value.get("ms")
    return (float(t), ident, member, kind, status, float(ms) if type(ms) in (int, float) else math.nan,
            value.get("in"), value.get("out"), value.get("error"))


def _frame(rows: list[tuple[Any, ...]]) -> Any:
    import pandas as pd

    columns = list(zip(*rows, strict=True)) if rows else [()] * len(COLUMNS)
    types = ("float64", object, object, object, "int64", "float64", object, object, object)
    data = {name: pd.Series(list(values), dtype=kind) for name, values, kind in zip(COLUMNS, columns, types,
                                                                                   strict=True)}
    data["t"] = pd.to_datetime(data["t"], unit="s", utc=True).dt.round("us")
    frame = pd.DataFrame(data, columns=list(COLUMNS))
    return frame.sort_values("t", kind="stable").reset_index(drop=True)


def _note(folder: Path, records: int, files: int, skipped: int, limit: int | None) -> str:
    if not records and not files:
        where = "" if folder.is_dir() else " (the folder does not exist)"
        return f"No traffic recorded under {folder}{where}."
    words = [f"{records:,} record{'s' if records != 1 else ''} from {files} file{'s' if files != 1 else ''} "
             f"under {folder}"]
    if skipped:
        words.append(f"{skipped:,} line{'s' if skipped != 1 else ''} skipped (cut short or not a record)")
    if limit is not None:
        words.append(f"only the newest {limit:,} records were read (limit={limit}): older ones are not in this "
                     "frame")
    return "; ".join(words) + "."

"""Traffic records written the way the endpoint router writes them, for the tests of their readers.

The format is /work/notes/design19.md's "Traffic records" (and ``mlops_backend.router.traffic``): files
``traffic-<start unix ms>-<pid>.jsonl``, one JSON object a line with the keys ``t, id, m, kind, status, ms``, then
``in`` (live and original records only), ``out``, and ``error`` only when ``status`` is 0; a body larger than
64 KiB is recorded as ``{"truncated": true, "bytes": N}``, a body that is not JSON as its text.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
from mlops_backend.collection_store import record_value

MAX_BODY = 64 * 1024
KINDS = ("live", "shadow", "replay", "original")


def body_bytes(value: Any) -> bytes | None:
    """A body as a client sends it: JSON, or text as it is (``str``), or nothing (None)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    return orjson.dumps(value)


def line(record: Mapping[str, Any]) -> bytes:
    """One record as the router writes it (keys in its order, bodies as it records them)."""
    kind, status = record["kind"], record.get("status", 200)
    assert kind in KINDS, kind
    item: dict[str, Any] = {"t": round(float(record["t"]), 3), "id": record["id"], "m": record["m"], "kind": kind,
                            "status": status, "ms": round(float(record.get("ms", 1.0)), 3)}
    if kind in ("live", "original"):
        raw = body_bytes(record.get("in"))
        item["in"] = None if raw is None else record_value(raw, MAX_BODY)
    else:
        assert record.get("in") is None, "a shadow or replay record has no body: it refers to its request's id"
    raw = body_bytes(record.get("out"))
    item["out"] = None if raw is None else record_value(raw, MAX_BODY)
    if status == 0:
        item["error"] = record.get("error") or "connection refused"
    return orjson.dumps(item) + b"\n"


def write_records(folder: Path, records: Iterable[Mapping[str, Any]], *, pid: int = 4242,
                  per_file: int | None = None) -> list[Path]:
    """Write ``records`` (dicts with t, id, m, kind, status, ms, in, out, error) into traffic files under ``folder``.

    Each file is named after its first record's time and ``pid``, and gets its last record's time as its
    modification time (when the router last wrote to it). ``per_file`` records go in each file (all in one
    otherwise). Returns the files, oldest first.
    """
    folder.mkdir(parents=True, exist_ok=True)
    items = list(records)
    size = per_file or max(len(items), 1)
    paths = []
    for start in range(0, len(items), size):
        chunk = items[start:start + size]
        path = folder / f"traffic-{int(float(chunk[0]['t']) * 1000)}-{pid}.jsonl"
        with open(path, "ab") as fh:
            for record in chunk:
                fh.write(line(record))
        last = float(chunk[-1]["t"])
        os.utime(path, (last, last))
        paths.append(path)
    return paths


def append_raw(path: Path, data: bytes) -> None:
    """Add bytes at the end of a traffic file (a line cut short, a damaged one), keeping its modification time."""
    stat = path.stat()
    with open(path, "ab") as fh:
        fh.write(data)
    os.utime(path, (stat.st_atime, stat.st_mtime))

"""Reading a deployment's collected data: records, the writers' counters, labels, ModelDataCollector CSVs.

The server writes (see :mod:`mlops_backend.collector`); this module only reads, except for labels, which the
notebook attaches: ``labels/<nanoseconds>-<random>.jsonl`` beside the records, one ``{"request_id", "label"}`` a line,
later files winning over earlier ones.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from mlops_backend.collection_store import read_stats, segments


def records(folder: Path, *, since: float | None = None) -> Iterator[dict[str, Any]]:
    """The records of a collection folder, segment by segment (oldest segment first), from ``since`` (epoch s).

    A line cut short by a crash is skipped.
    """
    for path in segments(folder):
        if since is not None and path.stat().st_mtime < since:
            continue  # written to last before the window began
        with open(path, "rb") as fh:
            for line in fh:
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if since is None or record.get("time", 0) >= since:
                    yield record


@dataclass(frozen=True)
class CollectionStats:
    """What the writers of a deployment's collection did, from their counters."""

    service: str
    folder: Path
    workers: int
    received: int
    sampled_out: int
    written: int
    spilled: int
    dropped: int
    #: Records received by workers still running and not written yet.
    queued: int
    #: Records a worker received but never wrote because it ended without a clean stop (a crash).
    lost: int
    bytes_on_disk: int

    def __repr__(self) -> str:
        """``iris: 84 records written, 0 dropped (1 worker run, <0.1 MB on disk)``: a worker run is one server
        worker process that collected (a reload or restart starts new ones), the size that of the record files."""
        parts = [f"{self.written:,} record{'s' if self.written != 1 else ''} written", f"{self.dropped:,} dropped"]
        if self.sampled_out:
            parts.append(f"{self.sampled_out:,} left out by the sample rate")
        if self.spilled:
            parts.append(f"{self.spilled:,} written by the request itself (queue full)")
        if self.queued:
            parts.append(f"{self.queued:,} queued")
        if self.lost:
            parts.append(f"{self.lost:,} lost when a worker ended without a clean stop")
        size = "<0.1 MB" if self.bytes_on_disk < 50_000 else f"{self.bytes_on_disk / 1e6:.1f} MB"
        runs = f"{self.workers} worker run{'s' if self.workers != 1 else ''}"
        return f"{self.service}: " + ", ".join(parts) + f" ({runs}, {size} on disk)"


def stats(service: str, folder: Path, *, running: bool) -> CollectionStats:
    """Sum the counters of every worker that ever collected for ``service``.

    A worker that did not stop cleanly has records it received and never wrote: queued while the service runs
    and the worker wrote within a few flush intervals, lost otherwise (its process ended: a crash).
    """
    totals = dict.fromkeys(("received", "sampled_out", "written", "spilled", "dropped", "queued", "lost"), 0)
    workers = 0
    now = time.time()
    stats_dir = folder / "stats"
    for path in sorted(stats_dir.glob("*.bin")) if stats_dir.is_dir() else []:
        counters = read_stats(path)
        workers += 1
        for key in ("received", "sampled_out", "written", "spilled", "dropped"):
            totals[key] += int(counters[key])
        pending = int(counters["received"] - counters["sampled_out"] - counters["written"] - counters["dropped"])
        if not counters["closed"] and pending > 0:
            alive = running and now - counters["heartbeat"] <= 3 * counters["flush_interval"] + 5
            totals["queued" if alive else "lost"] += pending
    size = sum(p.stat().st_size for p in segments(folder))
    return CollectionStats(service=service, folder=folder, workers=workers, bytes_on_disk=size, **totals)


def write_labels(folder: Path, labels: Sequence[tuple[str, Any]]) -> Path:
    """Append ``(request_id, label)`` pairs as a new labels file (atomic: written aside, then renamed)."""
    target = folder / "labels"
    target.mkdir(parents=True, exist_ok=True)
    now = time.time()
    path = target / f"{time.time_ns():020d}-{secrets.token_hex(3)}.jsonl"  # names sort in writing order
    body = b"".join(orjson.dumps({"request_id": rid, "label": value, "time": now},
                                 option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for rid, value in labels)
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(body)
    os.replace(temporary, path)
    return path


def labels(folder: Path) -> dict[str, Any]:
    """Every attached label by request id (the latest wins)."""
    found: dict[str, Any] = {}
    target = folder / "labels"
    for path in sorted(target.glob("*.jsonl")) if target.is_dir() else []:
        for line in path.read_bytes().splitlines():
            item = orjson.loads(line)
            found[str(item["request_id"])] = item["label"]
    return found


def csv_files(folder: Path, designation: str) -> list[Path]:
    """The ModelDataCollector CSV files of ``designation`` (any workspace, model and version), oldest day first."""
    root = folder / "modeldata"
    if not root.is_dir():
        return []
    found = [p for p in root.rglob("data.csv") if len(p.parts) >= 5 and p.parts[-5] == designation]
    return sorted(found, key=lambda p: p.parts[-4:-1])


def designations(folder: Path) -> list[str]:
    """The designations ModelDataCollector wrote for."""
    root = folder / "modeldata"
    return sorted({p.parts[-5] for p in root.rglob("data.csv")}) if root.is_dir() else []


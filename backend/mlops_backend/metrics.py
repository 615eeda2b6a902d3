"""Prometheus metrics shared by all workers of a server, without a lock or a round trip.

Each worker owns one small memory-mapped file of float64 counters in the server's metrics folder;
updating a counter is an index and an add. ``/metrics``, answered by whichever worker gets the
scrape, reads every worker's file and labels each series with its worker number.

Why not prometheus_client's multi-process mode (the same design: mmap files per process): measured side by
side (benchmarks/results/metrics.md), it cost 7-12% of echo throughput, 15-17% more server CPU per echo
request (8% for a LogisticRegression), and 70 ms more at each worker's start (its import), for one more
dependency in every image; its counter updates take a lock and a pid check each, about 10 us a request
against 1.5 us here.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

#: "refused": requests answered by the connection's bounds (408, 414, 431, 503) before any route saw them.
ROUTES = ("score", "health", "ready", "swagger", "metrics", "other", "refused")
CODES = (200, 400, 401, 404, 405, 408, 413, 414, 415, 431, 499, 500, 503)
#: Upper bounds (seconds) of the /score latency histogram buckets; +Inf is implied.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_CODE_SLOTS = len(CODES) + 1  # the last slot counts any other status
_REQUESTS = 0
_RUN_FAILURES = _REQUESTS + len(ROUTES) * _CODE_SLOTS
_IN_FLIGHT = _RUN_FAILURES + 1
_HIST = _IN_FLIGHT + 1
_HIST_SUM = _HIST + len(BUCKETS) + 1
_HIST_COUNT = _HIST_SUM + 1
SLOTS = _HIST_COUNT + 1

ROUTE_INDEX = {name: i for i, name in enumerate(ROUTES)}
_REFUSED = ROUTE_INDEX["refused"]
_CODE_INDEX = {code: i for i, code in enumerate(CODES)}


class WorkerMetrics:
    """The counters of one worker, in ``folder/worker-<n>.bin``."""

    def __init__(self, folder: Path, worker: int) -> None:
        self.path = folder / f"worker-{worker}.bin"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, SLOTS * 8)
            self._map = mmap.mmap(fd, SLOTS * 8)
        finally:
            os.close(fd)
        self.values = memoryview(self._map).cast("d")
        self.values[_IN_FLIGHT] = 0.0  # a restarted worker has nothing in flight

    def started(self) -> None:
        """A request began."""
        self.values[_IN_FLIGHT] += 1

    def rejected(self, status: int) -> None:
        """A request was refused by the connection's bounds (it never reached the application)."""
        self.values[_REQUESTS + _REFUSED * _CODE_SLOTS + _CODE_INDEX.get(status, len(CODES))] += 1

    def finished(self, route: int, status: int, seconds: float, *, run_failed: bool = False) -> None:
        """A request ended with ``status`` after ``seconds`` (latency is recorded for /score only)."""
        values = self.values
        values[_IN_FLIGHT] -= 1
        values[_REQUESTS + route * _CODE_SLOTS + _CODE_INDEX.get(status, len(CODES))] += 1
        if run_failed:
            values[_RUN_FAILURES] += 1
        if route == 0:
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    values[_HIST + i] += 1
                    break
            else:
                values[_HIST + len(BUCKETS)] += 1
            values[_HIST_SUM] += seconds
            values[_HIST_COUNT] += 1


def worker_died(folder: Path, worker: int) -> None:
    """A worker process died: nothing of it is in flight any more (its counts stay; its replacement adds to them)."""
    path = folder / f"worker-{worker}.bin"
    try:
        with open(path, "r+b") as fh:
            fh.seek(_IN_FLIGHT * 8)
            fh.write(bytes(8))  # 0.0
    except OSError:  # it died before it had any: nothing to forget
        pass


def _read(path: Path) -> list[float]:
    with open(path, "rb") as fh:
        data = fh.read(SLOTS * 8)
    return list(memoryview(data).cast("d")) if len(data) == SLOTS * 8 else [0.0] * SLOTS


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def render(folder: Path) -> str:
    """The Prometheus text exposition of every worker's counters."""
    workers = sorted(folder.glob("worker-*.bin"), key=lambda p: int(p.stem.split("-")[1]))
    lines = [
        "# HELP mlops_requests_total HTTP requests answered, by route and status.",
        "# TYPE mlops_requests_total counter",
    ]
    data = [(p.stem.split("-")[1], _read(p)) for p in workers]
    for worker, values in data:
        for r, route in enumerate(ROUTES):
            for c in range(_CODE_SLOTS):
                count = values[_REQUESTS + r * _CODE_SLOTS + c]
                if count:
                    code = str(CODES[c]) if c < len(CODES) else "other"
                    lines.append(f'mlops_requests_total{{worker="{worker}",route="{route}",status="{code}"}} '
                                 f"{_number(count)}")
    lines += ["# HELP mlops_run_failures_total Requests whose run() raised, timed out or returned a 5xx.",
              "# TYPE mlops_run_failures_total counter"]
    lines += [f'mlops_run_failures_total{{worker="{w}"}} {_number(v[_RUN_FAILURES])}' for w, v in data]
    lines += ["# HELP mlops_requests_in_flight Requests being handled now.",
              "# TYPE mlops_requests_in_flight gauge"]
    lines += [f'mlops_requests_in_flight{{worker="{w}"}} {_number(v[_IN_FLIGHT])}' for w, v in data]
    lines += ["# HELP mlops_score_duration_seconds Time to answer /score, from request to response.",
              "# TYPE mlops_score_duration_seconds histogram"]
    for worker, values in data:
        cumulative = 0.0
        for i, bound in enumerate((*BUCKETS, float("inf"))):
            cumulative += values[_HIST + i]
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'mlops_score_duration_seconds_bucket{{worker="{worker}",le="{le}"}} {_number(cumulative)}')
        lines.append(f'mlops_score_duration_seconds_sum{{worker="{worker}"}} {values[_HIST_SUM]!r}')
        lines.append(f'mlops_score_duration_seconds_count{{worker="{worker}"}} {_number(values[_HIST_COUNT])}')
    lines += _collection(folder)
    return "\n".join(lines) + "\n"


_COLLECTION = (
    ("written", "mlops_collected_records_total", "counter",
     "Records of scored requests written to the collection store."),
    ("spilled", "mlops_collect_spilled_total", "counter",
     "Records the request wrote itself because the collection queue was full (included in the written ones)."),
    ("sampled_out", "mlops_collect_sampled_out_total", "counter", "Requests left out by the sample rate."),
    ("dropped", "mlops_collect_dropped_total", "counter", "Records lost because the store could not be written."),
    ("queued", "mlops_collect_queued", "gauge", "Records waiting for the next write."),
)


def _collection(folder: Path) -> list[str]:
    """The data collection counters of this server's workers (each worker links its counters file here)."""
    from mlops_backend.collection_store import read_stats

    stats = []
    for link in sorted(folder.glob("collect-*.bin")):
        try:
            counters = read_stats(link)
        except OSError:
            continue
        counters["queued"] = max(0.0, counters["received"] - counters["sampled_out"] - counters["written"]
                                 - counters["dropped"])
        stats.append((link.stem.split("-")[1].lstrip("w"), counters))
    if not stats:
        return []
    lines = []
    for key, name, kind, help_text in _COLLECTION:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        totals: dict[str, float] = {}
        for worker, counters in stats:  # a restarted worker adds a file: its counts add up
            totals[worker] = totals.get(worker, 0.0) + (counters[key] if kind == "counter" or not counters["closed"]
                                                        else 0.0)
        lines += [f'{name}{{worker="{w}"}} {_number(v)}' for w, v in totals.items()]
    return lines

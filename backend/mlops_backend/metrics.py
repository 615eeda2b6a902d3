"""Prometheus metrics shared by all workers of a server: prometheus_client's multi-process mode.

Each worker process writes its counters to memory-mapped files of its own (``<kind>_<pid>.db``) in
the server's metrics folder (``PROMETHEUS_MULTIPROC_DIR``, set by :func:`use_folder` before any
metric exists); ``/metrics``, answered by whichever worker gets the scrape, merges every file and
labels each series with its worker number. A worker that dies and is started again adds files: its
counts add up under the same worker number, and :func:`worker_died` drops what it had in flight.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Counter
    from prometheus_client.metrics_core import Metric

#: "refused": requests answered by the connection's bounds (408, 414, 431, 503) before any route saw them.
ROUTES = ("score", "health", "ready", "swagger", "metrics", "other", "refused")
CODES = (200, 400, 401, 404, 405, 408, 413, 414, 415, 431, 499, 500, 503)
#: Upper bounds (seconds) of the /score latency histogram buckets; +Inf is implied.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The content type of ``/metrics`` (the text exposition format, version 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The environment variable that puts prometheus_client in multi-process mode.
FOLDER_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

ROUTE_INDEX = {name: i for i, name in enumerate(ROUTES)}
_REFUSED = ROUTE_INDEX["refused"]
_STATUS_LABEL = {code: str(code) for code in CODES}


def use_folder(folder: Path) -> None:
    """Make ``folder`` this server's metrics folder: call before prometheus_client is first imported.

    prometheus_client chooses between one process's counters and files shared by processes when it is
    imported, from the environment; the workers (forked, or this process) inherit the choice.
    """
    os.environ[FOLDER_VARIABLE] = str(folder)


def worker_died(pid: int, folder: Path) -> None:
    """Forget what a dead worker process had in flight (its counts stay: they add up)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]


class MetricsError(RuntimeError):
    """The metrics cannot be kept across processes (prometheus_client was imported too early)."""


class WorkerMetrics:
    """The counters of one worker, in prometheus_client's files in ``folder``.

    Raises:
        MetricsError: prometheus_client was imported before :func:`use_folder` named ``folder``.
    """

    def __init__(self, folder: Path, worker: int) -> None:
        from prometheus_client import Counter, Gauge, Histogram, values

        if os.environ.get(FOLDER_VARIABLE) != str(folder) or not getattr(values.ValueClass, "_multiprocess", False):
            raise MetricsError(f"prometheus_client keeps this process's metrics in memory, not in {folder}: it was "
                               f"imported before {FOLDER_VARIABLE} was set. Call metrics.use_folder() first.")
        self.folder = folder
        label = str(worker)
        self._requests = Counter("mlops_requests", "HTTP requests answered, by route and status.",
                                 ["worker", "route", "status"], registry=None)
        self._children: dict[tuple[int, int], Counter] = {}
        self._label = label
        self._failures = Counter("mlops_run_failures", "Requests whose run() raised, timed out or returned a 5xx.",
                                 ["worker"], registry=None).labels(label)
        self._in_flight = Gauge("mlops_requests_in_flight", "Requests being handled now.", ["worker"],
                                multiprocess_mode="livesum", registry=None).labels(label)
        self._latency = Histogram("mlops_score_duration_seconds", "Time to answer /score, from request to response.",
                                  ["worker"], buckets=BUCKETS, registry=None).labels(label)

    def _count(self, route: int, status: int) -> None:
        child = self._children.get((route, status))
        if child is None:
            child = self._children[route, status] = self._requests.labels(
                self._label, ROUTES[route], _STATUS_LABEL.get(status, "other"))
        child.inc()

    def started(self) -> None:
        """A request began."""
        self._in_flight.inc()

    def rejected(self, status: int) -> None:
        """A request was refused by the connection's bounds (it never reached the application)."""
        self._count(_REFUSED, status)

    def finished(self, route: int, status: int, seconds: float, *, run_failed: bool = False) -> None:
        """A request ended with ``status`` after ``seconds`` (latency is recorded for /score only)."""
        self._in_flight.dec()
        self._count(route, status)
        if run_failed:
            self._failures.inc()
        if route == 0:
            self._latency.observe(seconds)


def render(folder: Path) -> bytes:
    """The Prometheus text exposition of every worker's counters (and of data collection, when on)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, str(folder))  # type: ignore[no-untyped-call]
    registry.register(_CollectionMetrics(folder))
    return generate_latest(registry)


_COLLECTION = (
    ("written", "mlops_collected_records", "counter",
     "Records of scored requests written to the collection store."),
    ("spilled", "mlops_collect_spilled", "counter",
     "Records the request wrote itself because the collection queue was full (included in the written ones)."),
    ("sampled_out", "mlops_collect_sampled_out", "counter", "Requests left out by the sample rate."),
    ("dropped", "mlops_collect_dropped", "counter", "Records lost because the store could not be written."),
    ("queued", "mlops_collect_queued", "gauge", "Records waiting for the next write."),
)


class _CollectionMetrics:
    """The data collection counters of this server's workers (each worker links its counters file here)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from mlops_backend.collector import read_stats

        stats = []
        for link in sorted(self.folder.glob("collect-*.bin")):
            try:
                counters = read_stats(link)
            except OSError:
                continue
            counters["queued"] = max(0.0, counters["received"] - counters["sampled_out"] - counters["written"]
                                     - counters["dropped"])
            stats.append((link.stem.split("-")[1].lstrip("w"), counters))
        for key, name, kind, help_text in _COLLECTION:
            if not stats:
                return
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, help_text,
                                                                                       labels=["worker"])
            totals: dict[str, float] = {}
            for worker, counters in stats:  # a restarted worker adds a file: its counts add up
                totals[worker] = totals.get(worker, 0.0) + (
                    counters[key] if kind == "counter" or not counters["closed"] else 0.0)
            for worker, value in totals.items():
                family.add_metric([worker], value)
            yield family

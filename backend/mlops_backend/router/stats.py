"""The router's counters: per member and kind (live, shadow), as Prometheus text and as JSON."""

from __future__ import annotations

from collections import deque
from typing import Any

#: Latencies kept per member for its quantiles.
WINDOW = 4096
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Counter:
    """The answers of one member of one kind."""

    __slots__ = ("buckets", "errors", "recent", "requests", "seconds", "statuses")

    def __init__(self) -> None:
        self.requests = self.errors = 0
        self.seconds = 0.0
        self.statuses: dict[int, int] = {}
        self.buckets = [0] * len(_BUCKETS)
        self.recent: deque[float] = deque(maxlen=WINDOW)

    def add(self, status: int, seconds: float) -> None:
        self.requests += 1
        if status >= 500 or status == 0:
            self.errors += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.seconds += seconds
        self.recent.append(seconds)
        for i, bound in enumerate(_BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1
                break

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.recent)

        def quantile(q: float) -> float | None:
            return None if not ordered else round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

        return {"requests": self.requests, "errors": self.errors,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "p50_ms": quantile(0.5), "p99_ms": quantile(0.99)}


class RouterStats:
    """Every counter of a router process."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, str], Counter] = {}
        self.shadow_dropped = 0
        self.failovers = 0

    def add(self, member: str, kind: str, status: int, seconds: float) -> None:
        """Count one answer (status 0: none came)."""
        counter = self.counters.get((member, kind))
        if counter is None:
            counter = self.counters[(member, kind)] = Counter()
        counter.add(status, seconds)

    def summary(self) -> dict[str, Any]:
        """Per member, per kind: requests, errors, statuses, p50/p99 ms (of the last :data:`WINDOW`)."""
        members: dict[str, dict[str, Any]] = {}
        for (member, kind), counter in sorted(self.counters.items()):
            members.setdefault(member, {})[kind] = counter.summary()
        return {"answers": members, "shadow_dropped": self.shadow_dropped, "failovers": self.failovers}

    def render(self, endpoint: str) -> str:
        """Prometheus text exposition."""
        lines = ["# HELP mlops_endpoint_requests_total Answers by member, kind (live, shadow) and status.",
                 "# TYPE mlops_endpoint_requests_total counter"]
        for (member, kind), counter in sorted(self.counters.items()):
            for status, count in sorted(counter.statuses.items()):
                lines.append(f'mlops_endpoint_requests_total{{endpoint="{endpoint}",member="{member}",'
                             f'kind="{kind}",code="{status}"}} {count}')
        lines += ["# HELP mlops_endpoint_request_seconds Time to the member's answer.",
                  "# TYPE mlops_endpoint_request_seconds histogram"]
        for (member, kind), counter in sorted(self.counters.items()):
            labels = f'endpoint="{endpoint}",member="{member}",kind="{kind}"'
            total = 0
            for bound, count in zip(_BUCKETS, counter.buckets, strict=True):
                total += count
                lines.append(f'mlops_endpoint_request_seconds_bucket{{{labels},le="{bound}"}} {total}')
            lines.append(f'mlops_endpoint_request_seconds_bucket{{{labels},le="+Inf"}} {counter.requests}')
            lines.append(f"mlops_endpoint_request_seconds_sum{{{labels}}} {counter.seconds:.6f}")
            lines.append(f"mlops_endpoint_request_seconds_count{{{labels}}} {counter.requests}")
        lines += ["# HELP mlops_endpoint_shadow_dropped_total Shadow copies not sent (too many in flight).",
                  "# TYPE mlops_endpoint_shadow_dropped_total counter",
                  f'mlops_endpoint_shadow_dropped_total{{endpoint="{endpoint}"}} {self.shadow_dropped}',
                  "# HELP mlops_endpoint_failovers_total Requests sent to another member after one refused them.",
                  "# TYPE mlops_endpoint_failovers_total counter",
                  f'mlops_endpoint_failovers_total{{endpoint="{endpoint}"}} {self.failovers}']
        return "\n".join(lines) + "\n"

"""Profiling: the CPU and memory a model really needs, measured under real container limits.

Each resource configuration is deployed (a Docker container with real ``--cpus``/``--memory`` limits when an
engine is reachable; otherwise one local process, and the report says the limits were not applied), loaded
by :mod:`mlops_magics.profiling.loadgen` in its own process at each concurrency, and measured: latency
percentiles, queries per second, success rate, and the CPU and peak memory its processes used (cgroup or
/proc counters). The report keeps the keys of Azure ML's profiler. The recommendation is the smallest
configuration (CPU first, then memory) that serves the highest concurrency with every request answered
and the p95 latency within the SLO; its memory is the measured peak plus 25% headroom, rounded up to 0.05 GB
(without limits its CPU too is what was used plus 25%), and the report says so.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from mlops_magics.errors import InvalidInputError, MlopsError
from mlops_magics.profiling.loadgen import KEY_VARIABLE

HEADROOM = 1.25
_CONFIG_PART = re.compile(r"^\s*(cpu|memory)\s*=\s*([\w.]+)\s*$", re.IGNORECASE)


def parse_levels(text: str) -> list[int]:
    """Concurrency levels from ``"1,4,16"``.

    Raises:
        InvalidInputError: not numbers separated by commas.
    """
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidInputError(f"--concurrency {text!r}: give numbers separated by commas, e.g. 1,4,16.") from None


def parse_configs(text: str) -> list[dict[str, Any]]:
    """``"cpu=0.5,memory=512m; cpu=1,memory=1g"`` -> [{"cpu": 0.5, "memory": "512m"}, ...].

    Raises:
        InvalidInputError: a part is not ``cpu=NUMBER`` or ``memory=SIZE``, or a configuration lacks one.
    """
    from mlops_magics.packaging.limits import parse_memory

    configs = []
    for chunk in (c for c in text.split(";") if c.strip()):
        config: dict[str, Any] = {}
        for part in chunk.split(","):
            match = _CONFIG_PART.match(part)
            if not match:
                raise InvalidInputError(f"--configs: {part.strip()!r} is not cpu=NUMBER or memory=SIZE; write e.g. "
                                        "'cpu=0.5,memory=512m; cpu=1,memory=1g'.")
            key, value = match[1].lower(), match[2]
            if key == "cpu":
                try:
                    config["cpu"] = float(value)
                except ValueError:
                    raise InvalidInputError(f"--configs: cpu={value} is not a number.") from None
            else:
                parse_memory(value)
                config["memory"] = value
        if set(config) != {"cpu", "memory"}:
            raise InvalidInputError(f"--configs: {chunk.strip()!r} needs both cpu= and memory=.")
        configs.append(config)
    if not configs:
        raise InvalidInputError("--configs is empty: give e.g. 'cpu=0.5,memory=512m; cpu=1,memory=1g'.")
    return configs


# -- resource probes ------------------------------------------------------------------------------


class ProcessProbe:
    """CPU seconds and peak resident memory of a local server's process tree (/proc)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _tree(self) -> list[int]:
        from mlops_magics.targets.process import process_tree

        return process_tree(self.pid)

    def cpu_seconds(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self._tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / ticks

    def peak_memory(self) -> int:
        total = 0
        for pid in self._tree():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
            total += int(found[1]) * 1024 if found else 0
        return total


class ContainerProbe:
    """CPU seconds and peak memory of a container, from its cgroup (v1 or v2) on this host."""

    def __init__(self, container_id: str) -> None:
        root = Path("/sys/fs/cgroup")
        v2 = next((p for p in (root / "system.slice" / f"docker-{container_id}.scope", root / "docker" / container_id)
                   if (p / "cpu.stat").exists()), None)
        self.v2 = v2
        self.cpuacct = root / "cpuacct" / "docker" / container_id / "cpuacct.usage"
        self.memory = root / "memory" / "docker" / container_id / "memory.max_usage_in_bytes"
        if v2 is None and not self.cpuacct.exists():
            raise MlopsError(f"Cannot find the cgroup of container {container_id[:12]} under {root}.")

    def cpu_seconds(self) -> float:
        if self.v2 is not None:
            usage = re.search(r"^usage_usec (\d+)", (self.v2 / "cpu.stat").read_text(), re.M)
            return int(usage[1]) / 1e6 if usage else 0.0
        return int(self.cpuacct.read_text()) / 1e9

    def peak_memory(self) -> int:
        if self.v2 is not None:
            peak = self.v2 / "memory.peak"
            return int(peak.read_text()) if peak.exists() else int((self.v2 / "memory.current").read_text())
        return int(self.memory.read_text())


# -- the report --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileReport:
    """Per configuration, Azure's keys; then the recommendation and how far the load generator can go."""

    model: str
    target: str
    limits_applied: bool
    concurrency: tuple[int, ...]
    duration: float
    slo_p95_ms: float | None
    configurations: tuple[dict[str, Any], ...]
    recommendedCpu: float | None
    recommendedMemoryInGB: float | None
    recommendedLatencyInMs: float | None
    load_generator: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    #: Where the recommended figures come from, e.g. ``memory = 0.082 GB peak use + 25% headroom, ...``.
    recommendation_basis: tuple[str, ...] = ()

    @property
    def target_concurrency(self) -> int | None:
        """The load the measures and the recommendation are taken at: the highest concurrency."""
        return self.concurrency[-1] if self.concurrency else None

    def _recommendation(self) -> str | None:
        """``cpu=0.5 memory=0.15GB (p95 21.42 ms at concurrency 4; memory = ...)``; None without one."""
        if self.recommendedCpu is None:
            return None
        at = f" at concurrency {self.target_concurrency}" if self.target_concurrency else ""
        basis = "".join(f"; {b}" for b in self.recommendation_basis)
        return (f"cpu={self.recommendedCpu} memory={self.recommendedMemoryInGB}GB "
                f"(p95 {self.recommendedLatencyInMs:.2f} ms{at}{basis})")

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def table(self) -> list[dict[str, Any]]:
        keys = ("requestedCpu", "requestedMemoryInGB", "maxUtilizedCpu", "maxUtilizedMemoryInGB",
                "latencyPercentile50InMs", "latencyPercentile95InMs", "latencyPercentile99InMs",
                "measuredQueriesPerSecond", "successRate", "totalQueries")
        return [{k: (round(c[k], 3) if isinstance(c.get(k), float) else c.get(k)) for k in keys}
                for c in self.configurations]

    def __repr__(self) -> str:
        applied = "limits applied" if self.limits_applied else "limits NOT applied: local processes"
        levels = ",".join(map(str, self.concurrency))
        head = f"Profile of {self.model} on {self.target} ({applied}), concurrency {levels}, {self.duration:g} s each"
        at = f" at concurrency {self.target_concurrency}" if self.target_concurrency else ""
        rows = [f"  cpu={c['requestedCpu']} memory={c['requestedMemoryInGB']}GB{at}: p95 "
                f"{c['latencyPercentile95InMs']:.2f} ms, {c['measuredQueriesPerSecond']:.0f} q/s, success "
                f"{c['successRate']:.0%}, used cpu {c['maxUtilizedCpu']:.2f} memory {c['maxUtilizedMemoryInGB']:.3f}GB"
                + (f" [{c['error']}]" if c.get("error") else "") for c in self.configurations]
        recommendation = self._recommendation()
        rec = (f"  recommended: {recommendation}" if recommendation is not None
               else "  recommended: none of the configurations met the SLO")
        notes = [f"  note: {n}" for n in self.notes]
        return "\n".join([head, *rows, rec, *notes])

    def _repr_html_(self) -> str:
        from mlops_magics import display

        chart = display.bar_chart_png(
            "latency by configuration", [f"cpu={c['requestedCpu']}\nmem={c['requestedMemoryInGB']}GB"
                                         for c in self.configurations],
            {f"p{p}": [c.get(f"latencyPercentile{p}InMs") or 0.0 for c in self.configurations]
             for p in ("50", "95", "99")}, "ms")
        at = f" at concurrency {self.target_concurrency}" if self.target_concurrency else ""
        basis = "".join(f"; {escape(b)}" for b in self.recommendation_basis)
        rec = (f"<p>Recommended: <strong>cpu={self.recommendedCpu}, memory={self.recommendedMemoryInGB} GB</strong> "
               f"(p95 {self.recommendedLatencyInMs:.2f} ms{at}{basis})</p>" if self.recommendedCpu is not None
               else "<p><strong>No configuration met the SLO.</strong></p>")
        notes = "".join(f"<li>{escape(n)}</li>" for n in self.notes)
        image = f'<img src="data:image/png;base64,{chart}" alt="latency chart"/>' if chart else ""
        return (f"<div><p>Profile of <strong>{escape(self.model)}</strong> on {escape(self.target)}, measured{at}</p>"
                f"{display.table(self.table())}{rec}{image}{'<ul>' + notes + '</ul>' if notes else ''}</div>")


# -- measuring -----------------------------------------------------------------------------------


def generate_load(url: str, body: Path, concurrency: int, duration: float, key: str | None) -> dict[str, Any]:
    """POST ``body`` to ``url`` from ``concurrency`` connections for ``duration`` seconds (the load generator runs
    in its own process); its summary: latency percentiles, queries per second, statuses."""
    command = [sys.executable, "-m", "mlops_magics.profiling.loadgen", "--url", url, "--body", str(body),
               "--concurrency", str(concurrency), "--duration", str(duration)]
    env = {**os.environ, KEY_VARIABLE: key} if key else None  # the key never goes on a command line
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, env=env)
    if done.returncode != 0:
        raise MlopsError(f"The load generator failed: {done.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _wrk_qps(url: str, body: Path, concurrency: int, duration: float) -> float | None:
    if shutil.which("wrk") is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f"wrk.method = 'POST'\nwrk.body = {json.dumps(body.read_text())}\n"
                     "wrk.headers['Content-Type'] = 'application/json'\n")
    try:
        out = subprocess.run(["wrk", f"-t{min(2, concurrency)}", f"-c{concurrency}", f"-d{max(1, int(duration))}s",
                              "-s", script.name, url], capture_output=True, text=True, timeout=duration + 30).stdout
    finally:
        os.unlink(script.name)
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(found[1]) if found else None


def gigabytes(size: int) -> float:
    """``size`` bytes in GiB."""
    return size / 1024**3


def measure_config(deployment: Any, probe: Any, body: Path, concurrency: Sequence[int], duration: float,
                   step: Callable[[str], None]) -> dict[str, Any]:
    """Load a running deployment at each concurrency in turn; its measures at the highest, Azure ML's keys."""
    runs = []
    max_cpu = 0.0
    for level in concurrency:
        step(f"concurrency {level}")
        cpu_before, began = probe.cpu_seconds(), time.perf_counter()
        summary = generate_load(f"{deployment.url}/score", body, level, duration, deployment.auth_key)
        wall = time.perf_counter() - began
        max_cpu = max(max_cpu, (probe.cpu_seconds() - cpu_before) / wall)
        runs.append({"concurrency": level, **summary})
    target = runs[-1]
    pct = target["percentiles_ms"]
    return {
        "maxUtilizedCpu": max_cpu, "maxUtilizedMemoryInGB": gigabytes(probe.peak_memory()),
        "averageLatencyInMs": target["average_ms"], "latencyPercentile50InMs": pct["50"],
        "latencyPercentile90InMs": pct["90"], "latencyPercentile95InMs": pct["95"],
        "latencyPercentile99InMs": pct["99"], "latencyPercentile999InMs": pct["99.9"],
        "measuredQueriesPerSecond": target["qps"],
        "successRate": target["successes"] / target["requests"] if target["requests"] else 0.0,
        "totalQueries": target["requests"], "runs": runs,
    }


def memory_bytes(text: str) -> int:
    """Docker's memory syntax (``512m``, ``1g``) in bytes."""
    from mlops_magics.packaging.limits import parse_memory

    return parse_memory(text)


def failed(reason: str) -> dict[str, Any]:
    """The measures of a configuration that could not be deployed or measured, and why."""
    nan = float("nan")
    return {"maxUtilizedCpu": 0.0, "maxUtilizedMemoryInGB": 0.0, "averageLatencyInMs": nan,
            "latencyPercentile50InMs": nan, "latencyPercentile90InMs": nan, "latencyPercentile95InMs": nan,
            "latencyPercentile99InMs": nan, "latencyPercentile999InMs": nan, "measuredQueriesPerSecond": 0.0,
            "successRate": 0.0, "totalQueries": 0, "runs": [], "error": reason}


def ceiling(deployment: Any, body: Path, concurrency: int, duration: float) -> dict[str, Any]:
    """The load generator's throughput against wrk's on the same endpoint and load."""
    ours = generate_load(f"{deployment.url}/score", body, concurrency, duration, deployment.auth_key)["qps"]
    theirs = None if deployment.auth_key else _wrk_qps(f"{deployment.url}/score", body, concurrency, duration)
    return {"concurrency": concurrency, "loadgen_qps": ours, "wrk_qps": theirs,
            "ratio": ours / theirs if theirs else None}


def recommend(model: str, target: str, limits: bool, levels: tuple[int, ...], duration: float,
              slo: float | None, results: list[dict[str, Any]], load_generator: dict[str, Any],
              notes: list[str]) -> ProfileReport:
    """The report: the smallest configuration that met the SLO at the highest load, with headroom."""
    def meets(c: dict[str, Any]) -> bool:
        p95 = c["latencyPercentile95InMs"]
        return c["successRate"] == 1.0 and not math.isnan(p95) and (slo is None or p95 <= slo)

    passing = [c for c in results if meets(c)]
    chosen = min(passing, key=lambda c: (c["requestedCpu"] or 0, c["requestedMemoryInGB"] or 0), default=None)
    cpu = memory = latency = None
    basis: list[str] = []
    headroom = f"{HEADROOM - 1:.0%} headroom"
    if chosen is not None:
        used_cpu, used_memory = chosen["maxUtilizedCpu"], chosen["maxUtilizedMemoryInGB"]
        if limits:
            cpu = chosen["requestedCpu"]
        else:
            cpu = math.ceil(used_cpu * HEADROOM * 10) / 10
            basis.append(f"cpu = {used_cpu:.2f} used + {headroom}, rounded up to 0.1")
        memory = math.ceil(used_memory * HEADROOM * 20) / 20  # 0.05 GB steps
        if limits and chosen["requestedMemoryInGB"] and memory > chosen["requestedMemoryInGB"]:
            memory = chosen["requestedMemoryInGB"]
            basis.append(f"memory = the {memory:g} GB configured ({used_memory:.3f} GB peak use + {headroom} would "
                         "exceed it)")
        else:
            basis.append(f"memory = {used_memory:.3f} GB peak use + {headroom}, rounded up to 0.05 GB")
        latency = chosen["latencyPercentile95InMs"]
    ratio = load_generator.get("ratio")
    if ratio is not None:
        on = (f" on cpu={load_generator['requestedCpu']} memory={load_generator['requestedMemoryInGB']}GB"
              if load_generator.get("requestedCpu") is not None else "")
        verdict = ("so the generator does not limit these measures (throughput varies from run to run on a busy "
                   "machine)" if ratio >= 0.8 else "so the generator may limit the highest load levels")
        notes.append(f"load generator check{on} at concurrency {load_generator['concurrency']}: it reached "
                     f"{load_generator['loadgen_qps']:.0f} q/s and wrk {load_generator['wrk_qps']:.0f} q/s right after "
                     f"on the same endpoint ({ratio:.0%}), {verdict}")
    elif load_generator:
        notes.append("wrk is not installed: the load generator's ceiling was not compared")
    return ProfileReport(model=model, target=target, limits_applied=limits, concurrency=levels, duration=duration,
                         slo_p95_ms=slo, configurations=tuple(results), recommendedCpu=cpu,
                         recommendedMemoryInGB=memory, recommendedLatencyInMs=latency,
                         load_generator=load_generator, notes=tuple(notes), recommendation_basis=tuple(basis))

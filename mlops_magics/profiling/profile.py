"""Profiling: the CPU and memory a model really needs, measured under real container limits.

Each resource configuration is deployed (a Docker container with real ``--cpus``/``--memory`` limits when an
engine is reachable; otherwise one local process, and the report says the limits were not applied), loaded
by :mod:`mlops_magics.profiling.loadgen` in its own process at each concurrency, and measured: latency
percentiles, queries per second, success rate, and the CPU and peak memory its processes used (cgroup or
/proc counters). The report keeps the keys of Azure ML's profiler. The recommendation is the smallest
configuration (CPU first, then memory) that serves the highest concurrency with every request answered
and the p95 latency within the SLO; its memory is the measured peak plus 25% headroom.
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
from mlops_magics.registry import or_default
from mlops_magics.registry.trust import require_trusted

HEADROOM = 1.25
_CONFIG_PART = re.compile(r"^\s*(cpu|memory)\s*=\s*([\w.]+)\s*$", re.IGNORECASE)


def parse_configs(text: str) -> list[dict[str, Any]]:
    """``"cpu=0.5,memory=512m; cpu=1,memory=1g"`` -> [{"cpu": 0.5, "memory": "512m"}, ...].

    Raises:
        InvalidInputError: a part is not ``cpu=NUMBER`` or ``memory=SIZE``, or a configuration lacks one.
    """
    from mlops_magics.targets.docker import parse_memory

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


class _ProcessProbe:
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


class _ContainerProbe:
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
        rows = [f"  cpu={c['requestedCpu']} memory={c['requestedMemoryInGB']}GB: p95 "
                f"{c['latencyPercentile95InMs']:.2f} ms, {c['measuredQueriesPerSecond']:.0f} q/s, success "
                f"{c['successRate']:.0%}, used cpu {c['maxUtilizedCpu']:.2f} memory {c['maxUtilizedMemoryInGB']:.3f}GB"
                + (f" [{c['error']}]" if c.get("error") else "") for c in self.configurations]
        rec = (f"  recommended: cpu={self.recommendedCpu} memory={self.recommendedMemoryInGB}GB (p95 "
               f"{self.recommendedLatencyInMs:.2f} ms)" if self.recommendedCpu is not None
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
        rec = (f"<p>Recommended: <strong>cpu={self.recommendedCpu}, memory={self.recommendedMemoryInGB} GB</strong> "
               f"(p95 {self.recommendedLatencyInMs:.2f} ms)</p>" if self.recommendedCpu is not None
               else "<p><strong>No configuration met the SLO.</strong></p>")
        notes = "".join(f"<li>{escape(n)}</li>" for n in self.notes)
        image = f'<img src="data:image/png;base64,{chart}" alt="latency chart"/>' if chart else ""
        return (f"<div><p>Profile of <strong>{escape(self.model)}</strong> on {escape(self.target)}</p>"
                f"{display.table(self.table())}{rec}{image}{'<ul>' + notes + '</ul>' if notes else ''}</div>")


# -- measuring -----------------------------------------------------------------------------------


def _load(url: str, body: Path, concurrency: int, duration: float, key: str | None) -> dict[str, Any]:
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


def _gb(size: int) -> float:
    return size / 1024**3


def _measure_config(deployment: Any, probe: Any, body: Path, concurrency: Sequence[int], duration: float,
                    step: Callable[[str], None]) -> dict[str, Any]:
    runs = []
    max_cpu = 0.0
    for level in concurrency:
        step(f"concurrency {level}")
        cpu_before, began = probe.cpu_seconds(), time.perf_counter()
        summary = _load(f"{deployment.url}/score", body, level, duration, deployment.auth_key)
        wall = time.perf_counter() - began
        max_cpu = max(max_cpu, (probe.cpu_seconds() - cpu_before) / wall)
        runs.append({"concurrency": level, **summary})
    target = runs[-1]
    pct = target["percentiles_ms"]
    return {
        "maxUtilizedCpu": max_cpu, "maxUtilizedMemoryInGB": _gb(probe.peak_memory()),
        "averageLatencyInMs": target["average_ms"], "latencyPercentile50InMs": pct["50"],
        "latencyPercentile90InMs": pct["90"], "latencyPercentile95InMs": pct["95"],
        "latencyPercentile99InMs": pct["99"], "latencyPercentile999InMs": pct["99.9"],
        "measuredQueriesPerSecond": target["qps"],
        "successRate": target["successes"] / target["requests"] if target["requests"] else 0.0,
        "totalQueries": target["requests"], "runs": runs,
    }


def profile(
    ref: str,
    data: Any,
    *,
    configs: str | Sequence[dict[str, Any]] = "cpu=0.5,memory=512m; cpu=1,memory=1g",
    concurrency: Sequence[int] = (1, 4, 16),
    duration: float = 10.0,
    slo_p95_ms: float | None = None,
    target: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    registry: Any = None,
) -> ProfileReport:
    """Deploy a version under each resource configuration, load it, measure, recommend; store the report.

    Args:
        ref: ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.
        data: one request's data (rows), sent as ``{"data": rows}`` by every request.
        configs: resource configurations (``"cpu=0.5,memory=512m; cpu=1,memory=1g"`` or dicts).
        concurrency: connections per load level; the highest is the target load.
        duration: seconds of load per level.
        slo_p95_ms: the p95 latency a configuration must keep at the target load (None: any).
        target: ``docker`` or ``local`` (default: docker when an engine is reachable).
        progress: called with (what, done, total) as configurations and levels complete.

    Raises:
        InvalidInputError: malformed configurations or concurrency levels.
        NotFoundError: no such model.
        UntrustedModelError: serving the version could run code from its artifact and it is not trusted.
    """
    from mlops_magics import services
    from mlops_magics.packaging import engine

    if isinstance(configs, str):
        configs = parse_configs(configs)
    levels = tuple(sorted(set(concurrency)))
    if not levels or min(levels) < 1:
        raise InvalidInputError(f"--concurrency {concurrency} is invalid: give levels of 1 or more, e.g. 1,4,16.")
    if duration <= 0:
        raise InvalidInputError(f"--duration {duration} is invalid: give seconds, e.g. 10.")
    reg = or_default(registry)
    version = reg.get(ref)
    require_trusted(version)  # each configuration's deploy would refuse it too: say so once, not as a failed profile
    notes: list[str] = []
    if target is None:
        available, why = engine.available()
        target = "docker" if available else "local"
        if not available:
            notes.append(f"no Docker engine ({why.split('(')[0].strip()}): measured as one local process, without "
                         "the CPU and memory limits")
    limits = target == "docker"
    plan = list(configs) if limits else [{"cpu": None, "memory": None}]
    roomiest = max(range(len(plan)), key=lambda j: (plan[j]["cpu"] or 0, plan[j]["memory"] or ""))
    total = len(plan) * len(levels)
    done = [0]  # levels measured so far, for the progress callback
    results: list[dict[str, Any]] = []
    load_generator: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mlops-profile-") as tmp:
        body = Path(tmp) / "body.json"
        body.write_bytes(services.payload(data))
        for i, config in enumerate(plan):
            service = f"profile-{version.name}-{i + 1}"
            requested = {"requestedCpu": config["cpu"], "requestedMemoryInGB": (
                _gb(_memory_bytes(config["memory"])) if config["memory"] else None)}

            def step(what: str, c: dict[str, Any] = config) -> None:
                if progress is not None:
                    progress(f"cpu={c['cpu']}, memory={c['memory']}: {what}", done[0], total)

            step("deploying")
            try:
                deployment = services.deploy(version.ref, target=target, name=service, cpu=config["cpu"],
                                             memory=config["memory"], registry=reg)
            except MlopsError as exc:
                reason = str(exc).splitlines()[0]
                results.append({**requested, **_failed(reason)})
                done[0] += len(levels)
                continue
            try:
                probe = (_ContainerProbe(str(deployment.config["container"])) if limits
                         else _ProcessProbe(int(deployment.config["pid"])))
                measured = _measure_config(deployment, probe, body, levels, duration, step)
                done[0] += len(levels)
                if i == roomiest and measured["successRate"] == 1.0:  # the server least likely to be the limit
                    load_generator = _ceiling(deployment, body, levels[-1], min(duration, 5.0))
                results.append({**requested, **measured})
            except MlopsError as exc:
                results.append({**requested, **_failed(str(exc).splitlines()[0])})
            finally:
                services.undeploy(service, registry=reg)
    if progress is not None:
        progress("done", total, total)
    report = _recommend(version.ref, target, limits, levels, duration, slo_p95_ms, results, load_generator, notes)
    reg.set_report(version, "profile", report.as_dict())
    return report


def _memory_bytes(text: str) -> int:
    from mlops_magics.targets.docker import parse_memory

    return parse_memory(text)


def _failed(reason: str) -> dict[str, Any]:
    nan = float("nan")
    return {"maxUtilizedCpu": 0.0, "maxUtilizedMemoryInGB": 0.0, "averageLatencyInMs": nan,
            "latencyPercentile50InMs": nan, "latencyPercentile90InMs": nan, "latencyPercentile95InMs": nan,
            "latencyPercentile99InMs": nan, "latencyPercentile999InMs": nan, "measuredQueriesPerSecond": 0.0,
            "successRate": 0.0, "totalQueries": 0, "runs": [], "error": reason}


def _ceiling(deployment: Any, body: Path, concurrency: int, duration: float) -> dict[str, Any]:
    """The load generator's throughput against wrk's on the same endpoint and load."""
    ours = _load(f"{deployment.url}/score", body, concurrency, duration, deployment.auth_key)["qps"]
    theirs = None if deployment.auth_key else _wrk_qps(f"{deployment.url}/score", body, concurrency, duration)
    return {"concurrency": concurrency, "loadgen_qps": ours, "wrk_qps": theirs,
            "ratio": ours / theirs if theirs else None}


def _recommend(model: str, target: str, limits: bool, levels: tuple[int, ...], duration: float,
               slo: float | None, results: list[dict[str, Any]], load_generator: dict[str, Any],
               notes: list[str]) -> ProfileReport:
    def meets(c: dict[str, Any]) -> bool:
        p95 = c["latencyPercentile95InMs"]
        return c["successRate"] == 1.0 and not math.isnan(p95) and (slo is None or p95 <= slo)

    passing = [c for c in results if meets(c)]
    chosen = min(passing, key=lambda c: (c["requestedCpu"] or 0, c["requestedMemoryInGB"] or 0), default=None)
    cpu = memory = latency = None
    if chosen is not None:
        cpu = chosen["requestedCpu"] if limits else math.ceil(chosen["maxUtilizedCpu"] * HEADROOM * 10) / 10
        memory = math.ceil(chosen["maxUtilizedMemoryInGB"] * HEADROOM * 20) / 20  # 0.05 GB steps
        if limits and chosen["requestedMemoryInGB"]:
            memory = min(memory, chosen["requestedMemoryInGB"])
        latency = chosen["latencyPercentile95InMs"]
    ratio = load_generator.get("ratio")
    if ratio is not None:
        notes.append(f"load generator ceiling: {load_generator['loadgen_qps']:.0f} q/s against wrk's "
                     f"{load_generator['wrk_qps']:.0f} q/s on the same endpoint at concurrency "
                     f"{load_generator['concurrency']} ({ratio:.0%})"
                     + ("" if ratio >= 0.8 else ": the generator may limit the highest load levels"))
    elif load_generator:
        notes.append("wrk is not installed: the load generator's ceiling was not compared")
    return ProfileReport(model=model, target=target, limits_applied=limits, concurrency=levels, duration=duration,
                         slo_p95_ms=slo, configurations=tuple(results), recommendedCpu=cpu,
                         recommendedMemoryInGB=memory, recommendedLatencyInMs=latency,
                         load_generator=load_generator, notes=tuple(notes))

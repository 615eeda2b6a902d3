"""Profiling: Azure's report keys, consistent numbers, failing configurations reported, recommendations used."""

from __future__ import annotations

import math
from typing import Any

import pytest

import mlops_magics as mm
from mlops_magics import api
from mlops_magics.api import profile
from mlops_magics.errors import InvalidInputError
from mlops_magics.profiling.loadgen import percentile
from mlops_magics.profiling.profile import parse_configs, recommend
from mlops_magics.registry import Registry

KEYS = ("requestedCpu", "requestedMemoryInGB", "maxUtilizedCpu", "maxUtilizedMemoryInGB", "averageLatencyInMs",
        "latencyPercentile50InMs", "latencyPercentile90InMs", "latencyPercentile95InMs", "latencyPercentile99InMs",
        "latencyPercentile999InMs", "measuredQueriesPerSecond", "successRate", "totalQueries")


def _consistent(config: dict[str, Any]) -> None:
    assert set(KEYS) <= set(config)
    ordered = [config[f"latencyPercentile{p}InMs"] for p in ("50", "90", "95", "99", "999")]
    assert ordered == sorted(ordered) and ordered[0] > 0
    assert config["successRate"] == 1.0
    target = config["runs"][-1]
    assert config["totalQueries"] == target["requests"] == target["successes"] > 0
    assert config["measuredQueriesPerSecond"] == pytest.approx(target["requests"] / target["seconds"], rel=0.05)
    assert 0 < config["maxUtilizedCpu"] < 4 and 0.01 < config["maxUtilizedMemoryInGB"] < 4


def test_configurations_are_parsed_and_mistakes_named() -> None:
    assert parse_configs("cpu=0.5,memory=512m; cpu=1, memory=1g") == [{"cpu": 0.5, "memory": "512m"},
                                                                       {"cpu": 1.0, "memory": "1g"}]
    with pytest.raises(InvalidInputError, match="'gpu=1' is not cpu=NUMBER or memory=SIZE"):
        parse_configs("cpu=1,gpu=1")
    with pytest.raises(InvalidInputError, match="needs both cpu= and memory="):
        parse_configs("cpu=1")
    with pytest.raises(InvalidInputError, match="not a size"):
        parse_configs("cpu=1,memory=lots")
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0 and percentile([1.0, 2.0, 3.0, 4.0], 99.9) == 4.0
    assert math.isnan(percentile([], 50))


def _measured(cpu: float | None, memory: float | None, used_cpu: float, used_memory: float, p95: float,
              qps: float) -> dict[str, Any]:
    return {"requestedCpu": cpu, "requestedMemoryInGB": memory, "maxUtilizedCpu": used_cpu,
            "maxUtilizedMemoryInGB": used_memory, "averageLatencyInMs": p95 / 2, "latencyPercentile50InMs": p95 / 2,
            "latencyPercentile95InMs": p95, "latencyPercentile99InMs": p95 * 1.5, "measuredQueriesPerSecond": qps,
            "successRate": 1.0, "totalQueries": 1000, "runs": []}


def test_the_recommendation_says_where_its_figures_come_from_and_at_which_load() -> None:
    checked = {"concurrency": 4, "loadgen_qps": 888.0, "wrk_qps": 885.0, "ratio": 888 / 885, "requestedCpu": 1.0,
               "requestedMemoryInGB": 1.0}
    report = recommend("cancer:1", "docker", True, (1, 4), 2.0, 200.0,
                       [_measured(0.5, 0.5, 0.47, 0.082, 21.42, 792), _measured(1.0, 1.0, 0.92, 0.082, 2.81, 1886)],
                       checked, [])
    assert repr(report).splitlines()[1:] == [
        "  cpu=0.5 memory=0.5GB at concurrency 4: p95 21.42 ms, 792 q/s, success 100%, used cpu 0.47 memory 0.082GB",
        "  cpu=1.0 memory=1.0GB at concurrency 4: p95 2.81 ms, 1886 q/s, success 100%, used cpu 0.92 memory 0.082GB",
        "  recommended: cpu=0.5 memory=0.15GB (p95 21.42 ms at concurrency 4; memory = 0.082 GB peak use + 25% "
        "headroom, rounded up to 0.05 GB)",
        "  note: load generator check on cpu=1.0 memory=1.0GB at concurrency 4: it reached 888 q/s and wrk 885 q/s "
        "right after on the same endpoint (100%), so the generator does not limit these measures (throughput "
        "varies from run to run on a busy machine)"]
    assert "memory = 0.082 GB peak use + 25% headroom" in report._repr_html_()
    # Without limits the CPU too comes from what was used; a peak too close to the configured memory keeps it.
    local = recommend("cancer:1", "local", False, (1, 4), 2.0, None, [_measured(None, None, 0.92, 0.2, 3.0, 900)],
                      {}, [])
    assert (local.recommendedCpu, local.recommendedMemoryInGB) == (1.2, 0.25)
    assert local.recommendation_basis == ("cpu = 0.92 used + 25% headroom, rounded up to 0.1",
                                          "memory = 0.200 GB peak use + 25% headroom, rounded up to 0.05 GB")
    tight = recommend("cancer:1", "docker", True, (4,), 2.0, None, [_measured(1.0, 0.25, 0.9, 0.24, 3.0, 900)], {},
                      [])
    assert tight.recommendedMemoryInGB == 0.25
    assert tight.recommendation_basis == ("memory = the 0.25 GB configured (0.240 GB peak use + 25% headroom would "
                                          "exceed it)",)
    slow = recommend("cancer:1", "docker", True, (4,), 2.0, 200.0, [_measured(1.0, 1.0, 0.9, 0.1, 300, 10)],
                     {**checked, "ratio": 0.5}, [])
    assert "none of the configurations met the SLO" in repr(slow)
    assert repr(slow).endswith("(50%), so the generator may limit the highest load levels")


@pytest.mark.serve
def test_a_local_profile_reports_consistent_keys_and_a_recommendation(registry: Registry, iris: Any,
                                                                      iris_lr: Any) -> None:
    X, _ = iris
    mm.register(iris_lr, "iris")
    steps: list[tuple[str, int, int]] = []
    report = profile("iris", X[:1], concurrency=(1, 2), duration=1.0, target="local",
                     progress=lambda *a: steps.append(a))
    assert report.target == "local" and not report.limits_applied and len(report.configurations) == 1
    _consistent(report.configurations[0])
    assert [r["concurrency"] for r in report.configurations[0]["runs"]] == [1, 2]
    assert report.recommendedCpu is not None and report.recommendedCpu > 0
    assert report.recommendedMemoryInGB >= report.configurations[0]["maxUtilizedMemoryInGB"]
    assert steps[-1] == ("done", 2, 2)
    assert registry.reports(registry.get("iris:1"))["profile"]["recommendedCpu"] == report.recommendedCpu
    assert "limits NOT applied" in repr(report) and "<table" in report._repr_html_()
    assert [d.state for d in registry.deployments()] == ["deleted"]  # the profiling service is gone


@pytest.mark.docker
def test_a_docker_profile_applies_limits_reports_a_starved_configuration_and_sets_defaults(
        registry: Registry, iris: Any, iris_lr: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_docker import BASE, _engine_or_skip

    _engine_or_skip()
    monkeypatch.setenv("MLOPS_BASE_IMAGE", BASE)
    X, _ = iris
    mm.register(iris_lr, "iris")
    mm.set_environment("iris", from_kernel=True)
    report = profile("iris", X[:1], configs="cpu=0.5,memory=40m; cpu=1,memory=512m", concurrency=(1, 4),
                     duration=1.0, slo_p95_ms=500, target="docker")
    starved, fed = report.configurations
    assert starved["successRate"] == 0.0 and "lack of memory" in starved["error"]
    assert starved["requestedMemoryInGB"] == pytest.approx(40 / 1024)
    _consistent(fed)
    assert fed["requestedCpu"] == 1.0 and fed["maxUtilizedMemoryInGB"] < 0.5
    assert report.limits_applied and report.recommendedCpu == 1.0
    assert fed["maxUtilizedMemoryInGB"] < report.recommendedMemoryInGB <= 0.5
    try:
        d = api.deploy("iris", target="docker", name="iris-defaults")
        assert d.config["cpu"] == 1.0 and d.config["memory"] == f"{math.ceil(report.recommendedMemoryInGB * 1024)}m"
    finally:
        api.undeploy(all_services=True)
        api.remove_images("iris")

"""Profiling benchmark: a 4-configuration profile of an iris model, three times.

    python benchmarks/profiling.py            # results in benchmarks/results/profiling.md and .json
    python benchmarks/profiling.py --quick    # one run, nothing recorded

Needs a Docker engine and ``$MLOPS_BASE_IMAGE`` (default mlops-base:bookworm) for real limits.
Goals (issue 7): the profile finishes in <= 2 minutes; the recommendation is the same in 3 runs.
For scale: Azure ML's ``Model.profile`` took minutes on a cloud compute, SageMaker's Inference
Recommender about 45 minutes; neither can run here (no cloud), so only ours is timed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, describe, finish, unshadow

unshadow()  # docker.py and onnx.py in this folder would hide the libraries of those names

CONFIGS = "cpu=0.25,memory=256m; cpu=0.5,memory=256m; cpu=1,memory=512m; cpu=2,memory=1g"
CONCURRENCY = (1, 4, 16)
DURATION = 5.0
SLO_P95_MS = 50.0
GOAL_SECONDS = 120.0


def run(runs: int) -> list[dict[str, Any]]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import mlops_magics as mm
    from mlops_magics import api
    from mlops_magics.api import profile

    os.environ.setdefault("MLOPS_BASE_IMAGE", "mlops-base:bookworm")
    X, y = load_iris(return_X_y=True)
    mm.register(LogisticRegression(max_iter=500).fit(X, y), "iris")
    mm.set_environment("iris", from_kernel=True)
    api.build("iris")  # the profile measures serving, not the first build
    results = []
    for _ in range(runs):
        began = time.perf_counter()
        report = profile("iris", X[:1], configs=CONFIGS, concurrency=CONCURRENCY, duration=DURATION,
                         slo_p95_ms=SLO_P95_MS, target="docker")
        results.append({"seconds": time.perf_counter() - began, "report": report.as_dict()})
    api.remove_images("iris")
    return results


def report(result: dict[str, Any]) -> str:
    runs = result["runs"]
    recommendations = {(r["report"]["recommendedCpu"], r["report"]["recommendedMemoryInGB"]) for r in runs}
    slowest = max(r["seconds"] for r in runs)
    lines = ["# Profiling benchmark", "", f"Machine: {describe(result['machine'])}",
             f"Command: `python benchmarks/profiling.py` ({len(runs)} runs; configurations `{CONFIGS}`, concurrency "
             f"{','.join(map(str, CONCURRENCY))}, {DURATION:g} s per level, SLO p95 <= {SLO_P95_MS:g} ms at the "
             "highest level; Docker containers with real limits).", "",
             "| measure | value | goal | met |", "|---|---|---|---|",
             f"| slowest profile, wall time | {slowest:.0f} s | <= {GOAL_SECONDS:.0f} s | "
             f"{'yes' if slowest <= GOAL_SECONDS else 'NO'} |",
             f"| distinct recommendations over {len(runs)} runs | {len(recommendations)}: "
             f"{', '.join(f'cpu={c} memory={m}GB' for c, m in sorted(recommendations, key=str))} | 1 | "
             f"{'yes' if len(recommendations) == 1 else 'NO'} |", ""]
    lines += ["Last run, per configuration (at concurrency 16):", "",
              "| requestedCpu | requestedMemoryInGB | maxUtilizedCpu | maxUtilizedMemoryInGB | p50 ms | p95 ms "
              "| p99 ms | q/s | successRate |", "|---|---|---|---|---|---|---|---|---|"]
    for c in runs[-1]["report"]["configurations"]:
        lines.append(f"| {c['requestedCpu']} | {c['requestedMemoryInGB']:.3f} | {c['maxUtilizedCpu']:.2f} | "
                     f"{c['maxUtilizedMemoryInGB']:.3f} | {c['latencyPercentile50InMs']:.2f} | "
                     f"{c['latencyPercentile95InMs']:.2f} | {c['latencyPercentile99InMs']:.2f} | "
                     f"{c['measuredQueriesPerSecond']:.0f} | {c['successRate']:.2f} |")
    generator = runs[-1]["report"]["load_generator"]
    if generator.get("wrk_qps"):
        lines += ["", f"Load generator ceiling: {generator['loadgen_qps']:.0f} q/s against wrk's "
                      f"{generator['wrk_qps']:.0f} q/s on the same endpoint (concurrency {generator['concurrency']})."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = command_line(__doc__, "One run; print only.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlops-profile-bench-") as tmp:
        os.environ["MLOPS_HOME"] = str(Path(tmp) / "home")
        result = {"runs": run(1 if args.quick else 3)}
    return finish("profiling", result, report, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())

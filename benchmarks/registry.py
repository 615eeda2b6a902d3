"""Registry benchmark: register a small sklearn model; list and search 10,000 versions.

Goals (issue 2): median registration < 15 ms; listing and tag-searching 10,000 versions < 100 ms.

    python benchmarks/registry.py            # full run, results written to benchmarks/results/
    python benchmarks/registry.py --quick    # smaller run for a smoke test (results not written)

Each registration stores a distinct model (coefficients perturbed), so the content-addressed
store never short-cuts a write. Times are wall-clock medians over repeated calls in one process.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, describe, finish

GOALS_MS = {"register_median": 15.0, "list_all": 100.0, "search_tag": 100.0}
TEAMS = ["cv", "nlp", "ops", "rec", "ads"]


def _ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median": round(statistics.median(ordered) * 1000, 2),
        "p90": round(ordered[int(len(ordered) * 0.9) - 1] * 1000, 2),
        "min": round(ordered[0] * 1000, 2),
        "n": len(ordered),
    }


def _time(fn: Callable[[], Any], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bench_register(registrations: int) -> dict[str, Any]:
    """Median time of ``register(model, name, tags=..., sample=...)`` and of ``load_model``."""
    import copy

    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import mlops_magics as mm
    from mlops_magics.registry import Registry

    X, y = load_iris(return_X_y=True)
    base = LogisticRegression(max_iter=500).fit(X, y)
    rng = np.random.default_rng(0)
    models = []
    for _ in range(registrations + 10):
        model = copy.deepcopy(base)
        model.coef_ = model.coef_ + rng.normal(scale=1e-6, size=model.coef_.shape)
        models.append(model)
    with tempfile.TemporaryDirectory() as home:
        reg = Registry(home)
        for model in models[:10]:  # warm-up: imports, first connection, page cache
            mm.register(model, "iris", registry=reg)
        plain, with_sample = [], []
        for i, model in enumerate(models[10:]):
            start = time.perf_counter()
            if i % 2:
                mm.register(model, "iris", tags={"team": "cv"}, sample=X[:5], registry=reg)
                with_sample.append(time.perf_counter() - start)
            else:
                mm.register(model, "iris", tags={"team": "cv"}, registry=reg)
                plain.append(time.perf_counter() - start)
        loads = _time(lambda: mm.load_model("iris", registry=reg), 100)
        size = reg.get("iris").size
    return {"register": _ms(plain + with_sample), "register_plain": _ms(plain),
            "register_with_sample": _ms(with_sample), "load_verified": _ms(loads), "artifact_bytes": size}


def bench_listing(versions: int, repeat: int) -> dict[str, Any]:
    """Time listing all versions, a tag search, a name glob and latest-per-model over ``versions``."""
    import mlops_magics as mm
    from mlops_magics.registry import Registry

    models = max(1, versions // 100)
    with tempfile.TemporaryDirectory() as home:
        reg = Registry(home)
        fill_start = time.perf_counter()
        for i in range(versions):
            mm.register({"i": i}, f"model-{i % models:03d}",
                        tags={"team": TEAMS[i % len(TEAMS)], "run": str(i)}, registry=reg)
        fill_s = time.perf_counter() - fill_start
        checks = {
            "list_all": (lambda: reg.find(), versions),
            "search_tag": (lambda: reg.find(tags={"team": "cv"}), versions // len(TEAMS)),
            "search_name_glob": (lambda: reg.find("model-00*"), None),
            "latest_per_model": (lambda: reg.find(latest=True), models),
        }
        out: dict[str, Any] = {"versions": versions, "models": models, "fill_seconds": round(fill_s, 1),
                               "fill_per_version_ms": round(fill_s / versions * 1000, 2)}
        for name, (fn, expected) in checks.items():
            found = len(fn())
            if expected is not None and found != expected:
                raise AssertionError(f"{name} found {found} versions, expected {expected}")
            out[name] = {**_ms(_time(fn, repeat)), "rows": found}
        tags_read = _time(lambda: [dict(v.tags) for v in reg.find()], max(3, repeat // 4))
        out["list_all_and_read_every_tag"] = {**_ms(tags_read), "rows": versions}
    return out


def report(result: dict[str, Any]) -> str:
    """A Markdown report with goals."""
    reg, lst = result["register"], result["listing"]
    rows = [
        ("register a small sklearn model (median)", reg["register"]["median"], GOALS_MS["register_median"]),
        ("  without --sample / with --sample", f"{reg['register_plain']['median']} / "
         f"{reg['register_with_sample']['median']}", None),
        ("load_model, sha256 verified (median)", reg["load_verified"]["median"], None),
        (f"list all {lst['versions']:,} versions (median)", lst["list_all"]["median"], GOALS_MS["list_all"]),
        (f"tag search over {lst['versions']:,} ({lst['search_tag']['rows']:,} hits)", lst["search_tag"]["median"],
         GOALS_MS["search_tag"]),
        (f"name glob ({lst['search_name_glob']['rows']:,} hits)", lst["search_name_glob"]["median"], None),
        (f"latest version of each of {lst['models']} models", lst["latest_per_model"]["median"], None),
        ("list all and read every version's tags", lst["list_all_and_read_every_tag"]["median"], None),
    ]
    lines = [
        "# Registry benchmark",
        "",
        f"Machine: {describe(result['machine'])}",
        f"Command: `python benchmarks/registry.py` (artifact {reg['artifact_bytes']} bytes; "
        f"{reg['register']['n']} registrations; filling {lst['versions']:,} versions took {lst['fill_seconds']} s)",
        "",
        "| measure | ms | goal | met |",
        "|---|---|---|---|",
    ]
    for label, value, goal in rows:
        met = "" if goal is None else ("yes" if float(value) < goal else "NO")
        lines.append(f"| {label} | {value} | {'' if goal is None else f'< {goal:g}'} | {met} |")
    lines += ["", "The machine's speed drifts by up to ~50% between identical runs; figures are medians."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = command_line(__doc__, "Small sizes; print only, write nothing.")
    parser.add_argument("--versions", type=int, default=10_000, help="Versions to list and search.")
    parser.add_argument("--registrations", type=int, default=200, help="Registrations to time.")
    parser.add_argument("--repeat", type=int, default=20, help="Repetitions of each listing query.")
    args = parser.parse_args()
    if args.quick:
        args.versions, args.registrations, args.repeat = 500, 20, 5
    os.environ.pop("MLOPS_HOME", None)
    result = {"register": bench_register(args.registrations), "listing": bench_listing(args.versions, args.repeat)}
    return finish("registry", result, report, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())

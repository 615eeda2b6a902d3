"""Deploy benchmark: %deploy to healthy, %reload to healthy, %update to healthy, beside Azure's local server.

    python benchmarks/deploy.py            # results in benchmarks/results/deploy.md and .json
    python benchmarks/deploy.py --quick    # fewer repetitions, nothing recorded

Goals (issue 4): a local deploy healthy in <= 2 s; a reload healthy in <= 1.5 s. For comparison,
the same entry script and model are started with Azure ML's own server (azmlinfsrv, installed by
benchmarks/peers.py) and timed from process start to its first 200 from /score.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers
from _common import command_line, describe, finish

SCRIPT = (Path(__file__).resolve().parent.parent / "tests" / "entry_scripts" / "sklearn_model.py").read_text()
GOALS = {"deploy": 2.0, "reload": 1.5}


def _timed(fn: Any) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def ours(repeat: int) -> dict[str, list[float]]:
    """Seconds for mm.deploy, mm.reload and mm.update to return (each returns once healthy)."""
    import numpy as np
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    import mlops_magics as mm

    X, y = load_diabetes(return_X_y=True)
    for alpha in (1.0, 10.0):
        mm.register(Ridge(alpha=alpha).fit(X, y), "diabetes", sample=X[:3])
    mm.set_score_script("diabetes", SCRIPT)
    times: dict[str, list[float]] = {"deploy": [], "reload": [], "update": []}
    for _ in range(repeat):
        times["deploy"].append(_timed(lambda: mm.deploy("diabetes:1")))
        assert len(mm.call("diabetes", X[:2])) == 2
        mm.undeploy("diabetes")
    mm.deploy("diabetes:1")
    for i in range(repeat):
        mm.set_score_script("diabetes", SCRIPT + f"\n# edit {i}\n")
        times["reload"].append(_timed(lambda: mm.reload("diabetes")))
        times["update"].append(_timed(lambda v=2 - i % 2: mm.update("diabetes", f"diabetes:{v}")))
    assert np.asarray(mm.call("diabetes", X[:2])).shape == (2,)
    mm.undeploy(all_services=True)
    return times


def azure(repeat: int, work: Path) -> list[float]:
    """Seconds from starting azmlinfsrv with the same script and model to its first 200 from /score."""
    import joblib
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    from mlops_magics.targets.local import free_port

    X, y = load_diabetes(return_X_y=True)
    (work / "model").mkdir()
    joblib.dump(Ridge().fit(X, y), work / "model" / "model.pkl")
    (work / "score.py").write_text(SCRIPT)
    exe = peers.ensure("azmlinfsrv")
    body = json.dumps({"data": X[:2].tolist()}).encode()
    results = []
    for _ in range(repeat):
        port = free_port()
        began = time.perf_counter()
        process = subprocess.Popen([str(exe), "--entry_script", str(work / "score.py"), "--model_dir",
                                    str(work / "model"), "--port", str(port)], cwd=work,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = began + 120
            while True:
                if process.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError(f"azmlinfsrv did not serve /score (exit status {process.poll()})")
                try:
                    request = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=body,
                                                     headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(request, timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    time.sleep(0.01)
            results.append(time.perf_counter() - began)
        finally:
            os.killpg(process.pid, 15)
            process.wait()
    return results


def report(result: dict[str, Any]) -> str:
    med = {k: round(statistics.median(v), 3) for k, v in result["times"].items()}
    lines = ["# Deploy benchmark", "", f"Machine: {describe(result['machine'])}",
             f"Command: `python benchmarks/deploy.py` ({result['repeat']} repetitions; medians, seconds).", "",
             "| measure | median s | min s | max s | goal | met |", "|---|---|---|---|---|---|"]
    labels = {"deploy": "%deploy (local) until healthy", "reload": "%reload until the new script is healthy",
              "update": "%update to another version until healthy",
              "azmlinfsrv": "azmlinfsrv started with the same script, to its first 200"}
    for key, label in labels.items():
        values = result["times"][key]
        goal = GOALS.get(key)
        met = "" if goal is None else ("yes" if med[key] <= goal else "NO")
        lines.append(f"| {label} | {med[key]} | {min(values):.3f} | {max(values):.3f} | "
                     f"{'' if goal is None else f'<= {goal}'} | {met} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = command_line(__doc__, "Three repetitions; print only.")
    parser.add_argument("--repeat", type=int, default=7, help="Repetitions of each measure.")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 3
    with tempfile.TemporaryDirectory(prefix="mlops-deploy-bench-") as tmp:
        os.environ["MLOPS_HOME"] = str(Path(tmp) / "home")
        times = ours(args.repeat)
        (Path(tmp) / "azure").mkdir()
        times["azmlinfsrv"] = azure(args.repeat, Path(tmp) / "azure")
    return finish("deploy", {"repeat": args.repeat, "times": times}, report, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())

"""Serving benchmark: mlops-serve against Azure ML's azmlinfsrv and MLflow's model server, in one run.

    python benchmarks/serving.py               # full run (about 15 minutes), results in benchmarks/results/
    python benchmarks/serving.py --quick       # a short smoke run, nothing recorded

The peers are installed in their own virtual environments (benchmarks/peers.py). Every server
serves the same models: an iris LogisticRegression and a 100-tree RandomForest (depth 10, 20
features), through the same unmodified Azure ML entry script for mlops-serve and azmlinfsrv (MLflow
serves the saved MLflow model), plus an echo script. Load comes from wrk (Debian package ``wrk``)
at concurrency 1 and 16, one row per request. Measured: requests/s, p50/p99 latency, CPU time of
the server's processes per request, RSS per worker, and cold start (process start to the first
200 from /score). The machine's speed drifts between runs, so servers are measured alternately
over several rounds and the medians compared as ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers
from machine import describe, machine_info, record

CLOCK = os.sysconf("SC_CLK_TCK")

ECHO = "def init():\n    pass\n\n\ndef run(data):\n    return data\n"
#: The Azure ML style sklearn entry script the tests serve too, unchanged.
SKLEARN = (Path(__file__).resolve().parent.parent / "tests" / "entry_scripts" / "sklearn_model.py").read_text()
TRAIN = '''import sys, joblib
from sklearn.datasets import load_iris, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
out = sys.argv[1]
X, y = load_iris(return_X_y=True)
joblib.dump(LogisticRegression(max_iter=500).fit(X, y), out + "/lr/model.pkl")
X2, y2 = make_classification(n_samples=2000, n_features=20, random_state=0)
joblib.dump(RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0).fit(X2, y2), out + "/rf/model.pkl")
if len(sys.argv) > 2:
    import mlflow.sklearn
    fmt = {"serialization_format": "cloudpickle"}
    mlflow.sklearn.save_model(joblib.load(out + "/lr/model.pkl"), out + "/mlflow-lr", **fmt)
    mlflow.sklearn.save_model(joblib.load(out + "/rf/model.pkl"), out + "/mlflow-rf", **fmt)
'''
ROWS = {"lr": [[5.1, 3.5, 1.4, 0.2]], "rf": [[0.1 * i for i in range(20)]]}


@dataclass
class Target:
    """One server configuration to measure."""

    server: str  # mlops-serve | azmlinfsrv | mlflow
    model: str  # echo | lr | rf
    workers: int

    @property
    def key(self) -> str:
        return f"{self.server}/{self.model}/w{self.workers}"


@dataclass
class Measured:
    runs: list[dict[str, Any]] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        children = Path(f"/proc/{current}/task/{current}/children")
        if children.exists():
            queue += [int(c) for c in children.read_text().split()]
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLOCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def payload(target: Target) -> tuple[bytes, str]:
    if target.model == "echo":
        return b'{"data": [[1, 2, 3, 4]]}', "application/json"
    if target.server == "mlflow":
        return json.dumps({"inputs": ROWS[target.model]}).encode(), "application/json"
    return json.dumps({"data": ROWS[target.model]}).encode(), "application/json"


def command(target: Target, work: Path, port: int) -> list[str]:
    if target.server == "mlflow":
        return [str(peers.executable("mlflow")), "models", "serve", "-m", str(work / f"mlflow-{target.model}"),
                "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "--workers", str(target.workers)]
    script = work / ("echo.py" if target.model == "echo" else "score.py")
    exe = str(peers.executable("azmlinfsrv")) if target.server == "azmlinfsrv" else shutil.which(
        "mlops-serve", path=os.path.dirname(sys.executable))
    args = [str(exe), "--entry_script", str(script), "--port", str(port), "--worker_count", str(target.workers)]
    if target.model != "echo":
        args += ["--model_dir", str(work / target.model)]
    return args


def post(port: int, path: str, body: bytes, content_type: str, timeout: float = 2) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()
        return int(response.status)


def start(target: Target, work: Path) -> tuple[subprocess.Popen[bytes], int, float]:
    """Start a server; return it, its port and its cold start (seconds to the first 200 from scoring)."""
    port = free_port()
    body, content_type = payload(target)
    path = "/invocations" if target.server == "mlflow" else "/score"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if target.server == "mlflow":  # it starts its own `uvicorn` by name: put its environment first on PATH
        env["PATH"] = f"{peers.executable('mlflow').parent}:{env.get('PATH', '')}"
    began = time.perf_counter()
    process = subprocess.Popen(command(target, work, port), stdout=subprocess.DEVNULL,
                               stderr=open(work / f"{target.key.replace('/', '_')}.log", "wb"),  # noqa: SIM115
                               env=env, cwd=work, start_new_session=True)
    deadline = began + 120
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{target.key} exited with {process.returncode}; see {work}")
        try:
            if post(port, path, body, content_type) == 200:
                return process, port, time.perf_counter() - began
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"{target.key} did not answer within 120 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(port: int, path: str, body: bytes, content_type: str, connections: int, seconds: int,
        work: Path) -> dict[str, float]:
    script = work / "post.lua"
    script.write_text(f"wrk.method = 'POST'\nwrk.body = {json.dumps(body.decode())}\n"
                      f"wrk.headers['Content-Type'] = '{content_type}'\n")
    threads = min(2, connections)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = {}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    result["rps"] = float(rps.group(1)) if rps else 0.0
    result["requests"] = float(total.group(1)) if total else 0.0
    for pct in ("50", "99"):
        found = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        result[f"p{pct}_ms"] = float(found.group(1)) * _UNITS[found.group(2)] if found else float("nan")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = float(bad.group(1)) if bad else 0.0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = float(sum(int(x) for x in errors.groups())) if errors else 0.0
    return result


def workers_served(port: int) -> dict[str, int]:
    """Per-worker /score counts from mlops-serve's /metrics (to check that every worker works)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts: dict[str, int] = {}
    for line in text.splitlines():  # label order and "3" or "3.0" differ between releases
        found = re.match(r'mlops_requests_total\{(.*)\} ([\d.]+)$', line)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', found.group(1))) if found else {}
        if found and labels.get("route") == "score" and labels.get("status") == "200":
            counts[labels["worker"]] = int(float(found.group(2)))
    return counts


def measure(target: Target, work: Path, seconds: int) -> dict[str, Any]:
    process, port, cold = start(target, work)
    try:
        body, content_type = payload(target)
        path = "/invocations" if target.server == "mlflow" else "/score"
        wrk(port, path, body, content_type, 4, 2, work)  # warm-up
        pids = tree(process.pid)
        workers = [p for p in pids if p != process.pid] or [process.pid]
        if target.server == "mlflow":  # mlflow -> uvicorn/gunicorn -> workers: the leaves serve
            workers = [p for p in pids if not Path(f"/proc/{p}/task/{p}/children").read_text().split()] or workers
        row: dict[str, Any] = {"cold_start_s": round(cold, 3), "rss_mb_per_worker": round(
            statistics.mean(rss_mb(p) for p in workers), 1), "processes": len(pids)}
        spread = target.server == "mlops-serve" and target.workers > 1
        for connections in (1, 16):
            served_before = workers_served(port) if spread else {}
            before = cpu_seconds(tree(process.pid))
            result = wrk(port, path, body, content_type, connections, seconds, work)
            used = cpu_seconds(tree(process.pid)) - before
            result["cpu_ms_per_request"] = used / result["requests"] * 1000 if result["requests"] else float("nan")
            row[f"c{connections}"] = {k: round(v, 3) for k, v in result.items()}
            if spread and connections == 16:  # every worker must take its share of wrk's connections
                row["c16_requests_per_worker"] = {w: n - served_before.get(w, 0)
                                                  for w, n in workers_served(port).items()}
        return row
    finally:
        stop(process)


def prepare(work: Path, with_mlflow: bool) -> None:
    (work / "echo.py").write_text(ECHO)
    (work / "score.py").write_text(SKLEARN)
    for model in ("lr", "rf"):
        (work / model).mkdir()
    python = peers.ROOT / "azmlinfsrv" / "bin" / "python"
    if with_mlflow:  # train in MLflow's environment so that its scikit-learn reads the pickles
        python = peers.ROOT / "mlflow" / "bin" / "python"
    subprocess.run([str(python), "-c", TRAIN, str(work), *(["mlflow"] if with_mlflow else [])], check=True)


def script_floor(work: Path, model: str) -> float:
    """Seconds for a bare Python process to import the entry script, run init() and one run(): the
    part of any server's cold start that belongs to the script and its libraries, not to the server."""
    script = "echo.py" if model == "echo" else "score.py"
    body = json.dumps({"data": ROWS.get(model, [[1]])})
    code = (f"import importlib.util, os, sys\nos.environ['AZUREML_MODEL_DIR'] = {str(work / model)!r}\n"
            f"spec = importlib.util.spec_from_file_location('s', {str(work / script)!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); m.init()\n"
            f"m.run({body!r})\n")
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - began


def median_of(runs: list[dict[str, Any]], *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def summarise(measured: dict[str, Measured]) -> dict[str, Any]:
    def m(key: str, *path: str) -> float:
        return median_of(measured[key].runs, *path) if key in measured and measured[key].runs else float("nan")

    def best(server: str, model: str) -> tuple[str, float]:
        keys = [k for k in measured if k.startswith(f"{server}/{model}/")]
        if not keys:
            return "", float("nan")
        top = max(keys, key=lambda k: m(k, "c16", "rps"))
        return top, m(top, "c16", "rps")

    goals: dict[str, Any] = {}
    ours_cpu, azure_cpu = m("mlops-serve/echo/w1", "c16", "cpu_ms_per_request"), m(
        "azmlinfsrv/echo/w1", "c16", "cpu_ms_per_request")
    goals["echo CPU per request vs azmlinfsrv (goal <= 0.2)"] = round(ours_cpu / azure_cpu, 3)
    for model in ("lr", "rf"):
        ours_key, ours_rps = best("mlops-serve", model)
        azure_key, azure_rps = best("azmlinfsrv", model)
        goals[f"{model}: throughput at c=16 vs azmlinfsrv, best workers (goal >= 2.5)"] = round(ours_rps / azure_rps, 2)
        goals[f"{model}: p99 at c=16 vs azmlinfsrv (goal <= 1.0)"] = round(
            m(ours_key, "c16", "p99_ms") / m(azure_key, "c16", "p99_ms"), 2)
        mlflow_key, mlflow_rps = best("mlflow", model)
        if mlflow_key:
            goals[f"{model}: throughput at c=16 vs MLflow, best workers"] = round(ours_rps / mlflow_rps, 2)
    goals["echo cold start, s (goal <= 1.0)"] = m("mlops-serve/echo/w1", "cold_start_s")
    goals["rf script alone: import + init() + one run() in bare Python, s (no server can start faster)"] = m(
        "floor/rf", "seconds")
    goals["sklearn cold start vs azmlinfsrv (goal <= 0.6)"] = round(
        m("mlops-serve/rf/w1", "cold_start_s") / m("azmlinfsrv/rf/w1", "cold_start_s"), 2)
    goals["echo RSS of one worker, MB (goal <= 60)"] = m("mlops-serve/echo/w1", "rss_mb_per_worker")
    return goals


def report(result: dict[str, Any]) -> str:
    lines = ["# Serving benchmark", "", f"Machine: {describe(result['machine'])}",
             f"Command: `python benchmarks/serving.py` ({result['rounds']} alternating rounds of "
             f"{result['seconds']} s per wrk run; medians). Load generator: wrk on the same 2 cores.", "",
             "## Goals (ratios in the same run)", "", "| goal | measured |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result["goals"].items()]
    lines += ["", "## All figures (medians over rounds)", "",
              "| server/model/workers | cold start s | RSS MB/worker | c=1 req/s | c=1 p50 ms | c=1 p99 ms | "
              "c=16 req/s | c=16 p50 ms | c=16 p99 ms | CPU ms/req (c=16) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for key, runs in result["runs"].items():
        def m(*path: str, runs: list[dict[str, Any]] = runs) -> float:
            return round(median_of(runs, *path), 3)

        lines.append(f"| {key} | {m('cold_start_s')} | {m('rss_mb_per_worker')} | {m('c1', 'rps')} | "
                     f"{m('c1', 'p50_ms')} | {m('c1', 'p99_ms')} | {m('c16', 'rps')} | {m('c16', 'p50_ms')} | "
                     f"{m('c16', 'p99_ms')} | {m('c16', 'cpu_ms_per_request')} |")
    spread = {k: r[-1]["c16_requests_per_worker"] for k, r in result["runs"].items()
              if r[-1].get("c16_requests_per_worker")}
    if spread:
        lines += ["", f"Requests per mlops-serve worker in the c=16 run (last round): {json.dumps(spread)}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8, help="Duration of each wrk run.")
    parser.add_argument("--rounds", type=int, default=2, help="Alternating rounds; medians are reported.")
    parser.add_argument("--no-mlflow", action="store_true", help="Leave MLflow out (it is a large install).")
    parser.add_argument("--quick", action="store_true", help="One short round, nothing recorded.")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    if args.quick:
        args.seconds, args.rounds = 2, 1
    peers.ensure("azmlinfsrv")
    with_mlflow = not args.no_mlflow
    if with_mlflow:
        peers.ensure("mlflow")
    targets = [Target(s, "echo", 1) for s in ("mlops-serve", "azmlinfsrv")]
    servers = ["mlops-serve", "azmlinfsrv"] + (["mlflow"] if with_mlflow else [])
    targets += [Target(s, model, w) for model in ("lr", "rf") for w in (1, 2) for s in servers]
    measured = {t.key: Measured() for t in targets}
    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
        work = Path(tmp)
        prepare(work, with_mlflow)
        for round_number in range(args.rounds):
            order = targets if round_number % 2 == 0 else list(reversed(targets))
            for target in order:
                print(f"round {round_number + 1}/{args.rounds}: {target.key}", file=sys.stderr, flush=True)
                measured[target.key].runs.append(measure(target, work, args.seconds))
            measured.setdefault("floor/rf", Measured()).runs.append({"seconds": round(script_floor(work, "rf"), 3)})
    floor = measured.pop("floor/rf")
    goals = summarise({**measured, "floor/rf": floor})
    result = {"machine": machine_info(), "rounds": args.rounds, "seconds": args.seconds,
              "runs": {k: v.runs for k, v in measured.items()}, "script_floor_rf": floor.runs, "goals": goals}
    text = report(result)
    print(text)
    if not args.quick:
        record("serving", text, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Serving benchmark: mlops-serve against Azure ML's azmlinfsrv and MLflow's model server, in one run.

    python benchmarks/serving.py               # full run (about 15 minutes), results in benchmarks/results/
    python benchmarks/serving.py --quick       # a short smoke run, nothing recorded
    python benchmarks/serving.py --against REF --record NAME   # this checkout's mlops-serve beside REF's

The peers are installed in their own virtual environments (benchmarks/peers.py). Every server
serves the same models: an iris LogisticRegression and a 100-tree RandomForest (depth 10, 20
features), through the same unmodified Azure ML entry script for mlops-serve and azmlinfsrv (MLflow
serves the saved MLflow model), plus an echo script. Load comes from wrk (Debian package ``wrk``)
at concurrency 1 and 16, one row per request. Measured: requests/s, p50/p99 latency, CPU time of
the server's processes per request, RSS per worker, and cold start (process start to the first
200 from /score). The machine's speed drifts between runs, so servers are measured alternately
over several rounds and the medians compared as ratios.

``--against REF`` compares mlops-serve with itself: the ``backend/`` of commit REF (taken out of git) and this
checkout's, each run as ``python -m mlops_backend.cli`` with its own folder on PYTHONPATH (every entry script
notes the ``mlops_backend`` it was served by, so a figure cannot come from the wrong code). For echo (1 and 2
workers) and the iris LogisticRegression, both servers are up at once and measured back to back, the order
alternating, at 1 and 16 connections; also their cold start, the time a worker spends importing and setting
up its metrics, and the installed size of each side's runtime requirements (what every image carries).
"""

from __future__ import annotations

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
from _common import backend_at, checkout_ref, command_line, describe, finish

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
TRAIN_LR = """import sys, joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
joblib.dump(LogisticRegression(max_iter=500).fit(X, y), sys.argv[1] + "/lr/model.pkl")
"""
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


# -- --against REF: mlops-serve of another commit beside this checkout's -----------------------------

#: Each entry script of a side notes which mlops_backend served it, when the server imports it.
NOTE = ("import os as _os, sys as _sys\n"
        "with open(_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), 'backend.txt'), 'w') as _fh:\n"
        "    _fh.write(_sys.modules['mlops_backend'].__file__)\n")
AGAINST = (("echo", 1), ("echo", 2), ("lr", 1))
#: Run in a fresh interpreter of each side: the server's own imports, then what a worker does for its metrics.
SETUP_COST = """import json, sys, tempfile, time
from pathlib import Path
began = time.perf_counter()
import uvicorn, mlops_backend.server, mlops_backend.app, mlops_backend.protocol
imported = time.perf_counter()
from mlops_backend import metrics
folder = Path(tempfile.mkdtemp())
if hasattr(metrics, "use_folder"):
    metrics.use_folder(folder)
worker = metrics.WorkerMetrics(folder, 0)
worker.started()
worker.finished(0, 200, 0.001)
metrics.render(folder)
done = time.perf_counter()
print(json.dumps({"server_imports_ms": (imported - began) * 1000, "metrics_setup_ms": (done - imported) * 1000,
                  "modules": len(sys.modules)}))
"""


@dataclass
class Side:
    """One mlops-serve's code: a backend folder to put on PYTHONPATH."""

    name: str  # base | this
    ref: str
    backend: Path
    seen: set[str] = field(default_factory=set)  # mlops_backend.__file__ as its servers reported it

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.backend), "PYTHONUNBUFFERED": "1"}


def side_server(side: Side, model: str, workers: int, work: Path) -> tuple[subprocess.Popen[bytes], int, float]:
    """Start ``side``'s server for ``model``; return it, its port and its cold start (seconds to the first 200)."""
    folder = work / side.name
    if not folder.exists():
        folder.mkdir()
        (folder / "echo.py").write_text(NOTE + ECHO)
        (folder / "score.py").write_text(NOTE + SKLEARN)
    (folder / "backend.txt").unlink(missing_ok=True)
    port = free_port()
    target = Target("mlops-serve", model, workers)
    args = [sys.executable, "-m", "mlops_backend.cli", "--entry_script",
            str(folder / ("echo.py" if model == "echo" else "score.py")), "--port", str(port), "--worker_count",
            str(workers)] + ([] if model == "echo" else ["--model_dir", str(work / model)])
    body, content_type = payload(target)
    began = time.perf_counter()
    with open(folder / f"{model}-w{workers}.log", "ab") as log:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=side.env(), cwd=folder,
                                   start_new_session=True)
    while time.perf_counter() < began + 120:
        if process.poll() is not None:
            raise RuntimeError(f"the {side.name} server exited with {process.returncode}; see {folder}")
        try:
            if post(port, "/score", body, content_type) == 200:
                cold = time.perf_counter() - began
                noted = (folder / "backend.txt").read_text()
                if not Path(noted).resolve().is_relative_to(side.backend.resolve()):
                    raise RuntimeError(f"the {side.name} server imported {noted}, not the code in {side.backend}")
                side.seen.add(noted)
                return process, port, cold
        except OSError:
            time.sleep(0.01)
    stop(process)
    raise RuntimeError(f"the {side.name} server did not answer within 120 s")


def side_by_side(sides: list[Side], work: Path, rounds: int, seconds: int) -> dict[str, Any]:
    """Every target with both sides up; each round measures them back to back, the order alternating."""
    found: dict[str, Any] = {}
    for model, workers in AGAINST:
        key = f"{model}/w{workers}"
        body, content_type = payload(Target("mlops-serve", model, workers))
        runs: dict[str, list[dict[str, float]]] = {side.name: [] for side in sides}
        servers = {}
        try:
            for side in sides:
                servers[side.name] = side_server(side, model, workers, work)
            for _, port, _ in servers.values():
                wrk(port, "/score", body, content_type, 4, 1, work)  # warm-up
            for r in range(rounds):
                rows: dict[str, dict[str, float]] = {side.name: {} for side in sides}
                for connections in (1, 16):
                    for side in sides if (r + connections) % 2 == 0 else list(reversed(sides)):
                        process, port, _ = servers[side.name]
                        before = cpu_seconds(tree(process.pid))
                        result = wrk(port, "/score", body, content_type, connections, seconds, work)
                        used = cpu_seconds(tree(process.pid)) - before
                        row = rows[side.name]
                        row[f"c{connections}_rps"] = result["rps"]
                        row[f"c{connections}_p99_ms"] = result["p99_ms"]
                        row[f"c{connections}_cpu_ms_per_request"] = used / result["requests"] * 1000
                        row[f"c{connections}_errors"] = result["non_2xx"] + result["socket_errors"]
                for name, row in rows.items():
                    runs[name].append(row)
                print(f"  {key} round {r + 1}: " + ", ".join(
                    f"{n} {row['c16_rps']:,.0f} req/s" for n, row in rows.items()), file=sys.stderr, flush=True)
            rss = {name: round(statistics.mean(rss_mb(p) for p in tree(process.pid)
                                               if workers == 1 or p != process.pid), 1)
                   for name, (process, _, _) in servers.items()}
        finally:
            for process, _, _ in servers.values():
                stop(process)
        found[key] = {"runs": runs, "rss_mb_per_worker": rss, "cold_start_s": {
            name: round(cold, 3) for name, (_, _, cold) in servers.items()}, "ratios": _ratios(runs)}
    return found


def _ratios(runs: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """this/base, per round then the median over rounds, of every figure."""
    return {k: round(statistics.median(t[k] / b[k] for b, t in zip(runs["base"], runs["this"], strict=True)
                                       if b[k]), 3) for k in runs["base"][0] if not k.endswith("_errors")}


def start_and_setup(sides: list[Side], work: Path, repeat: int) -> dict[str, Any]:
    """Cold starts of echo (one worker) and a worker's metrics set-up in a fresh interpreter, alternating."""
    found: dict[str, dict[str, list[float]]] = {side.name: {"cold_start_s": [], "server_imports_ms": [],
                                                            "metrics_setup_ms": []} for side in sides}
    for r in range(repeat):
        for side in sides if r % 2 == 0 else list(reversed(sides)):
            process, _, cold = side_server(side, "echo", 1, work)
            stop(process)
            found[side.name]["cold_start_s"].append(cold)
            out = subprocess.run([sys.executable, "-c", SETUP_COST], env=side.env(), capture_output=True, text=True,
                                 check=True, cwd=work).stdout
            for k, v in json.loads(out).items():
                if k != "modules":
                    found[side.name][k].append(v)
    return {name: {k: round(statistics.median(v), 3) for k, v in figures.items()} for name, figures in found.items()}


def footprint(side: Side) -> dict[str, Any]:
    """The installed size (KiB, from each distribution's RECORD) of ``side``'s runtime requirements."""
    from importlib import metadata

    listed = subprocess.run([sys.executable, "-c", "import json, mlops_backend; "
                             "print(json.dumps(mlops_backend.RUNTIME_REQUIREMENTS))"], env=side.env(),
                            capture_output=True, text=True, check=True).stdout
    sizes: dict[str, float] = {}
    for requirement in json.loads(listed):
        name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0]
        files = metadata.distribution(name).files or []
        sizes[name] = round(sum((f.size or 0) for f in files) / 1024, 1)
    return {"requirements": sizes, "total_kib": round(sum(sizes.values()), 1)}


def against(ref: str, record_as: str, rounds: int, seconds: int, quick: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="mlops-bench-against-") as tmp:
        work = Path(tmp)
        (work / "lr").mkdir()
        subprocess.run([sys.executable, "-c", TRAIN_LR, str(work)], check=True)
        sides = [Side("base", ref, backend_at(ref, work).resolve()),
                 Side("this", checkout_ref(), (Path(__file__).resolve().parent.parent / "backend").resolve())]
        result: dict[str, Any] = {"rounds": rounds, "seconds": seconds,
                                  "start": start_and_setup(sides, work, 2 if quick else 6),
                                  "load": side_by_side(sides, work, rounds, seconds),
                                  "footprint": {side.name: footprint(side) for side in sides}}
        result["sides"] = {side.name: {"ref": side.ref, "backend_seen": sorted(side.seen)} for side in sides}
    return finish(record_as, result, against_report, quick=quick)


def against_report(result: dict[str, Any]) -> str:
    base, this = result["sides"]["base"]["ref"], result["sides"]["this"]["ref"]
    lines = [f"# mlops-serve side by side: {this} (this) against {base} (base)", "",
             f"Machine: {describe(result['machine'])}",
             f"Command: `python benchmarks/serving.py --against {base}` ({result['rounds']} rounds of "
             f"{result['seconds']} s per wrk run, both servers up, measured back to back, the order alternating; "
             "ratios this/base per round, then their median). Load generator: wrk on the same 2 cores.", "",
             "| target | figure | base | this | this/base |", "|---|---|---|---|---|"]
    for key, found in result["load"].items():
        for figure in ("c1_rps", "c16_rps", "c1_p99_ms", "c16_p99_ms", "c16_cpu_ms_per_request"):
            b, t = (statistics.median(r[figure] for r in found["runs"][n]) for n in ("base", "this"))
            lines.append(f"| {key} | {figure} | {b:,.3f} | {t:,.3f} | {found['ratios'][figure]} |")
        lines.append(f"| {key} | RSS MB per worker | {found['rss_mb_per_worker']['base']} | "
                     f"{found['rss_mb_per_worker']['this']} | |")
    start = result["start"]
    for figure in ("cold_start_s", "server_imports_ms", "metrics_setup_ms"):
        lines.append(f"| echo/w1 | {figure} (median) | {start['base'][figure]} | {start['this'][figure]} | "
                     f"{round(start['this'][figure] / start['base'][figure], 3)} |")
    fp = result["footprint"]
    lines.append(f"| image | runtime requirements installed, KiB | {fp['base']['total_kib']} | "
                 f"{fp['this']['total_kib']} | {round(fp['this']['total_kib'] / fp['base']['total_kib'], 3)} |")
    lines += ["", f"Runtime requirements: base {json.dumps(fp['base']['requirements'])}; "
                  f"this {json.dumps(fp['this']['requirements'])}.",
              "Code: " + "; ".join(f"{k} = {', '.join(v['backend_seen'])}" for k, v in result["sides"].items())
              + " (as each server process reported it).", "", "Every figure of the run is in the JSON file.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = command_line(__doc__, "One short round, nothing recorded.")
    parser.add_argument("--seconds", type=int, default=8, help="Duration of each wrk run.")
    parser.add_argument("--rounds", type=int, default=2, help="Alternating rounds; medians are reported.")
    parser.add_argument("--no-mlflow", action="store_true", help="Leave MLflow out (it is a large install).")
    parser.add_argument("--against", metavar="REF",
                        help="Compare this checkout's mlops-serve with commit REF's (no peers).")
    parser.add_argument("--record", metavar="NAME", default="serving-against",
                        help="With --against: results/NAME.md and .json (default serving-against).")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    if args.quick:
        args.seconds, args.rounds = 2, 1
    if args.against:
        return against(args.against, args.record, args.rounds, args.seconds, args.quick)
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
    result = {"rounds": args.rounds, "seconds": args.seconds,
              "runs": {k: v.runs for k, v in measured.items()}, "script_floor_rf": floor.runs, "goals": goals}
    return finish("serving", result, report, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())

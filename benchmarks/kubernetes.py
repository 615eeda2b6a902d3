"""Kubernetes benchmark: deploy to Available, a rolling update under load, requests/s with 1 and 2 replicas, each
beside the same model on the docker target, in one run.

    python benchmarks/kubernetes.py            # about 4 minutes; results in benchmarks/results/kubernetes.md and .json
    python benchmarks/kubernetes.py --quick    # a smoke run (about 2 minutes), nothing recorded

Needs a cluster whose node uses this machine's Docker engine (``sudo make kube-cluster``; the kubeconfig is
``$KUBECONFIG``, else ``$MLOPS_KUBECONFIG``, else ``/tmp/mlops-kube/kubeconfig``), the base image
``$MLOPS_BASE_IMAGE`` (default mlops-base:bookworm) and wrk (Debian package ``wrk``). The test cluster has no
network plugin, so pods use host networking (``--set network=host``): every figure goes through 127.0.0.1:PORT,
the same path as the docker target's container. Services are named ``kb-*``; all are undeployed at the end.

Measured, the image being present (it is built once first):
- ``%deploy`` until Available (kubernetes) or healthy (docker), and ``%undeploy`` until its pods or container are
  gone, the two targets alternating; medians.
- Rolling updates of a 1-replica service (``%reload`` after an entry-script edit, then ``%update`` to another
  version; their images are built first) while the project's load generator (``mlops_magics.profiling.loadgen``,
  keep-alive connections that reconnect when closed) runs through them: seconds, failed requests (goal 0),
  requests sent.
- Requests/s from wrk (2 threads, 16 keep-alive connections, one row per request) against one pod, two pods of
  one Deployment sharing the port (each binds it with SO_REUSEPORT) and the docker target's container; all up at
  once, the order rotating each round; medians. Each pod's share comes from its own access log (one JSON line per
  request), and the connections each pod holds from ``ss`` during the run: the kernel spreads connections, not
  requests, over the sockets of a port by a hash of the client's address and port.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving
from _common import command_line, describe, finish, unshadow

unshadow()  # this file, docker.py and onnx.py would hide the libraries of those names

NAMESPACE = "mlops"
HOST = {"network": "host", "cpu": 0.05, "memory_gb": 0.25}  # what each pod asks for: small, on 2 shared cores
#: The services that serve load ask for half a core each (cpu.shares 512, where the docker container has Docker's
#: default 1024): with 0.05 (shares 51) they would lose every contended core to the machine's other work.
SERVING = {**HOST, "cpu": 0.5}
SCRIPT = """\
import json, os
import joblib
import numpy as np

def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl"))

def run(raw):
    return {"labels": model.predict(np.asarray(json.loads(raw)["data"])).tolist(), "variant": VARIANT}

VARIANT = "first"
"""
ROWS = [[5.1, 3.5, 1.4, 0.2]]
BODY = json.dumps({"data": ROWS}).encode()
CONTENT_TYPE = "application/json"
LOADGEN_CONCURRENCY = 2  # connections of each of the two loads of a rolling update
WRK_CONNECTIONS = 16
_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


def _timed(fn: Any) -> tuple[float, Any]:
    began = time.perf_counter()
    value = fn()
    return time.perf_counter() - began, value


def _kubeconfig() -> str:
    for candidate in (os.environ.get("KUBECONFIG"), os.environ.get("MLOPS_KUBECONFIG"),
                      "/tmp/mlops-kube/kubeconfig"):
        if candidate and Path(candidate.split(os.pathsep)[0]).is_file():
            return candidate
    raise SystemExit("No kubeconfig: set KUBECONFIG (or MLOPS_KUBECONFIG), or start the test cluster with "
                     "`sudo make kube-cluster` (/tmp/mlops-kube/kubeconfig).")


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- the cluster's side: pods, their logs and their connections -----------------------------------------------

def _score_lines(cluster: Any, pod: str, since: float, until: float) -> int:
    """How many /score requests pod ``pod`` logged (its access log: stdout) between ``since`` and ``until``."""
    from kubernetes import client

    text = client.CoreV1Api(cluster.api).read_namespaced_pod_log(
        pod, NAMESPACE, container="mlops-serve", since_seconds=max(1, int(time.time() - since) + 2),
        _request_timeout=60)
    count = 0
    for line in text.splitlines():
        if line.startswith("{") and '"/score"' in line:
            record = json.loads(line)
            if record.get("path") == "/score" and since <= float(record.get("time", 0)) <= until:
                count += 1
    return count


def _pod_of_pid(pid: int, engine: Any, pods: dict[str, str]) -> str:
    """The pod (of ``pods``: container id -> pod name, filled as found) whose container runs ``pid``."""
    try:
        found = _CONTAINER_ID.findall(Path(f"/proc/{pid}/cgroup").read_text())
    except OSError:
        return "?"
    for container_id in found:
        if container_id not in pods:
            try:
                labels = engine.containers.get(container_id).labels
            except Exception:  # noqa: BLE001 - not a container of this engine
                labels = {}
            pods[container_id] = str(labels.get("io.kubernetes.pod.name") or labels.get("mlops.service") or "?")
        if pods[container_id] != "?":
            return pods[container_id]
    return "?"


def connections_by_owner(port: int, engine: Any) -> dict[str, int]:
    """Established connections to 127.0.0.1:``port`` per pod (or docker service) holding their server side."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"( sport = :{port} )"], capture_output=True,
                         text=True, check=False).stdout
    owners: Counter[str] = Counter()
    pods: dict[str, str] = {}
    for line in out.splitlines():
        pid = re.search(r"pid=(\d+)", line)
        owners[_pod_of_pid(int(pid.group(1)), engine, pods) if pid else "?"] += 1
    return dict(owners)


# -- the measures -------------------------------------------------------------------------------------------

def _answers(port: int) -> bool:
    """Whether a server answers ``GET /ready`` on 127.0.0.1:``port`` with 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=0.5) as response:
            return int(response.status) == 200
    except OSError:
        return False


class PortWatch:
    """Polls 127.0.0.1:``port``/ready every 50 ms from a thread; notes when it first answers and first stops."""

    def __init__(self, port: int) -> None:
        self.port, self.answered, self.stopped = port, 0.0, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        was = False
        while not self._done.is_set():
            now = _answers(self.port)
            if now and not self.answered:
                self.answered = time.perf_counter()
            if was and not now and not self.stopped:
                self.stopped = time.perf_counter()
            was = was or now
            time.sleep(0.05)

    def close(self) -> None:
        self._done.set()
        self._thread.join()


def deploys(repeat: int) -> dict[str, Any]:
    """Deploy and undeploy times: kubernetes (default probes, then a 1 s readiness period) and docker, the order
    rotating each round."""
    from mlops_magics import api
    from mlops_magics.targets.process import free_port

    kinds = ("kubernetes", "docker", "kubernetes_fast_probe")
    times: dict[str, list[float]] = {k: [] for k in (*kinds, *(f"{k}_undeploy" for k in kinds))}
    phases: dict[str, list[dict[str, float]]] = {"kubernetes": [], "kubernetes_fast_probe": []}
    for r in range(repeat):
        for kind in kinds[r % 3:] + kinds[:r % 3]:
            name = {"kubernetes": "kb-deploy-kube", "docker": "kb-deploy-dock",
                    "kubernetes_fast_probe": "kb-deploy-fast"}[kind]
            port = free_port()
            options = {**HOST, "port": port, **({"period_seconds": 1} if kind == "kubernetes_fast_probe" else {})}
            marks: dict[str, float] = {}

            def mark(event: Any, marks: dict[str, float] = marks) -> None:
                what = str(getattr(event, "what", ""))
                for step in ("applying", "rolling out"):
                    if what.startswith(step):
                        marks.setdefault(step, time.perf_counter())

            watch = PortWatch(port)
            began = time.perf_counter()
            if kind == "docker":
                d = api.deploy("iris:1", target="docker", name=name, port=port, build=False)
            else:
                d = api.deploy("iris:1", target="kubernetes", name=name, build=False, target_options=options,
                               progress=mark)
            seconds = time.perf_counter() - began
            assert d.url == f"http://127.0.0.1:{port}" and api.call(name, ROWS)["labels"] == [0], d
            times[kind].append(seconds)
            gone_began = time.perf_counter()
            times[f"{kind}_undeploy"].append(_timed(lambda name=name: api.undeploy(name))[0])
            watch.close()
            if kind in phases and {"applying", "rolling out"} <= set(marks) and watch.answered:
                phases[kind].append({
                    "before the apply": marks["applying"] - began, "apply": marks["rolling out"] - marks["applying"],
                    "the server answers /ready": watch.answered - began,
                    "Available": seconds,
                    "undeploy: the server stops answering": (watch.stopped or time.perf_counter()) - gone_began})
            print(f"  deploy {kind}: {seconds:.2f} s, undeploy {times[f'{kind}_undeploy'][-1]:.2f} s",
                  file=sys.stderr, flush=True)
    return {"times": times, "kubernetes_phases": phases}


#: The two loads of a rolling update: keep-alive connections, and a new connection per request.
LOADS = {"keep-alive": [], "new connection per request": ["--header", "Connection: close"]}


def _loadgen(url: str, seconds: float, extra: list[str], work: Path) -> subprocess.Popen[str]:
    (work / "body.json").write_bytes(BODY)
    return subprocess.Popen([sys.executable, "-m", "mlops_magics.profiling.loadgen", "--url", f"{url}/score",
                             "--body", str(work / "body.json"), "--concurrency", str(LOADGEN_CONCURRENCY),
                             "--duration", str(seconds), *extra], stdout=subprocess.PIPE, text=True)


def rolling_updates(cluster: Any, name: str, url: str, expected_s: float, quick: bool,
                    work: Path) -> list[dict[str, Any]]:
    """Rolling updates of ``name`` (1 replica) under the load generators' steady load."""
    import mlops_magics as mm
    from mlops_magics import api

    found = []
    for kind in ["reload"] if quick else ["reload", "update"]:
        if kind == "reload":
            mm.set_score_script("iris", SCRIPT.replace('"first"', '"second"'))
            build_s, _ = _timed(lambda: api.build("iris:1"))
            change = lambda: api.reload(name)  # noqa: E731
            want = ("iris:1", "second")
        else:
            build_s, _ = _timed(lambda: api.build("iris:2"))
            change = lambda: api.update(name, "iris:2")  # noqa: E731
            want = ("iris:2", "second")
        old_pods = {p.metadata.name for p in cluster.pods(name, NAMESPACE)}
        lead, tail = 2.0, 2.0
        budget = lead + max(12.0, 1.5 * expected_s + 4) + tail  # the load must outlast the update
        load_began = time.time()
        loads = {label: _loadgen(url, budget, extra, work) for label, extra in LOADS.items()}
        time.sleep(lead)
        update_began = time.time()
        seconds, d = _timed(change)
        update_ended = time.time()
        summaries = {label: json.loads(load.communicate(timeout=budget + 60)[0]) for label, load in loads.items()}
        load_ended = time.time()
        answer = api.call(name, ROWS)
        assert (f"{d.model_name}:{d.model_version}", answer["variant"]) == want, (d, answer)
        time.sleep(0.8)  # the access log is written in batches, at most half a second late
        new_pods = [p.metadata.name for p in cluster.pods(name, NAMESPACE) if p.metadata.name not in old_pods]
        by_new = sum(_score_lines(cluster, pod, load_began, load_ended) for pod in new_pods)
        row: dict[str, Any] = {
            "kind": kind, "build_s": round(build_s, 3), "seconds": round(seconds, 3),
            "update_started_after_s": round(update_began - load_began, 2),
            "covered": all(update_ended < load_began + s["seconds"] - 0.5 for s in summaries.values()),
            "served_by_new_pod": by_new, "loads": {}}
        for label, s in summaries.items():
            row["loads"][label] = {
                "requests": s["requests"], "successes": s["successes"], "failed": s["requests"] - s["successes"],
                "statuses": s["statuses"], "errors": s["errors"], "seconds": round(s["seconds"], 3),
                "qps": round(s["qps"], 1), "p99_ms": round(s["percentiles_ms"]["99"], 2)}
        row["served_by_old_pod"] = sum(s["successes"] for s in summaries.values()) - by_new
        found.append(row)
        print(f"  {kind}: {seconds:.2f} s under load, failed: " + ", ".join(
            f"{label} {v['failed']} of {v['requests']}" for label, v in row["loads"].items()), file=sys.stderr,
              flush=True)
    return found


def _listeners(port: int) -> list[int]:
    """The pids of the processes listening on ``port``."""
    out = subprocess.run(["ss", "-Htlnp", f"( sport = :{port} )"], capture_output=True, text=True,
                         check=False).stdout
    return sorted({int(pid) for pid in re.findall(r"pid=(\d+)", out)})


def _cpu_shares(pid: int) -> int | None:
    """The cpu.shares of ``pid``'s cgroup (v1; None elsewhere): its weight when the cores are contended."""
    try:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "cpu" in controllers.split(","):
                return int(Path(f"/sys/fs/cgroup/{controllers}{path}/cpu.shares").read_text())
    except (OSError, ValueError):
        pass
    return None


def throughput(cluster: Any, engine: Any, urls: dict[str, str], rounds: int, seconds: int,
               work: Path) -> dict[str, Any]:
    """wrk's requests/s for every service of ``urls`` (label -> URL), the order rotating each round."""
    import resource

    labels = list(urls)
    ports = {label: int(url.rsplit(":", 1)[1]) for label, url in urls.items()}
    for label in labels:  # warm-up: every pod's first requests
        serving.wrk(ports[label], "/score", BODY, CONTENT_TYPE, 4, 1, work)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            servers = _listeners(ports[label])
            seen: dict[str, int] = {}
            sampler = threading.Timer(seconds / 2, lambda label=label, seen=seen: seen.update(
                connections_by_owner(ports[label], engine)))
            load_before = os.getloadavg()[0]
            cpu_before = serving.cpu_seconds(servers)
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            began, wall = time.time(), time.perf_counter()
            sampler.start()
            result = serving.wrk(ports[label], "/score", BODY, CONTENT_TYPE, WRK_CONNECTIONS, seconds, work)
            ended, wall = time.time(), time.perf_counter() - wall
            sampler.join()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            row: dict[str, Any] = {k: round(v, 3) for k, v in result.items()}
            row["server_cores"] = round((serving.cpu_seconds(servers) - cpu_before) / wall, 2)
            row["wrk_cores"] = round((after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime)
                                     / wall, 2)
            row["server_processes"] = len(servers)
            row["cpu_shares"] = [_cpu_shares(pid) for pid in servers]
            row["connections_per_pod"] = seen
            row["load_average_1m_before"] = round(load_before, 2)
            deployment = _service_of(label)
            if deployment is not None:
                time.sleep(0.8)  # the access log is written in batches, at most half a second late
                row["requests_per_pod"] = {p.metadata.name: _score_lines(cluster, p.metadata.name, began, ended)
                                           for p in cluster.pods(deployment, NAMESPACE)}
            runs[label].append(row)
        print(f"  throughput round {r + 1}: " + ", ".join(f"{label} {runs[label][-1]['rps']:,.0f} req/s"
                                                        for label in labels), file=sys.stderr, flush=True)
    return {"runs": runs, "ratios": _ratios(runs)}


def _service_of(label: str) -> str | None:
    return {"kubernetes, 1 pod": "kb-one", "kubernetes, 2 pods": "kb-two"}.get(label)


def _ratios(runs: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Each service's requests/s over the docker container's, per round, then the median over rounds."""
    docker = runs["docker"]
    return {label: round(statistics.median(row["rps"] / base["rps"] for row, base in zip(rows, docker, strict=True)
                                           if base["rps"]), 3)
            for label, rows in runs.items() if label != "docker"}


def run(quick: bool, work: Path) -> dict[str, Any]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import mlops_magics as mm
    from mlops_magics import api
    from mlops_magics.errors import NotFoundError
    from mlops_magics.packaging import engine as engines
    from mlops_magics.targets.kube.cluster import Cluster

    cluster = Cluster()
    engine = engines.client()
    X, y = load_iris(return_X_y=True)
    mm.register(LogisticRegression(max_iter=500).fit(X, y), "iris", sample=X[:2])
    mm.register(LogisticRegression(max_iter=500, C=0.5).fit(X, y), "iris", sample=X[:2])
    mm.set_score_script("iris", SCRIPT)
    mm.set_environment("iris", from_kernel=True)
    result: dict[str, Any] = {"cluster": _cluster_info(cluster), "load_average_before": _load_average()}
    result["build_s"], _ = _timed(lambda: api.build("iris:1"))
    try:
        result["deploy"] = deploys(1 if quick else 3)
        expected = statistics.median(result["deploy"]["times"]["kubernetes"])
        one = api.deploy("iris:1", target="kubernetes", name="kb-one", build=False, target_options=SERVING)
        result["rolling"] = rolling_updates(cluster, "kb-one", str(one.url), expected, quick, work)
        ref = "iris:1" if quick else "iris:2"  # what kb-one serves now: all three run the same image
        two = api.deploy(ref, target="kubernetes", name="kb-two", build=False,
                         target_options={**SERVING, "replicas": 2})
        docker = api.deploy(ref, target="docker", name="kb-docker", build=False)
        urls = {"kubernetes, 1 pod": str(one.url), "kubernetes, 2 pods": str(two.url), "docker": str(docker.url)}
        result["throughput"] = throughput(cluster, engine, urls, 1 if quick else 3, 3 if quick else 5, work)
    finally:
        for name in ("kb-one", "kb-two", "kb-docker", "kb-deploy-kube", "kb-deploy-dock", "kb-deploy-fast"):
            with contextlib.suppress(NotFoundError):  # not deployed: a measure failed before it
                api.undeploy(name)
        api.remove_images()
    result["load_average_after"] = _load_average()
    return result


def _cluster_info(cluster: Any) -> dict[str, Any]:
    """The cluster's version and nodes, and what else runs on it (other engineers' pods share the cores)."""
    from kubernetes import client

    pods = client.CoreV1Api(cluster.api).list_pod_for_all_namespaces(_request_timeout=30).items
    return {"version": cluster.version(), "nodes": [
        {"name": name, "cpu": cpu, "memory": memory} for name, cpu, memory in cluster.node_capacity()],
        "pods_at_start": len(pods), "containers_at_start": len(subprocess.run(
            ["docker", "ps", "-q"], capture_output=True, text=True, check=False).stdout.split())}


# -- the report ---------------------------------------------------------------------------------------------

def _median(values: Any) -> float:
    return float(statistics.median(list(values)))


def report(result: dict[str, Any]) -> str:
    r = result["result"]
    times = r["deploy"]["times"]
    med = {k: _median(v) for k, v in times.items()}
    nodes = ", ".join(f"{n['name']} ({n['cpu']} CPU, {n['memory']})" for n in r["cluster"]["nodes"])
    lines = [
        "# Kubernetes benchmark", "", f"Machine: {describe(result['machine'])}",
        f"Cluster: Kubernetes {r['cluster']['version']}, node {nodes}; its kubelet runs pods on this machine's "
        f"Docker engine; host networking (no network plugin). At the start: {r['cluster']['pods_at_start']} pods on "
        f"the cluster, {r['cluster']['containers_at_start']} containers on the engine; load average (1, 5, 15 min) "
        f"{r['load_average_before']} before, {r['load_average_after']} after (other engineers share the 2 cores).",
        f"Command: `python benchmarks/kubernetes.py` ({result['repeat']} repetitions of each deploy, "
        f"{result['rounds']} rounds of {result['seconds']} s per wrk run; medians; {result['wall_seconds']:.0f} s in "
        f"all). The image is present (built once first, {r['build_s']:.1f} s). No CPU or memory limit anywhere; pods "
        f"ask for {HOST['memory_gb']} GB and {HOST['cpu']} CPU (the deploys) or {SERVING['cpu']} CPU (the services "
        "under load: a request is a cgroup weight, cpu.shares, which decides who gets a contended core).", "",
        "## Deploy and undeploy, the image present", "",
        "| measure | seconds | / docker |", "|---|---|---|"]
    rows = [("`%deploy --target docker` until healthy", "docker"),
            ("`%deploy --target kubernetes` until Available (default probes: readiness every 10 s, as AKS)",
             "kubernetes"),
            ("the same with `--set period_seconds=1` (readiness every second)", "kubernetes_fast_probe"),
            ("`%undeploy` (docker) until the container is gone", "docker_undeploy"),
            ("`%undeploy` (kubernetes, both probe settings) until the pods' containers have ended",
             "all_kubernetes_undeploy")]
    med["all_kubernetes_undeploy"] = _median([*times["kubernetes_undeploy"], *times["kubernetes_fast_probe_undeploy"]])
    for label, key in rows:
        base = med["docker_undeploy" if key.endswith("undeploy") else "docker"]
        lines.append(f"| {label} | {med[key]:.2f} | {med[key] / base:.1f} |")
    for kind, phases in r["deploy"]["kubernetes_phases"].items():
        if phases:
            parts = ", ".join(f"{k} {_median(p[k] for p in phases):.2f} s" for k in phases[0])
            lines.append(f"\nKubernetes deploy{' (period_seconds=1)' if kind != 'kubernetes' else ''}, seconds "
                         f"from the call (medians): {parts}.")
    lines += ["", "Kubernetes 1.20 runs the readiness probe on its own period once the startup probe has passed "
                  "(from 1.22 the kubelet runs it at once: kubernetes/kubernetes#101738), so with AKS's 10 s "
                  "`period_seconds` a deploy waits up to 10 s after the server is ready. An undeploy returns once the "
                  "pods' containers have ended (the kubelet may keep a stopped pod's object for a minute more)."]
    lines += ["", "Every run (s): " + "; ".join(f"{k} " + "/".join(f"{v:.2f}" for v in vs)
                                                for k, vs in times.items()) + ".", ""]
    lines += ["## Rolling updates under load (1 replica: maxSurge 1, maxUnavailable 0)", "",
              "Two copies of the project's load generator (`mlops_magics.profiling.loadgen`, closed loop, "
              f"{LOADGEN_CONCURRENCY} connections each) run from 2 s before the update until after it: one keeps "
              "its connections alive, the other asks for a new connection per request (`Connection: close`). The "
              "update's image is built beforehand (its build time apart). A failed request is an error status or a "
              "connection error.", "",
              "| update | build s | update s | load | requests | failed (goal 0) | req/s | p99 ms | covered |",
              "|---|---|---|---|---|---|---|---|---|"]
    for u in r["rolling"]:
        what = "`%reload` after an entry-script edit" if u["kind"] == "reload" else "`%update` to iris:2"
        for i, (label, v) in enumerate(u["loads"].items()):
            failed = f"{v['failed']}" + (f" ({', '.join(f'{k} {n}' for k, n in v['errors'].items())})"
                                         if v["errors"] else "")
            head = (f"| {what} | {u['build_s']:.1f} | {u['seconds']:.2f}" if i == 0 else "| | |")
            lines.append(f"{head} | {label} | {v['requests']} | {failed} | {v['qps']:.0f} | {v['p99_ms']:.1f} | "
                         f"{'yes' if u['covered'] else 'NO'} |")
    failures: Counter[str] = Counter()
    for u in r["rolling"]:
        for v in u["loads"].values():
            failures.update(v["errors"])
    notes = {"ConnectionRefusedError": "ConnectionRefusedError: nothing listened on the port for a while: the old pod "
                                       "was stopped before the new pod's server was listening",
             "ConnectionResetError": "ConnectionResetError: a connection the old pod's server closed with a request "
                                     "unread in it (its stop closes idle keep-alive connections and its listening "
                                     "socket with what is queued on it)",
             "IncompleteReadError": "IncompleteReadError: a keep-alive connection the old pod's server closed as a "
                                    "request was on its way"}
    if failures:
        lines += ["", "What failed: " + "; ".join(notes.get(k, k) + f" ({n})" for k, n in failures.items()) + "."]
    lines += ["", "With host networking both pods hold 127.0.0.1:PORT, so a new pod's startup and readiness are its "
                  "own server's ready file (an HTTP probe would be answered by the old pod); the old server, stopping, "
                  "answers a keep-alive client's next request with `connection: close` instead of dropping it. "
                  "Before those two fixes this benchmark saw 2 of 21,302 (keep-alive) and 2 of 10,068 (new "
                  "connections) requests fail in a reload, 1 of 18,974 in an update, and in one smoke run 354 "
                  "connections refused during a reload."]
    lines += ["", "Requests answered by the old pod / the new pod: " + "; ".join(
        f"{u['kind']} {u['served_by_old_pod']} / {u['served_by_new_pod']}" for u in r["rolling"]) + " (the new "
        "pod's count from its access log)."]
    t = r["throughput"]
    lines += ["", f"## Requests/s through 127.0.0.1:PORT (wrk, 2 threads, {WRK_CONNECTIONS} keep-alive connections, "
                  "one row of iris per request)", "",
              "| service | req/s | / docker | p50 ms | p99 ms | errors | server cores | wrk cores | cpu.shares "
              "| requests per pod (each round) | connections per pod |", "|---" * 11 + "|"]
    for label, rows_ in t["runs"].items():
        errors = sum(row["non_2xx"] + row["socket_errors"] for row in rows_)
        spread = "; ".join(" / ".join(str(n) for n in row["requests_per_pod"].values()) for row in rows_
                           if "requests_per_pod" in row)
        conns = "; ".join(" / ".join(str(n) for n in row["connections_per_pod"].values()) for row in rows_)
        ratio = "1" if label == "docker" else f"{t['ratios'][label]:.2f}"
        lines.append(f"| {label} | {_median(row['rps'] for row in rows_):,.0f} | {ratio} | "
                     f"{_median(row['p50_ms'] for row in rows_):.2f} | {_median(row['p99_ms'] for row in rows_):.2f} | "
                     f"{errors:.0f} | {_median(row['server_cores'] for row in rows_):.2f} | "
                     f"{_median(row['wrk_cores'] for row in rows_):.2f} | "
                     f"{' / '.join(str(x) for x in rows_[0].get('cpu_shares', []))} | {spread or '-'} | "
                     f"{conns or '-'} |")
    lines += ["", "Both pods of the 2-pod Deployment listen on the same 127.0.0.1 port of the node (host network), "
                  "each with its own SO_REUSEPORT socket: the kernel gives each new connection to one of the sockets "
                  "by a hash of its addresses and ports, so wrk's connections split unevenly, and every request of a "
                  "connection goes to the pod that accepted it. Requests per pod are counted in each pod's access "
                  "log, connections per pod with `ss` halfway through the run, server and wrk CPU from /proc and "
                  "getrusage (cores = CPU seconds per second). wrk runs on the same 2 cores as the servers and other "
                  "engineers' work: a second pod adds throughput only as far as a core is free for it."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = command_line(__doc__, "One repetition, one round of 3 s, the reload only; print only.")
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("ss") is None:
        print("wrk and ss are needed: apt-get install wrk iproute2", file=sys.stderr)
        return 1
    os.environ["KUBECONFIG"] = _kubeconfig()
    os.environ.setdefault("MLOPS_BASE_IMAGE", "mlops-base:bookworm")
    with tempfile.TemporaryDirectory(prefix="mlops-kube-bench-") as tmp:
        os.environ["MLOPS_HOME"] = str(Path(tmp) / "home")
        began = time.perf_counter()
        measured = run(args.quick, Path(tmp))
        result = {"repeat": 1 if args.quick else 3, "rounds": 1 if args.quick else 3,
                  "seconds": 3 if args.quick else 5, "wall_seconds": round(time.perf_counter() - began, 1),
                  "result": measured}
    return finish("kubernetes", result, report, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())

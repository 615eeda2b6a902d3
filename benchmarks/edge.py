"""Edge benchmark: module image size, scoring latency on a simulated device, store-and-forward across an offline window.

    python benchmarks/edge.py            # results in benchmarks/results/edge.md and .json
    python benchmarks/edge.py --quick    # fewer requests, nothing recorded

Needs root (the device's veth link), a Docker engine and the base image ``$MLOPS_BASE_IMAGE`` (default
mlops-base:bookworm; ``sudo make docker-engine`` provides both without any registry).

Goals (issue 20): the edge module image at most half the size of the same model's scikit-learn image; across an
offline window of 10,000 requests, 0 records lost and 0 duplicated. Side by side in one run:

- image sizes: the edge module (``%deploy --target edge``), the scikit-learn image and the ONNX-only image
  (``%build``), of the same iris model;
- latency of one request (p50, p99, sequential, keep-alive): a client on this machine to the same ONNX version
  served on this machine (``--target local``, no limits), the same client to the module on the device across its
  link (0.5 CPU, 256 MB), and a client on the device itself (a process in the device's network namespace) to the
  module;
- the offline window: the link cut, N requests scored on the device, the link restored; records forwarded, lost,
  duplicated and evicted, and the time from the link's return until the last record is in this machine's
  collection.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ONNX_SCRIPT, SKLEARN_SCRIPT, command_line, describe, finish, onnx_iris, unshadow

unshadow()  # docker.py and onnx.py in this folder would hide the libraries of those names

GOALS = {"size_ratio": 0.5, "lost": 0, "duplicated": 0}
#: A client: N sequential POSTs on one keep-alive connection, each with its own request id; prints the latencies.
CLIENT = """\
import http.client, json, sys, time
host, port, count, prefix = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
body = json.dumps({"data": [[5.9, 3.0, 5.1, 1.8]]}).encode()
connection = http.client.HTTPConnection(host, port, timeout=30)
took = []
for i in range(count):
    began = time.perf_counter()
    connection.request("POST", "/score", body=body, headers={"Content-Type": "application/json",
                                                            "x-request-id": f"{prefix}-{i}"})
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"request {i}: status {response.status}")
    took.append(time.perf_counter() - began)
print(json.dumps(took))
"""


def _client(host: str, port: int, count: int, prefix: str, netns_pid: int | None = None) -> list[float]:
    """Latencies (s) of ``count`` requests; in the network namespace of ``netns_pid`` when given (on the device)."""
    command = [sys.executable, "-c", CLIENT, host, str(port), str(count), prefix]
    if netns_pid is not None:
        command = ["nsenter", "-t", str(netns_pid), "-n", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"the client failed: {done.stderr.strip()[-500:]}")
    return list(json.loads(done.stdout))


def _percentiles(took: list[float]) -> dict[str, float]:
    ordered = sorted(took)
    return {"p50_ms": statistics.median(ordered) * 1e3, "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1e3,
            "requests": len(ordered)}


def run(requests: int, window: int, base: str, work: Path) -> dict[str, Any]:
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import mlops_magics as mm
    from mlops_magics import api
    from mlops_magics.errors import EngineError
    from mlops_magics.packaging import engine
    from mlops_magics.registry import default_registry
    from mlops_magics.targets.edge.target import EdgeTarget

    client = engine.client()
    os.environ["MLOPS_HOME"] = str(work / "home")
    os.environ["MLOPS_BASE_IMAGE"] = base
    X, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(X, y)
    result: dict[str, Any] = {"base": base, "requests": requests, "window": window}

    # Images: scikit-learn and ONNX-only (%build), the edge module (%deploy --target edge builds it).
    mm.register(clf, "iris", sample=X[:5])
    mm.register(clf, "iris-sk", sample=X[:2])
    mm.set_score_script("iris-sk", SKLEARN_SCRIPT)
    mm.set_environment("iris-sk", from_kernel=True)
    sklearn_image = api.build("iris-sk")
    mm.register(onnx_iris(clf), "iris-onnx", sample=X[:2].astype(np.float32))
    mm.set_score_script("iris-onnx", ONNX_SCRIPT)
    mm.set_environment("iris-onnx", "onnxruntime\nnumpy\n")
    onnx_image = api.build("iris-onnx")
    began = time.perf_counter()
    deployed = api.deploy("iris", target="edge", name="iris-edge", cpu=0.5, memory="256m", collect=True,
                          target_options={"device": "bench-1", "mqtt": False})
    result["edge_deploy_s"] = time.perf_counter() - began
    edge_image = client.images.get(deployed.config["image"])
    result["sizes"] = {"edge module": int(edge_image.attrs["Size"]), "scikit-learn": sklearn_image.size,
                       "ONNX only": onnx_image.size, "base": int(client.images.get(base).attrs["Size"])}
    assert api.call("iris-edge", X[:3]) == clf.predict(X[:3]).tolist()

    # Latency: this machine -> this machine, this machine -> device, device -> device.
    local = api.deploy(f"{deployed.model_name}:{deployed.model_version}", name="iris-local")  # the same ONNX
    target = EdgeTarget(default_registry())
    device = target.devices().get("bench-1")
    device_pid = int(client.api.inspect_container(device.container)["State"]["Pid"])
    port = int(deployed.config["port"])
    host_port = int(str(local.url).rsplit(":", 1)[1])
    warm = max(50, requests // 20)
    latency: dict[str, dict[str, float]] = {}
    for label, host, p, pid in (("this machine -> local process (no limits)", "127.0.0.1", host_port, None),
                                ("this machine -> device module (0.5 CPU, 256 MB)", device.address, port, None),
                                ("on the device -> device module (0.5 CPU, 256 MB)", "127.0.0.1", port, device_pid)):
        _client(host, p, warm, "warm", pid)
        latency[label] = _percentiles(_client(host, p, requests, f"lat-{len(latency)}", pid))
    result["latency"] = latency
    api.undeploy("iris-local")

    # The offline window.
    volume = Path(deployed.config["volume"])
    settle_deadline = time.monotonic() + 120
    while time.monotonic() < settle_deadline:  # the latency runs' records forwarded first
        agent = json.loads((volume / "agent.json").read_text())
        if agent.get("buffered_records") == 0 and len(api.collected("iris-edge")) >= 3 * (warm + requests):
            break
        time.sleep(0.5)
    before = {str(r) for r in api.collected("iris-edge")["request_id"]}
    api.edge_offline("bench-1")
    began = time.perf_counter()
    _client("127.0.0.1", port, window, "offline", device_pid)
    result["offline_scoring_s"] = time.perf_counter() - began
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # every record of the window taken into the buffer
        agent = json.loads((volume / "agent.json").read_text())
        if agent.get("taken_records", 0) - agent.get("forwarded_records", 0) >= window:
            break
        time.sleep(0.2)
    result["buffered_at_reconnect"] = agent.get("buffered_records")
    came_back = time.perf_counter()
    status = api.edge_online("bench-1", wait=600)
    result["drain_s"] = time.perf_counter() - came_back
    ids = [str(r) for r in api.collected("iris-edge")["request_id"] if str(r) not in before]
    sent = {f"offline-{i}" for i in range(window)}
    result["forwarded"] = len(ids)
    result["lost"] = len(sent - set(ids))
    result["duplicated"] = len(ids) - len(set(ids))
    result["evicted"] = status.module("iris-edge").evicted
    result["in_order"] = ids == [f"offline-{i}" for i in range(window)]
    api.undeploy("iris-edge")
    api.remove_device("bench-1")
    with contextlib.suppress(EngineError):  # an image another registry's container uses (same context, same tag)
        api.remove_images()
    return result


def report(result: dict[str, Any]) -> str:
    r = result["result"]
    mb = 1e6
    sizes = r["sizes"]
    ratio = sizes["edge module"] / sizes["scikit-learn"]
    lines = [
        "# Edge benchmark", "", f"Machine: {describe(result['machine'])}",
        f"Command: `python benchmarks/edge.py` (base image {r['base']}, {sizes['base'] / mb:.0f} MB; "
        f"{r['requests']:,} requests per latency run, sequential, keep-alive; offline window of {r['window']:,} "
        "requests).", "",
        "| image (the same iris model) | size MB | vs scikit-learn |", "|---|---|---|",
    ]
    for label in ("edge module", "ONNX only", "scikit-learn"):
        lines.append(f"| {label} | {sizes[label] / mb:.0f} | {sizes[label] / sizes['scikit-learn']:.2f} |")
    lines += ["", f"Goal: edge module <= {GOALS['size_ratio']:.0%} of the scikit-learn image: "
                  f"{ratio:.0%}, {'met' if ratio <= GOALS['size_ratio'] else 'NOT met'}. "
                  f"`%deploy --target edge` (image built, device made, module ready): {r['edge_deploy_s']:.0f} s.", "",
              "| client -> server | p50 ms | p99 ms |", "|---|---|---|"]
    for label, figures in r["latency"].items():
        lines.append(f"| {label} | {figures['p50_ms']:.2f} | {figures['p99_ms']:.2f} |")
    lost, dup = r["lost"], r["duplicated"]
    lines += ["", "| offline window | value | goal |", "|---|---|---|",
              f"| requests scored on the device while offline | {r['window']:,} ({r['offline_scoring_s']:.1f} s) | |",
              f"| buffered on the device at reconnect | {r['buffered_at_reconnect']:,} | |",
              f"| forwarded to this machine's collection | {r['forwarded']:,} | {r['window']:,} |",
              f"| lost | {lost} | {GOALS['lost']} ({'met' if lost <= GOALS['lost'] else 'NOT met'}) |",
              f"| duplicated | {dup} | {GOALS['duplicated']} ({'met' if dup <= GOALS['duplicated'] else 'NOT met'}) |",
              f"| evicted (buffer bound 256m) | {r['evicted']} | |",
              f"| in the order scored | {'yes' if r['in_order'] else 'NO'} | yes |",
              f"| time from the link's return to the last record here | {r['drain_s']:.1f} s | |",
              "", "The device is a container of the local Docker engine with a network namespace of its own and a "
                  "veth link to this machine; offline is that link really down. The module runs with real cgroup "
                  "limits (0.5 CPU, 256 MB); the client on the device is a process in the device's network namespace "
                  "(outside the module's limits)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = command_line(__doc__, "500 requests per run and a 1,000-request window; print only.")
    parser.add_argument("--requests", type=int, default=2000, help="Requests per latency run (default 2,000).")
    parser.add_argument("--window", type=int, default=10_000, help="Requests in the offline window (default 10,000).")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.window = 500, 1000
    if os.geteuid() != 0 or shutil.which("nsenter") is None:
        sys.exit("benchmarks/edge.py needs root and nsenter (the device's veth link): run it as root.")
    base = os.environ.get("MLOPS_BASE_IMAGE") or "mlops-base:bookworm"
    with tempfile.TemporaryDirectory(prefix="mlops-edge-bench-") as tmp:
        result = {"result": run(args.requests, args.window, base, Path(tmp))}
    return finish("edge", result, report, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())

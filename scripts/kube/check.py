#!/usr/bin/env python3
"""End-to-end check of the up.sh cluster with the `kubernetes` Python client.

Usage: KUBECONFIG=/tmp/mlops-kube/kubeconfig python check.py [--port 18080] [--image IMG]
(`make kube-check` runs it with the project's venv against the cluster of `make kube-cluster`.)

Creates namespace mlops-check with a Secret, a 1-replica hostNetwork HTTP Deployment with a
readiness probe + Service, a 2-replica Deployment with an HPA (autoscaling/v2, else v2beta2 via
the dynamic client); checks HTTP via the host port and via API port-forward, pod logs and exec
through the API, a rolling update to a second local image tag; then deletes everything.
Exit status 0 iff every step passed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any

from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import portforward, stream

ap = argparse.ArgumentParser()
ap.add_argument("--namespace", default="mlops-check")
ap.add_argument("--port", type=int, default=18080)
ap.add_argument("--image", default=os.environ.get("MLOPS_BASE_IMAGE") or "mlops-base:bookworm")
ap.add_argument("--timeout", type=int, default=120)
args = ap.parse_args()
NS, PORT, IMG = args.namespace, args.port, args.image
IMG2 = "local/mlops-check:v2"  # second local tag for the rolling update
results: list[tuple[str, bool]] = []
T: dict[str, float | None] = {}
t_start = time.time()


def step(name: str, ok: object, detail: str = "") -> bool:
    results.append((name, bool(ok)))
    print(f"[{'PASS' if ok else 'FAIL'}] {name} {detail}".rstrip(), flush=True)
    return bool(ok)


config.load_kube_config()
api = client.ApiClient()
core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
dyn = dynamic.DynamicClient(api)
print("server", client.VersionApi(api).get_code().git_version, flush=True)


def wait_available(name: str, timeout: int = args.timeout) -> float | None:
    """Watch a Deployment until its rollout is complete; returns seconds taken or None."""
    t0 = time.time()
    w = watch.Watch()
    for ev in w.stream(apps.list_namespaced_deployment, NS, field_selector=f"metadata.name={name}",
                       timeout_seconds=timeout):
        d = ev["object"]
        st = d.status
        conds = {c.type: c.status for c in (st.conditions or [])}
        if ((st.observed_generation or 0) >= d.metadata.generation and conds.get("Available") == "True"
                and st.updated_replicas == d.spec.replicas == st.replicas == (st.available_replicas or 0)):
            w.stop()
            return time.time() - t0
    return None


def pod_of(selector: str) -> Any:
    pods = [p for p in core.list_namespaced_pod(NS, label_selector=selector).items
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
    return pods[0] if pods else None


def port_forward_get(pod_name: str) -> tuple[bytes, Any]:
    """GET / through the API server's port-forward to the pod; the raw response and the stream's error."""
    pf = portforward(core.connect_get_namespaced_pod_portforward, pod_name, NS, ports=str(PORT))
    s = pf.socket(PORT)
    s.settimeout(10)
    s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    return data, pf.error(PORT)


subprocess.run(["docker", "tag", IMG, IMG2], check=True)
try:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    core.create_namespaced_secret(NS, client.V1Secret(
        metadata=client.V1ObjectMeta(name="check-secret"), string_data={"API_KEY": "s3cr3t"}))
    step("secret created", core.read_namespaced_secret("check-secret", NS).data.get("API_KEY"))

    # --- 1-replica HTTP server on the host network ---------------------------------------
    web = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                    # hostNetwork + fixed port: a surge pod could never bind/schedule -> Recreate
                    "strategy": {"type": "Recreate"},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                        "hostNetwork": True, "terminationGracePeriodSeconds": 2,
                        "containers": [{
                            "name": "http", "image": IMG, "imagePullPolicy": "Never",
                            "command": ["python3", "-m", "http.server", str(PORT), "--bind", "127.0.0.1"],
                            "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
                            "envFrom": [{"secretRef": {"name": "check-secret"}}],
                            "ports": [{"containerPort": PORT}],
                            "readinessProbe": {"httpGet": {"host": "127.0.0.1", "port": PORT, "path": "/"},
                                               "periodSeconds": 2},
                            "resources": {"requests": {"cpu": "50m", "memory": "32Mi"},
                                          "limits": {"cpu": "500m", "memory": "128Mi"}}}]}}}}
    apps.create_namespaced_deployment(NS, web)
    core.create_namespaced_service(NS, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                        "spec": {"selector": {"app": "web"},
                                                 "ports": [{"port": 80, "targetPort": PORT}]}})
    dt = wait_available("web")
    T["web_available_s"] = dt
    step("web Deployment Available", dt is not None, f"({dt:.1f}s)" if dt else "")
    pod = pod_of("app=web")
    step("web pod Ready (readiness probe)", pod and all(c.ready for c in pod.status.container_statuses or []),
         f"pod={pod and pod.metadata.name} podIP={pod and pod.status.pod_ip}")

    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/", timeout=5) as response:
        body = response.read()
    step("HTTP via host port", b"Directory listing" in body, f"{len(body)} bytes")

    eps: list[tuple[str, int]] = []
    for _ in range(20):
        subsets = core.read_namespaced_endpoints("web", NS).subsets or []
        eps = [(a.ip, p.port) for s in subsets for a in (s.addresses or []) for p in s.ports]
        if eps:
            break
        time.sleep(1)
    step("Service endpoints populated", eps, str(eps))

    try:
        data, err = port_forward_get(pod.metadata.name)
        step("HTTP via API port-forward", data.startswith(b"HTTP/1.0 200"),
             repr(data[:40]) + (f" err={err}" if err else ""))
    except Exception as e:  # noqa: BLE001 -- a failed step, reported as such
        step("HTTP via API port-forward", False, f"{type(e).__name__}: {e}")

    time.sleep(1)
    logs = core.read_namespaced_pod_log(pod.metadata.name, NS)
    step("pod logs via API", '"GET / HTTP/1.' in logs,
         repr(logs.strip().splitlines()[-1][:90]) if logs.strip() else "(empty)")

    out = stream(core.connect_get_namespaced_pod_exec, pod.metadata.name, NS,
                 command=["python3", "-c", "import os; print(os.environ['API_KEY'])"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    step("exec via API sees Secret env", out.strip() == "s3cr3t", repr(out.strip()))

    # --- 2-replica Deployment + HPA + rolling update --------------------------------------
    roll = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "roll", "labels": {"app": "roll"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "roll"}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": {"app": "roll"}}, "spec": {
                         "hostNetwork": True, "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "worker", "image": IMG, "imagePullPolicy": "Never",
                                         "command": ["python3", "-c", "import time\nwhile True: time.sleep(60)"],
                                         "readinessProbe": {"exec": {"command": ["python3", "-c", "0"]},
                                                            "periodSeconds": 2},
                                         "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}}
    apps.create_namespaced_deployment(NS, roll)
    dt = wait_available("roll")
    T["roll_available_s"] = dt
    step("roll Deployment 2/2 Available", dt is not None, f"({dt:.1f}s)" if dt else "")

    groups = {g.name: [v.version for v in g.versions] for g in client.ApisApi(api).get_api_versions().groups}
    hv = "v2" if "v2" in groups.get("autoscaling", []) else "v2beta2"
    hpa_api = dyn.resources.get(api_version=f"autoscaling/{hv}", kind="HorizontalPodAutoscaler")
    hpa_api.create(namespace=NS, body={
        "apiVersion": f"autoscaling/{hv}", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "roll"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "roll"},
                 "minReplicas": 2, "maxReplicas": 3,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": 70}}}]}})
    conds: dict[str, str] = {}
    for _ in range(40):
        h = hpa_api.get(name="roll", namespace=NS)
        conds = {c["type"]: f'{c["status"]}/{c["reason"]}' for c in (h.status.conditions or [])}
        if "ScalingActive" in conds:
            break
        time.sleep(1)
    step(f"HPA autoscaling/{hv} reconciled by controller", "ScalingActive" in conds, str(conds))

    apps.patch_namespaced_deployment("roll", NS, {"spec": {"template": {"spec": {"containers": [
        {"name": "worker", "image": IMG2}]}}}})
    dt = wait_available("roll")
    T["rollout_s"] = dt
    imgs = {c.image for p in core.list_namespaced_pod(NS, label_selector="app=roll").items
            if not p.metadata.deletion_timestamp for c in p.spec.containers}
    step("rolling update to new tag complete", dt is not None and imgs == {IMG2},
         f"({dt:.1f}s) images={sorted(imgs)}" if dt else f"images={sorted(imgs)}")
finally:
    # --- delete everything ------------------------------------------------------------------
    t0 = time.time()
    try:
        core.delete_namespace(NS)
        while time.time() - t0 < 120:
            try:
                core.read_namespace(NS)
                time.sleep(1)
            except ApiException as e:
                if e.status == 404:
                    break
                raise
    except ApiException as e:
        if e.status != 404:
            print("namespace delete:", e)
    gone = False
    while time.time() - t0 < 120:
        left = subprocess.run(["docker", "ps", "-q", "--filter", f"label=io.kubernetes.pod.namespace={NS}"],
                              capture_output=True, text=True).stdout.split()
        if not left:
            gone = True
            break
        time.sleep(1)
    T["delete_s"] = time.time() - t0
    step("namespace deleted, no running containers left", gone, f"({T['delete_s']:.1f}s)")
    subprocess.run(["docker", "rmi", IMG2], capture_output=True)

print("timings:", {k: (round(v, 1) if v else v) for k, v in T.items()}, f"total={time.time() - t_start:.1f}s")
failed = [n for n, ok in results if not ok]
print("RESULT:", "ALL PASSED" if not failed else f"FAILED: {failed}")
sys.exit(1 if failed else 0)

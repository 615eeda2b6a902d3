"""Waiting for a rollout, and saying why one fails in the user's terms rather than Kubernetes'.

A rollout is done when the Deployment's controller saw the new template and every wanted pod of it is ready. It
fails, as soon as that is certain, when a new pod's image cannot be pulled, its server crashes (the container's
log, mapped to the score-script cell's lines), it is killed for lack of memory (the limit and the profile's
peak), or it cannot be placed on any node (what it asks for and what the nodes have).
"""

from __future__ import annotations

import time
from typing import Any

from mlops_magics.errors import DeployError
from mlops_magics.packaging.spec import DeploySpec
from mlops_magics.targets.base import Steps
from mlops_magics.targets.kube.cluster import Cluster
from mlops_magics.targets.kube.manifests import SCRIPT, object_name
from mlops_magics.targets.kube.settings import KubeSettings
from mlops_magics.targets.local import map_script_lines, start_failure

#: Seconds a pod may stay unschedulable before the rollout is given up (the scheduler retries meanwhile).
UNSCHEDULABLE_GRACE = 15.0
#: Seconds a pod may wait for its data claim while a provisioner is still making the volume (a cloud disk can
#: take a minute); a claim nothing can provision fails after UNSCHEDULABLE_GRACE.
PROVISIONING_GRACE = 180.0
#: Claim events that say no volume is coming.
_CANNOT_PROVISION = ("FailedBinding", "ProvisioningFailed")
_LOG_TAIL = 40
_PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName")


def _newest_template_hash(cluster: Cluster, name: str, namespace: str) -> str | None:
    """The ``pod-template-hash`` of the Deployment's newest ReplicaSet (its current template)."""
    from kubernetes import client

    with cluster.answering(f"reading the replica sets of {name}"):
        sets = client.AppsV1Api(cluster.api).list_namespaced_replica_set(
            namespace, label_selector=f"app.kubernetes.io/instance={name}", _request_timeout=15).items
    owned: list[Any] = [s.metadata for s in sets
                        if s.metadata and any(o.name == name for o in (s.metadata.owner_references or []))]
    if not owned:
        return None
    newest = max(owned, key=lambda meta: int((meta.annotations or {}).get("deployment.kubernetes.io/revision", 0)))
    return str((newest.labels or {}).get("pod-template-hash") or "") or None


def wait(cluster: Cluster, name: str, spec: DeploySpec, settings: KubeSettings, *, timeout: float,
         memory_peak_gb: float | None = None) -> None:
    """Block until the rollout of Deployment ``name`` is complete, reporting ready replicas on ``spec.progress``.

    Raises:
        DeployError: a new pod cannot start (the reason in the user's terms), or ``timeout`` seconds passed.
    """
    steps = Steps.of(spec.progress)
    namespace = settings.namespace
    deadline = time.monotonic() + timeout
    unschedulable_since: dict[str, float] = {}
    said = ""
    while True:
        body = cluster.get("apps/v1", "Deployment", name, namespace)
        if body is None:
            raise DeployError(f"Deployment/{name} is gone from namespace {namespace!r} (deleted by someone else?).")
        status = body.get("status") or {}
        wanted = int((body.get("spec") or {}).get("replicas") or 1)
        seen = int(status.get("observedGeneration") or 0) >= int(body["metadata"].get("generation") or 0)
        updated, ready = int(status.get("updatedReplicas") or 0), int(status.get("readyReplicas") or 0)
        available, total = int(status.get("availableReplicas") or 0), int(status.get("replicas") or 0)
        if seen and updated >= wanted and available >= wanted and total == updated:
            steps.say(f"rolled out: {available}/{wanted} pods ready")
            return
        template = _newest_template_hash(cluster, name, namespace)
        new_pods = [p for p in cluster.pods(name, namespace)
                    if template and (p.metadata.labels or {}).get("pod-template-hash") == template]
        reason = ""
        for pod in new_pods:
            problem, reason = _pod_problem(cluster, pod, spec, settings, memory_peak_gb)
            if problem:
                raise problem
            if reason == "Unschedulable":
                first = unschedulable_since.setdefault(pod.metadata.name, time.monotonic())
                if time.monotonic() - first > UNSCHEDULABLE_GRACE:
                    problem = _unschedulable(cluster, pod, spec, settings, waited=time.monotonic() - first)
                    if problem is not None:
                        raise problem
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
                raise DeployError(f"Deployment {spec.service!r} of {spec.version.ref} did not progress: "
                                  f"{condition.get('message')}")
        now = f"rolling out {spec.version.ref}: {min(ready, updated)}/{wanted} new pods ready" + (
            f" ({reason})" if reason else "")
        if now != said:
            steps.say(now)
            said = now
        else:
            steps.tick()
        if time.monotonic() > deadline:
            raise DeployError(f"Deployment {spec.service!r} of {spec.version.ref} was not rolled out after "
                              f"{timeout:.0f} s: {min(ready, updated)}/{wanted} new pods ready "
                              f"({reason or 'waiting'}).")
        time.sleep(0.5)


def wait_retired(cluster: Cluster, name: str, namespace: str, *, timeout: float) -> None:
    """After a rollout: block until no pod of an older template still runs (a retiring pod keeps serving while
    it drains; when the keys changed, what it accepts must stop being accepted before the caller is told).

    Raises:
        DeployError: some still run after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        template = _newest_template_hash(cluster, name, namespace)
        old = [p.metadata.name for p in cluster.running_pods(name, namespace)
               if (p.metadata.labels or {}).get("pod-template-hash") != template]
        if not old:
            return
        if time.monotonic() > deadline:
            raise DeployError(f"The pods of {name}'s previous rollout ({', '.join(old)}) still run after "
                              f"{timeout:.0f} s; until they stop they accept what they accepted before.")
        time.sleep(0.3)


def _pod_problem(cluster: Cluster, pod: Any, spec: DeploySpec, settings: KubeSettings,
                 memory_peak_gb: float | None) -> tuple[DeployError | None, str]:
    """(the error that ends the rollout, or None; what the pod waits for now, in a word)."""
    status = pod.status
    for condition in status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            return None, str(condition.reason or "Pending")
    statuses = [*(status.init_container_statuses or []), *(status.container_statuses or [])]
    waiting = ""
    for container in statuses:
        state, last = container.state, container.last_state
        if state.waiting is not None:
            waiting = str(state.waiting.reason or "waiting")
            if waiting in _PULL_FAILURES:
                return DeployError(
                    f"Deployment {spec.service!r} of {spec.version.ref} failed: the image {container.image} cannot "
                    f"be pulled on node {pod.spec.node_name}: {state.waiting.message or waiting}. The nodes pull from"
                    " a registry unless they share this machine's Docker engine: push it there with --registry "
                    "HOST/REPO."), waiting
            if waiting == "CreateContainerConfigError":
                return DeployError(f"Deployment {spec.service!r} could not create its container: "
                                   f"{state.waiting.message}"), waiting
        ended = state.terminated or last.terminated
        if ended is not None and (ended.exit_code or 0) != 0:
            previous = state.terminated is None  # it ended before, and runs (or waits) again now
            return _ended(cluster, pod, container.name, ended, previous, spec, settings, memory_peak_gb), "crashed"
    return None, waiting or str(status.phase or "")


def _ended(cluster: Cluster, pod: Any, container: str, ended: Any, previous: bool, spec: DeploySpec,
           settings: KubeSettings, memory_peak_gb: float | None) -> DeployError:
    if ended.reason == "OOMKilled" or ended.exit_code == 137:
        limit = f"{settings.memory_gb_limit} GB" if settings.memory_gb_limit else "no limit set (the node's memory)"
        peak = (f"; its profile measured a peak of {memory_peak_gb:.2f} GB" if memory_peak_gb is not None else
                "; %profile measures what it needs")
        return DeployError(f"Deployment {spec.service!r} of {spec.version.ref} failed: its server was killed for "
                           f"lack of memory (memory_gb_limit: {limit}{peak}). Deploy it with a higher "
                           "memory_gb_limit (--set memory_gb_limit=2).")
    log = cluster.log(pod.metadata.name, settings.namespace, tail=_LOG_TAIL, previous=previous,
                      container=container) or cluster.log(pod.metadata.name, settings.namespace, tail=_LOG_TAIL,
                                                          container=container)
    if container == "keys":
        return DeployError(f"Deployment {spec.service!r} failed: copying its keys into the pod failed "
                           f"(exit status {ended.exit_code}).\n{log}")
    log = map_script_lines(log, SCRIPT, spec.script_line_offset)
    return start_failure(spec, f"its server exited with status {ended.exit_code} in pod {pod.metadata.name}", log,
                         f"%logs {spec.service} (or kubectl logs -n {settings.namespace} {pod.metadata.name})")


def _unschedulable(cluster: Cluster, pod: Any, spec: DeploySpec, settings: KubeSettings, *,
                   waited: float) -> DeployError | None:
    """Why no node takes the pod (None: its claim's volume is still being provisioned, wait on)."""
    said = next((c.message for c in pod.status.conditions or [] if c.type == "PodScheduled"), "") or ""
    if "PersistentVolumeClaim" in said:
        return _unbound_claim(cluster, said, spec, settings, waited=waited)
    nodes = "; ".join(f"{name}: {cpu} CPU, {memory}" for name, cpu, memory in cluster.node_capacity())
    return DeployError(
        f"Deployment {spec.service!r} of {spec.version.ref} failed: no node can run its pod ({said}). Each pod asks "
        f"for {settings.cpu} CPU and {settings.memory_gb} GB; the nodes can give: {nodes or 'none'}. Ask for less "
        "(--set cpu=0.1 --set memory_gb=0.25) or fewer replicas, or add nodes.")


def _unbound_claim(cluster: Cluster, said: str, spec: DeploySpec, settings: KubeSettings, *,
                   waited: float) -> DeployError | None:
    """The pod waits for its data claim: why the claim has no volume, and the ways out (None while a
    provisioner is making it, up to PROVISIONING_GRACE)."""
    name = f"{object_name(spec.service)}-data"
    found = cluster.get("v1", "PersistentVolumeClaim", name, settings.namespace) or {}
    claim_spec = found.get("spec") or {}
    events = cluster.events("PersistentVolumeClaim", name, settings.namespace)
    if events and events[-1][0] not in _CANNOT_PROVISION and waited < PROVISIONING_GRACE:
        return None
    storage = (f"storage class {claim_spec['storageClassName']!r}" if claim_spec.get("storageClassName") else
               "the cluster's default storage class")
    many = "ReadWriteMany" in (claim_spec.get("accessModes") or [])
    return DeployError(
        f"Deployment {spec.service!r} of {spec.version.ref} failed: its pods wait for PersistentVolumeClaim "
        f"{name!r}, which has no volume ({events[-1][1] if events else said}). It asks {storage} for "
        + ("ReadWriteMany storage (several pods write to it), which few classes provide: on AKS --set "
           "storage_class=azurefile-csi; " if many else "a volume: name a class the cluster has (--set "
                                                        "storage_class=NAME; kubectl get storageclass); ")
        + "or keep collected data on the node (--set data_volume=host, with --set network=host on a one-node "
          "cluster), or collect nothing there (--set data_volume=none).")

"""The ``kubernetes`` target: the model's image served by a Deployment on a cluster, behind a Service, optionally
autoscaled, with its keys in a Secret.

The image is built on this machine's Docker engine (as for the ``docker`` target); a cluster whose nodes use that
engine runs it as is, any other pulls it from the registry it is pushed to (``image_registry``). Updates are
rolling (no serving pod goes before its successor is ready); a failed first deploy leaves nothing behind, a
failed update leaves the previous version serving.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops_magics.errors import DeployError, EngineError, InvalidInputError
from mlops_magics.packaging.image import write_spec_context
from mlops_magics.packaging.spec import DeploySpec
from mlops_magics.registry import Deployment, Registry
from mlops_magics.targets.base import Steps, data_dir
from mlops_magics.targets.kube import forward, manifests, rollout
from mlops_magics.targets.kube.cluster import Cluster, connect, pod_state
from mlops_magics.targets.kube.manifests import Layout
from mlops_magics.targets.kube.settings import KubeSettings, settings
from mlops_magics.targets.local import answers_ready, map_script_lines, replace_failed, script_record
from mlops_magics.targets.process import free_port

#: Seconds a rollout may take (image present); a pull from a registry counts in it.
ROLLOUT_TIMEOUT = 300.0
#: The user pods run as when this machine's user is root (pods never run as root).
POD_USER = 10001
#: Settings never recorded (the keys live in the key store and the Secret only).
_SECRET_SETTINGS = ("primary_key", "secondary_key")


def pod_user() -> tuple[int, int]:
    """The uid and gid the server runs as: this machine's user (so a host data folder is theirs), never root."""
    uid, gid = os.getuid(), os.getgid()
    return (uid, gid) if uid != 0 else (POD_USER, POD_USER)


class KubernetesTarget:
    """Deployments on a Kubernetes cluster (the current kubeconfig context, or ``context``)."""

    name = "kubernetes"

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # -- what is deployed, and where ------------------------------------------------------------

    def settings(self, spec: DeploySpec) -> KubeSettings:
        """The spec's Kubernetes settings; ``auth`` and ``collect`` of the spec and of the settings agree. Without
        CPU and memory requests, each pod asks for what the version's profile recommended (Azure's way)."""
        options = dict(spec.target_options)
        if not {"cpu", "cpu_cores", "memory_gb"} & set(options):
            options = {**profiled_requests(self.registry, spec), **options}
        chosen = settings(options)
        return dataclasses.replace(chosen, auth=chosen.auth or spec.auth, collect=chosen.collect or spec.collect)

    def cluster(self, chosen: KubeSettings) -> Cluster:
        """The cluster of ``chosen.context``, checked to answer.

        Raises:
            EngineError: no kubeconfig, no such context, or no API server answers.
        """
        cluster = connect(chosen.context)
        cluster.version()
        return cluster

    def plan(self, spec: DeploySpec, *, cluster: Cluster | None = None,
             keys: tuple[str, str] | None = None, port: int | None = None) -> tuple[KubeSettings, Layout,
                                                                                   list[dict[str, Any]]]:
        """The settings, layout and objects of ``spec`` (writes the image's build context, builds nothing). With
        no ``cluster`` the autoscaler's API is ``autoscaling/v2`` (what current clusters serve)."""
        chosen = self.settings(spec)
        # auth and collection asked for as settings (Azure's auth_enabled, collect_model_data) shape the objects too
        spec = dataclasses.replace(spec, auth=chosen.auth, collect=chosen.collect)
        context = write_spec_context(self.registry, spec, base=spec.base_image)
        image = context.tag if chosen.image_registry is None else pushed_name(context.tag, chosen.image_registry)
        uid, gid = pod_user()
        chosen_port = port or chosen.port or spec.port or (free_port() if chosen.network == "host" else
                                                            manifests.POD_PORT)
        layout = Layout(image=image, port=chosen_port, uid=uid, gid=gid,
                        host_data=str(data_dir(self.registry.home, spec.service)) if chosen.volume == "host" else None,
                        keys_digest=None if keys is None else hashlib.sha256("\n".join(keys).encode()).hexdigest(),
                        hpa_api=cluster.hpa_api() if cluster is not None and chosen.autoscale else "autoscaling/v2")
        return chosen, layout, manifests.manifests(spec, chosen, layout, keys)

    # -- the contract -----------------------------------------------------------------------

    def deploy(self, spec: DeploySpec) -> Deployment:
        if spec.isolated:
            raise InvalidInputError("--isolated applies to the local target: a pod is isolated already.")
        if spec.cpu is not None or spec.memory is not None:
            raise InvalidInputError("--cpu and --memory are Docker's limits; on Kubernetes give what each pod asks "
                                    "for and may use: --set cpu=0.5 --set memory_gb=1 --set cpu_limit=1 "
                                    "--set memory_gb_limit=2 (Azure's cpu_cores, memory_gb, ... work too).")
        chosen = self.settings(spec)
        steps = Steps.of(spec.progress)
        steps.say(f"connecting to the cluster ({chosen.context or 'current context'})")
        cluster = self.cluster(chosen)
        image = self._image(spec, chosen)
        keys = self._keys(spec, chosen)
        try:
            chosen, layout, objects = self.plan(spec, cluster=cluster, keys=keys)
            name = manifests.object_name(spec.service)
            if chosen.volume == "host":
                own_folder(Path(str(layout.host_data)), layout.uid, layout.gid)
            config = self._config(spec, chosen, layout, cluster, objects, image)
            try:
                self._apply(cluster, objects, steps)
                rollout.wait(cluster, name, spec, chosen, timeout=ROLLOUT_TIMEOUT, memory_peak_gb=self._peak(spec))
            except BaseException:
                steps.say("removing what was applied")
                cluster.delete_service(name, chosen.namespace)
                self.registry.record_deployment(spec.service, spec.version.ref, target=self.name, state="failed",
                                                url=None, config=config)
                raise
            return self.registry.record_deployment(spec.service, spec.version.ref, target=self.name,
                                                   state="running", url=self._url(spec, chosen, layout), config=config)
        except BaseException:
            self.registry.keys.remove(spec.service)
            raise

    def replace(self, deployment: Deployment, spec: DeploySpec) -> Deployment:
        config = deployment.config
        recorded = {k: v for k, v in dict(config.get("settings") or {}).items() if k not in _SECRET_SETTINGS}
        spec = dataclasses.replace(spec, target_options={**recorded, **spec.target_options},
                                   auth=bool(config.get("auth")), collect=bool(config.get("collect")),
                                   sample_rate=float(config.get("sample_rate") or spec.sample_rate))
        chosen = self.settings(spec)
        steps = Steps.of(spec.progress)
        cluster = self.cluster(chosen)
        image = self._image(spec, chosen)
        kept = self.registry.keys.get(deployment.name) if chosen.auth else None
        keys = None if kept is None else (kept.primary, kept.secondary)
        chosen, layout, objects = self.plan(spec, cluster=cluster, keys=keys, port=int(config["port"]))
        new = self._config(spec, chosen, layout, cluster, objects, image)
        try:
            self._apply(cluster, objects, steps)
            rollout.wait(cluster, manifests.object_name(spec.service), spec, chosen, timeout=ROLLOUT_TIMEOUT,
                         memory_peak_gb=self._peak(spec))
        except DeployError as exc:
            steps.say("rolling back to the previous version")
            previous = [o for o in config.get("objects") or [] if o.get("kind") == "Deployment"]
            for body in previous:  # its pods never went away (maxUnavailable 0): the old template takes over again
                cluster.apply(body)
            raise replace_failed(deployment, spec, exc) from None
        return self.registry.record_deployment(deployment.name, spec.version.ref, target=self.name,
                                               state="running", url=self._url(spec, chosen, layout), config=new)

    def delete(self, deployment: Deployment) -> None:
        config = deployment.config
        namespace = str(config.get("namespace") or "mlops")
        try:
            cluster = connect(config.get("context"))
        except EngineError:
            if deployment.state != "failed":
                raise
            cluster = None  # a failed deploy removed its objects already
        if cluster is not None:
            name = str(config.get("object") or manifests.object_name(deployment.name))
            forward.stop(cluster.context, name, namespace)
            if self._volume(deployment) == "claim" and deployment.state != "failed":
                # the servers write their last records as they stop: copy the claim out once they are gone
                cluster.delete_service(name, namespace, keep=("PersistentVolumeClaim",))
                cluster.wait_pods_gone(name, namespace, timeout=60)
                self._copy_out_of_claim(deployment, cluster)
            cluster.delete_service(name, namespace)
            cluster.wait_pods_gone(name, namespace, timeout=60)
            if self._volume(deployment) == "claim":
                self._wait_claim_gone(cluster, f"{name}-data", name, namespace)
        self.registry.keys.remove(deployment.name)
        self.registry.set_deployment_state(deployment.name, "deleted")

    @staticmethod
    def _wait_claim_gone(cluster: Cluster, claim: str, name: str, namespace: str) -> None:
        """A claim goes once no pod object names it (a redeploy must not find it going): the stopped pods' objects
        are removed rather than waited for.

        Raises:
            DeployError: it is still there after 60 s (its data is kept; what to do is said).
        """
        deadline = time.monotonic() + 60
        while cluster.get("v1", "PersistentVolumeClaim", claim, namespace) is not None:
            cluster.remove_stopped_pods(name, namespace)
            if time.monotonic() > deadline:
                raise DeployError(f"PersistentVolumeClaim {claim!r} in namespace {namespace!r} was not removed "
                                  f"within 60 s (kubectl describe pvc {claim} -n {namespace} says what holds it); "
                                  "the collected data was copied to this machine first.")
            time.sleep(0.5)

    def status(self, deployment: Deployment) -> str:
        config = deployment.config
        try:
            cluster = connect(config.get("context"))
            body = cluster.get("apps/v1", "Deployment", str(config.get("object")), str(config.get("namespace")))
        except EngineError:
            return deployment.state  # the cluster is away: nothing is known, nothing is changed
        if body is None:
            return "stopped"
        available = int((body.get("status") or {}).get("availableReplicas") or 0)
        if available < 1:
            return "unhealthy"
        if config.get("network") == "host" and config.get("reach", "direct") == "direct":
            return "running" if answers_ready(int(config["port"])) else "unhealthy"
        return "running"

    def logs(self, deployment: Deployment, lines: int) -> str:
        config = deployment.config
        cluster = connect(config.get("context"))
        namespace = str(config.get("namespace"))
        pods = cluster.pods(str(config.get("object")), namespace)
        if not pods:
            return f"[mlops] {deployment.name} has no pod on the cluster ({cluster.where()})."
        parts = []
        for pod in pods:
            text = cluster.log(pod.metadata.name, namespace, tail=lines).rstrip()
            if not text:
                text = {"stopping": "(no log left: the pod is stopping)", "stopped": "(no log: its container is gone)"
                        }.get(pod_state(pod), "(no log yet: its container has not started)")
            parts.append(f"[mlops] pod {pod.metadata.name} ({pod_state(pod)}):\n{text}")
        return map_script_lines("\n".join(parts), manifests.SCRIPT, config.get("script_line_offset"))

    def fetch_collected(self, deployment: Deployment) -> None:
        """With ``data_volume='claim'``: copy what the pods collected into this machine's data folder (which
        ``%collected`` and ``%monitor`` read). A no-op for the other volumes (the folder is this machine's)."""
        if self._volume(deployment) != "claim" or not deployment.is_live:
            return
        config = deployment.config
        cluster = connect(config.get("context"))
        running = [p for p in cluster.pods(str(config["object"]), str(config["namespace"]))
                   if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
        if running:
            self._unpack(deployment, cluster.fetch_tree(running[0].metadata.name, str(config["namespace"]),
                                                        f"{manifests.DATA}/collected"))

    def _volume(self, deployment: Deployment) -> str:
        recorded = {k: v for k, v in dict(deployment.config.get("settings") or {}).items()
                    if k not in _SECRET_SETTINGS}
        return settings(recorded).volume if recorded else "none"

    def _copy_out_of_claim(self, deployment: Deployment, cluster: Cluster) -> None:
        config = deployment.config
        namespace = str(config["namespace"])
        uid, gid = pod_user()
        body = manifests.reader(deployment.name, namespace, str(config["image"]), uid, gid)
        cluster.apply(body)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            found = cluster.get("v1", "Pod", body["metadata"]["name"], namespace) or {}
            if (found.get("status") or {}).get("phase") == "Running":
                self._unpack(deployment, cluster.fetch_tree(body["metadata"]["name"], namespace,
                                                            f"{manifests.DATA}/collected"))
                return
            time.sleep(0.5)
        raise DeployError(f"The pod that reads {deployment.name!r}'s collected data did not start within 90 s: the "
                          "claim and its data are kept (kubectl get pvc -n " + namespace + ").")

    def _unpack(self, deployment: Deployment, archive: bytes) -> None:
        """Make this machine's copy of the collected data what the claim holds (a mirror: the writers rename their
        files as they go, so a merge would keep stale copies)."""
        import io
        import shutil
        import tarfile
        import tempfile

        folder = data_dir(self.registry.home, deployment.name) / "collected"
        folder.parent.mkdir(parents=True, exist_ok=True)
        fresh = Path(tempfile.mkdtemp(prefix=".collected-", dir=folder.parent))
        try:
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(fresh, filter="data")  # no path outside the folder, no links out, no devices
            old = folder.with_name(f".collected-old-{os.getpid()}")
            if folder.exists():
                folder.rename(old)
            fresh.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(fresh, ignore_errors=True)

    def local_url(self, deployment: Deployment) -> str:
        """The service's URL, or with ``reach='port-forward'`` a local port this process forwards to a ready pod."""
        config = deployment.config
        if config.get("reach", "direct") == "direct":
            return str(deployment.url)
        return forward.forwarder(connect(config.get("context")), str(config["object"]), str(config["namespace"]),
                                 int(config["port"])).url

    def describe(self, deployment: Deployment) -> str:
        """Ready and wanted pods, and the autoscaler's bounds and state ("2/2 pods ready; autoscaled 1-4 at 70% CPU,
        CPU use unknown: the cluster has no metrics server")."""
        config = deployment.config
        try:
            cluster = connect(config.get("context"))
            name, namespace = str(config.get("object")), str(config.get("namespace"))
            body = cluster.get("apps/v1", "Deployment", name, namespace)
            hpa = cluster.get(str(config.get("hpa_api") or "autoscaling/v2"), "HorizontalPodAutoscaler", name,
                              namespace) if (config.get("settings") or {}).get("autoscale") else None
        except EngineError:
            return "the cluster does not answer"
        if body is None:
            return "not on the cluster"
        status = body.get("status") or {}
        wanted = int((body.get("spec") or {}).get("replicas") or 0)
        line = f"{int(status.get('readyReplicas') or 0)}/{wanted} pods ready"
        if hpa is not None:
            spec, state = hpa.get("spec") or {}, hpa.get("status") or {}
            metric = (spec.get("metrics") or [{}])[0].get("resource", {}).get("target", {})
            line += (f"; autoscaled {spec.get('minReplicas')}-{spec.get('maxReplicas')} at "
                     f"{metric.get('averageUtilization')}% CPU")
            inactive = [c for c in state.get("conditions") or [] if c.get("type") == "ScalingActive"
                        and c.get("status") == "False"]
            if inactive:
                line += (", CPU use unknown: the cluster has no metrics server" if inactive[0].get("reason") ==
                         "FailedGetResourceMetric" else f", not scaling: {inactive[0].get('message')}")
        return line

    def keys_changed(self, deployment: Deployment) -> None:
        """Put the new keys in the Secret and roll the pods (they copy the keys when they start); no request fails:
        the old pods serve until new ones are ready, and return once they have stopped (the old keys are refused
        from then on)."""
        config = deployment.config
        kept = self.registry.keys.get(deployment.name)
        keys = (kept.primary, kept.secondary)
        spec = dataclasses.replace(
            self._spec_of(deployment), auth=True,
            target_options={k: v for k, v in dict(config.get("settings") or {}).items() if k not in _SECRET_SETTINGS})
        chosen = self.settings(spec)
        cluster = self.cluster(chosen)
        cluster.apply(manifests.secret(spec, chosen, keys))
        digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()
        for body in config.get("objects") or []:
            if body.get("kind") == "Deployment":
                rolled = json.loads(json.dumps(body))
                rolled["spec"]["template"]["metadata"]["annotations"]["mlops-magics/keys-sha256"] = digest
                cluster.apply(rolled)
                rollout.wait(cluster, str(config["object"]), spec, chosen, timeout=ROLLOUT_TIMEOUT)
                rollout.wait_retired(cluster, str(config["object"]), chosen.namespace, timeout=60)
                objects = [rolled if o.get("kind") == "Deployment" else o for o in config["objects"]]
                self.registry.record_deployment(deployment.name, spec.version.ref, target=self.name,
                                                state=deployment.state, url=deployment.url,
                                                config={**config, "objects": objects})

    def _spec_of(self, deployment: Deployment) -> DeploySpec:
        from mlops_magics.packaging.spec import deploy_spec

        return deploy_spec(self.registry, deployment.name, f"{deployment.model_name}:{deployment.model_version}")

    def follow(self, deployment: Deployment, timeout: float | None) -> Iterator[str]:
        """The new log lines of the service's newest pod as they come (mapped to the cell's lines), until
        ``timeout`` seconds pass or the pod stops."""
        config = deployment.config
        cluster = connect(config.get("context"))
        namespace = str(config.get("namespace"))
        pods = cluster.pods(str(config.get("object")), namespace)
        if not pods:
            return
        lines: queue.Queue[str | None] = queue.Queue()
        stream = cluster.log_stream(pods[0].metadata.name, namespace)

        def read() -> None:
            try:
                partial = b""
                for chunk in stream.stream(1024):
                    *done, partial = (partial + chunk).split(b"\n")
                    for line in done:
                        lines.put(line.decode(errors="replace"))
            except Exception:  # noqa: BLE001 - the stream ended or was closed: the follow ends
                pass
            lines.put(None)

        threading.Thread(target=read, daemon=True, name=f"follow-{deployment.name}").start()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while deadline is None or time.monotonic() < deadline:
                try:
                    line = lines.get(timeout=0.2)
                except queue.Empty:
                    continue
                if line is None:
                    return
                yield map_script_lines(line, manifests.SCRIPT, config.get("script_line_offset"))
        finally:
            stream.close()  # the reader's blocked read ends with it

    def log_file(self, deployment: Deployment) -> tuple[Path, str]:
        raise InvalidInputError(f"{deployment.name} runs on Kubernetes: its log is the pods' (%logs "
                                f"{deployment.name}), not a file of this machine.")

    # -- parts ------------------------------------------------------------------------------

    def _image(self, spec: DeploySpec, chosen: KubeSettings) -> str:
        """The image the pods run: built on this engine (unless present), pushed when a registry is set."""
        from mlops_magics.targets.docker import DockerTarget

        local = DockerTarget(self.registry)
        built = local.image(spec)
        if chosen.image_registry is None:
            return built.tag
        return push(local.engine, built.tag, chosen.image_registry, Steps.of(spec.progress))

    def _keys(self, spec: DeploySpec, chosen: KubeSettings) -> tuple[str, str] | None:
        if not chosen.auth:
            return None
        keys = self.registry.keys.create(spec.service)
        if chosen.primary_key or chosen.secondary_key:
            from mlops_magics.registry.secrets import ServiceKeys

            keys = ServiceKeys(spec.service, chosen.primary_key or keys.primary,
                               chosen.secondary_key or keys.secondary)
            self.registry.keys.put(keys)
        return keys.primary, keys.secondary

    def _apply(self, cluster: Cluster, objects: list[dict[str, Any]], steps: Steps) -> None:
        for body in objects:
            if body["kind"] == "Namespace" and cluster.get("v1", "Namespace", body["metadata"]["name"], None):
                continue  # an existing namespace is the user's: not ours to take over
            steps.say(f"applying {body['kind']}/{body['metadata']['name']}")
            cluster.apply(body)
            if body["kind"] == "Namespace":  # its pods are refused until its default service account exists
                cluster.wait_service_account(body["metadata"]["name"])

    def _config(self, spec: DeploySpec, chosen: KubeSettings, layout: Layout, cluster: Cluster,
                objects: list[dict[str, Any]], image: str) -> dict[str, Any]:
        shown = {k: v for k, v in dataclasses.asdict(chosen).items() if k not in _SECRET_SETTINGS}
        kept = [o for o in objects if o["kind"] != "Secret"]  # never a key in the registry
        return {"context": cluster.context, "namespace": chosen.namespace,
                "object": manifests.object_name(spec.service), "network": chosen.network, "port": layout.port,
                "image": image, "workers": spec.workers,
                "auth": chosen.auth, "collect": chosen.collect, "sample_rate": spec.sample_rate,
                "key_file": str(self.registry.keys.path(spec.service)) if chosen.auth else None,
                "script_line_offset": spec.script_line_offset, "settings": shown, "objects": kept,
                "hpa_api": layout.hpa_api, "reach": chosen.reaching, **script_record(spec)}

    def _url(self, spec: DeploySpec, chosen: KubeSettings, layout: Layout) -> str:
        """Where the service answers: 127.0.0.1 with host networking, else the Service's address in the cluster."""
        if chosen.network == "host":
            return f"http://127.0.0.1:{layout.port}"
        return (f"http://{manifests.object_name(spec.service)}.{chosen.namespace}.svc.cluster.local:"
                f"{manifests.SERVICE_PORT}")

    def _peak(self, spec: DeploySpec) -> float | None:
        report = self.registry.reports(spec.version).get("profile") or {}
        peak = report.get("peakMemoryInGB") or report.get("recommendedMemoryInGB")
        return float(peak) if peak is not None else None


def profiled_requests(registry: Registry, spec: DeploySpec) -> dict[str, float]:
    """What each pod should ask for, as the version's profile under real limits recommended ({} without one)."""
    report = registry.reports(spec.version).get("profile")
    if not report or not report.get("limits_applied") or report.get("recommendedCpu") is None:
        return {}
    return {"cpu": float(report["recommendedCpu"]), "memory_gb": float(report["recommendedMemoryInGB"])}


def pushed_name(tag: str, image_registry: str) -> str:
    """Where ``tag`` (``mlops/iris:1-abc``) lives in ``image_registry`` (``HOST/REPO``): ``HOST/REPO/iris:1-abc``."""
    repository, _, version = tag.rpartition(":")
    return f"{image_registry.rstrip('/')}/{repository.rsplit('/', 1)[-1]}:{version}"


def push(engine: Any, tag: str, image_registry: str, steps: Steps) -> str:
    """Tag ``tag`` for ``image_registry`` and push it with the docker SDK; the pushed reference.

    Raises:
        DeployError: the registry refused it or could not be reached (its own words).
    """
    target = pushed_name(tag, image_registry)
    repository, _, version = target.rpartition(":")
    engine.images.get(tag).tag(repository, version)
    steps.say(f"pushing {target}")
    for event in engine.images.push(repository, version, stream=True, decode=True):
        if "error" in event:
            raise DeployError(f"Pushing {target} failed: {event.get('error')}. Is the registry {image_registry} "
                              "running, and may this machine push to it (docker login)?")
        steps.tick()
    return target


def own_folder(folder: Path, uid: int, gid: int) -> None:
    """Make a host folder (a service's data, an endpoint's traffic), writable by the pods' user."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:
        for path in (folder, *folder.rglob("*")):
            os.chown(path, uid, gid)

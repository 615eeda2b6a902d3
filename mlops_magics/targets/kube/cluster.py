"""Talking to a Kubernetes cluster with the official client: connecting (kubeconfig and context), discovery,
server-side apply, what an apply would change, deleting a service's objects, reading pods and their logs.

Every call has a timeout; an API server that does not answer is one :class:`~mlops_magics.errors.EngineError`
saying what was tried (the kubeconfig path, the context, the server's address).
"""

from __future__ import annotations

import difflib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from mlops_magics.errors import DeployError, EngineError, NotFoundError
from mlops_magics.registry.refs import did_you_mean
from mlops_magics.targets.kube.manifests import INSTANCE, MANAGER

#: Seconds any single API call may take.
CALL_TIMEOUT = 15.0
#: What a service's (or an endpoint router's) objects may be, in the order they are deleted (the autoscaler first:
#: it would scale back up).
KINDS = (("autoscaling/v2", "HorizontalPodAutoscaler"), ("autoscaling/v2beta2", "HorizontalPodAutoscaler"),
         ("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "Secret"), ("v1", "Pod"), ("v1", "PersistentVolumeClaim"),
         ("v1", "ConfigMap"))
#: Fields the server sets that an apply never changes: left out of diffs.
_SERVER_FIELDS = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp", "selfLink")


def kubeconfig_path() -> str:
    """The kubeconfig file the client reads: ``$KUBECONFIG`` (its first file) or ``~/.kube/config``."""
    configured = os.environ.get("KUBECONFIG", "")
    return configured.split(os.pathsep)[0] if configured else str(Path("~/.kube/config").expanduser())


_CONNECTED: dict[tuple[str, float, str | None], Cluster] = {}
_CONNECTING = threading.Lock()


def connect(context: str | None = None, kubeconfig: str | None = None) -> Cluster:
    """The cluster of ``context`` in ``kubeconfig``, one connection pool per process (reused while the kubeconfig
    file is unchanged).

    Raises:
        EngineError: see :class:`Cluster`.
    """
    path = kubeconfig or kubeconfig_path()
    try:
        changed = os.stat(path).st_mtime
    except OSError:
        changed = -1.0
    key = (path, changed, context)
    with _CONNECTING:
        found = _CONNECTED.get(key)
        if found is None:
            found = _CONNECTED[key] = Cluster(context, path)
        return found


class Cluster:
    """One cluster, reached through one kubeconfig context (use :func:`connect`: one per process)."""

    def __init__(self, context: str | None = None, kubeconfig: str | None = None) -> None:
        """Connect (lazily: the first call reaches the API server).

        Raises:
            EngineError: no kubeconfig, no such context, or no API server answers; the message says what was tried.
        """
        from kubernetes import config

        self.kubeconfig = kubeconfig or kubeconfig_path()
        try:
            contexts, current = config.list_kube_config_contexts(config_file=self.kubeconfig)
        except (config.ConfigException, OSError) as exc:
            raise EngineError(
                f"No Kubernetes cluster is configured: the kubeconfig {self.kubeconfig} could not be read ({exc}). "
                "Point KUBECONFIG at one (a local test cluster: `sudo make kube-cluster` prints it), or give "
                "--context.") from None
        names = [c["name"] for c in contexts]
        if context is not None and context not in names:
            raise EngineError(f"No context {context!r} in {self.kubeconfig}.{did_you_mean(context, names)} "
                              f"Contexts: {', '.join(names) or 'none'}.")
        self.context = context or current["name"]
        try:
            self.api = config.new_client_from_config(config_file=self.kubeconfig, context=self.context)
        except config.ConfigException as exc:
            raise EngineError(f"The context {self.context!r} of {self.kubeconfig} cannot be used: {exc}") from None
        self.api.configuration.retries = 1
        self.server = str(self.api.configuration.host)
        self._dynamic: Any = None

    def where(self) -> str:
        """The cluster in words, for messages: context, server, kubeconfig."""
        return f"context {self.context!r} ({self.server}, kubeconfig {self.kubeconfig})"

    @contextmanager
    def answering(self, doing: str) -> Iterator[None]:
        """Turn a cluster that does not answer into an :class:`EngineError` that says what was being done where."""
        import urllib3

        try:
            yield
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise EngineError(f"The Kubernetes API server did not answer while {doing}: {self.where()}: "
                              f"{type(exc).__name__}: {exc}. Is the cluster running?") from None

    @property
    def dynamic(self) -> Any:
        """The dynamic client (discovery on first use)."""
        if self._dynamic is None:
            from kubernetes import dynamic

            with self.answering("discovering its APIs"):
                self._dynamic = dynamic.DynamicClient(self.api)
        return self._dynamic

    def version(self) -> str:
        """The server's Kubernetes version (``v1.20.2``), a call that proves it answers."""
        from kubernetes import client

        with self.answering("asking its version"):
            return str(client.VersionApi(self.api).get_code(_request_timeout=CALL_TIMEOUT).git_version)

    def serves(self, api_version: str, kind: str) -> bool:
        """True when the cluster serves ``kind`` in ``api_version``."""
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            return False
        return True

    def hpa_api(self) -> str:
        """The autoscaling API version to use: ``autoscaling/v2`` (1.23+), else ``autoscaling/v2beta2``.

        Raises:
            DeployError: the cluster serves neither.
        """
        for api_version in ("autoscaling/v2", "autoscaling/v2beta2"):
            if self.serves(api_version, "HorizontalPodAutoscaler"):
                return api_version
        raise DeployError(f"The cluster ({self.where()}) serves no HorizontalPodAutoscaler API this target knows "
                          "(autoscaling/v2 or v2beta2): deploy without --autoscale, with --replicas.")

    def _resource(self, body: Mapping[str, Any]) -> Any:
        return self.dynamic.resources.get(api_version=body["apiVersion"], kind=body["kind"])

    def apply(self, body: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply ``body`` as mlops-magics (taking over fields other managers set); the object as the
        server has it (with ``dry_run``: as it would have it)."""
        from kubernetes.client.exceptions import ApiException

        metadata = body["metadata"]
        extra: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        with self.answering(f"applying {body['kind']}/{metadata['name']}"):
            try:
                result = self.dynamic.server_side_apply(
                    self._resource(body), body=dict(body), name=metadata["name"], namespace=metadata.get("namespace"),
                    field_manager=MANAGER, force_conflicts=True, _request_timeout=CALL_TIMEOUT, **extra)
            except ApiException as exc:
                raise DeployError(f"The cluster refused {body['kind']}/{metadata['name']}: {api_reason(exc)}") from None
        return dict(result.to_dict())

    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        """The live object, or None when there is none."""
        from kubernetes.dynamic.exceptions import NotFoundError as Missing

        with self.answering(f"reading {kind}/{name}"):
            try:
                found = self.dynamic.resources.get(api_version=api_version, kind=kind).get(
                    name=name, namespace=namespace, _request_timeout=CALL_TIMEOUT)
            except Missing:
                return None
        return dict(found.to_dict())

    def diff(self, objects: list[dict[str, Any]]) -> str:
        """What applying ``objects`` would change, as a unified diff of live vs applied (the server computes the
        applied side: a dry-run apply); '' when nothing would change. In a namespace that does not exist yet
        everything is new, and the applied side is the objects as given (the server cannot dry-run into it)."""
        parts: list[str] = []
        namespaces = {body["metadata"].get("namespace") for body in objects} - {None}
        missing = {name for name in namespaces if self.get("v1", "Namespace", name, None) is None}
        for body in objects:
            if body["metadata"].get("namespace") in missing:
                live, planned = None, dict(body)
            else:
                live = self.get(body["apiVersion"], body["kind"], body["metadata"]["name"],
                                body["metadata"].get("namespace"))
                planned = self.apply(body, dry_run=True)
            before, after = _comparable(live), _comparable(planned)
            label = f"{body['kind']}/{body['metadata']['name']}"
            parts += difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                          f"live {label}" if live else f"{label} (not on the cluster)",
                                          f"applied {label}")
        return "".join(parts)

    def delete_service(self, name: str, namespace: str, *, keep: tuple[str, ...] = ()) -> list[str]:
        """Delete every object of the service ``name`` (by its labels) but the kinds in ``keep``; ``Kind/name``
        of what was deleted. Idempotent: nothing left is not an error."""
        from kubernetes.client.exceptions import ApiException

        selector = f"{INSTANCE}={name},app.kubernetes.io/managed-by={MANAGER}"
        deleted = []
        for api_version, kind in KINDS:
            if kind in keep or not self.serves(api_version, kind):
                continue
            resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
            with self.answering(f"deleting the {kind} objects of {name}"):
                found = resource.get(namespace=namespace, label_selector=selector, _request_timeout=CALL_TIMEOUT)
                for item in found.items:
                    try:
                        resource.delete(name=item.metadata.name, namespace=namespace, _request_timeout=CALL_TIMEOUT,
                                        propagation_policy="Background")
                        deleted.append(f"{kind}/{item.metadata.name}")
                    except ApiException as exc:
                        if exc.status != 404:
                            raise DeployError(f"The cluster refused to delete {kind}/{item.metadata.name}: "
                                              f"{api_reason(exc)}") from None
        return deleted

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> bool:
        """Delete one object; False when it was not there.

        Raises:
            DeployError: the cluster refused (the reason said); EngineError: it does not answer.
        """
        from kubernetes.client.exceptions import ApiException

        with self.answering(f"deleting {kind}/{name}"):
            try:
                self._resource({"apiVersion": api_version, "kind": kind}).delete(
                    name=name, namespace=namespace, _request_timeout=CALL_TIMEOUT)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise DeployError(f"The cluster refused to delete {kind}/{name}: {api_reason(exc)}") from None
        return True

    def wait_service_account(self, namespace: str, timeout: float = 30.0) -> None:
        """Wait until a new namespace's ``default`` service account exists (pods are refused before).

        Raises:
            DeployError: it did not appear within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while self.get("v1", "ServiceAccount", "default", namespace) is None:
            if time.monotonic() > deadline:
                raise DeployError(f"Namespace {namespace!r} has no default service account after {timeout:.0f} s: "
                                  "is the cluster's controller manager running?")
            time.sleep(0.2)

    def pods(self, name: str, namespace: str) -> list[Any]:
        """The service's pods (``V1Pod``), newest first."""
        from kubernetes import client

        with self.answering(f"listing the pods of {name}"):
            found = client.CoreV1Api(self.api).list_namespaced_pod(
                namespace, label_selector=f"{INSTANCE}={name},app.kubernetes.io/managed-by={MANAGER}",
                _request_timeout=CALL_TIMEOUT).items
        return sorted(found, key=lambda p: p.metadata.creation_timestamp or 0, reverse=True)

    def running_pods(self, name: str, namespace: str) -> list[Any]:
        """The service's pods that are not stopped (being deleted with every container ended), newest first."""
        return [pod for pod in self.pods(name, namespace) if not _stopped(pod)]

    def wait_pods_gone(self, name: str, namespace: str, timeout: float = 90.0) -> bool:
        """Wait until no pod of the service runs any more: each is gone, or being deleted with every container
        ended (a kubelet may keep the object of a stopped pod for a while). False when some still run after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running_pods(name, namespace):
                return True
            time.sleep(0.5)
        return False

    def remove_stopped_pods(self, name: str, namespace: str) -> int:
        """Remove the objects of the service's stopped pods at once (their containers have ended, so nothing is
        cut short): a kubelet may keep them for up to a minute, and while one names a claim the claim cannot go.
        How many were removed."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        removed = 0
        for pod in self.pods(name, namespace):
            if not _stopped(pod):
                continue
            with self.answering(f"removing the stopped pod {pod.metadata.name}"):
                try:
                    client.CoreV1Api(self.api).delete_namespaced_pod(
                        pod.metadata.name, namespace, grace_period_seconds=0, _request_timeout=CALL_TIMEOUT)
                    removed += 1
                except ApiException as exc:
                    if exc.status != 404:
                        raise DeployError(f"The cluster refused to remove the stopped pod {pod.metadata.name}: "
                                          f"{api_reason(exc)}") from None
        return removed

    def log(self, pod: str, namespace: str, *, tail: int, previous: bool = False,
            container: str = "mlops-serve") -> str:
        """The last ``tail`` lines of a pod's server container ('' when there is none, yet or any more)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        with self.answering(f"reading the log of pod {pod}"):
            try:
                text = str(client.CoreV1Api(self.api).read_namespaced_pod_log(
                    pod, namespace, container=container, tail_lines=tail, previous=previous,
                    _request_timeout=CALL_TIMEOUT))
            except ApiException:
                return ""
        # a container already removed: the kubelet answers with this sentence in place of the log
        return "" if text.startswith("unable to retrieve container logs") else text

    def log_stream(self, pod: str, namespace: str, container: str = "mlops-serve") -> Any:
        """A streaming response of the pod's new log lines (``.stream()`` yields bytes; ``.close()`` ends it)."""
        from kubernetes import client

        with self.answering(f"following the log of pod {pod}"):
            return client.CoreV1Api(self.api).read_namespaced_pod_log(
                pod, namespace, container=container, follow=True, tail_lines=0, _preload_content=False,
                _request_timeout=(CALL_TIMEOUT, 24 * 3600))

    def fetch_tree(self, pod: str, namespace: str, folder: str, *, container: str = "mlops-serve",
                   timeout: float = 120.0) -> bytes:
        """The pod's ``folder`` as an uncompressed tar archive (made by the image's Python; base64 on the exec
        channel, which carries text). An empty archive when the folder does not exist.

        Raises:
            EngineError: the command could not run or failed (its standard error quoted), or ``timeout`` passed.
        """
        import base64

        code = ("import base64, io, os, sys, tarfile\n"
                "buffer = io.BytesIO()\n"
                "with tarfile.open(fileobj=buffer, mode='w') as archive:\n"
                f"    if os.path.isdir({folder!r}):\n"
                f"        archive.add({folder!r}, arcname='.')\n"
                "sys.stdout.write(base64.b64encode(buffer.getvalue()).decode())\n")
        return base64.b64decode(self.run_python(pod, namespace, code, container=container, timeout=timeout,
                                                doing=f"reading {folder}"))

    def run_python(self, pod: str, namespace: str, code: str, *, container: str, stdin_line: str | None = None,
                   timeout: float = 60.0, doing: str = "running a command") -> str:
        """Run ``code`` with the Python of a pod's container (exec); what it wrote on standard output. ``stdin_line``
        (one line, no newline in it) is its standard input: what must not be on a command line (keys) goes there.

        Raises:
            EngineError: the command could not run or failed (its standard error quoted), or ``timeout`` passed.
        """
        from kubernetes import client
        from kubernetes.stream import stream

        with self.answering(f"{doing} in pod {pod}"):
            ws = stream(client.CoreV1Api(self.api).connect_get_namespaced_pod_exec, pod, namespace,
                        container=container, command=["python", "-c", code], stderr=True,
                        stdin=stdin_line is not None, stdout=True, tty=False, _preload_content=False)
            out, err = [], []
            deadline = time.monotonic() + timeout
            try:
                if stdin_line is not None:
                    ws.write_stdin(stdin_line + "\n")
                while ws.is_open() and time.monotonic() < deadline:
                    ws.update(timeout=1)
                    out.append(ws.read_stdout() or "")
                    err.append(ws.read_stderr() or "")
                if ws.is_open():
                    raise EngineError(f"{doing.capitalize()} in pod {pod} took more than {timeout:.0f} s.")
                status = ws.returncode
            finally:
                ws.close()
                ws.sock.shutdown()  # a websocket the server closed first keeps its socket open otherwise
        if status != 0:
            raise EngineError(f"{doing.capitalize()} in pod {pod} failed (status {status}): "
                              f"{''.join(err).strip()[-500:]}")
        return "".join(out)

    def api_resources(self, group: str) -> dict[str, set[str]]:
        """The kinds the cluster serves in API ``group``, by version (``{'v1': {'HTTPRoute', ...}}``), asked now
        (not from a discovery cache: a custom resource definition may have come or gone); {} when it serves none.
        """
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        found: dict[str, set[str]] = {}
        with self.answering(f"discovering the {group} API"):
            groups = client.ApisApi(self.api).get_api_versions(_request_timeout=CALL_TIMEOUT).groups or []
            versions = next(([v.version for v in g.versions or []] for g in groups if g.name == group), [])
            for version in versions:
                try:
                    resources = client.CustomObjectsApi(self.api).get_api_resources(
                        group, version, _request_timeout=CALL_TIMEOUT).resources or []
                except ApiException as exc:
                    if exc.status == 404:  # a version going away as it is asked
                        continue
                    raise DeployError(f"The cluster refused to list {group}/{version}: {api_reason(exc)}") from None
                found[str(version)] = {str(r.kind) for r in resources if "/" not in str(r.name)}
        return found

    def events(self, kind: str, name: str, namespace: str) -> list[tuple[str, str]]:
        """What the cluster said of an object: (reason, message) of its events, oldest first."""
        from kubernetes import client

        with self.answering(f"reading the events of {kind}/{name}"):
            found = client.CoreV1Api(self.api).list_namespaced_event(
                namespace, field_selector=f"involvedObject.kind={kind},involvedObject.name={name}",
                _request_timeout=CALL_TIMEOUT).items
        found.sort(key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp or 0)
        return [(str(e.reason or ""), str(e.message).strip()) for e in found if e.message]

    def node_capacity(self) -> list[tuple[str, str, str]]:
        """(node, allocatable CPU, allocatable memory) of every node."""
        from kubernetes import client

        with self.answering("reading its nodes"):
            nodes = client.CoreV1Api(self.api).list_node(_request_timeout=CALL_TIMEOUT).items
        found: list[tuple[str, str, str]] = []
        for node in nodes:
            allocatable: dict[str, str] = dict((node.status.allocatable if node.status else None) or {})
            found.append((str(node.metadata.name if node.metadata else "?"), allocatable.get("cpu", "?"),
                          allocatable.get("memory", "?")))
        return found

    def require_namespace(self, namespace: str) -> None:
        """Raise when ``namespace`` does not exist (for commands that must not create one).

        Raises:
            NotFoundError: it does not exist.
        """
        if self.get("v1", "Namespace", namespace, None) is None:
            raise NotFoundError(f"No namespace {namespace!r} on the cluster ({self.where()}).")


def pod_state(pod: Any) -> str:
    """A pod's state in a word or two: its phase, else 'stopping' (being deleted, a container still running)
    or 'stopped' (being deleted, every container ended)."""
    if pod.metadata.deletion_timestamp is None:
        return str(pod.status.phase or "Pending")
    return "stopped" if _stopped(pod) else "stopping"


def _stopped(pod: Any) -> bool:
    """A pod being deleted whose containers have all ended (or never started)."""
    if pod.metadata.deletion_timestamp is None:
        return False
    statuses = [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]
    return all(status.state.running is None for status in statuses)


def api_reason(exc: Any) -> str:
    """What an ``ApiException`` says, in one line (the server's message, else its reason)."""
    import json

    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError):
        return f"{exc.status} {exc.reason}"


def _comparable(body: Mapping[str, Any] | None) -> str:
    """An object as YAML without what the server keeps for itself (status, bookkeeping)."""
    if body is None:
        return ""
    clean = {key: value for key, value in body.items() if key != "status"}
    clean["metadata"] = {key: value for key, value in (body.get("metadata") or {}).items()
                         if key not in _SERVER_FIELDS and value is not None}
    return str(yaml.safe_dump(_without_nulls(clean), sort_keys=True))


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value

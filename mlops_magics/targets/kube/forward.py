"""Reaching a service from this machine through the API server: a local port forwarded to a ready pod.

On a cluster with ordinary pod networking the Service's address is inside the cluster; ``%call``, ``%profile``
and any client on this machine reach it at ``127.0.0.1:PORT`` of a forwarder this process runs (what ``kubectl
port-forward`` does). Each new connection goes to a pod that is ready now, so a rolling update moves the traffic
to the new pods as they come.
"""

from __future__ import annotations

import selectors
import socket
import threading
from typing import Any

from mlops_magics.errors import EngineError
from mlops_magics.targets.kube.cluster import Cluster

_FORWARDERS: dict[tuple[str, str, str, int], Forwarder] = {}
_LOCK = threading.Lock()
_CHUNK = 65536


def ready_pod(cluster: Cluster, name: str, namespace: str) -> str:
    """The newest ready pod of the service.

    Raises:
        EngineError: none is ready.
    """
    for pod in cluster.pods(name, namespace):
        conditions = {c.type: c.status for c in (pod.status.conditions or [])}
        if conditions.get("Ready") == "True" and pod.metadata.deletion_timestamp is None:
            return str(pod.metadata.name)
    raise EngineError(f"No pod of {name!r} is ready in namespace {namespace!r} ({cluster.where()}).")


class Forwarder:
    """``127.0.0.1:port`` on this machine, each connection forwarded to port ``remote`` of a ready pod."""

    def __init__(self, cluster: Cluster, name: str, namespace: str, remote: int) -> None:
        self.cluster, self.name, self.namespace, self.remote = cluster, name, namespace, remote
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name=f"forward-{name}").start()

    @property
    def url(self) -> str:
        """The local address to send requests to."""
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop accepting (connections in flight finish)."""
        self.closed = True
        self.listener.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                local, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(local,), daemon=True).start()

    def _serve(self, local: socket.socket) -> None:
        from kubernetes import client
        from kubernetes.stream import portforward

        forward: Any = None
        try:
            pod = ready_pod(self.cluster, self.name, self.namespace)
            forward = portforward(client.CoreV1Api(self.cluster.api).connect_get_namespaced_pod_portforward, pod,
                                  self.namespace, ports=str(self.remote))
            remote = forward.socket(self.remote)
            remote.setblocking(True)
            _pump(local, remote)
        except Exception:  # noqa: BLE001 - a connection that cannot be forwarded is closed: the client sees it
            pass
        finally:
            local.close()
            if forward is not None:
                forward.close()


def _pump(local: socket.socket, remote: Any) -> None:
    """Copy bytes both ways until either side closes."""
    chooser = selectors.DefaultSelector()
    chooser.register(local, selectors.EVENT_READ, remote)
    chooser.register(remote, selectors.EVENT_READ, local)
    while True:
        for key, _ in chooser.select(timeout=300):
            data = key.fileobj.recv(_CHUNK)  # type: ignore[union-attr]
            if not data:
                return
            key.data.sendall(data)


def forwarder(cluster: Cluster, name: str, namespace: str, remote: int) -> Forwarder:
    """This process's forwarder to the service (started on first use)."""
    key = (cluster.context, namespace, name, remote)
    with _LOCK:
        found = _FORWARDERS.get(key)
        if found is None or found.closed:
            found = _FORWARDERS[key] = Forwarder(cluster, name, namespace, remote)
        return found


def stop(cluster_context: str, name: str, namespace: str) -> None:
    """Close this process's forwarders to the service (it was undeployed)."""
    with _LOCK:
        for key in [k for k in _FORWARDERS if k[:3] == (cluster_context, namespace, name)]:
            _FORWARDERS.pop(key).close()

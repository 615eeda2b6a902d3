"""The hub: where edge agents forward their devices' collected records, on this machine, exactly once.

``python -m mlops_backend.edge.hub --root DIR --port P`` serves (127.0.0.1 unless ``--host`` says otherwise):

- ``POST /v1/devices/<device>/records?epoch=E&first=F&last=L[&evicted=N]``: a batch from a device's buffer
  (:mod:`mlops_backend.edge.buffer`): one record a line, ``<offset>\\t<record JSON>``, offsets increasing, the
  first F and the last L. Answer ``{"device", "epoch", "stored"}``: the highest offset of that buffer the hub has
  durably stored, which the agent acknowledges.
- ``GET /v1/devices/<device>?epoch=E``: the same answer without sending anything; ``GET /v1/devices``: every
  device's state; ``GET /``: liveness.

Records land in ``DIR/<device>/records/`` (or the folder ``--device-folder DEVICE=PATH`` names for a device:
``PATH/records/``, as for a deployment's own collection folder) as closed segments of the collection layout
(:mod:`mlops_backend.collection_store`), so what reads a deployment's collection reads them unchanged: one file
per batch, ``<epoch>-<first>-<last>.jsonl`` (offsets zero-padded, so names sort in the device's order), written to
a hidden temporary file, fsynced, renamed, the folder fsynced, and only then answered. The highest stored offset
of each buffer is the largest ``<last>`` among those names, read again at start: the data and the offset are
stored by the same rename, so a kill at any point loses nothing the hub answered and stores nothing twice (a
batch overlapping what is stored keeps only its new records). ``DIR/<device>/hub.json`` tells the device's last
batch (time, stored offset, the evictions the device reported).

Errors are ``{"message": ...}`` with 400 (a malformed batch), 404, 405, 411 or 413 (a batch over
``--max-body-bytes``). Served by uvicorn with the scoring server's bounded HTTP protocol; writes run in threads,
one device at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson

from mlops_backend.config import ConnectionLimits

DEFAULT_PORT = 5380
DEFAULT_MAX_BODY = 16 * 1024 * 1024
#: A device name: also its folder's name.
DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: A buffer's epoch (:attr:`mlops_backend.edge.buffer.Buffer.epoch`).
EPOCH = re.compile(r"\d{8}T\d{6}-[0-9a-f]{8}")
_SEGMENT = re.compile(r"(?P<epoch>\d{8}T\d{6}-[0-9a-f]{8})-(?P<first>\d{12})-(?P<last>\d{12})\.jsonl")
_ROUTE = re.compile(r"/v1/devices/(?P<device>[^/]+)(?P<records>/records)?")


class BatchError(Exception):
    """A batch the hub refuses: the HTTP status and the message say why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def segment_name(epoch: str, first: int, last: int) -> str:
    """The name of the segment holding a batch's records ``first``..``last`` of a buffer."""
    return f"{epoch}-{first:012d}-{last:012d}.jsonl"


def parse_batch(body: bytes) -> list[tuple[int, bytes]]:
    """A batch's lines as ``(offset, record)``, each record checked to be a JSON object.

    Raises:
        BatchError: a line is not ``<offset>\\t<JSON object>`` or the offsets do not increase.
    """
    found: list[tuple[int, bytes]] = []
    previous = 0
    for number, line in enumerate(body.split(b"\n"), 1):
        if not line:
            continue
        head, tab, record = line.partition(b"\t")
        if not tab or not head.isdigit():
            raise BatchError(400, f"line {number} of the batch is not '<offset>\\t<record JSON>'.")
        offset = int(head)
        if offset <= previous:
            raise BatchError(400, f"line {number}: offset {offset} does not follow {previous}; offsets must "
                                  "increase.")
        try:
            value = orjson.loads(record)
        except orjson.JSONDecodeError as exc:
            raise BatchError(400, f"line {number} (offset {offset}): the record is not JSON ({exc}).") from None
        if not isinstance(value, dict):
            raise BatchError(400, f"line {number} (offset {offset}): the record is not a JSON object.")
        found.append((offset, record))
        previous = offset
    return found


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class HubInUse(Exception):
    """Another hub process stores into the same folder."""


class HubStore:
    """The hub's folder: each device's records and the highest offset stored per buffer (thread-safe).

    One process at a time (a lock file in the folder): two would not know each other's offsets.

    Raises:
        HubInUse: another hub has the folder.
        OSError: the folder cannot be created or read.
    """

    def __init__(self, root: Path, folders: Mapping[str, Path] | None = None) -> None:
        self.root = root
        #: Devices whose records go to a folder of their own instead of ``root/<device>``.
        self.folders = dict(folders or {})
        root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(root / ".hub.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise HubInUse(f"Another hub stores into {root}: stop it first, or give another --root.") from None
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        #: (device, epoch) -> the highest offset stored.
        self.stored: dict[tuple[str, str], int] = {}
        for name, device in self._folders():
            records = device / "records"
            if not records.is_dir():
                continue
            for path in records.iterdir():
                match = _SEGMENT.fullmatch(path.name)
                if match:
                    key = (name, match["epoch"])
                    self.stored[key] = max(self.stored.get(key, 0), int(match["last"]))
                elif path.name.startswith(".") and path.name.endswith(".tmp"):
                    path.unlink(missing_ok=True)  # a batch never answered: the agent sends it again

    def folder(self, device: str) -> Path:
        """Where ``device``'s records and state go."""
        return self.folders.get(device) or self.root / device

    def _folders(self) -> list[tuple[str, Path]]:
        """Every device folder: those under the root, and the named ones."""
        found = {p.name: p for p in self.root.iterdir() if p.is_dir() and DEVICE.fullmatch(p.name)}
        found.update(self.folders)
        return sorted(found.items())

    def _device_lock(self, device: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(device, threading.Lock())

    def offset(self, device: str, epoch: str) -> int:
        """The highest offset of ``device``'s buffer ``epoch`` stored (0: none)."""
        return self.stored.get((device, epoch), 0)

    def put(self, device: str, epoch: str, records: list[tuple[int, bytes]], evicted: int | None = None) -> int:
        """Store the records after the highest offset stored; return the highest offset stored then.

        Blocking (fsync): returns once the records are durable.
        """
        with self._device_lock(device):
            stored = self.offset(device, epoch)
            new = [(offset, record) for offset, record in records if offset > stored]
            folder = self.folder(device)
            if new:
                records_dir = folder / "records"
                if not records_dir.is_dir():
                    records_dir.mkdir(parents=True, exist_ok=True)
                    _fsync_dir(folder)
                    _fsync_dir(folder.parent)
                name = segment_name(epoch, new[0][0], new[-1][0])
                temporary = records_dir / f".{name}.tmp"
                with open(temporary, "wb") as fh:
                    fh.write(b"".join(record + b"\n" for _, record in new))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(temporary, records_dir / name)
                _fsync_dir(records_dir)
                stored = new[-1][0]
                self.stored[(device, epoch)] = stored
            folder.mkdir(parents=True, exist_ok=True)
            state = {"device": device, "epoch": epoch, "stored": stored, "last_batch": time.time(),
                     "received": len(records), "new": len(new), "device_evicted": evicted}
            temporary_state = folder / ".hub.json.tmp"
            temporary_state.write_bytes(orjson.dumps(state))
            os.replace(temporary_state, folder / "hub.json")
            return stored

    def devices(self) -> list[dict[str, Any]]:
        """Every device's state (its ``hub.json``), by name."""
        found = []
        for _, folder in self._folders():
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                found.append(orjson.loads((folder / "hub.json").read_bytes()))
        return found


class HubApp:
    """The hub's ASGI application (raw ASGI, like the scoring server's)."""

    def __init__(self, store: HubStore, max_body_bytes: int = DEFAULT_MAX_BODY) -> None:
        self.store = store
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            status, answer = await self._handle(scope, receive)
        except BatchError as exc:
            status, answer = exc.status, {"message": str(exc)}
        except OSError as exc:
            status, answer = 500, {"message": f"The hub cannot store the batch: {exc.strerror or exc}. Free space "
                                              f"in {self.store.root} or fix its permissions; the agent retries."}
        body = b"Healthy" if answer is None else orjson.dumps(answer)
        kind = b"text/plain; charset=utf-8" if answer is None else b"application/json"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: dict[str, Any], receive: Any) -> tuple[int, Any]:
        path, method = scope["path"], scope["method"]
        if path == "/":
            return 200, None
        if path == "/v1/devices":
            _method(method, "GET")
            return 200, {"devices": self.store.devices()}
        route = _ROUTE.fullmatch(path)
        if route is None:
            raise BatchError(404, f"No route {path}: POST /v1/devices/<device>/records, GET /v1/devices/<device>.")
        device = route["device"]
        if not DEVICE.fullmatch(device):
            raise BatchError(400, f"Device name {device!r} is invalid: letters, digits, '.', '_' and '-', starting "
                                  "with a letter or digit, at most 64.")
        query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
        epoch = query.get("epoch", "")
        if not EPOCH.fullmatch(epoch):
            raise BatchError(400, f"epoch={epoch!r} is missing or invalid: the buffer's epoch, e.g. "
                                  "20250101T000000-0123abcd.")
        if not route["records"]:
            _method(method, "GET")
            return 200, {"device": device, "epoch": epoch, "stored": self.store.offset(device, epoch)}
        _method(method, "POST")
        first, last = _number(query, "first"), _number(query, "last")
        evicted = _number(query, "evicted") if "evicted" in query else None
        records = parse_batch(await self._body(scope, receive))
        if not records or records[0][0] != first or records[-1][0] != last:
            got = f"{records[0][0]}..{records[-1][0]}" if records else "none"
            raise BatchError(400, f"The batch says offsets {first}..{last} but holds {got}.")
        stored = await asyncio.to_thread(self.store.put, device, epoch, records, evicted)
        return 200, {"device": device, "epoch": epoch, "stored": stored}

    async def _body(self, scope: dict[str, Any], receive: Any) -> bytes:
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is None:
            raise BatchError(411, "Send the batch with a Content-Length header.")
        if not length.isdigit() or int(length) > self.max_body_bytes:
            raise BatchError(413, f"The batch of {length.decode('latin-1')} bytes is over the hub's limit of "
                                  f"{self.max_body_bytes:,} bytes: send smaller batches (agent --batch-bytes).")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BatchError(400, "The client went away before the batch was complete.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BatchError(413, f"The batch is over the hub's limit of {self.max_body_bytes:,} bytes.")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)


def _method(method: str, allowed: str) -> None:
    if method != allowed:
        raise BatchError(405, f"Method {method} is not allowed here: use {allowed}.")


def _number(query: dict[str, str], name: str) -> int:
    raw = query.get(name, "")
    if not raw.isdigit():
        raise BatchError(400, f"{name}={raw!r} is missing or not a whole number.")
    return int(raw)


def parser() -> argparse.ArgumentParser:
    """The hub's command line."""
    p = argparse.ArgumentParser(prog="python -m mlops_backend.edge.hub",
                                description="Receive edge devices' forwarded records, exactly once, into "
                                            "ROOT/<device>/records/ (the collection layout).")
    p.add_argument("--root", type=Path, required=True, help="Folder of the devices' collections.")
    p.add_argument("--device-folder", action="append", default=[], metavar="DEVICE=PATH",
                   help="Store DEVICE's records in PATH/records/ instead of ROOT/DEVICE (repeatable).")
    p.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1).")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"Port (default {DEFAULT_PORT}; 0 picks one).")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY,
                   help=f"Largest batch accepted; larger gets 413 (default {DEFAULT_MAX_BODY:,}).")
    p.add_argument("--ready-file", type=Path, help="Write 'host port' here once listening.")
    return p


def _say(message: str) -> None:
    print(f"mlops-edge-hub[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: serve until SIGTERM or SIGINT (exit 0); 2 for a bad setting, 3 when the port cannot be bound."""
    import uvicorn

    from mlops_backend import protocol
    from mlops_backend.server import listening_socket

    args = parser().parse_args(argv)
    if args.max_body_bytes < 1024:
        _say(f"--max-body-bytes {args.max_body_bytes} is too small: use 1024 or more.")
        return 2
    folders: dict[str, Path] = {}
    for item in args.device_folder:
        device, equals, path = item.partition("=")
        if not equals or not DEVICE.fullmatch(device) or not path:
            _say(f"--device-folder {item!r} is not DEVICE=PATH (a device name, then a folder).")
            return 2
        folders[device] = Path(path)
    try:
        store = HubStore(args.root, folders)
    except HubInUse as exc:
        _say(str(exc))
        return 2
    except OSError as exc:
        _say(f"cannot use {args.root}: {exc.strerror or exc}.")
        return 2
    try:
        sock = listening_socket(args.host, args.port, reuse_port=False)
    except OSError as exc:
        _say(f"Cannot listen on {args.host}:{args.port}: {exc.strerror or exc}.")
        return 3
    app = HubApp(store, args.max_body_bytes)
    limits = ConnectionLimits(max_connections=256)
    config = uvicorn.Config(app, lifespan="off", access_log=False, proxy_headers=False, server_header=False,
                            ws="none", log_level="warning", timeout_keep_alive=30, timeout_graceful_shutdown=10,
                            http=protocol.protocol_class(limits, None))

    class Server(uvicorn.Server):
        async def on_tick(self, counter: int) -> bool:
            if counter % 5 == 0:
                protocol.expire(self.server_state.connections)
            return bool(await super().on_tick(counter))

    host, port = sock.getsockname()[:2]
    _say(f"storing devices' records in {args.root}, serving on http://{host}:{port}")
    if args.ready_file is not None:
        temporary = args.ready_file.with_name(f".{args.ready_file.name}.tmp")
        temporary.write_text(f"{host} {port}\n")
        os.replace(temporary, args.ready_file)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # uvicorn installs its own
    Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The edge agent: moves a device's collected records into its buffer and forwards them to the hub.

``python -m mlops_backend.edge.agent --collect-dir DIR --buffer FILE --hub URL --device NAME`` loops:

1. every closed collection segment (``DIR/records/*.jsonl``, oldest first) is taken into the buffer
   (:mod:`mlops_backend.edge.buffer`: records and the segment's name in one transaction, then the file removed);
2. the buffered records are sent to the hub in batches (``POST URL/v1/devices/NAME/records``, see
   :mod:`mlops_backend.edge.hub`); the hub answers the highest offset it has stored and the agent acknowledges
   it, which drops those records from the buffer.

While the hub cannot be reached (the device's link is down) the agent keeps taking segments (the buffer bounds
them, oldest evicted first, counted) and tries again with a backoff of at most ``--max-backoff-s`` (2 s), so a
link that comes back is noticed within seconds. The scoring server never waits for the agent: it only closes
segment files (``mlops-serve --collect-segment-s``), the agent takes them in its own process.

Status: a JSON file (``--status-file``), replaced whole at most every ``--poll-s`` while something changes:
``device``, ``hub``, ``epoch``, ``buffered_records``, ``buffered_bytes``, ``max_buffer_bytes``, ``taken_records``,
``evicted_records``, ``evicted_bytes``, ``forwarded_records``, ``acked_offset``, ``last_offset``, ``last_sync``
(epoch seconds of the last answer of the hub, or null), ``hub_reachable`` (null before the first try),
``last_error``, ``pid``, ``updated``. A file, not a port, so that it can be read on the device's volume while the
device is offline. SIGTERM or SIGINT: a batch waiting for the hub's answer is given up (sent again next time,
stored once), the status is written, exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from mlops_backend.collection_store import segments
from mlops_backend.edge.buffer import Buffer, BufferError
from mlops_backend.edge.hub import DEVICE

DEFAULT_MAX_BUFFER_BYTES = 256 * 1024 * 1024
DEFAULT_BATCH_RECORDS = 1000
DEFAULT_BATCH_BYTES = 1024 * 1024
_SIZE = re.compile(r"(\d+)\s*([kmg]?)(?:i?b)?", re.IGNORECASE)
#: Seconds of forwarding in one round before the agent takes new segments again.
_ROUND_S = 2.0


def parse_bytes(text: str) -> int:
    """``"268435456"``, ``"256m"``, ``"256MiB"``, ``"1g"``: a size in bytes (k, m, g are powers of 1024).

    Raises:
        ValueError: the text is not such a size.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size: give bytes, or a number with k, m or g (e.g. 256m).")
    return int(match[1]) * int(1024 ** " kmg".index(match[2].lower() or " "))


class HubUnreachable(Exception):
    """The hub did not answer (no route, refused, timed out)."""


class HubRefused(Exception):
    """The hub answered with an error; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AgentSettings:
    """What an agent needs: see ``python -m mlops_backend.edge.agent --help``."""

    collect_dir: Path
    buffer: Path
    hub: str
    device: str
    max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES
    status_file: Path | None = None
    batch_records: int = DEFAULT_BATCH_RECORDS
    batch_bytes: int = DEFAULT_BATCH_BYTES
    poll_s: float = 0.5
    max_backoff_s: float = 2.0
    connect_timeout_s: float = 2.0
    #: Seconds to wait for the hub's answer to a batch: a link cut while a batch was on its way is noticed then
    #: (the batch is sent again, stored once).
    timeout_s: float = 10.0


class Agent:
    """One device's agent. :meth:`run` loops until its ``stop`` event is set.

    Raises:
        BufferError: the buffer cannot be opened (in use, not a buffer).
        ValueError: the device name or the hub URL is invalid.
    """

    def __init__(self, settings: AgentSettings) -> None:
        if not DEVICE.fullmatch(settings.device):
            raise ValueError(f"Device name {settings.device!r} is invalid: letters, digits, '.', '_' and '-', "
                             "starting with a letter or digit, at most 64.")
        url = urlsplit(settings.hub)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"Hub URL {settings.hub!r} is invalid: give http://HOST:PORT.")
        self.settings = settings
        self._url = url
        self.buffer = Buffer(settings.buffer, settings.max_buffer_bytes)
        self.batch_bytes = settings.batch_bytes
        self.stop = threading.Event()
        self.hub_reachable: bool | None = None
        self.last_sync: float | None = None
        self.last_error: str | None = None
        self._connection: http.client.HTTPConnection | None = None
        self._written: dict[str, Any] = {}
        self._written_at = 0.0
        self.buffer.settle(settings.collect_dir / "records")

    def request_stop(self) -> None:
        """Stop soon: from a signal handler too. A batch waiting for the hub's answer is given up (its socket shut
        down): the hub, if it stored it, answers its offset for it next time, and nothing is stored twice."""
        self.stop.set()
        connection = self._connection
        if connection is not None and connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the hub connection and the buffer, writing the status a last time."""
        self._disconnect()
        self.write_status(force=True)
        self.buffer.close()

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Take, forward, wait; until :attr:`stop` is set."""
        backoff = 0.0
        while not self.stop.is_set():
            self.take()
            if self.forward():
                backoff = 0.0
                wait = self.settings.poll_s
            else:
                backoff = min(self.settings.max_backoff_s, max(0.1, backoff * 2))
                wait = backoff
            self.write_status()
            self.stop.wait(wait)

    def take(self) -> int:
        """Take every closed segment into the buffer; return how many records (a failure is kept in last_error)."""
        taken = 0
        for path in segments(self.settings.collect_dir, closed_only=True):
            try:
                taken += self.buffer.take_segment(path)
            except OSError as exc:
                self.last_error = f"cannot take {path}: {exc.strerror or exc}"
                break
        return taken

    def forward(self) -> bool:
        """Send pending batches for up to a round; False when the hub could not be reached or refused."""
        until = time.monotonic() + _ROUND_S
        while not self.stop.is_set() and time.monotonic() < until:
            batch = self.buffer.pending(self.settings.batch_records, self.batch_bytes)
            if not batch:
                # Kept alive only while draining: an idle connection to a link cut meanwhile would take the next
                # batch and hold it until the answer timeout; a new one fails at once ("network unreachable").
                self._disconnect()
                return True
            try:
                stored = self.send(batch)
            except HubUnreachable as exc:
                self.hub_reachable = False
                self.last_error = f"hub {self.settings.hub} unreachable: {exc}"
                return False
            except HubRefused as exc:
                self.hub_reachable = True
                self.last_error = f"hub {self.settings.hub} refused a batch ({exc.status}): {exc}"
                if exc.status == 413 and self.batch_bytes > 1024:
                    self.batch_bytes //= 2
                return False
            self.hub_reachable = True
            self.last_sync = time.time()
            self.last_error = None
            self.buffer.ack(min(stored, batch[-1][0]))
            self.write_status()
        return True

    # -- talking to the hub -----------------------------------------------------------------

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            url = self._url
            kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
            connection = kind(url.hostname or "", url.port, timeout=self.settings.connect_timeout_s)
            connection.connect()
            if connection.sock is not None:
                connection.sock.settimeout(self.settings.timeout_s)
            self._connection = connection
        return self._connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def send(self, batch: list[tuple[int, bytes]]) -> int:
        """POST one batch; return the highest offset the hub has stored.

        Raises:
            HubUnreachable: no answer.
            HubRefused: an error answer.
        """
        first, last = batch[0][0], batch[-1][0]
        body = b"".join(b"%d\t%s\n" % (offset, record) for offset, record in batch)
        path = (f"{self._url.path.rstrip('/')}/v1/devices/{quote(self.settings.device)}/records"
                f"?epoch={self.buffer.epoch}&first={first}&last={last}&evicted={self.buffer.evicted}")
        for attempt in (1, 2):
            reused = self._connection is not None
            try:
                connection = self._connect()
                connection.request("POST", path, body=body, headers={"Content-Type": "text/plain; charset=utf-8"})
                response = connection.getresponse()
                data = response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self._disconnect()
                if not reused or attempt == 2:  # a kept-alive connection the hub closed meanwhile: try a new one
                    raise HubUnreachable(str(exc) or type(exc).__name__) from exc
        if response.will_close:
            self._disconnect()
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            answer = {"message": data[:200].decode("utf-8", "replace")}
        if response.status != 200:
            raise HubRefused(response.status, str(answer.get("message", answer)))
        return int(answer["stored"])

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The agent's state now (what the status file holds)."""
        stats = self.buffer.stats()
        return {"device": self.settings.device, "hub": self.settings.hub, "epoch": stats.epoch,
                "buffered_records": stats.records, "buffered_bytes": stats.bytes, "max_buffer_bytes": stats.max_bytes,
                "taken_records": stats.taken, "evicted_records": stats.evicted, "evicted_bytes": stats.evicted_bytes,
                "forwarded_records": stats.forwarded, "acked_offset": stats.acked, "last_offset": stats.last_offset,
                "last_sync": self.last_sync, "hub_reachable": self.hub_reachable, "last_error": self.last_error,
                "pid": os.getpid()}

    def write_status(self, *, force: bool = False) -> None:
        """Replace the status file when the state changed (at most every poll interval) or every 10 s."""
        path = self.settings.status_file
        if path is None:
            return
        now = time.monotonic()
        state = self.status()
        if not force and (now - self._written_at < self.settings.poll_s
                          or (state == self._written and now - self._written_at < 10)):
            return
        temporary = path.with_name(f".{path.name}.tmp")
        try:
            temporary.write_bytes(orjson.dumps({**state, "updated": time.time()}))
            os.replace(temporary, path)
        except OSError as exc:
            self.last_error = f"cannot write the status file {path}: {exc.strerror or exc}"
            return
        self._written, self._written_at = state, now


def parser() -> argparse.ArgumentParser:
    """The agent's command line (each option also from the environment variable its help names)."""
    p = argparse.ArgumentParser(prog="python -m mlops_backend.edge.agent",
                                description="Buffer a device's collected records and forward them to the hub, "
                                            "exactly once, when it can be reached.")
    p.add_argument("--collect-dir", help="The scoring server's --collect-dir (env MLOPS_COLLECT_DIR).")
    p.add_argument("--buffer", help="The buffer's SQLite file (env MLOPS_EDGE_BUFFER).")
    p.add_argument("--max-buffer-bytes",
                   help="Records kept at most, in bytes (256m, 1g...); past it the oldest are evicted, counted "
                        f"(env MLOPS_EDGE_MAX_BUFFER_BYTES; default {DEFAULT_MAX_BUFFER_BYTES // 2**20}m).")
    p.add_argument("--hub", help="The hub's URL, http://HOST:PORT (env MLOPS_EDGE_HUB).")
    p.add_argument("--device", help="This device's name (env MLOPS_EDGE_DEVICE).")
    p.add_argument("--status-file", help="Where to keep the agent's status, JSON (env MLOPS_EDGE_STATUS_FILE).")
    p.add_argument("--batch-records", type=int,
                   help=f"Records per batch at most (env MLOPS_EDGE_BATCH_RECORDS; default {DEFAULT_BATCH_RECORDS}).")
    p.add_argument("--batch-bytes",
                   help=f"Bytes per batch at most, one record at least (env MLOPS_EDGE_BATCH_BYTES; default "
                        f"{DEFAULT_BATCH_BYTES // 2**20}m).")
    p.add_argument("--poll-s", type=float, default=0.5,
                   help="Seconds between rounds while the hub answers (default 0.5).")
    p.add_argument("--max-backoff-s", type=float, default=2.0,
                   help="Longest wait between tries while the hub cannot be reached (default 2).")
    return p


def settings_from(argv: Sequence[str] | None, environ: Mapping[str, str]) -> AgentSettings:
    """The settings from the command line, then the environment.

    Raises:
        ValueError: a setting is missing or invalid (the message says which).
    """
    args = parser().parse_args(argv)

    def pick(value: str | None, name: str, what: str) -> str:
        found = value if value is not None else environ.get(name, "")
        if not found:
            raise ValueError(f"No {what}: give {name.lower().replace('mlops_edge_', '--').replace('_', '-')} "
                             f"or set {name}.")
        return found

    collect = pick(args.collect_dir, "MLOPS_COLLECT_DIR", "collection folder (--collect-dir)")
    batch_records = args.batch_records or int(environ.get("MLOPS_EDGE_BATCH_RECORDS") or DEFAULT_BATCH_RECORDS)
    max_bytes = args.max_buffer_bytes or environ.get("MLOPS_EDGE_MAX_BUFFER_BYTES")
    batch_bytes = args.batch_bytes or environ.get("MLOPS_EDGE_BATCH_BYTES")
    status = args.status_file or environ.get("MLOPS_EDGE_STATUS_FILE")
    settings = AgentSettings(
        collect_dir=Path(collect), buffer=Path(pick(args.buffer, "MLOPS_EDGE_BUFFER", "buffer file")),
        hub=pick(args.hub, "MLOPS_EDGE_HUB", "hub URL"), device=pick(args.device, "MLOPS_EDGE_DEVICE", "device name"),
        max_buffer_bytes=parse_bytes(max_bytes) if max_bytes else DEFAULT_MAX_BUFFER_BYTES,
        status_file=Path(status) if status else None, batch_records=batch_records,
        batch_bytes=parse_bytes(batch_bytes) if batch_bytes else DEFAULT_BATCH_BYTES,
        poll_s=args.poll_s, max_backoff_s=args.max_backoff_s)
    if settings.batch_records < 1 or settings.batch_bytes < 1:
        raise ValueError("--batch-records and --batch-bytes must be at least 1.")
    if not 0.01 <= settings.poll_s <= 60 or not 0.1 <= settings.max_backoff_s <= 60:
        raise ValueError("--poll-s must be 0.01-60 and --max-backoff-s 0.1-60 seconds.")
    return settings


def _say(message: str) -> None:
    print(f"mlops-edge-agent[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run until SIGTERM or SIGINT (exit 0); 2 for a bad setting or a buffer in use."""
    try:
        settings = settings_from(argv, os.environ)
        agent = Agent(settings)
    except (ValueError, BufferError) as exc:
        _say(str(exc))
        return 2
    except OSError as exc:
        _say(f"cannot start: {exc.strerror or exc} ({getattr(exc, 'filename', '')}).")
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.request_stop())
    _say(f"device {settings.device!r}: forwarding {settings.collect_dir} to {settings.hub} through the buffer "
         f"{settings.buffer} (at most {settings.max_buffer_bytes:,} bytes)")
    try:
        agent.run()
    finally:
        agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

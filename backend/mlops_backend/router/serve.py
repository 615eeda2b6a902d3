"""``mlops-route``: the router process.

    mlops-route --routes ROUTES.json [--routes MORE.json] --port 8080 [--traffic-dir DIR] [--auth-key-file FILE]
                [--ready-file F]

One process, one event loop, serving with the scoring server's protocol and bounds. Its tick (every 0.1 s)
fails the requests a member is too slow to answer (504), takes up a changed routes file or member key file
(then ``/ready`` reports the new generation), writes the queued traffic records, closes overdue client
connections and stale member connections. SIGTERM stops it:
the requests in flight are answered, the shadow copies in flight finish (5 s at most), records are written.

Exit status: 0 after a clean stop, 2 for a bad command line or routes file, 3 when the port cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlops_backend import __version__
from mlops_backend.config import BOUNDS, ConnectionLimits
from mlops_backend.keys import KeyFile, KeyFileError, read_key_file
from mlops_backend.router import table as tables
from mlops_backend.router.app import RouterApp
from mlops_backend.router.protocol import router_protocol_class
from mlops_backend.router.traffic import TrafficLog
from mlops_backend.server import listening_socket

EXIT_BAD_SETTING = 2
EXIT_STARTUP_FAILED = 3


def _say(message: str) -> None:
    print(f"mlops-route[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="mlops-route", description="The endpoint router: one address in front of "
                                "several deployments (weights, a sticky header, a shadow copy).")
    p.add_argument("--routes", type=Path, action="append", required=True,
                   help="The routes file (JSON), re-read when it changes. Given more than once: the file of highest "
                        "generation is served (a missing or bad one is passed over while another can be used).")
    p.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    p.add_argument("--port", type=int, default=8080, help="Port to listen on (default 8080; 0: any free one).")
    p.add_argument("--traffic-dir", type=Path, help="Record every answer here (JSON lines) for comparing members.")
    p.add_argument("--auth-key-file", type=Path, help="Clients must send one of the keys in this file "
                   "(mode 600; re-read when it changes).")
    p.add_argument("--ready-file", type=Path, help="Write this file once serving (removed at start).")
    p.add_argument("--max-body-bytes", type=int, default=100 * 1024 * 1024, help="Largest request body (413).")
    p.add_argument("--reuse-port", action="store_true", help="Bind with SO_REUSEPORT (a successor takes over "
                   "the port while this one drains).")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="Event loop: auto (the default) is uvloop when it is installed (a third less CPU per request "
                        "routed), else asyncio.")
    p.add_argument("--version", action="version", version=f"mlops-route {__version__}")
    for bound in BOUNDS:
        p.add_argument(bound.flag, type=float if bound.field.endswith("_s") else int, metavar=bound.metavar,
                       help=bound.text)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mlops-route``."""
    args = parser().parse_args(argv)
    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        _say("--loop uvloop needs uvloop: pip install uvloop (or leave the default, auto).")
        return EXIT_BAD_SETTING
    if args.ready_file is not None:
        args.ready_file.unlink(missing_ok=True)
    try:
        table = tables.load_newest(args.routes)
    except tables.RoutesError as exc:
        _say(str(exc))
        return EXIT_BAD_SETTING
    keys: tuple[str, ...] = ()
    if args.auth_key_file is not None:
        try:
            keys = read_key_file(args.auth_key_file)
        except KeyFileError as exc:
            _say(str(exc))
            return EXIT_BAD_SETTING
    limits = ConnectionLimits(**{b.field: getattr(args, b.field) for b in BOUNDS if getattr(args, b.field) is not None})
    try:
        sock = listening_socket(args.host, args.port, reuse_port=args.reuse_port)
    except OSError as exc:
        _say(f"Cannot listen on {args.host}:{args.port}: {exc.strerror or exc}.")
        return EXIT_STARTUP_FAILED
    traffic = TrafficLog(args.traffic_dir) if args.traffic_dir is not None else None
    app = RouterApp(table, traffic=traffic, keys=keys, max_body_bytes=args.max_body_bytes)
    key_file = KeyFile(args.auth_key_file, keys) if args.auth_key_file is not None else None
    try:
        _run(app, sock, args.routes, key_file, limits, args.ready_file, args.loop)
    finally:
        if traffic is not None:
            traffic.close()
    return 0


def _run(app: RouterApp, sock: Any, routes: list[Path], key_file: KeyFile | None, limits: ConnectionLimits,
         ready_file: Path | None, loop: str) -> None:
    import uvicorn

    from mlops_backend import protocol

    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"

    config = uvicorn.Config(app, loop=loop, lifespan="off", access_log=False, proxy_headers=False,
                            server_header=False, ws="none", log_level="warning", timeout_keep_alive=30,
                            timeout_graceful_shutdown=30,
                            http=router_protocol_class(limits, app.take, app.max_body_bytes))
    watched = Watched(routes, app)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.draining = True
            super().handle_exit(sig, frame)

        async def on_tick(self, counter: int) -> bool:
            app.expire()
            if counter % 2 == 0:
                watched.check()
            if counter % 5 == 0:
                protocol.expire(self.server_state.connections)
                if app.traffic is not None:
                    app.traffic.flush()
            if counter % 10 == 0:
                app.prune()
                if key_file is not None and key_file.refresh():
                    app.set_keys(key_file.keys)
            return bool(await super().on_tick(counter))

        async def shutdown(self, sockets: Any = None) -> None:
            expiring = asyncio.get_running_loop().create_task(_expire_until_cancelled(app))  # the tick has stopped
            try:
                await super().shutdown(sockets)
                await app.drain()
            finally:
                expiring.cancel()

    server = Server(config)
    host, port = sock.getsockname()[:2]
    _say(f"endpoint {app.table.endpoint!r} (generation {app.table.generation}: "
         f"{', '.join(f'{m.name}={m.weight}' for m in app.table.members)}) serving on http://{host}:{port} "
         f"({loop})")
    if ready_file is not None:
        ready_file.parent.mkdir(parents=True, exist_ok=True)
        ready_file.write_text(f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # uvicorn installs its own, and re-raises what it saved
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server.run(sockets=[sock])
    asyncio.set_event_loop(None)


async def _expire_until_cancelled(app: RouterApp) -> None:
    while True:
        await asyncio.sleep(0.1)
        app.expire()


class Watched:
    """The routes files and the members' key files: a change makes a new table."""

    def __init__(self, routes: Sequence[Path], app: RouterApp) -> None:
        self.routes, self.app = routes, app
        self.identity = self._identity()
        self.problem: str | None = None

    def _identity(self) -> tuple[Any, ...]:
        keys = [m.key_file for m in self.app.table.members if m.key_file is not None]
        return (*(tables.file_identity(r) for r in self.routes), *(tables.file_identity(k) for k in keys))

    def check(self) -> None:
        """Take up a changed routes file (a bad one keeps the table in force, said once; of several files, one of
        a generation older than the one in force is not taken up)."""
        identity = self._identity()
        if identity == self.identity:
            return
        try:
            table = tables.load_newest(self.routes)
        except tables.RoutesError as exc:
            self.identity = identity  # read again once it changes
            if str(exc) != self.problem:
                self.problem = str(exc)
                _say(f"{exc} The routes in force (generation {self.app.table.generation}) stay.")
            return
        self.problem = None
        if len(self.routes) > 1 and table.generation < self.app.table.generation:
            # the newer file went bad (or away): the older ones never take the router back
            self.identity = identity
            return
        self.app.table = table
        self.identity = self._identity()  # the new table's key files
        _say(f"routes: generation {table.generation}: {', '.join(f'{m.name}={m.weight}' for m in table.members)}"
             + (f"; shadow {table.shadow.name} {table.shadow_percent}%" if table.shadow is not None else ""))


if __name__ == "__main__":
    sys.exit(main())

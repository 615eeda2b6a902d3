"""Processes of a scoring server: one worker per process, a supervisor when there are several.

Each worker imports the entry script, runs ``init()`` once, binds its own listening socket
(``SO_REUSEPORT`` when there are several workers, so the kernel spreads connections over all of
them rather than letting one worker accept everything) and serves with uvicorn and httptools,
through :mod:`mlops_backend.protocol` (the bounds on each client). A failed import or
``init()`` ends the server with exit status 3 and no half-up server.
The supervisor restarts a worker that dies later (an OOM kill, a crash in native code).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from mlops_backend import metrics
from mlops_backend.config import ServeConfig

EXIT_STARTUP_FAILED = 3
_RESTART_LIMIT = 5
_RESTART_WINDOW_S = 60.0
_GRACE_S = 30.0


def _say(message: str) -> None:
    print(f"mlops-serve[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def _model_tree(folder: Path, limit: int = 200) -> str:
    lines = []
    for path in itertools.islice(sorted(folder.rglob("*")), limit):
        lines.append(f"  {path.relative_to(folder)}{'/' if path.is_dir() else ''}")
    return "\n".join(lines) or "  (empty)"


def _export_environment(config: ServeConfig) -> None:
    os.environ["AZUREML_ENTRY_SCRIPT"] = str(config.entry_script)
    os.environ.setdefault("AML_APP_ROOT", str(config.app_root))
    os.environ.setdefault("SERVICE_NAME", config.service_name)
    if config.model_dir is not None:
        os.environ["AZUREML_MODEL_DIR"] = str(config.model_dir)


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A listening TCP socket; TCP_NODELAY is set so accepted connections inherit it.

    Raises:
        OSError: the address cannot be bound (in use, not local...).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _bind_error(config: ServeConfig, exc: OSError) -> str:
    return (f"Cannot listen on {config.host}:{config.port}: {exc.strerror or exc}. "
            + ("Another process uses that port: pick another with --port." if exc.errno == 98 else ""))


def run_worker(config: ServeConfig, metrics_dir: Path, index: int = 0, ready_fd: int | None = None) -> int:
    """Load the script, run ``init()``, serve until told to stop; return the exit status."""
    _export_environment(config)
    collector = None
    if config.collect_dir is not None:  # before init(): a ModelDataCollector made there finds it
        from mlops_backend import collector as collection

        try:
            collector = collection.start(config.collect_dir, worker=index, sample_rate=config.sample_rate,
                                         flush_interval=config.collect_flush_s,
                                         segment_seconds=config.collect_segment_s, metrics_dir=metrics_dir)
        except OSError as exc:
            _say(f"cannot collect data in {config.collect_dir}: {exc.strerror or exc}.")
            return EXIT_STARTUP_FAILED
    try:
        return _serve_script(config, metrics_dir, index, ready_fd, collector)
    finally:
        if collector is not None:  # after the graceful stop: every answered request's record is written
            collector.close()


def _serve_script(config: ServeConfig, metrics_dir: Path, index: int, ready_fd: int | None, collector: Any) -> int:
    import uvicorn

    from mlops_backend import entry
    from mlops_backend.app import ScoringApp
    from mlops_backend.metrics import WorkerMetrics
    from mlops_backend.swagger import SwaggerError

    try:
        script = entry.load(config.entry_script, config.app_root, config.source_dir)
    except entry.EntryScriptError as exc:
        _say(f"{exc}\n{traceback.format_exc() if exc.__cause__ else ''}")
        return EXIT_STARTUP_FAILED
    try:
        script.init()
    except BaseException:  # noqa: BLE001 - SystemExit and KeyboardInterrupt from init() fail the start too
        _say(f"init() of {config.entry_script} failed:\n{traceback.format_exc()}")
        if config.model_dir is not None:
            _say(f"Contents of the model folder {config.model_dir}:\n{_model_tree(config.model_dir)}")
        return EXIT_STARTUP_FAILED
    try:
        sock = listening_socket(config.host, config.port, reuse_port=config.worker_count > 1 or config.reuse_port)
    except OSError as exc:
        _say(_bind_error(config, exc))
        return EXIT_STARTUP_FAILED
    metrics = WorkerMetrics(metrics_dir, index)
    try:
        app = ScoringApp(config, script, metrics, collector)
    except SwaggerError as exc:
        _say(str(exc))
        sock.close()
        return EXIT_STARTUP_FAILED
    _allow_open_files(config.limits.max_connections)
    uv_config = uvicorn.Config(
        app, loop=config.loop, lifespan="off", access_log=False, server_header=False, ws="none",
        log_level="warning", timeout_keep_alive=config.keep_alive_s, timeout_graceful_shutdown=int(_GRACE_S),
        **_http(config, metrics),
    )
    server = _make_server(uv_config, app, sock)
    host, port = sock.getsockname()[:2]
    _say(f"worker {index} serving {script.path.name} ({script.mode.value} input) on http://{host}:{port}")
    if ready_fd is not None:
        os.write(ready_fd, b"R")
        os.close(ready_fd)
    elif config.ready_file is not None:
        _mark_ready(config.ready_file)
    # uvicorn re-raises the stop signal after its graceful shutdown, once the handlers it saved are
    # back; saving "ignore" makes a SIGTERM stop end with status 0, as a clean stop should.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        server.run(sockets=[sock])
    finally:
        if server.guard is not None:
            server.guard.stop()
        app.close()
    if app.access_log is not None:
        app.access_log.flush()
    return 0


def _http(config: ServeConfig, metrics: Any) -> dict[str, Any]:
    """uvicorn's protocol settings: ours on httptools; h11 with what it can bound when httptools is missing."""
    try:
        from mlops_backend.protocol import protocol_class
    except ImportError:
        _say("httptools is not installed: serving with h11, which bounds header bytes and connections only "
             "(pip install httptools for every bound).")
        return {"http": "h11", "h11_max_incomplete_event_size": config.limits.max_header_bytes,
                "limit_concurrency": config.limits.max_connections}
    return {"http": protocol_class(config.limits, metrics)}


def _allow_open_files(connections: int) -> None:
    """Raise the soft limit on open files so that the connection cap, not EMFILE, is what bounds a worker."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = connections + 64  # the listening socket, logs, the script's own files
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            _say(f"the open-file limit ({hard}) is below --max-connections {connections} + 64: connections past "
                 "it are refused by the system, not answered 503; raise `ulimit -n` or lower --max-connections.")


def _mark_ready(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")


def _make_server(config: Any, app: Any, sock: socket.socket) -> Any:
    """uvicorn's server, telling the app to answer /ready with 503 once shutdown begins.

    Its tick (every 0.1 s) also closes connections whose head or body is overdue (twice a second)
    and takes up a rewritten auth key file (once a second): both off the request path. Its first
    tick starts the liveness guard (:mod:`mlops_backend.liveness`).
    """
    import asyncio

    import uvicorn

    from mlops_backend.liveness import LivenessGuard

    try:
        from mlops_backend import protocol
    except ImportError:  # no httptools: h11 serves, with its own (fewer) bounds and no guard
        protocol = None  # type: ignore[assignment]

    class Server(uvicorn.Server):
        guard: LivenessGuard | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            app.draining = True
            super().handle_exit(sig, frame)

        async def on_tick(self, counter: int) -> bool:
            if counter % 5 == 0 and protocol is not None:
                protocol.expire(self.server_state.connections)
            if counter % 10 == 0:
                app.refresh_keys()
            if self.guard is None and protocol is not None and isinstance(config.http_protocol_class, type) and (
                    issubclass(config.http_protocol_class, protocol.ServingProtocol)):
                self.guard = LivenessGuard(sock, app, asyncio.get_running_loop(), self.adopt)
                self.guard.start()
            return bool(await super().on_tick(counter))

        def adopt(self, conn: socket.socket, data: bytes, accepted: float) -> None:
            """Serve a connection the guard accepted, starting with the bytes it read."""
            if self.should_exit:
                conn.close()
                return

            def make() -> Any:
                connection = config.http_protocol_class(config=config, server_state=self.server_state,
                                                        app_state=self.lifespan.state)
                connection.prefix, connection.accepted_at = data, accepted
                return connection

            def failed(task: asyncio.Task[Any]) -> None:
                if not task.cancelled() and task.exception() is not None:
                    conn.close()

            loop = asyncio.get_running_loop()
            loop.create_task(loop.connect_accepted_socket(make, conn)).add_done_callback(failed)

    return Server(config)


class Supervisor:
    """Starts ``worker_count`` workers, restarts those that die, and stops them all on SIGTERM/SIGINT."""

    def __init__(self, config: ServeConfig, metrics_dir: Path) -> None:
        self.config = config
        self.metrics_dir = metrics_dir
        self.workers: dict[int, tuple[int, int]] = {}  # pid -> (index, ready pipe read end)
        self.ready: set[int] = set()
        self.stopping = False
        self.restarts: list[float] = []

    def _spawn(self, index: int) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read_end)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = EXIT_STARTUP_FAILED
            try:
                code = run_worker(self.config, self.metrics_dir, index, write_end)
            except BaseException:  # noqa: BLE001 - a forked worker must never return into the supervisor
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(write_end)
        self.workers[pid] = (index, read_end)

    def _stop(self, signum: int, frame: Any) -> None:
        if not self.stopping:
            self.stopping = True
            _say("stopping workers")
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def run(self) -> int:
        """Supervise until every worker has stopped; return the server's exit status."""
        if not self.config.reuse_port:  # refuse a port someone else serves (SO_REUSEPORT would share it)
            try:
                probe = listening_socket(self.config.host, self.config.port, reuse_port=False)
            except OSError as exc:
                _say(_bind_error(self.config, exc))
                return EXIT_STARTUP_FAILED
            probe.close()
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for index in range(self.config.worker_count):
            self._spawn(index)
        deadline: float | None = None
        while self.workers:
            self._collect_ready()
            if self.stopping and deadline is None:
                deadline = time.monotonic() + _GRACE_S + 5
            if deadline is not None and time.monotonic() > deadline:
                for pid in self.workers:
                    os.kill(pid, signal.SIGKILL)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.1)
                continue
            code = os.waitstatus_to_exitcode(status)
            index, pipe = self.workers.pop(pid)
            metrics.worker_died(self.metrics_dir, index)
            was_ready = pid in self.ready or self._has_ready(pipe)
            os.close(pipe)
            self.ready.discard(pid)
            if self.stopping:
                continue
            if not was_ready:
                _say(f"worker {index} failed to start (exit status {code}); stopping the server")
                self._stop(signal.SIGTERM, None)
                self._wait_all()
                return EXIT_STARTUP_FAILED
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < _RESTART_WINDOW_S] + [now]
            if len(self.restarts) > _RESTART_LIMIT:
                _say(f"workers died {len(self.restarts)} times within {_RESTART_WINDOW_S:.0f} s; giving up")
                self._stop(signal.SIGTERM, None)
                self._wait_all()
                return 1
            _say(f"worker {index} (pid {pid}) died with exit status {code}; starting it again")
            self._spawn(index)
        return 0

    def _has_ready(self, pipe: int) -> bool:
        readable, _, _ = select.select([pipe], [], [], 0)
        return bool(readable) and os.read(pipe, 1) == b"R"

    def _collect_ready(self) -> None:
        for pid, (_, pipe) in self.workers.items():
            if pid not in self.ready and self._has_ready(pipe):
                self.ready.add(pid)
                if len(self.ready) == len(self.workers):
                    _say(f"all {len(self.workers)} workers ready")
                    if self.config.ready_file is not None:
                        _mark_ready(self.config.ready_file)

    def _wait_all(self) -> None:
        for pid, (_, pipe) in list(self.workers.items()):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            os.close(pipe)
        self.workers.clear()


def serve(config: ServeConfig, metrics_dir: Path) -> int:
    """Serve until stopped; return the exit status (3: the script could not start)."""
    if config.ready_file is not None:  # a restarted server's old file must not say it is ready before it is
        config.ready_file.unlink(missing_ok=True)
    if config.worker_count == 1:
        return run_worker(config, metrics_dir)
    if config.port == 0:
        _say("--port 0 (any free port) needs a single worker: with several, give a port.")
        return 2
    return Supervisor(config, metrics_dir).run()

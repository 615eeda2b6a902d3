"""Server settings: command line, then environment, then a JSON config file, then defaults.

The flags and environment variables are those of Azure ML's ``azmlinfsrv``, so the same
deployment set-ups work; ours (auth keys, body limit, access log, the bounds on clients) are
added beside them. The queue bounds are named after Azure's AKS settings
(``replica_max_concurrent_requests``, ``max_request_wait_time``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mlops_backend import DEFAULT_PORT, __version__

#: Azure's default scoring timeout: one hour.
DEFAULT_TIMEOUT_MS = 3_600_000
DEFAULT_MAX_BODY = 100 * 1024 * 1024
#: Azure's AKS defaults: one request at a time per replica, 500 ms in the queue before a 503.
DEFAULT_MAX_CONCURRENT = 1
DEFAULT_MAX_WAIT_MS = 500
DEFAULT_KEEP_ALIVE_S = 30
_N = TypeVar("_N", int, float)


class ConfigError(Exception):
    """A setting is missing or invalid; the message says which and how to fix it."""


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may send and hold, and how many connections a worker keeps open."""

    #: Request line and headers, in bytes (431 past it).
    max_header_bytes: int = 65536
    #: Headers in one request (431 past it).
    max_header_count: int = 100
    #: The request target (path and query), in bytes (414 past it).
    max_url_bytes: int = 8192
    #: Seconds for a request's head to arrive, from the connection's start or the request's first byte (408).
    header_timeout_s: float = 10.0
    #: Seconds a request body may go without a byte (408).
    body_timeout_s: float = 60.0
    #: Open connections per worker; a new one past it is answered 503 (probes excepted).
    max_connections: int = 1000


@dataclass(frozen=True)
class Bound:
    """A :class:`ConnectionLimits` setting: its flag (``--max-url-bytes`` sets ``max_url_bytes``), environment
    variable, help and valid range (``least`` or more; ``least``-``most`` seconds when there is a most)."""

    flag: str
    variable: str
    metavar: str
    text: str
    least: float
    most: float | None = None

    @property
    def field(self) -> str:
        """The :class:`ConnectionLimits` field it sets."""
        return self.flag[2:].replace("-", "_")


#: Every :class:`ConnectionLimits` setting, in the order ``--help`` lists them.
BOUNDS = (
    Bound("--max-header-bytes", "MLOPS_MAX_HEADER_BYTES", "BYTES", "Largest request line + headers; larger gets 431",
          256),
    Bound("--max-header-count", "MLOPS_MAX_HEADER_COUNT", "N", "Most headers in a request; more gets 431", 4),
    Bound("--max-url-bytes", "MLOPS_MAX_URL_BYTES", "BYTES", "Longest URL (path and query); longer gets 414", 16),
    Bound("--header-timeout-s", "MLOPS_HEADER_TIMEOUT_S", "S",
          "Seconds a client has to send a request's headers, from the connection's start or the request's first "
          "byte; then 408 and the connection is closed", 0.1, 86400),
    Bound("--body-timeout-s", "MLOPS_BODY_TIMEOUT_S", "S", "Seconds a request body may stall (no bytes); then 408",
          0.1, 86400),
    Bound("--max-connections", "MLOPS_MAX_CONNECTIONS", "N",
          "Open connections per worker; a new one past it gets 503 (liveness and readiness probes excepted)", 1),
)


@dataclass(frozen=True)
class ServeConfig:
    """Everything a scoring server process needs to know."""

    entry_script: Path
    model_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    worker_count: int = 1
    scoring_timeout_ms: int = DEFAULT_TIMEOUT_MS
    service_name: str = "ML service"
    service_version: str = "1.0"
    service_path_prefix: str = ""
    auth_keys: tuple[str, ...] = ()
    #: A 0600 file of keys, one per line (primary, secondary), re-read when it changes (auth_keys then
    #: holds what it said at start).
    auth_key_file: Path | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    limits: ConnectionLimits = ConnectionLimits()
    #: Seconds an idle keep-alive connection is kept.
    keep_alive_s: int = DEFAULT_KEEP_ALIVE_S
    #: /score requests a worker takes at once (one in run(), the others next in line); more wait.
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT
    #: How long a /score request may wait for one of those places before a 503 "server busy".
    max_request_wait_ms: int = DEFAULT_MAX_WAIT_MS
    cors_origins: tuple[str, ...] = ()
    access_log: bool = True
    verbose_errors: bool = False
    loop: str = "asyncio"
    reuse_port: bool = False
    ready_file: Path | None = None
    log_dir: Path | None = None
    #: Record each scored request's input and output here (None: collection off).
    collect_dir: Path | None = None
    sample_rate: float = 1.0
    #: Seconds between collection writes: the most a crash can lose (env MLOPS_COLLECT_FLUSH_S).
    collect_flush_s: float = 0.5
    #: Seconds after which a segment holding records is closed (None: by size only), so that an edge agent,
    #: which forwards closed segments only, gets them soon.
    collect_segment_s: float | None = None
    #: Warnings about the settings, printed once at start (e.g. a key on the command line).
    notices: tuple[str, ...] = ()

    #: The app root, as azmlinfsrv has it: ``AML_APP_ROOT``, else the directory the server was started in (which
    #: stays the working directory: scripts open files relative to it). On ``sys.path``; swagger files are read
    #: from it (then from the entry script's folder). ``None``: the working directory at start.
    app_root_setting: Path | None = None
    #: ``AZUREML_SOURCE_DIRECTORY`` (relative to the app root), also on ``sys.path``, as azmlinfsrv puts it.
    source_dir: Path | None = None

    @property
    def app_root(self) -> Path:
        """``AML_APP_ROOT`` if set, else the working directory the server was started in (never changed)."""
        return self.app_root_setting if self.app_root_setting is not None else Path.cwd()


def build_parser() -> argparse.ArgumentParser:
    """The ``mlops-serve`` argument parser (``azmlinfsrv`` flags first, then ours)."""
    parser = argparse.ArgumentParser(
        prog="mlops-serve",
        description=f"mlops-serve {__version__}: serve an Azure ML style entry script (init()/run()) over HTTP.",
    )
    azure = parser.add_argument_group("azmlinfsrv-compatible options")
    azure.add_argument("--entry_script", help="Path of the entry script (env AZUREML_ENTRY_SCRIPT).")
    azure.add_argument("--model_dir", help="Model folder, exposed to the script as AZUREML_MODEL_DIR.")
    azure.add_argument("--port", type=int, help=f"Port to listen on (env PORT; default {DEFAULT_PORT}).")
    azure.add_argument("--worker_count", type=int, help="Worker processes (env WORKER_COUNT; default 1).")
    azure.add_argument("--host", help="Address to bind (default 127.0.0.1; 0.0.0.0 to accept remote clients).")
    azure.add_argument("--config_file", help="JSON file of settings keyed like the environment variables.")
    ours = parser.add_argument_group("mlops-serve options")
    ours.add_argument("--auth-key-file", metavar="PATH",
                      help="Require 'Authorization: Bearer KEY' on /score, KEY being a line of PATH: one key per "
                           "line, primary then secondary, both valid (env MLOPS_AUTH_KEY_FILE). PATH must be "
                           "readable by its owner only (chmod 600). A rewritten file is picked up within a second, "
                           "without a restart: rotate a key by rewriting the file (write a new file, then rename).")
    ours.add_argument("--auth-key", action="append", default=None, metavar="KEY",
                      help="A key given on the command line, where any user of the machine can read it (ps): "
                           "prefer --auth-key-file or the environment variable MLOPS_AUTH_KEYS (comma-separated). "
                           "Repeat for a second key.")
    ours.add_argument("--scoring-timeout-ms", type=int, help="Per-request limit on run() (env SCORING_TIMEOUT_MS).")
    ours.add_argument("--max-concurrent-requests", type=int, metavar="N",
                      help="/score requests a worker takes at once: one runs, the others are next in line "
                           "(Azure AKS replica_max_concurrent_requests; env MLOPS_MAX_CONCURRENT_REQUESTS; "
                           f"default {DEFAULT_MAX_CONCURRENT}). Per worker: a server takes N x workers.")
    ours.add_argument("--max-request-wait-ms", type=int, metavar="MS",
                      help="How long a /score request waits for one of those places before a 503 'server busy' "
                           "(Azure AKS max_request_wait_time; env MLOPS_MAX_REQUEST_WAIT_MS; "
                           f"default {DEFAULT_MAX_WAIT_MS}). A request whose client has gone meanwhile is dropped.")
    ours.add_argument("--max-body-bytes", type=int,
                      help="Largest request body accepted; larger gets 413 (env MLOPS_MAX_BODY_BYTES).")
    defaults = ConnectionLimits()
    for bound in BOUNDS:
        default = getattr(defaults, bound.field)
        ours.add_argument(bound.flag, type=type(default), metavar=bound.metavar,
                          help=f"{bound.text} (env {bound.variable}; default {default:g}).")
    ours.add_argument("--keep-alive-s", type=int, metavar="S",
                      help="Seconds an idle keep-alive connection is kept open (env MLOPS_KEEP_ALIVE_S; "
                           f"default {DEFAULT_KEEP_ALIVE_S}).")
    ours.add_argument("--no-access-log", action="store_true", help="Do not write a JSON access log line per request.")
    ours.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                      help="Event loop of each worker. uvloop spends ~15%% less CPU per request but serves "
                           "connections unfairly when run() is slow (p99 latency several times the median); "
                           "it must be installed (pip install uvloop).")
    ours.add_argument("--reuse-port", action="store_true",
                      help="Bind with SO_REUSEPORT even with one worker, so that a new server can start on the "
                           "same port before this one stops (zero-downtime reloads).")
    ours.add_argument("--ready-file", metavar="PATH",
                      help="Create this file once every worker has run init() and listens.")
    ours.add_argument("--log-dir", metavar="DIR",
                      help="Append the server log (stderr) to DIR/server.log and the access log (stdout) to "
                           "DIR/access.log (env MLOPS_LOG_DIR), e.g. a volume that outlives the container.")
    ours.add_argument("--collect-dir", metavar="DIR",
                      help="Record every scored request (time, request id, input, output, latency, status) in DIR, "
                           "off the request path, and enable azureml.monitoring.ModelDataCollector "
                           "(env MLOPS_COLLECT_DIR).")
    ours.add_argument("--sample-rate", type=float,
                      help="With --collect-dir: the share of requests recorded, 0 < R <= 1 (env MLOPS_SAMPLE_RATE; "
                           "default 1, every request).")
    ours.add_argument("--collect-segment-s", type=float, metavar="S",
                      help="With --collect-dir: close the record file being written once it is S seconds old and "
                           "holds records, beginning a new one (env MLOPS_COLLECT_SEGMENT_S; default: only past "
                           "64 MiB). Closed files are what an edge agent forwards: S bounds how late it sees a record.")
    ours.add_argument("--verbose-errors", action="store_true",
                      help="Put the exception type and message of a failed run() in the 500 response.")
    return parser


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    return _env_number(env, name, int, "a whole number")


def _env_float(env: Mapping[str, str], name: str) -> float | None:
    return _env_number(env, name, float, "a number")


def _env_number(env: Mapping[str, str], name: str, kind: Callable[[str], _N], what: str) -> _N | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {what}.") from None


def _file_settings(path: str | None, env: Mapping[str, str]) -> dict[str, Any]:
    candidate = path or env.get("AZUREML_CONFIG_FILE")
    if not candidate:
        return {}
    try:
        with open(candidate, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"Config file {candidate!r} does not exist.") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"Config file {candidate!r} is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {candidate!r} must hold a JSON object of settings.")
    return {str(k): v for k, v in data.items()}


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> ServeConfig:
    """Build the configuration; the command line wins over the environment, which wins over the file.

    Raises:
        ConfigError: a setting is missing or invalid.
        SystemExit: the command line itself is malformed (argparse prints usage).
    """
    env = dict(os.environ if environ is None else environ)
    args = build_parser().parse_args(argv)
    settings = {**_file_settings(args.config_file, env), **env}

    def pick(cli: Any, name: str) -> Any:
        return cli if cli is not None else settings.get(name)

    script = pick(args.entry_script, "AZUREML_ENTRY_SCRIPT")
    if not script:
        raise ConfigError("No entry script: pass --entry_script PATH (or set AZUREML_ENTRY_SCRIPT).")
    script_path = Path(script)
    if not script_path.is_absolute():
        root = settings.get("AML_APP_ROOT")
        script_path = (Path(root) / script_path) if root and not script_path.exists() else script_path
    script_path = script_path.resolve()
    if not script_path.is_file():
        raise ConfigError(f"Entry script {str(script_path)!r} does not exist.")

    model_dir_raw = pick(args.model_dir, "AZUREML_MODEL_DIR")
    model_dir = Path(model_dir_raw).resolve() if model_dir_raw else None
    if model_dir is not None and not model_dir.exists():
        raise ConfigError(f"Model folder {str(model_dir)!r} (--model_dir / AZUREML_MODEL_DIR) does not exist.")

    port = args.port if args.port is not None else _env_int(settings, "PORT")
    workers = args.worker_count if args.worker_count is not None else _env_int(settings, "WORKER_COUNT")
    timeout = (args.scoring_timeout_ms if args.scoring_timeout_ms is not None
               else _env_int(settings, "SCORING_TIMEOUT_MS"))
    max_body = args.max_body_bytes if args.max_body_bytes is not None else _env_int(settings, "MLOPS_MAX_BODY_BYTES")
    env_keys = [k.strip() for k in str(settings.get("MLOPS_AUTH_KEYS", "")).split(",") if k.strip()]
    keys = tuple(args.auth_key or env_keys)
    key_file_raw = pick(args.auth_key_file, "MLOPS_AUTH_KEY_FILE")
    key_file = Path(key_file_raw).resolve() if key_file_raw else None
    notices: list[str] = []
    if key_file is not None:
        if keys:
            given = "--auth-key" if args.auth_key else "MLOPS_AUTH_KEYS"
            raise ConfigError(f"Give the keys either in a file (--auth-key-file / MLOPS_AUTH_KEY_FILE) or with "
                              f"{given}, not both.")
        from mlops_backend.keys import KeyFileError, read_key_file

        try:
            keys = read_key_file(key_file)
        except KeyFileError as exc:
            raise ConfigError(str(exc)) from None
    elif args.auth_key:
        notices.append("--auth-key puts the key on the command line, where every user of this machine can read "
                       "it (ps, /proc/PID/cmdline): use --auth-key-file PATH (a file only you can read, chmod 600) "
                       "or the environment variable MLOPS_AUTH_KEYS instead.")
    rate = args.sample_rate if args.sample_rate is not None else _env_float(settings, "MLOPS_SAMPLE_RATE")
    flush = _env_float(settings, "MLOPS_COLLECT_FLUSH_S")
    segment_s = (args.collect_segment_s if args.collect_segment_s is not None
                 else _env_float(settings, "MLOPS_COLLECT_SEGMENT_S"))
    cors = tuple(o.strip() for o in str(settings.get("AML_CORS_ORIGINS", "")).split(",") if o.strip())

    def number(cli: _N | None, name: str, default: _N) -> _N:
        what = "a whole number" if isinstance(default, int) else "a number"
        value = cli if cli is not None else _env_number(settings, name, type(default), what)
        return default if value is None else value

    base = ConnectionLimits()
    limits = ConnectionLimits(**{b.field: number(getattr(args, b.field), b.variable, getattr(base, b.field))
                                 for b in BOUNDS})

    root_raw = settings.get("AML_APP_ROOT")
    source_raw = settings.get("AZUREML_SOURCE_DIRECTORY")
    config = ServeConfig(
        entry_script=script_path,
        app_root_setting=Path(str(root_raw)).resolve() if root_raw else None,
        source_dir=Path(str(source_raw)) if source_raw else None,
        model_dir=model_dir,
        host=args.host or str(settings.get("MLOPS_HOST", "127.0.0.1")),
        port=DEFAULT_PORT if port is None else port,
        worker_count=1 if workers is None else workers,
        scoring_timeout_ms=DEFAULT_TIMEOUT_MS if timeout is None else timeout,
        service_name=str(settings.get("SERVICE_NAME", "ML service")),
        service_version=str(settings.get("SERVICE_VERSION", "1.0")),
        service_path_prefix=str(settings.get("SERVICE_PATH_PREFIX", "")),
        auth_keys=keys,
        auth_key_file=key_file,
        max_body_bytes=DEFAULT_MAX_BODY if max_body is None else max_body,
        limits=limits,
        keep_alive_s=number(args.keep_alive_s, "MLOPS_KEEP_ALIVE_S", DEFAULT_KEEP_ALIVE_S),
        max_concurrent_requests=number(args.max_concurrent_requests, "MLOPS_MAX_CONCURRENT_REQUESTS",
                                       DEFAULT_MAX_CONCURRENT),
        max_request_wait_ms=number(args.max_request_wait_ms, "MLOPS_MAX_REQUEST_WAIT_MS", DEFAULT_MAX_WAIT_MS),
        cors_origins=cors,
        access_log=not args.no_access_log,
        verbose_errors=args.verbose_errors,
        loop=args.loop,
        reuse_port=args.reuse_port,
        ready_file=Path(args.ready_file).resolve() if args.ready_file else None,
        log_dir=Path(log_dir).resolve() if (log_dir := pick(args.log_dir, "MLOPS_LOG_DIR")) else None,
        collect_dir=Path(collect).resolve() if (collect := pick(args.collect_dir, "MLOPS_COLLECT_DIR")) else None,
        sample_rate=1.0 if rate is None else rate,
        collect_flush_s=0.5 if flush is None else flush,
        collect_segment_s=segment_s,
        notices=tuple(notices),
    )
    _validate(config)
    return config


def _validate(config: ServeConfig) -> None:
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"Port {config.port} is out of range: use 1-65535 (0 picks a free port).")
    if config.worker_count < 1:
        raise ConfigError(f"Worker count {config.worker_count} is invalid: use 1 or more.")
    if config.scoring_timeout_ms < 1:
        raise ConfigError(f"Scoring timeout {config.scoring_timeout_ms} ms is invalid: use 1 or more.")
    if config.max_body_bytes < 1:
        raise ConfigError(f"Maximum body size {config.max_body_bytes} is invalid: use 1 or more bytes.")
    if not 0.0 < config.sample_rate <= 1.0:
        raise ConfigError(f"Sample rate {config.sample_rate} is out of range: use a share in (0, 1], e.g. 0.1 "
                          "to record one request in ten.")
    if not 0.01 <= config.collect_flush_s <= 3600:
        raise ConfigError(f"MLOPS_COLLECT_FLUSH_S={config.collect_flush_s} is out of range: use 0.01-3600 seconds.")
    if config.collect_segment_s is not None and not 0.05 <= config.collect_segment_s <= 86400:
        raise ConfigError(f"--collect-segment-s {config.collect_segment_s:g} is out of range: use 0.05-86400 "
                          "seconds.")
    if config.collect_segment_s is not None and config.collect_dir is None:
        raise ConfigError("--collect-segment-s applies to collection: give --collect-dir DIR too.")
    if config.sample_rate != 1.0 and config.collect_dir is None:
        raise ConfigError("--sample-rate applies to collection: give --collect-dir DIR too.")
    if config.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError("--loop uvloop needs uvloop: pip install uvloop (or leave the default, asyncio).")
    for key in config.auth_keys:
        if len(key) < 8 or any(c.isspace() for c in key):
            raise ConfigError("An auth key must be at least 8 characters without spaces.")
    for bound in BOUNDS:
        value = getattr(config.limits, bound.field)
        if bound.most is not None and not bound.least <= value <= bound.most:
            raise ConfigError(f"{bound.flag} {value:g} is out of range: use {bound.least:g}-{bound.most:g} seconds.")
        if value < bound.least:
            raise ConfigError(f"{bound.flag} {value} is too small: use {bound.least:g} or more.")
    for name, number, floor in (("--max-concurrent-requests", config.max_concurrent_requests, 1),
                                ("--max-request-wait-ms", config.max_request_wait_ms, 0),
                                ("--keep-alive-s", config.keep_alive_s, 1)):
        if number < floor:
            raise ConfigError(f"{name} {number} is too small: use {floor} or more.")

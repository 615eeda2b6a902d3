"""Server settings: command line, then environment, then a JSON config file, then defaults.

The flags and environment variables are those of Azure ML's ``azmlinfsrv``, so the same
deployment set-ups work; ours (auth keys, body limit, access log) are added beside them.
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
_N = TypeVar("_N", int, float)


class ConfigError(Exception):
    """A setting is missing or invalid; the message says which and how to fix it."""


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
    max_body_bytes: int = DEFAULT_MAX_BODY
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

    @property
    def app_root(self) -> Path:
        """The entry script's folder: importable, and the working directory of the server."""
        return self.entry_script.parent


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
    ours.add_argument("--auth-key", action="append", default=None, metavar="KEY",
                      help="Require 'Authorization: Bearer KEY' on /score; repeat for a second key "
                           "(env MLOPS_AUTH_KEYS, comma-separated).")
    ours.add_argument("--scoring-timeout-ms", type=int, help="Per-request limit on run() (env SCORING_TIMEOUT_MS).")
    ours.add_argument("--max-body-bytes", type=int, help="Largest request body accepted; larger gets 413.")
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
    keys = tuple(args.auth_key or [k.strip() for k in str(settings.get("MLOPS_AUTH_KEYS", "")).split(",") if k.strip()])
    rate = args.sample_rate if args.sample_rate is not None else _env_float(settings, "MLOPS_SAMPLE_RATE")
    flush = _env_float(settings, "MLOPS_COLLECT_FLUSH_S")
    cors = tuple(o.strip() for o in str(settings.get("AML_CORS_ORIGINS", "")).split(",") if o.strip())

    config = ServeConfig(
        entry_script=script_path,
        model_dir=model_dir,
        host=args.host or str(settings.get("MLOPS_HOST", "127.0.0.1")),
        port=DEFAULT_PORT if port is None else port,
        worker_count=1 if workers is None else workers,
        scoring_timeout_ms=DEFAULT_TIMEOUT_MS if timeout is None else timeout,
        service_name=str(settings.get("SERVICE_NAME", "ML service")),
        service_version=str(settings.get("SERVICE_VERSION", "1.0")),
        service_path_prefix=str(settings.get("SERVICE_PATH_PREFIX", "")),
        auth_keys=keys,
        max_body_bytes=DEFAULT_MAX_BODY if max_body is None else max_body,
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
    if config.sample_rate != 1.0 and config.collect_dir is None:
        raise ConfigError("--sample-rate applies to collection: give --collect-dir DIR too.")
    if config.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError("--loop uvloop needs uvloop: pip install uvloop (or leave the default, asyncio).")
    for key in config.auth_keys:
        if len(key) < 8 or any(c.isspace() for c in key):
            raise ConfigError("An auth key must be at least 8 characters without spaces.")

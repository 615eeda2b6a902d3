"""``mlops-serve``: the scoring server's command line (same flags as Azure ML's ``azmlinfsrv``).

Exit status: 0 after a clean stop, 2 for a bad command line or setting, 3 when the entry script
cannot be imported, its ``init()`` fails, or the port cannot be bound.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mlops_backend import config as settings
from mlops_backend.server import serve


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mlops-serve``."""
    try:
        config = settings.load(argv)
    except settings.ConfigError as exc:
        print(f"mlops-serve: {exc}", file=sys.stderr)
        return 2
    for notice in config.notices:
        print(f"mlops-serve: warning: {notice}", file=sys.stderr)
    os.environ.pop("MLOPS_AUTH_KEYS", None)  # read: the entry script and what it starts need not inherit it
    if config.log_dir is not None:
        try:
            _log_to(config.log_dir)
        except OSError as exc:
            print(f"mlops-serve: cannot write logs in {config.log_dir}: {exc.strerror}.", file=sys.stderr)
            return 2
    metrics_dir = Path(tempfile.mkdtemp(prefix="mlops-serve-metrics-"))
    try:
        return serve(config, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _log_to(folder: Path) -> None:
    """Point this process's stdout (access log) and stderr (server log) at files in ``folder``, appending."""
    folder.mkdir(parents=True, exist_ok=True)
    for fd, name in ((1, "access.log"), (2, "server.log")):
        target = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush() if fd == 1 else sys.stderr.flush()
        os.dup2(target, fd)
        os.close(target)


if __name__ == "__main__":
    sys.exit(main())

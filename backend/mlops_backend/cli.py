"""``mlops-serve``: the scoring server's command line (same flags as Azure ML's ``azmlinfsrv``).

Exit status: 0 after a clean stop, 2 for a bad command line or setting, 3 when the entry script
cannot be imported, its ``init()`` fails, or the port cannot be bound.
"""

from __future__ import annotations

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
    metrics_dir = Path(tempfile.mkdtemp(prefix="mlops-serve-metrics-"))
    try:
        return serve(config, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Settings read from the environment, in one place."""

from __future__ import annotations

import os
from pathlib import Path

from mlops_magics.errors import InvalidInputError

#: Default registry location when ``MLOPS_HOME`` is not set.
DEFAULT_HOME = Path("~/.mlops")
#: Seconds a writer waits for another process's write lock before giving up.
DEFAULT_LOCK_TIMEOUT = 30.0


def mlops_home() -> Path:
    """Return the registry folder: ``$MLOPS_HOME`` or ``~/.mlops``, absolute and user-expanded."""
    raw = os.environ.get("MLOPS_HOME") or str(DEFAULT_HOME)
    return Path(raw).expanduser().resolve()


def lock_timeout() -> float:
    """Return the write-lock wait in seconds: ``$MLOPS_LOCK_TIMEOUT`` or 30.

    Raises:
        InvalidInputError: the variable is set but is not a non-negative number.
    """
    raw = os.environ.get("MLOPS_LOCK_TIMEOUT")
    if raw is None or raw == "":
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise InvalidInputError(
            f"MLOPS_LOCK_TIMEOUT={raw!r} is not a number of seconds. "
            "Set it to a non-negative number such as 30, or unset it."
        )
    return value

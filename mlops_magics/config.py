"""Settings read from the environment, in one place."""

from __future__ import annotations

import os
from pathlib import Path

from mlops_magics.errors import InvalidInputError

#: Default registry location when ``MLOPS_HOME`` is not set.
DEFAULT_HOME = Path("~/.mlops")
#: Where processes record the registries they use, when ``MLOPS_REGISTRY_INDEX`` is not set (one index per user).
DEFAULT_REGISTRY_INDEX = Path("~/.cache/mlops-magics/registries-in-use")
#: Seconds a writer waits for another process's write lock before giving up.
DEFAULT_LOCK_TIMEOUT = 30.0


def mlops_home() -> Path:
    """Return the registry folder: ``$MLOPS_HOME`` or ``~/.mlops``, absolute and user-expanded."""
    raw = os.environ.get("MLOPS_HOME") or str(DEFAULT_HOME)
    return Path(raw).expanduser().resolve()


def registry_index() -> Path:
    """Return the folder of the per-user index of registries in use: ``$MLOPS_REGISTRY_INDEX`` or
    ``~/.cache/mlops-magics/registries-in-use``, absolute and user-expanded.

    It does not follow ``MLOPS_HOME`` on purpose: a kernel that points ``MLOPS_HOME`` at its own registry still
    records it where the Jupyter server looks.
    """
    raw = os.environ.get("MLOPS_REGISTRY_INDEX") or str(DEFAULT_REGISTRY_INDEX)
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

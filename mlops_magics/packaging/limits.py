"""Container resource limits in Docker's terms: memory sizes (``512m``) and CPUs as nano-CPUs.

Shared by the targets that run containers (docker) and by what describes containers for another runtime (the
edge deployment manifest's ``createOptions``).
"""

from __future__ import annotations

import re

from mlops_magics.errors import InvalidInputError

_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)([bkmg]?)b?$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
#: Docker refuses containers with less memory than this.
MIN_MEMORY = 6 * 1024**2
#: Docker's smallest CPU share that means anything (0.01 CPU), in nano-CPUs.
MIN_NANO_CPUS = 10_000_000


def parse_memory(text: str) -> int:
    """Bytes in a Docker memory size (``512m``, ``1g``, ``1.5g``, ``268435456``).

    Raises:
        InvalidInputError: not a size, or below Docker's minimum of 6 MB.
    """
    match = _MEMORY.match(text.strip())
    if not match:
        raise InvalidInputError(f"--memory {text!r} is not a size: use a number with k, m or g (512m, 1g, 1.5g).")
    size = int(float(match[1]) * _UNITS[match[2].lower()])
    if size < MIN_MEMORY:
        raise InvalidInputError(f"--memory {text} is below Docker's minimum of 6m: give a container at least 6m.")
    return size


def nano_cpus(cpu: float) -> int:
    """Docker's ``NanoCpus`` for ``cpu`` cores (0.5 -> 500000000)."""
    return round(cpu * 1e9)

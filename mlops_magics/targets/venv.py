"""Isolated environments: a virtual environment built from a deployment's environment spec.

Built once per spec (cached under ``$MLOPS_HOME/envs/<hash>``), atomically: a failed build leaves
nothing a later deployment would trust. A service run in one sees only what the spec installs
(plus the server's own runtime), which proves the spec complete before any image is built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

from mlops_backend import RUNTIME_REQUIREMENTS

from mlops_magics.authoring.environment import Environment
from mlops_magics.errors import DeployError, InvalidInputError

log = logging.getLogger(__name__)


def spec_hash(env: Environment) -> str:
    """A digest of everything that shapes the environment."""
    text = json.dumps({"python": env.python, "pip": sorted(env.pip), "runtime": RUNTIME_REQUIREMENTS},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure(env: Environment, root: Path, *, progress: bool = True) -> Path:
    """The python executable of an environment for ``env``, built if it is not cached yet.

    Raises:
        InvalidInputError: the spec asks for another Python than this kernel's, or has conda packages.
        DeployError: pip could not install the spec; the message has pip's last lines.
    """
    here = ".".join(platform.python_version_tuple()[:2])
    if env.python != here:
        raise InvalidInputError(f"The environment asks for Python {env.python}, but isolated environments are "
                                f"built with this kernel's Python {here}. Set python={here} in the spec, or "
                                "deploy to a container.")
    if env.conda:
        raise InvalidInputError(f"Isolated environments install pip packages only; move {', '.join(env.conda)} "
                                "to the pip section, or deploy to a container.")
    folder = root / spec_hash(env)
    python = folder / "bin" / "python"
    if python.exists() and (folder / "complete").exists():
        return python
    building = root / f"{folder.name}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    if progress:
        print(f"Building an isolated environment ({len(env.pip)} package(s) + the server runtime)...",
              file=sys.stderr, flush=True)
    venv.EnvBuilder(with_pip=True).create(building)
    done = subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "-qq",
                           "--disable-pip-version-check", *RUNTIME_REQUIREMENTS, *env.pip],
                          capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise DeployError(f"pip could not install the environment ({', '.join(env.pip)}):\n{tail}")
    (building / "complete").write_text(json.dumps(env.as_dict()))
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(building, folder)
    if progress:
        print(f"Isolated environment ready in {time.monotonic() - began:.0f} s ({folder}).", file=sys.stderr,
              flush=True)
    return python

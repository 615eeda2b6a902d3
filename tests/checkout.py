"""What the packaging tests share: a clean copy of the checkout, a fresh virtual environment layered on the test
environment, and the Jupyter commands run in it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: What builds, installs and runs leave in a checkout (left out of a copy made without git).
BUILT = (".git", ".venv", ".bench", ".mlops-quickstart", "node_modules", "lib", "build", "dist", "__pycache__",
         "*.egg-info", "*.tsbuildinfo", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".ipynb_checkpoints",
         ".hypothesis", ".import_linter_cache")

#: Seconds a pip install of the project may take: the build hook may run npm install and the sidebar's build.
INSTALL_TIMEOUT = 540


def clean_copy(dest: Path, *, with_built_sidebar: bool = False) -> Path:
    """Copy what a fresh clone holds (the files git tracks, and new ones it does not ignore) to ``dest``.

    Nothing built comes along (no ``build/``, egg-info, ``node_modules`` or built sidebar), unless
    ``with_built_sidebar``: then ``mlops_magics/labextension`` comes too, times kept, so that the build hook finds
    it up to date and runs no npm.
    """
    if shutil.which("git") and (ROOT / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                                capture_output=True, check=True, timeout=60).stdout.decode()
        for name in filter(None, listed.split("\0")):
            source = ROOT / name
            if source.is_file() and not source.is_symlink():  # a node_modules link is no source
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest / name)
    else:  # not a git checkout (an unpacked sdist): everything but what builds and runs leave behind
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*BUILT))
        shutil.rmtree(dest / "mlops_magics" / "labextension", ignore_errors=True)
    built = ROOT / "mlops_magics" / "labextension"
    if with_built_sidebar and built.is_dir():
        shutil.copytree(built, dest / "mlops_magics" / "labextension")
    return dest


def fresh_venv(path: Path) -> Path:
    """A new virtual environment that sees the test environment's packages (jupyter, pip) after its own.

    ``--system-site-packages`` would give the base interpreter's, not this venv's: a ``.pth`` file lists this
    environment's site-packages instead. Named to load after the ``.pth`` of an editable install, so that an
    editable install in it comes first too. Returns its Python.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    layers = [p for p in sys.path if p.rstrip("/").endswith("site-packages") and Path(p).is_dir()]
    Path(site, "zz_test_environment.pth").write_text("".join(f"{p}\n" for p in layers))
    return python


def environment() -> dict[str, str]:
    """This process's environment without what would point Python or Jupyter elsewhere."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith(("JUPYTER_", "PYTHON", "VIRTUAL_ENV", "PIP_TARGET", "PIP_PREFIX"))}


def pip_install(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pip install --no-deps ARGS`` as a user would run it (build isolation: pip fetches hatchling)."""
    return subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--quiet", *args], capture_output=True,
                          text=True, timeout=INSTALL_TIMEOUT, env=environment(), cwd=python.parent)


def jupyter(python: Path, module: str, *args: str) -> str:
    """What ``jupyter ...`` (the app in ``module``) prints in that environment, colour codes removed."""
    done = subprocess.run([str(python), "-m", module, *args], capture_output=True, text=True, timeout=120,
                          env=environment(), cwd=python.parent)
    return re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)


def section(listing: str, folder: Path) -> str:
    """The part of a ``jupyter ... list`` output under one folder's heading (up to the next heading)."""
    lines = listing.splitlines()
    heading = next((i for i, line in enumerate(lines) if str(folder) in line), None)
    if heading is None:
        return ""
    rest = []
    for line in lines[heading + 1:]:
        if line.strip().startswith(("Config dir:", "/")) or (line and not line.startswith(" ")):
            break
        rest.append(line)
    return "\n".join(rest)

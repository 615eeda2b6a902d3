"""The distribution: a wheel built from the checkout holds every module of both packages, the file that enables
the Jupyter server extension, and the built JupyterLab sidebar."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_holds_every_module(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a clean copy: an old build/ folder in the checkout would fill the gaps
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "jupyter-config", source / "jupyter-config")
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "mlops_magics", source / "mlops_magics", ignore=skip)
    shutil.copytree(ROOT / "backend", source / "backend", ignore=skip)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("mlops_magics-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = [p.relative_to(ROOT).as_posix() for p in (ROOT / "mlops_magics").rglob("*.py")]
    sources += ["mlops_backend/" + p.relative_to(ROOT / "backend" / "mlops_backend").as_posix()
                for p in (ROOT / "backend" / "mlops_backend").rglob("*.py")]
    missing = sorted(s for s in sources if s not in names and "__pycache__" not in s)
    assert not missing, f"not in the wheel (list the package in pyproject.toml): {missing}"
    enable = "mlops_magics-0.1.0.data/data/etc/jupyter/jupyter_server_config.d/mlops_magics.json"
    assert enable in names, "installing the wheel enables the Jupyter server extension"
    built = ROOT / "mlops_magics" / "labextension"
    assert (built / "package.json").exists(), "the sidebar is not built: run make labextension"
    prefix = "mlops_magics-0.1.0.data/data/share/jupyter/labextensions/mlops-magics/"
    shipped = sorted(n.removeprefix(prefix) for n in names if n.startswith(prefix))
    expected = sorted(p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file())
    assert shipped == expected and any(n.startswith("static/remoteEntry.") for n in shipped), \
        "installing the wheel installs the JupyterLab sidebar"

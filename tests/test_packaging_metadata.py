"""The distribution: a wheel built from a clean copy of the checkout, as pip builds it for any user (build isolation:
the build backend comes from pyproject.toml, not from this machine), holds every module of both packages, the file
that enables the Jupyter server extension, and the built JupyterLab sidebar."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.checkout import INSTALL_TIMEOUT, ROOT, clean_copy, environment


@pytest.mark.slow
def test_the_wheel_holds_every_module(tmp_path: Path) -> None:
    # the built sidebar comes along (the build hook then runs no npm); tests/test_install.py builds it from nothing
    source = clean_copy(tmp_path / "src", with_built_sidebar=True)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT, env=environment())
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = tmp_path.glob("mlops_magics-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = [p.relative_to(ROOT).as_posix() for p in (ROOT / "mlops_magics").rglob("*.py")]
    sources += ["mlops_backend/" + p.relative_to(ROOT / "backend" / "mlops_backend").as_posix()
                for p in (ROOT / "backend" / "mlops_backend").rglob("*.py")]
    missing = sorted(s for s in sources if s not in names and "__pycache__" not in s)
    assert not missing, f"not in the wheel (see [tool.hatch.build.targets.wheel] in pyproject.toml): {missing}"
    assert "mlops_backend/_compat/README.md" in names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "benchmarks/", "mlops_magics/labextension"))]
    data = "mlops_magics-0.1.0.data/data/"
    assert f"{data}etc/jupyter/jupyter_server_config.d/mlops_magics.json" in names, \
        "installing the wheel enables the Jupyter server extension"
    built = source / "mlops_magics" / "labextension"
    prefix = f"{data}share/jupyter/labextensions/mlops-magics/"
    shipped = sorted(n.removeprefix(prefix) for n in names if n.startswith(prefix))
    expected = sorted([*(p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file()), "install.json"])
    assert shipped == expected and any(n.startswith("static/remoteEntry.") for n in shipped), \
        "installing the wheel installs the JupyterLab sidebar"


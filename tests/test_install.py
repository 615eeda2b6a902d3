"""Installing as users do: plain pip, from a clean copy of the checkout, into a fresh environment, gives the
JupyterLab sidebar and the enabled server extension, as a wheel and editable alike.

The first install runs the build hook for real (npm install, tsc and the extension builder: about 30-60 s here);
the editable one then finds the sidebar built.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.checkout import clean_copy, fresh_venv, jupyter, pip_install, section

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("npm") is None:
        pytest.skip("npm is missing: building the JupyterLab sidebar needs Node.js >= 20 and npm.")
    return clean_copy(tmp_path_factory.mktemp("clean") / "mlops-magics")


def _check_extensions(python: Path, prefix: Path) -> None:
    labextensions = jupyter(python, "jupyterlab.labextensions", "list")
    listed = section(labextensions, prefix / "share" / "jupyter" / "labextensions")
    assert "mlops-magics v0.1.0 enabled OK (python, mlops-magics)" in listed, labextensions
    servers = jupyter(python, "jupyter_server.extension.serverextension", "list")
    enabled = section(servers, prefix / "etc" / "jupyter")
    assert "mlops_magics.server_extension enabled" in enabled and "mlops_magics.server_extension  OK" in enabled, \
        servers


def _imported_from(python: Path) -> tuple[Path, Path]:
    """Where that environment imports the two packages from."""
    done = subprocess.run([str(python), "-c", "import mlops_magics, mlops_backend; print(mlops_magics.__file__); "
                           "print(mlops_backend.__file__)"], capture_output=True, text=True, timeout=60, check=True,
                          cwd=python.parent)
    magics, backend = (Path(line).parent for line in done.stdout.split())
    return magics, backend


def test_pip_install_of_a_clean_checkout_gives_the_sidebar_and_the_server_extension(checkout: Path,
                                                                                    tmp_path: Path) -> None:
    assert not (checkout / "mlops_magics" / "labextension").exists()  # nothing built: the hook must build it
    python = fresh_venv(tmp_path / "venv")
    done = pip_install(python, str(checkout))
    assert done.returncode == 0, done.stdout + done.stderr
    magics, backend = _imported_from(python)
    assert magics.is_relative_to(tmp_path / "venv") and backend.is_relative_to(tmp_path / "venv")
    _check_extensions(python, tmp_path / "venv")
    assert (tmp_path / "venv" / "bin" / "mlops").exists() and (tmp_path / "venv" / "bin" / "mlops-serve").exists()


def test_an_editable_install_gives_them_too(checkout: Path, tmp_path: Path) -> None:
    python = fresh_venv(tmp_path / "venv")
    done = pip_install(python, "-e", str(checkout))
    assert done.returncode == 0, done.stdout + done.stderr
    # the checkout's own files: edits are seen at once
    assert _imported_from(python) == (checkout / "mlops_magics", checkout / "backend" / "mlops_backend")
    _check_extensions(python, tmp_path / "venv")

"""Imports stay cheap and point one way (DESIGN.md: layers)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ["IPython", "ipywidgets", "tornado", "jupyter_server", "starlette", "uvicorn", "matplotlib",
         "docker", "sqlite_utils", "pandas", "numpy", "sklearn"]


def _modules_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys, json\nprint(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("statement", ["import mlops_magics", "import mlops_magics.api", "import mlops_magics.cli",
                                       "import mlops_magics.endpoints.comparison"])
def test_importing_the_package_loads_no_notebook_server_or_heavy_library(statement: str) -> None:
    loaded = _modules_after(statement)
    assert not loaded & set(HEAVY), f"{statement} imported {sorted(loaded & set(HEAVY))}"


@pytest.mark.parametrize("statement", ["import mlops_backend",
                                       "import mlops_backend.cli, mlops_backend.server, mlops_backend.app"])
def test_backend_never_imports_the_notebook_side_or_what_a_script_may_not_need(statement: str) -> None:
    loaded = _modules_after(statement)
    forbidden = {"mlops_magics", "IPython", "jupyter_server", "matplotlib", "docker", "ipywidgets",
                 "numpy", "pandas", "werkzeug", "inference_schema", "azureml"}
    assert not loaded & forbidden, sorted(loaded & forbidden)


def test_only_the_magics_module_imports_ipython() -> None:
    assert "IPython" in _modules_after("import mlops_magics.magics")

"""--isolated: the service runs in a virtual environment built from the environment spec only."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

import mlops_magics as mm
from mlops_magics.errors import DeployError, InvalidInputError
from mlops_magics.registry import Registry

pytestmark = [pytest.mark.serve, pytest.mark.slow]

SCRIPT = '''import importlib.util
import json
import os
import pickle


def init():
    global model
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl"), "rb") as fh:
        model = pickle.load(fh)


def run(data):
    return {"w": model["w"], "x": json.loads(data), "numpy_visible": importlib.util.find_spec("numpy") is not None}
'''


@pytest.fixture(scope="module")
def envs_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One registry folder for the module, so the environment is built once and reused."""
    return tmp_path_factory.mktemp("isolated-home")


@pytest.fixture
def isolated_registry(envs_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    from mlops_magics import registry as registry_module

    monkeypatch.setenv("MLOPS_HOME", str(envs_home))
    registry_module._open.clear()
    yield registry_module.default_registry()
    mm.undeploy(all_services=True)


def test_an_isolated_service_sees_only_its_environment(isolated_registry: Registry) -> None:
    mm.register({"w": 3}, "lookup")
    mm.set_score_script("lookup", SCRIPT)
    mm.set_environment("lookup", "cloudpickle\n")
    d = mm.deploy("lookup", isolated=True)
    assert mm.call("lookup", {"q": 1}) == {"w": 3, "x": {"q": 1}, "numpy_visible": False}
    assert d.config["isolated"] is True
    built = [p for p in (isolated_registry.home / "envs").iterdir() if (p / "complete").exists()]
    assert len(built) == 1
    stamp = (built[0] / "complete").stat().st_mtime_ns
    mm.reload("lookup")  # the same spec reuses the cached environment
    assert (built[0] / "complete").stat().st_mtime_ns == stamp
    assert mm.call("lookup", [1])["w"] == 3


def test_a_package_missing_from_the_environment_fails_the_deploy(isolated_registry: Registry) -> None:
    mm.register({"w": 1}, "needs-joblib")
    mm.set_score_script("needs-joblib", "import joblib\n" + SCRIPT, line_offset=1)
    mm.set_environment("needs-joblib", "cloudpickle\n")
    with pytest.raises(DeployError, match=r"(?s)score script cell, line 2.*No module named 'joblib'"):
        mm.deploy("needs-joblib", isolated=True)


def test_isolation_needs_a_pip_environment_for_this_python(isolated_registry: Registry) -> None:
    mm.register({"w": 1}, "plain")
    mm.set_score_script("plain", SCRIPT)
    with pytest.raises(InvalidInputError, match="--isolated needs an environment for plain:1"):
        mm.deploy("plain", isolated=True)
    other = "3.12" if platform.python_version().startswith("3.11") else "3.11"  # older than 3.10 becomes the kernel's
    mm.set_environment("plain", f"dependencies:\n  - python={other}\n  - pip:\n    - cloudpickle\n")
    with pytest.raises(InvalidInputError, match=f"asks for Python {other}"):
        mm.deploy("plain", isolated=True)

"""Environments from cells and from the kernel; trial runs of entry scripts."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

import mlops_magics as mm
from mlops_magics import api
from mlops_magics.authoring import environment
from mlops_magics.errors import DeployError, InvalidInputError
from mlops_magics.registry import Registry

SKLEARN = importlib.metadata.version("scikit-learn")


def test_pip_lines_are_validated_with_their_cell_line() -> None:
    env = environment.parse("# pinned\nscikit-learn==1.5.2\nnumpy>=1.26  # arrays\n", line_offset=1)
    assert env.pip == ("scikit-learn==1.5.2", "numpy>=1.26")
    assert "scikit-learn==1.5.2\n" in env.requirements_txt() and "    - numpy>=1.26" in env.conda_yaml()
    with pytest.raises(InvalidInputError, match=r"cell line 3: 'numpy=>1' is not a valid requirement"):
        environment.parse("pandas\nnumpy=>1\n", line_offset=1)
    with pytest.raises(InvalidInputError, match=r"cell line 1: pip options \(--index-url\)"):
        environment.parse("--index-url https://example.org\n")
    with pytest.raises(InvalidInputError, match="The environment is empty"):
        environment.parse("# nothing\n")


def test_conda_yaml_is_read() -> None:
    env = environment.parse("name: x\nchannels: [defaults]\ndependencies:\n  - python=3.10\n  - libgomp\n"
                            "  - pip\n  - pip:\n    - scikit-learn==1.5.2\n")
    assert (env.python, env.conda, env.pip, env.channels) == ("3.10", ("libgomp",), ("scikit-learn==1.5.2",),
                                                              ("defaults",))
    with pytest.raises(InvalidInputError, match="not valid YAML"):
        environment.parse("dependencies: [unclosed\n")


def test_from_kernel_pins_what_the_script_and_flavor_import() -> None:
    script = "import json\nimport numpy as np\nfrom sklearn import linear_model\n\ndef init():\n    pass\n"
    env = environment.from_kernel(script, flavor="sklearn", framework="scikit-learn")
    names = {r.split("==")[0]: r for r in env.pip}
    assert names["scikit-learn"] == f"scikit-learn=={SKLEARN}"
    assert names["numpy"] == f"numpy=={importlib.metadata.version('numpy')}"
    assert "joblib" in names and "json" not in names


def test_a_model_pickled_by_value_gets_cloudpickle_in_its_environment(registry: Registry) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec("class Halver:\n    def fit(self, X, y=None): return self\n"  # a class defined in a notebook
         "    def predict(self, X): return [x / 2 for x in X]\n", namespace)
    v = mm.register(namespace["Halver"](), "halver")
    assert v.flavor_options["serializer"] == "cloudpickle"
    env = api.set_environment("halver", from_kernel=True)
    assert any(r.startswith("cloudpickle==") for r in env.pip)


def test_a_pin_unlike_the_training_version_is_warned_about(registry: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris")
    env = api.set_environment("iris", "scikit-learn==0.24.2\n")
    assert any("does not allow scikit-learn" in w and SKLEARN in w for w in env.warnings)
    clean = api.set_environment("iris", f"scikit-learn=={SKLEARN}\n")
    assert clean.warnings == ()
    assert dict(registry.inference(registry.get("iris")).environment or {})["pip"] == [f"scikit-learn=={SKLEARN}"]


def test_the_environment_magic_from_a_cell_and_from_the_kernel(ip: Any, iris_lr: Any, tmp_path: Path) -> None:
    ip.user_ns["clf"] = iris_lr
    ip.run_line_magic("register", "clf --name iris")
    env = ip.run_cell_magic("environment", "iris", "scikit-learn\njoblib\n")
    assert env.pip == ("scikit-learn", "joblib")
    kernel = ip.run_line_magic("environment", f"iris --from-kernel --write {tmp_path}")
    assert f"scikit-learn=={SKLEARN}" in kernel.pip
    assert f"scikit-learn=={SKLEARN}" in (tmp_path / "requirements.txt").read_text()
    assert "dependencies:" in (tmp_path / "conda.yaml").read_text()
    with pytest.raises(UsageError, match="or use --from-kernel"):
        ip.run_line_magic("environment", "iris")


@pytest.mark.serve
def test_a_trial_run_scores_the_registered_example(registry: Registry, iris_lr: Any, iris: Any) -> None:
    X, _ = iris
    mm.register(iris_lr, "iris", sample=X[:3])
    result = api.try_score_script("iris")
    assert result.ok and result.output == iris_lr.predict(X[:3]).tolist()
    assert not list((registry.home / "trials").iterdir())  # the trial folder is gone
    assert registry.deployments() == []  # and nothing was recorded


@pytest.mark.serve
def test_a_trial_run_reports_failures_with_cell_lines(ip: Any, iris_lr: Any, iris: Any) -> None:
    ip.user_ns.update(clf=iris_lr, X=iris[0])
    ip.run_line_magic("register", "clf --name iris --sample X[:2]")
    result = ip.run_cell_magic("score_script", "iris --test",
                               "def init():\n    pass\n\ndef run(data):\n    return 1 / 0\n")
    assert result.status == 500 and "ZeroDivisionError" in result.output["message"]
    assert "score script cell, line 6, in run" in result.log
    with pytest.raises(UsageError, match=r"(?s)score script cell, line 3.*RuntimeError: boom"):
        ip.run_cell_magic("score_script", "iris --test",
                          "def init():\n    raise RuntimeError('boom')\n\ndef run(data):\n    return 1\n")
    mm.register({"no": "sample"}, "bare")
    with pytest.raises(InvalidInputError, match="has no registered input example"):
        api.try_score_script("bare")


@pytest.mark.serve
def test_deployments_carry_their_environment_files(registry: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris")
    api.set_environment("iris", "scikit-learn\n")
    d = mm.deploy("iris")
    try:
        folder = Path(d.config["folder"])
        assert (folder / "environment" / "requirements.txt").read_text() == "scikit-learn\n"
        assert "  - pip:\n    - scikit-learn" in (folder / "environment" / "conda.yaml").read_text()
    finally:
        mm.undeploy("iris")


def test_deploy_errors_are_typed() -> None:
    assert issubclass(DeployError, mm.MlopsError)


@pytest.mark.serve
def test_a_trial_run_takes_a_sample_from_the_notebook(ip: Any, iris_lr: Any, iris: Any) -> None:
    X, _ = iris
    ip.user_ns.update(clf=iris_lr, X_test=X)
    ip.run_line_magic("register", "clf --name iris")  # no --sample: nothing registered to send
    with pytest.raises(UsageError, match=r"has no registered input example: pass a sample \(%score_script iris "
                                         r"--test --sample"):
        ip.run_line_magic("score_script", "iris --test")
    script = ("import json, os, joblib\n\ndef init():\n    global model\n    model = joblib.load(os.path.join("
              "os.environ['AZUREML_MODEL_DIR'], 'model.pkl'))\n\ndef run(raw):\n"
              "    return {'n': len(json.loads(raw)['data']), 'y': model.predict(json.loads(raw)['data']).tolist()}\n")
    result = ip.run_cell_magic("score_script", "iris --test --sample X_test[50:53]", script)
    assert result.ok and result.output == {"n": 3, "y": iris_lr.predict(X[50:53]).tolist()}
    again = ip.run_line_magic("score_script", "iris --test --sample X_test[:1]")  # the saved script, a new sample
    assert again.output == {"n": 1, "y": iris_lr.predict(X[:1]).tolist()}
    with pytest.raises(UsageError, match=r"--sample X_test\[:1\] is what --test sends: add --test"):
        ip.run_line_magic("score_script", "iris --sample X_test[:1]")
    with pytest.raises(UsageError, match="Could not evaluate --sample 'nope'"):
        ip.run_line_magic("score_script", "iris --test --sample nope")


@pytest.mark.serve
def test_the_script_a_writefile_cell_wrote_is_saved_with_file(ip: Any, iris_lr: Any, iris: Any, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    X, _ = iris
    ip.user_ns.update(clf=iris_lr, X=X)
    ip.run_line_magic("register", "clf --name iris --sample X[:2]")
    score = tmp_path / "score.py"
    ip.run_cell_magic("writefile", str(score), "def init():\n    pass\n\ndef run(data):\n    return 'from file'\n")
    capsys.readouterr()
    assert ip.run_line_magic("score_script", f"iris --file {score}") is None
    assert "Saved a 5-line entry script for every version of iris" in capsys.readouterr().out
    assert mm.entry_script("iris") == (score.read_text(), False)
    info = api.script_info("iris")
    assert info.file == str(score) and f"saved from the file {score}" in info.origin
    trial = ip.run_line_magic("score_script", f"iris --file {score} --test")
    assert trial.ok and trial.output == "from file"
    score.write_text("def init():\n    pass\n\ndef run(data):\n    return 1 / 0\n")
    failed = ip.run_line_magic("score_script", f"iris --file {score} --test")
    assert failed.status == 500 and "score.py\", line 5, in run" in failed.log  # the file's own line
    score.write_text("def init():\n    pass\n\nimport nosuchmodule\n\ndef run(data):\n    return 1\n")
    with pytest.raises(UsageError, match=r"score.py line 4: import 'nosuchmodule' cannot be resolved"):
        ip.run_line_magic("score_script", f"iris --file {score}")
    with pytest.raises(UsageError, match=r"Cannot read the entry script .*missing.py.*%%writefile score.py"):
        ip.run_line_magic("score_script", f"iris --file {tmp_path / 'missing.py'}")
    with pytest.raises(UsageError, match="leave the cell empty"):
        ip.run_cell_magic("score_script", f"iris --file {score}", "def init(): pass\n")


HERE = ".".join(platform.python_version_tuple()[:2])

SDK_V1_ENV = """\
name: project_environment
dependencies:
  - python=3.6.2
  - pip:
    - azureml-defaults
    - azureml-monitoring
    - scikit-learn
    - inference-schema[numpy-support]
channels:
  - anaconda
  - conda-forge
"""


def test_a_python_the_server_cannot_run_on_is_replaced_and_said(registry: Registry, iris_lr: Any) -> None:
    env = environment.parse(SDK_V1_ENV)
    assert env.python == HERE  # what deployments run instead
    said = [w for w in env.warnings if w.startswith("python=3.6.2")]
    assert len(said) == 1 and "cannot be honoured" in said[0] and f"use Python {HERE}" in said[0]
    patch = environment.parse(f"dependencies:\n  - python={HERE}.99\n  - pip:\n    - numpy\n")
    assert patch.python == HERE and any(f"python={HERE}.99" in w and "minor version" in w for w in patch.warnings)
    other = environment.parse("dependencies:\n  - python=3.99\n  - pip:\n    - numpy\n")
    assert other.python == "3.99" and any("--base-image python:3.99-slim" in w for w in other.warnings)
    ranged = environment.parse("dependencies:\n  - python>=3.8\n  - pip:\n    - numpy\n")
    assert (ranged.python, ranged.conda) == (HERE, ())  # a range is a Python requirement, never a conda package
    assert environment.parse("dependencies:\n  - python-dateutil\n  - python\n").conda == ("python-dateutil",)
    assert environment.parse(f"dependencies:\n  - python={HERE}\n  - pip:\n    - numpy\n").warnings == ()
    with pytest.raises(InvalidInputError, match="python=three is not a Python version"):
        environment.parse("dependencies:\n  - python=three\n")
    mm.register(iris_lr, "iris")
    stored = api.set_environment("iris", SDK_V1_ENV)  # the API's result carries the warnings
    assert any("cannot be honoured" in w for w in stored.warnings) and "warning: python=3.6.2" in repr(stored)
    assert dict(registry.inference(registry.get("iris")).environment or {})["python"] == HERE


def test_azure_only_packages_are_left_out_and_said(ip: Any, iris_lr: Any) -> None:
    env = environment.parse(SDK_V1_ENV)
    assert env.pip == ("scikit-learn", "inference-schema[numpy-support]")
    said = [w for w in env.warnings if "azureml-defaults" in w]
    assert len(said) == 1 and "azureml-monitoring" in said[0] and "left out" in said[0]
    assert "azureml.core.model" in said[0] and "ModelDataCollector" in said[0]  # what serves instead
    pip = environment.parse("azureml-core==1.57.0\nazureml-automl-runtime\nnumpy\n")
    assert pip.pip == ("azureml-automl-runtime", "numpy")
    assert any("azureml-automl-runtime" in w and "installed as listed" in w for w in pip.warnings)
    with pytest.raises(InvalidInputError, match="The environment is empty.*azureml-defaults is left out"):
        environment.parse("azureml-defaults\n")
    ip.user_ns["clf"] = iris_lr
    ip.run_line_magic("register", "clf --name iris")
    shown = ip.run_cell_magic("environment", "iris", SDK_V1_ENV)  # what the cell shows: the warnings too
    assert shown.pip == ("scikit-learn", "inference-schema[numpy-support]")
    assert "warning: azureml-defaults" in repr(shown) and "warning: python=3.6.2" in repr(shown)

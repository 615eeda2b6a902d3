"""SDK v1 (``azureml.core``) notebooks run locally through ``mlops_magics.azureml``, unchanged but for the workspace.

The code in these tests is written in the SDK's idiom (as Azure's sample notebooks): a Ridge regression on
scikit-learn's diabetes data saved with joblib, an entry script with init()/run() calling Model.get_model_path, a
source directory, ``service.run(json_string)``. The layer is installed for this module only and taken away after it
(the scoring server's own shims are what other tests import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.infrastructure import docker_engine

BASE = os.environ.get("MLOPS_BASE_IMAGE") or "mlops-base:bookworm"
NOTEBOOK = Path(__file__).resolve().parent / "notebooks" / "sdk_v1_diabetes.ipynb"

SCORE = """\
import json
import os

import joblib
import numpy as np
from azureml.core.model import Model

from helpers import scale


def init():
    global model, unit
    model = joblib.load(Model.get_model_path("sklearn_regression_model"))
    with open("./source_dir/extradata.json") as f:   # Azure's images run from the app root
        unit = json.load(f)["unit"]


def run(raw_data):
    data = np.array(json.loads(raw_data)["data"])
    return {"result": scale(model.predict(data)).tolist(), "unit": unit, "variant": VARIANT}


VARIANT = "first"
"""


@pytest.fixture(scope="module")
def sdk() -> Iterator[Any]:
    """The layer installed (``import mlops_magics.azureml``), removed at the end of the module."""
    import mlops_magics.azureml as layer

    assert layer.install()
    yield layer
    layer.uninstall()


@pytest.fixture
def project(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, sdk: Any) -> Iterator[Path]:
    """A notebook's folder: config.json, the trained model saved with joblib, source_dir with the entry script."""
    import joblib
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".azureml").mkdir()
    (tmp_path / ".azureml" / "config.json").write_text(json.dumps(
        {"subscription_id": "0000-1111", "resource_group": "rg-diabetes", "workspace_name": "mlops-ws"}))
    X, y = load_diabetes(return_X_y=True)
    (tmp_path / "outputs").mkdir()
    joblib.dump(Ridge(alpha=0.5).fit(X, y), tmp_path / "outputs" / "sklearn_regression_model.pkl")
    source = tmp_path / "source_dir"
    source.mkdir()
    (source / "score.py").write_text(SCORE)
    (source / "helpers.py").write_text("def scale(values):\n    return values\n")
    (source / "extradata.json").write_text('{"unit": "disease progression"}')
    yield tmp_path
    from mlops_magics import api

    api.undeploy(all_services=True)


def _diabetes() -> tuple[Any, Any]:
    from sklearn.datasets import load_diabetes

    return load_diabetes(return_X_y=True)


def _expected(project: Path, rows: Any) -> list[float]:
    import joblib

    return list(joblib.load(project / "outputs" / "sklearn_regression_model.pkl").predict(rows).tolist())


# -- the local flow ----------------------------------------------------------------------------------------------


def test_register_deploy_locally_call_reload_and_delete_in_the_sdks_idiom(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from azureml.core import Environment, Workspace
    from azureml.core.conda_dependencies import CondaDependencies
    from azureml.core.model import InferenceConfig, Model
    from azureml.core.webservice import LocalWebservice, Webservice
    from azureml.exceptions import WebserviceException

    ws = Workspace.from_config()
    said = capsys.readouterr().out
    assert ws.name == "mlops-ws" and "config.json: workspace 'mlops-ws' maps to the local registry" in said
    Workspace.from_config()
    assert "maps to the local registry" not in capsys.readouterr().out  # said once

    model = Model.register(workspace=ws, model_path="outputs/sklearn_regression_model.pkl",
                           model_name="sklearn_regression_model", tags={"area": "diabetes", "type": "regression"},
                           properties={"alpha": 0.5}, description="Ridge regression to predict diabetes",
                           model_framework=Model.Framework.SCIKITLEARN)
    assert (model.name, model.version, model.id) == ("sklearn_regression_model", 1, "sklearn_regression_model:1")
    assert model.tags == {"area": "diabetes", "type": "regression"} and model.properties == {"alpha": "0.5"}
    # the file keeps the name the script expects
    assert Path(Model.get_model_path("sklearn_regression_model", _workspace=ws)).name == "sklearn_regression_model.pkl"
    again = Model(ws, "sklearn_regression_model", version=1)
    assert again.id == model.id and again.description == "Ridge regression to predict diabetes"
    assert [m.id for m in Model.list(ws, name="sklearn_regression_model", tags=[["area", "diabetes"]])] == [model.id]

    myenv = Environment("diabetes-env")
    myenv.python.conda_dependencies = CondaDependencies.create(pip_packages=["scikit-learn", "joblib"])
    myenv.python.conda_dependencies.add_pip_package("numpy")
    inference_config = InferenceConfig(entry_script="score.py", source_directory="source_dir", environment=myenv)
    deployment_config = LocalWebservice.deploy_configuration(port=None)
    service = Model.deploy(ws, "diabetes-local", [model], inference_config, deployment_config)
    service.wait_for_deployment(show_output=True)
    assert isinstance(service, LocalWebservice) and service.state == "Healthy" and service.compute_type == "Local"
    assert service.scoring_uri == f"http://127.0.0.1:{service.port}/score"
    assert service.swagger_uri == f"http://127.0.0.1:{service.port}/swagger.json"
    assert ws.registry.inference(ws.registry.get(model.id)).environment["pip"] == ["scikit-learn", "joblib", "numpy"]

    X, _ = _diabetes()
    test_sample = json.dumps({"data": X[:2].tolist()})
    prediction = service.run(input_data=test_sample)
    assert prediction == {"result": _expected(project, X[:2]), "unit": "disease progression", "variant": "first"}

    # edit the entry script and a file beside it, then reload: the source directory is read again
    (project / "source_dir" / "score.py").write_text(SCORE.replace('"first"', '"second"'))
    (project / "source_dir" / "helpers.py").write_text("def scale(values):\n    return values * 0 + 1\n")
    service.reload()
    assert service.run(test_sample) == {"result": [1.0, 1.0], "unit": "disease progression", "variant": "second"}

    found = Webservice(ws, "diabetes-local")  # found again, as its own type
    assert isinstance(found, LocalWebservice) and found.models[0].id == model.id
    assert [s.name for s in Webservice.list(ws)] == ["diabetes-local"]
    assert "second" in (project / "source_dir" / "score.py").read_text() and found.get_logs()

    with pytest.raises(WebserviceException, match=r"Service diabetes-local with the same name already exists.*"
                                                  r"overwrite=True"):
        Model.deploy(ws, "diabetes-local", [model], inference_config, deployment_config)
    replaced = Model.deploy(ws, "diabetes-local", [model], inference_config, deployment_config, overwrite=True)
    assert replaced.run(test_sample)["variant"] == "second"

    with pytest.raises(WebserviceException,
                       match=r"(?s)Received bad response from service.*Response Code: 500.*JSONDecodeError"):
        service.run("not json")  # the script's own failure, as SDK v1 reports it
    service.delete()
    assert service.state == "Deleted"
    service.delete()  # idempotent
    with pytest.raises(WebserviceException, match="is not serving"):
        service.run(test_sample)


def test_entry_script_without_a_source_directory_and_a_no_code_deployment(project: Path) -> None:
    from azureml.core import Workspace
    from azureml.core.model import InferenceConfig, Model
    from azureml.core.webservice import LocalWebservice

    ws = Workspace.get("local")
    model = Model.register(ws, "outputs/sklearn_regression_model.pkl", "sklearn_regression_model")
    (project / "score.py").write_text(SCORE.replace("from helpers import scale", "scale = abs").replace(
        'open("./source_dir/extradata.json")', 'open("extradata.json")'))
    (project / "extradata.json").write_text('{"unit": "u"}')
    with pytest.raises(Exception, match="No such file|FileNotFoundError|extradata"):
        # without a source directory only the entry script is deployed (as on Azure): its extra file is not there
        Model.deploy(ws, "plain", [model], InferenceConfig(entry_script="score.py"),
                     LocalWebservice.deploy_configuration())
    X, _ = _diabetes()
    # no InferenceConfig: the generated entry script of the registered scikit-learn model
    service = Model.deploy(ws, "nocode", [model], deployment_config=LocalWebservice.deploy_configuration())
    try:
        answer = service.run(json.dumps({"data": X[:1].tolist()}))
        assert json.dumps(answer).count(str(round(_expected(project, X[:1])[0], 3))[:6]) == 1
    finally:
        service.delete()


def test_environments_from_files_and_conda_dependencies(project: Path) -> None:
    from azureml.core import Environment
    from azureml.core.conda_dependencies import CondaDependencies

    (project / "requirements.txt").write_text("scikit-learn\njoblib==1.4.2  # pinned\n")
    env = Environment.from_pip_requirements("pipenv", "requirements.txt")
    assert env.python.conda_dependencies.pip_packages == ["scikit-learn", "joblib==1.4.2"]
    (project / "env.yml").write_text("name: myenv\ndependencies:\n  - python=3.11\n  - numpy\n  - pip:\n"
                                     "    - scikit-learn\nchannels:\n  - conda-forge\n")
    conda = Environment.from_conda_specification("condaenv", "env.yml")
    deps = conda.python.conda_dependencies
    assert (deps.get_python_version(), deps.conda_packages, deps.pip_packages) == ("3.11", ["numpy"], ["scikit-learn"])
    deps.add_conda_package("numpy=1.26")
    deps.add_pip_package("scikit-learn==1.5.0")  # replaces, by name
    assert deps.conda_packages == ["numpy=1.26"] and deps.pip_packages == ["scikit-learn==1.5.0"]
    assert "python=3.11" in deps.serialize_to_string() and "scikit-learn==1.5.0" in conda.specification()
    created = CondaDependencies.create(python_version="3.10", conda_packages=["pandas"], pip_packages=["joblib"])
    assert CondaDependencies(created.save(str(project / "saved.yml"))).pip_packages == ["joblib"]
    assert Environment.get(None, "AzureML-sklearn-1.0-ubuntu20.04-py38-cpu").specification() is None  # the kernel's
    conda.register(None)
    assert Environment.get(None, "condaenv") is conda


def test_aks_deployment_configuration_becomes_kubernetes_settings(sdk: Any) -> None:
    from azureml.core.webservice import AksWebservice

    from mlops_magics.targets.kube.settings import settings

    config = AksWebservice.deploy_configuration(autoscale_enabled=True, autoscale_min_replicas=2,
                                                autoscale_max_replicas=5, autoscale_target_utilization=60,
                                                cpu_cores=0.5, memory_gb=1, num_replicas=None,
                                                collect_model_data=True, tags={"team": "a"}, enable_app_insights=True)
    kwargs = config.deploy_kwargs()
    chosen = settings(kwargs["target_options"])
    assert (chosen.autoscale, chosen.min_replicas, chosen.max_replicas, chosen.target_utilization) == (True, 2, 5, 60)
    assert (chosen.cpu, chosen.memory_gb, chosen.collect, chosen.auth) == (0.5, 1, True, True)  # AKS: auth by default
    assert config.tags == {"team": "a"} and kwargs["auth"] is True


# -- what is refused -----------------------------------------------------------------------------------------------


def test_unknown_sdk_calls_raise_one_clear_error_naming_the_call_and_what_to_use(project: Path) -> None:
    from azureml.core import Workspace
    from azureml.core.model import Model
    from azureml.core.webservice import AciWebservice, Webservice

    with pytest.raises(ImportError, match=r"azureml.core.Experiment is not provided by mlops_magics.azureml.*"
                                          r"Instead: train in the notebook"):
        from azureml.core import Experiment  # noqa: F401
    with pytest.raises(ImportError, match=r"import azureml.core.compute is not provided.*current kubectl context"):
        import azureml.core.compute
    with pytest.raises(ImportError, match=r"import azureml.train is not provided.*train in the notebook"):
        import azureml.train.sklearn  # noqa: F401
    with pytest.raises(AttributeError, match=r"Webservice.deploy_from_image is not provided.*Instead: Model.deploy"):
        Webservice.deploy_from_image  # noqa: B018
    assert not hasattr(Model, "create_from_run") and hasattr(Model, "register")  # hasattr stays usable
    ws = Workspace.from_config()
    with pytest.raises(AttributeError, match=r"Workspace.compute_targets is not provided"):
        ws.compute_targets  # noqa: B018
    with pytest.raises(Exception, match=r"ssl_enabled=True\) is not supported locally: .*TLS proxy"):
        AciWebservice.deploy_configuration(ssl_enabled=True)
    with pytest.raises(Exception, match=r"Model.register\(datasets=.*\) is not supported locally"):
        Model.register(ws, "outputs/sklearn_regression_model.pkl", "m", datasets=[("training", object())])
    from azureml.exceptions import ModelPathNotFoundException

    with pytest.raises(ModelPathNotFoundException, match="does not exist"):
        Model.register(ws, "outputs/missing.pkl", "m")
    model = Model.register(ws, "outputs/sklearn_regression_model.pkl", "m")
    from azureml.exceptions import UserErrorException

    with pytest.raises(UserErrorException, match="one model per service"):
        Model.deploy(ws, "two", [model, model])


def test_the_shims_deployments_import_are_the_servers_own_files(sdk: Any) -> None:
    import azureml.contrib.services.aml_response as response
    import azureml.monitoring
    from azureml.monitoring import ModelDataCollector
    from mlops_backend.entry import COMPAT_PATH

    assert Path(azureml.monitoring.__file__).is_relative_to(COMPAT_PATH)
    assert Path(response.__file__).is_relative_to(COMPAT_PATH)
    collector = ModelDataCollector("sklearn_regression_model", designation="inputs", feature_names=["a", "b"])
    assert collector.collect([[1, 2]]) is None  # nothing deployed collects in the kernel: a no-op, as on Azure


def test_a_real_azureml_core_is_never_shadowed(sdk: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    dist = tmp_path / "azureml_core-1.60.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: azureml-core\nVersion: 1.60.0\n")
    sdk.uninstall()
    try:
        monkeypatch.syspath_prepend(str(tmp_path))
        assert sdk.real_sdk() == "1.60.0"
        assert sdk.install() is False and not sdk.installed()
        assert "azureml-core 1.60.0 is installed: `import azureml.core` is the real SDK" in capsys.readouterr().out
    finally:
        monkeypatch.undo()
        assert sdk.install()


def test_other_azureml_distributions_still_import(sdk: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "azureml" / "dataprep").mkdir(parents=True)
    (tmp_path / "azureml" / "dataprep" / "__init__.py").write_text("WHO = 'dataprep'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sdk.uninstall()
    sdk.install()
    import azureml.dataprep  # type: ignore[import-not-found]

    assert azureml.dataprep.WHO == "dataprep"
    sys.modules.pop("azureml.dataprep", None)


# -- the container flow -------------------------------------------------------------------------------------------


@pytest.fixture
def engine(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    client = docker_engine(BASE)
    monkeypatch.setenv("MLOPS_BASE_IMAGE", BASE)
    yield client
    for container in client.containers.list(all=True, filters={"label": f"mlops.home={home.resolve()}"}):
        container.remove(force=True)
    for image in client.images.list(filters={"label": f"mlops.home={home.resolve()}"}):
        client.images.remove(image.id, force=True)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_aci_style_deploy_to_docker_with_auth_collection_keys_profile_and_package(
        project: Path, engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import joblib
    import numpy
    import sklearn
    from azureml.core import Environment, Workspace
    from azureml.core.conda_dependencies import CondaDependencies
    from azureml.core.model import InferenceConfig, Model
    from azureml.core.webservice import AciWebservice

    from mlops_magics import api

    (project / "source_dir" / "score.py").write_text(SCORE.replace("def init():\n    global model, unit\n", (
        "from azureml.monitoring import ModelDataCollector\n\n\ndef init():\n    global model, unit, inputs_dc\n"
        "    inputs_dc = ModelDataCollector('sklearn_regression_model', designation='inputs')\n")).replace(
        "    data = np.array(json.loads(raw_data)[\"data\"])\n",
        "    data = np.array(json.loads(raw_data)[\"data\"])\n    inputs_dc.collect(data)\n"))
    ws = Workspace.from_config()
    model = Model.register(ws, "outputs/sklearn_regression_model.pkl", "sklearn_regression_model")
    env = Environment("diabetes-env")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=[
        f"scikit-learn=={sklearn.__version__}", f"joblib=={joblib.__version__}", f"numpy=={numpy.__version__}"])
    inference_config = InferenceConfig(entry_script="score.py", source_directory="source_dir", environment=env)
    aci_config = AciWebservice.deploy_configuration(cpu_cores=1, memory_gb=1, auth_enabled=True,
                                                    collect_model_data=True, tags={"area": "diabetes"},
                                                    description="Ridge on diabetes", location="eastus")
    service = Model.deploy(ws, "diabetes-aci", [model], inference_config, aci_config)
    service.wait_for_deployment(show_output=True)
    assert isinstance(service, AciWebservice) and (service.state, service.compute_type) == ("Healthy", "ACI")
    assert service.auth_enabled and service.collect_model_data and service.tags == {"area": "diabetes"}
    X, _ = _diabetes()
    sample = json.dumps({"data": X[:3].tolist()})
    assert service.run(sample)["result"] == pytest.approx(_expected(project, X[:3]))

    primary, secondary = service.get_keys()
    assert primary and secondary and primary != secondary and primary not in repr(service.get_keys())
    request = urllib.request.Request(str(service.scoring_uri), sample.encode(), {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401
    request.add_header("Authorization", f"Bearer {secondary}")
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert json.loads(answer.read())["unit"] == "disease progression"
    service.regen_key("Primary")
    new_primary, same_secondary = service.get_keys()
    assert new_primary != primary and same_secondary == secondary
    assert service.run(sample)["variant"] == "first"  # run() uses the new key

    csv_files: list[Path] = []
    for _ in range(100):  # the collector writes off the request path
        csv_files = list(home_of(ws).glob("deployments/diabetes-aci/**/modeldata/**/inputs/**/data.csv"))
        if csv_files:
            break
        time.sleep(0.1)
    assert csv_files, "ModelDataCollector wrote no CSV"
    assert len(api.collected("diabetes-aci", registry=ws.registry)) >= 3

    monkeypatch.setenv("MLOPS_PROFILE_DURATION", "1")
    monkeypatch.setenv("MLOPS_PROFILE_CONCURRENCY", "1,2")
    profile = Model.profile(ws, "diabetes-profile", [model], inference_config, input_dataset=[sample],
                            cpu=1, memory_in_gb=0.5)
    profile.wait_for_completion(True)
    details = profile.get_details()
    assert details["state"] == "Succeeded" and details["requestedCpu"] == 1.0
    assert details["requestedMemoryInGB"] == details["requestedMemoryInGb"] == 0.5
    for key in ("recommendedCpu", "recommendedMemoryInGB", "maxUtilizedMemoryInGB", "latencyPercentile95InMs",
                "measuredQueriesPerSecond", "totalQueries", "successQueries", "successRate"):
        assert key in details, key
    assert details["successRate"] == 1.0 and details["successQueries"] == details["totalQueries"] > 0

    context = Model.package(ws, [model], inference_config, generate_dockerfile=True)
    context.wait_for_creation(show_output=True)
    folder = Path(context.location)
    assert (folder / "Dockerfile").is_file() and (folder / "app" / "source_dir" / "score.py").is_file()
    assert "driver_module" in (folder / "app" / "score.py").read_text()
    saved = project / "package"
    context.save(str(saved))
    assert (saved / "Dockerfile").read_text() == (folder / "Dockerfile").read_text()
    package = Model.package(ws, [model], inference_config)
    package.wait_for_creation(show_output=True)
    assert package.location.startswith("mlops/sklearn_regression_model:1-")
    assert engine.images.get(package.location)

    service.delete()
    assert service.state == "Deleted"
    assert not engine.containers.list(filters={"label": f"mlops.home={home_of(ws)}", "status": "running"})


def home_of(ws: Any) -> Path:
    return Path(ws.registry.home)


# -- a real notebook ---------------------------------------------------------------------------------------------


def test_the_notebook_is_sdk_v1_code_but_for_its_workspace_cell() -> None:
    cells = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
    workspace = [c for c in cells if "workspace" in c.metadata.get("tags", [])]
    assert len(workspace) == 1 and "mlops_magics.azureml" in workspace[0].source
    for cell in cells:
        if cell is not workspace[0]:
            assert "mlops" not in cell.source.lower(), cell.source


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_sdk_v1_notebook_runs_under_nbval(tmp_path: Path, home: Path) -> None:
    copy = tmp_path / NOTEBOOK.name
    copy.write_text(NOTEBOOK.read_text())
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--nbval-current-env", "--nbval-cell-timeout", "300", str(copy)], cwd=tmp_path,
                          env={**os.environ, "MLOPS_HOME": str(home)}, capture_output=True, text=True, timeout=580)
    report = done.stdout + done.stderr
    assert done.returncode == 0 and " passed" in report and " failed" not in report, report
    assert not any(c.is_live for c in __import__("mlops_magics").default_registry().deployments())

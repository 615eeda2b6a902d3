"""The edge target's manifest (IoT Edge schema 2.0, createOptions) and its lean module image.

The manifest tests need nothing but the shipped schema. The image tests build real images on a real Docker engine
(docker-marked: they skip without one, saying how to get it, and fail instead where MLOPS_REQUIRE_DOCKER is set).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import mlops_magics as mm
from mlops_magics.edge import manifest as edge
from mlops_magics.edge.module import module_image, remove_build_stage, stage_key_of
from mlops_magics.edge.onnx_version import served_version
from mlops_magics.errors import ConversionError, InvalidInputError
from mlops_magics.packaging import engine
from mlops_magics.registry import Registry
from tests.infrastructure import docker_engine

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
EXAMPLE = REFERENCE / "schemastore-deployment-2.0-test.json"
BASE = os.environ.get("MLOPS_BASE_IMAGE") or "mlops-base:bookworm"


def _manifest(**options: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"model": "iris", "model_version": 2, "cpu": 0.5, "memory": "256m",
                                "data_volume": "/var/lib/mlops-edge/sim-1/volume", "sample_rate": 0.5}
    return edge.build_manifest("iris", "mlops/iris:2-edge-0123456789ab", **{**settings, **options})


def _module(manifest: dict[str, Any], name: str = "iris") -> dict[str, Any]:
    module: dict[str, Any] = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][name]
    return module


# -- the manifest ---------------------------------------------------------------------------------------------


def test_a_built_manifest_validates_against_the_iot_edge_schema_with_our_limits_routes_and_twin() -> None:
    manifest = _manifest()
    assert jsonschema.Draft4Validator(edge.schema()).is_valid(manifest)  # the schema itself, not only our wrapper
    parsed = edge.validate_manifest(manifest)
    module = _module(manifest)
    assert isinstance(module["settings"]["createOptions"], str)
    assert module["restartPolicy"] == "always" and module["status"] == "running"
    host = json.loads(module["settings"]["createOptions"])["HostConfig"]
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == host["MemorySwap"] == 256 * 1024**2
    assert host["PortBindings"] == {"5001/tcp": [{"HostPort": "5001"}]}
    assert host["Binds"] == ["/var/lib/mlops-edge/sim-1/volume:/var/mlops-data:rw"]
    assert parsed["iris"] == edge.module_create_options(manifest, "iris") == json.loads(
        module["settings"]["createOptions"])
    desired = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    assert desired["systemModules"]["edgeAgent"]["settings"]["image"] == "mcr.microsoft.com/azureiotedge-agent:1.5"
    assert desired["systemModules"]["edgeHub"]["settings"]["image"] == "mcr.microsoft.com/azureiotedge-hub:1.5"
    assert "registryCredentials" not in desired["runtime"]["settings"]
    hub = manifest["modulesContent"]["$edgeHub"]["properties.desired"]
    assert hub["routes"]["irisToUpstream"] == "FROM /messages/modules/iris/outputs/predictions INTO $upstream"
    assert hub["storeAndForwardConfiguration"] == {"timeToLiveSecs": 7200}
    assert manifest["modulesContent"]["iris"]["properties.desired"] == {
        "model": {"name": "iris", "version": "2"}, "sampleRate": 0.5}


def test_the_schemastore_example_validates_too() -> None:
    if not EXAMPLE.exists():
        pytest.skip(f"the reference example is not at {EXAMPLE} (it is not shipped with the package)")
    parsed = edge.validate_manifest(json.loads(EXAMPLE.read_text()))
    assert parsed["edgeHub"]["HostConfig"]["PortBindings"]["8883/tcp"] == [{"HostPort": "8883"}]
    assert parsed["tempSensor"] == {}


def test_the_shipped_schema_is_the_reference_copy_named_in_its_provenance_note() -> None:
    digest = hashlib.sha256(edge.SCHEMA_FILE.read_bytes()).hexdigest()
    assert digest in (edge.SCHEMA_FILE.parent / "README.md").read_text()
    reference = REFERENCE / edge.SCHEMA_FILE.name
    if reference.exists():
        assert reference.read_bytes() == edge.SCHEMA_FILE.read_bytes()


def _set_options(text: Any) -> Any:
    def change(manifest: dict[str, Any]) -> None:
        _module(manifest)["settings"]["createOptions"] = text
    return change


def _drop_routes(manifest: dict[str, Any]) -> None:
    del manifest["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]


@pytest.mark.parametrize(("change", "where"), [
    (_set_options({"HostConfig": {}}), "$.modulesContent['$edgeAgent']['properties.desired'].modules.iris.settings"
                                       ".createOptions"),
    (_drop_routes, "$.modulesContent['$edgeHub']['properties.desired']"),
], ids=["createOptions-not-a-string", "no-edgeHub-routes"])
def test_a_manifest_the_schema_refuses_is_refused_with_the_schemas_own_message_and_path(change: Any,
                                                                                        where: str) -> None:
    manifest = _manifest()
    change(manifest)
    expected = jsonschema.exceptions.best_match(jsonschema.Draft4Validator(edge.schema()).iter_errors(manifest))
    assert expected is not None
    with pytest.raises(edge.ManifestError) as caught:
        edge.validate_manifest(manifest)
    assert caught.value.path == where == expected.json_path
    assert caught.value.reason == expected.message
    assert str(caught.value).startswith(f"The deployment manifest is not valid at {where}: {expected.message}")


@pytest.mark.parametrize(("options", "where", "why"), [
    ({"HostConfig": {"NanoCpus": "half"}}, "HostConfig.NanoCpus", "'half' is not an integer"),
    ({"HostConfig": {"NanoCpus": 5}}, "HostConfig.NanoCpus", "5 is below 10000000 (0.01 core)"),
    ({"HostConfig": {"Memory": 1024}}, "HostConfig.Memory", "below Docker's minimum"),
    ({"HostConfig": {"Memory": 2**28, "MemorySwap": 2**20}}, "HostConfig.MemorySwap", "must be at least Memory"),
    ({"HostConfig": {"NetworkMode": "host", "PortBindings": {"5001/tcp": [{"HostPort": "5001"}]}}},
     "HostConfig.PortBindings", "cannot be published with NetworkMode 'host'"),
    ({"HostConfig": {"PortBindings": {"5001/tcp": [{"HostPort": 5001}]}}}, "HostConfig.PortBindings.5001/tcp.HostPort",
     "not a port from 1 to 65535 as a string"),
    ({"HostConfig": {"Binds": ["relative/path"]}}, "HostConfig.Binds[0]", "is not SOURCE:/ABSOLUTE/PATH"),
    ({"HostConfig": {"RestartPolicy": {"Name": "always"}}}, "HostConfig.RestartPolicy",
     "restartPolicy in the manifest"),
    ({"Env": ["NOEQUALS"]}, "Env", "is not NAME=VALUE"),
    ([1, 2], "", "not a JSON object"),
], ids=["NanoCpus-string", "NanoCpus-tiny", "Memory-tiny", "swap-below-memory", "ports-with-host-network",
        "HostPort-number", "bind-relative", "docker-restart-policy", "env-entry", "not-an-object"])
def test_create_options_are_checked_as_json_where_the_schema_cannot(options: Any, where: str, why: str) -> None:
    manifest = _manifest()
    _set_options(json.dumps(options))(manifest)
    jsonschema.validate(manifest, edge.schema())  # the schema lets it through: createOptions is only "a string"
    with pytest.raises(edge.ManifestError, match="The deployment manifest is not valid at") as caught:
        edge.validate_manifest(manifest)
    assert caught.value.path.startswith(
        "$.modulesContent['$edgeAgent']['properties.desired'].modules.iris.settings.createOptions")
    assert caught.value.path.endswith(where) and why in caught.value.reason


def test_createoptions_that_are_not_json_name_the_field() -> None:
    manifest = _manifest()
    _set_options('{"HostConfig": ')(manifest)
    with pytest.raises(edge.ManifestError, match=r"modules\.iris\.settings\.createOptions: it is not JSON"):
        edge.validate_manifest(manifest)


def test_long_create_options_are_split_into_4k_chunks_and_joined_back_equal() -> None:
    labels = {f"com.example.label-{i:03d}": "é" * 40 + f"-{i}" for i in range(100)}  # multi-byte: cut between chars
    manifest = _manifest(extra_create_options={"Labels": labels})
    settings = _module(manifest)["settings"]
    chunks = [key for key in settings if key.startswith("createOptions")]
    assert chunks[:3] == ["createOptions", "createOptions01", "createOptions02"] and len(chunks) <= edge.MAX_CHUNKS
    assert all(len(settings[key].encode()) <= edge.CHUNK_BYTES for key in chunks)
    assert len(settings["createOptions"].encode()) > edge.CHUNK_BYTES - 4  # full chunks, not small ones
    assert edge.validate_manifest(manifest)["iris"]["Labels"] == labels
    joined = edge.join_create_options(settings)
    assert joined == "".join(settings[key] for key in chunks) and json.loads(joined)["Labels"] == labels
    assert edge.split_create_options(joined) == {key: settings[key] for key in chunks}
    del settings["createOptions01"]  # a gap in the numbering, as the edge agent refuses it
    with pytest.raises(edge.ManifestError, match="expected createOptions01 next"):
        edge.validate_manifest(manifest)
    with pytest.raises(InvalidInputError, match="more than 8 chunks of 4096 bytes"):
        edge.split_create_options("x" * (8 * 4096 + 1))


def test_registry_passwords_are_references_and_the_instructions_substitute_them_on_the_way() -> None:
    credential = edge.RegistryCredential("myacr", "myacr.azurecr.io", "myacr", "ACR_PASSWORD")
    manifest = _manifest(registry_credentials=[credential])
    settings = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["runtime"]["settings"]
    assert settings["registryCredentials"] == {
        "myacr": {"address": "myacr.azurecr.io", "username": "myacr", "password": "${ACR_PASSWORD}"}}
    text = edge.set_modules_instructions(manifest, "deployment.json", hub_name="hub1", device_id="sim-1")
    assert "envsubst '${ACR_PASSWORD}' < deployment.json > /tmp/deployment.resolved.json" in text
    assert ("az iot edge set-modules --hub-name hub1 --device-id sim-1 --content /tmp/deployment.resolved.json"
            in text)
    assert text.index("set-modules") < text.index("rm -f /tmp/deployment.resolved.json")
    plain = edge.set_modules_instructions(_manifest(), "d.json", hub_name="h", device_id="d")
    assert "az iot edge set-modules --hub-name h --device-id d --content d.json" in plain and "envsubst" not in plain
    with pytest.raises(InvalidInputError, match="name of an environment variable"):
        _manifest(registry_credentials=[edge.RegistryCredential("r", "r.io", "u", "hunter2!")])


def test_bad_settings_are_refused_before_a_manifest_is_written() -> None:
    with pytest.raises(InvalidInputError, match="--cpu 0.0 is out of range"):
        _manifest(cpu=0.0)
    with pytest.raises(InvalidInputError, match="--memory 'lots' is not a size"):
        _manifest(memory="lots")
    with pytest.raises(InvalidInputError, match="--sample-rate 2 is out of range"):
        _manifest(sample_rate=2)
    with pytest.raises(InvalidInputError, match="Module name 'ir is' is not valid"):
        edge.build_manifest("ir is", "img", model="iris", model_version=1)
    with pytest.raises(edge.ManifestError, match="a module twin takes no arrays"):
        _manifest(twin={"thresholds": [1, 2]})
    shared = _manifest(network_mode="container:mlops-device-sim-1")
    host = edge.module_create_options(shared, "iris")["HostConfig"]
    assert host["NetworkMode"] == "container:mlops-device-sim-1" and "PortBindings" not in host


# -- the ONNX version served and its int8 quantization (no engine needed) ---------------------------------------


def test_a_non_onnx_version_is_converted_once_as_onnx_does_and_reused(registry: Registry, iris: Any,
                                                                     iris_lr: Any) -> None:
    X, _ = iris
    mm.register(iris_lr, "iris", sample=X[:5], registry=registry)
    first = served_version(registry, "iris:1", data=X)
    assert first.version.ref == "iris:2" and first.registered == ("iris:2",) and first.version.flavor == "onnx"
    assert first.version.lineage.derived_from == "iris:1" and first.version.tags["onnx.source"] == "iris:1"
    assert registry.reports(first.version)["onnx"]["parity"]["passed"] is True
    again = served_version(registry, "iris:1", data=X)
    assert again.version.ref == "iris:2" and again.registered == () and registry.get("iris").version == 2
    with pytest.raises(ConversionError, match="nothing to quantize"):  # a linear model is ai.onnx.ml: no MatMul
        served_version(registry, "iris:1", quantize="int8")


def test_int8_quantization_is_compared_with_the_float_model_and_registered(registry: Registry, iris: Any) -> None:
    from sklearn.neural_network import MLPClassifier

    X, y = iris
    mlp = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=2000, random_state=0).fit(X, y)
    mm.register(mlp, "mlp", sample=X[:5], registry=registry)
    served = served_version(registry, "mlp", quantize="int8", data=X, labels=y)
    report = served.quantization
    assert report is not None and served.registered == ("mlp:2", "mlp:3")
    assert served.version.ref == report.int8_ref == "mlp:3" and report.float_ref == "mlp:2"
    assert served.version.tags["onnx.quantized"] == "int8" and served.version.lineage.derived_from == "mlp:2"
    assert report.rows == len(X) and report.passed and report.label_agreement is not None
    assert report.label_agreement >= 0.98 and report.int8_bytes < report.float_bytes
    assert report.float_accuracy == pytest.approx(float((mlp.predict(X) == y).mean()))
    assert report.int8_accuracy is not None and abs(report.int8_accuracy - report.float_accuracy) <= 0.02
    assert "int8 quantization of mlp:2: registered as mlp:3" in repr(report)
    assert "label agreement" in report._repr_html_() and "mlp:3" in report._repr_html_()
    assert registry.reports(served.version)["quantization"]["label_agreement"] == report.label_agreement
    again = served_version(registry, "mlp", quantize="int8")  # "mlp" is mlp:3 now, quantized: served as it is
    assert again.version.ref == "mlp:3" and again.registered == ()
    with pytest.raises(InvalidInputError, match="--quantize 'int4' is not supported: use int8"):
        served_version(registry, "mlp:1", quantize="int4")


# -- the lean module image, built for real --------------------------------------------------------------------


def _engine_or_skip() -> Any:
    """The engine with the base image, or a skip saying how to get them (a failure in CI)."""
    return docker_engine(BASE)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, iris: Any) -> Iterator[dict[str, Any]]:
    """iris:1 (LogisticRegression, sklearn) built as the docker target builds it, and as a lean module image."""
    from sklearn.linear_model import LogisticRegression

    from mlops_magics.packaging.image import build_context, write_spec_context
    from mlops_magics.packaging.spec import deploy_spec

    client = _engine_or_skip()
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_BASE_IMAGE", BASE)
    home = tmp_path_factory.mktemp("edge-home")
    reg = Registry(home)
    X, y = iris
    model = LogisticRegression(max_iter=500).fit(X, y)
    mm.register(model, "iris", sample=X[:5], registry=reg)
    mm.set_environment("iris", None, from_kernel=True, registry=reg)
    spec = deploy_spec(reg, "iris", "iris:1")
    built: list[str] = []
    try:
        sklearn_image = build_context(reg, spec, write_spec_context(reg, spec), engine=client)
        built.append(sklearn_image.tag)
        lean = module_image("iris:1", registry=reg, data=X, engine=client)
        built.append(lean.tag)
        yield {"registry": reg, "client": client, "model": model, "sklearn": sklearn_image, "lean": lean}
    finally:  # by tag as well as by label: an image found on the engine keeps the label of the run that built it
        for container in client.containers.list(all=True, filters={"label": f"mlops.home={home}"}):
            container.remove(force=True)
        for image in client.images.list(filters={"label": f"mlops.home={home}"}):
            client.images.remove(image.id, force=True)
        for tag in built:
            engine.remove_image(tag)
        context = home / "contexts" / "iris-2-edge" / "Dockerfile"
        if context.exists():
            remove_build_stage(stage_key_of(context.read_text()), client)
        mp.undo()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(client: Any, tag: str, command: list[str], home: Path) -> tuple[int, str]:
    """Run ``command`` in a fresh container of ``tag``; its exit status and output."""
    container = client.containers.run(tag, command, detach=True, network_mode="none",
                                      labels={"mlops.home": str(home)})
    try:
        status = container.wait(timeout=60)["StatusCode"]
        return int(status), container.logs().decode()
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_the_lean_module_image_holds_no_scikit_learn(built: dict[str, Any]) -> None:
    lean, client, home = built["lean"], built["client"], built["registry"].home
    assert lean.model.version.ref == "iris:2" and lean.model.version.flavor == "onnx"
    assert "scikit-learn" not in (lean.context.folder / "requirements.txt").read_text()
    status, out = _run(client, lean.tag, ["python", "-c", "import sklearn"], home)
    assert status == 1 and "No module named 'sklearn'" in out
    listing = ("import importlib.metadata as m, json; "
               "print(json.dumps(sorted(d.metadata['Name'].lower() for d in m.distributions())))")
    status, out = _run(client, lean.tag, ["python", "-c", listing], home)
    installed = set(json.loads(out.strip().splitlines()[-1]))
    assert status == 0 and {"onnxruntime", "numpy", "uvicorn"} <= installed
    assert not installed & {"scikit-learn", "pandas", "scipy", "pip", "setuptools"}
    status, _ = _run(client, lean.tag, ["sh", "-c", "test ! -e /usr/share/locale && test ! -e /usr/share/doc"], home)
    assert status == 0


@pytest.mark.docker
def test_the_lean_module_image_is_at_most_half_the_size_of_the_sklearn_image(built: dict[str, Any]) -> None:
    client = built["client"]
    lean = int(client.images.get(built["lean"].tag).attrs["Size"])
    sklearn = int(client.images.get(built["sklearn"].tag).attrs["Size"])
    print(f"\nimage sizes: lean module {lean / 1e6:.0f} MB, sklearn {sklearn / 1e6:.0f} MB ({lean / sklearn:.2f})")
    assert lean <= 0.5 * sklearn
    assert built["lean"].image.size == lean  # recorded with the served version, as %images shows it


@pytest.mark.docker
def test_the_lean_module_scores_as_the_sklearn_model_does(built: dict[str, Any], iris: Any) -> None:
    lean, client = built["lean"], built["client"]
    X, _ = iris
    port = _free_port()
    model_dir = f"/var/azureml-app/azureml-models/iris/{lean.model.version.version}"
    container = client.containers.run(
        lean.tag, ["python", "-m", lean.entry, "--entry_script", "/var/azureml-app/score.py", "--model_dir", model_dir,
                   "--host", "127.0.0.1", "--port", str(port)],
        detach=True, network_mode="host", labels={"mlops.home": str(built["registry"].home)})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                    break
            except OSError:
                container.reload()
                assert container.status != "exited", container.logs().decode()[-2000:]
                assert time.monotonic() < deadline, "the module did not answer within 60 s"
                time.sleep(0.2)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/score",
                                         json.dumps({"data": X.tolist()}).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            labels = json.loads(response.read())
        assert labels == built["model"].predict(X).tolist()
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_a_second_call_finds_the_conversion_and_the_image(built: dict[str, Any], iris: Any) -> None:
    reg, client = built["registry"], built["client"]
    X, _ = iris
    again = module_image("iris:1", registry=reg, data=X, engine=client)
    assert again.tag == built["lean"].tag and again.model.registered == () and reg.get("iris").version == 2
    assert again.image.image_id == built["lean"].image.image_id
    assert again.tag in {image.tag for image in reg.images(reg.get("iris:2"))}


def test_the_module_image_refuses_heavy_requirements() -> None:
    from mlops_magics.edge.module import module_requirements

    with pytest.raises(InvalidInputError, match="scikit-learn==1.5.0, which a lean edge module does not hold"):
        module_requirements(["numpy==2.0", "scikit-learn==1.5.0"])
    assert "paho-mqtt==2.1.0" in module_requirements(["numpy==2.0"], ["paho-mqtt==2.1.0"])


"""The fpga target and %fpga: programs compiled, reported, registered as derived versions, served by the emulator
through the mlops-serve contract (a real local server; a real container where Docker answers), in a real IPython
shell and through ``mlops fpga``."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from IPython.core.error import UsageError

import mlops_magics as mm
from mlops_magics import api
from mlops_magics.api.fpga import engine_of
from mlops_magics.errors import ConversionError, InvalidInputError
from mlops_magics.fpga import artifact
from mlops_magics.fpga.compiler import compile_model
from mlops_magics.fpga.emulator import Emulator
from mlops_magics.fpga.report import SWEEP_COLUMNS, SweepReport
from mlops_magics.registry import Registry
from mlops_magics.targets import fpga as target
from tests import fpga_graphs
from tests.cli_run import mlops


@pytest.fixture(scope="module")
def digits() -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """A small MLPClassifier trained on scikit-learn's digits, its test rows and labels, and a few training rows."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X.astype(np.float32), y, test_size=0.3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning at this max_iter is fine
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, random_state=0).fit(X_train, y_train)
    return clf, X_test, y_test, X_train[:5]


@pytest.fixture
def clean(registry: Registry) -> Iterator[Registry]:
    """The test's registry; every deployment made is stopped afterwards."""
    yield registry
    mm.undeploy(all_services=True)


def _post(url: str, body: bytes) -> tuple[int, Any]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/score", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.serve
def test_deploy_with_target_fpga_serves_the_emulators_answers_through_the_http_contract(
        clean: Registry, ip: Any, digits: Any) -> None:
    clf, X, _, sample = digits
    ip.push({"clf": clf, "X_val": X, "sample": sample})
    ip.run_line_magic("register", "clf --name digits-mlp --sample sample")
    deployed = ip.run_line_magic("deploy", "digits-mlp --target fpga --format mxfp8")
    assert (deployed.target, deployed.state, deployed.model_version) == ("fpga", "running", 3)  # 2: its ONNX
    program = target.load_version_program(clean, clean.get("digits-mlp:3"))
    assert program.format.name == "mxfp8"
    expected = Emulator(program).predict(X[:40]).tolist()
    assert ip.run_line_magic("call", "digits-mlp X_val[:40]") == expected
    status, body = _post(deployed.url, json.dumps({"data": X[:7].tolist()}).encode())
    assert status == 200 and body == expected[:7]
    status, body = _post(deployed.url, b'{"data": [[1, 2, 3]]}')
    assert status == 400 and "shape (64,)" in body["message"]  # the program's shape, said in the 400
    assert [(d.name, d.target, d.state) for d in mm.list_deployments()] == [("digits-mlp", "fpga", "running")]
    pid = int(deployed.config["pid"])
    ip.run_line_magic("undeploy", "digits-mlp")
    assert mm.get_model("digits-mlp:3") and clean.get_deployment("digits-mlp").state == "deleted"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    again = mm.deploy("digits-mlp", target="fpga", target_options={"format": "mxfp8"})
    assert again.model_version == 3  # the program registered before is served again, not registered twice
    assert len(clean.find("digits-mlp")) == 3


def test_a_compiled_program_is_a_derived_version_with_lineage_tags_its_report_and_a_complete_deployment(
        registry: Registry, digits: Any) -> None:
    clf, X, y, sample = digits
    mm.register(clf, "digits-mlp", sample=sample)
    report = mm.fpga_compile("digits-mlp", format="msfp9", native_dim=32, data=X, labels=y)
    assert report.source == "digits-mlp:2" and report.registered == "digits-mlp:3"
    onnx_version, program_version = registry.get("digits-mlp:2"), registry.get("digits-mlp:3")
    assert onnx_version.flavor == "onnx" and onnx_version.lineage.derived_from == "digits-mlp:1"
    assert program_version.lineage.derived_from == "digits-mlp:2"
    assert program_version.tags == {"fpga.format": "msfp9", "fpga.source": "digits-mlp:2", "fpga.native_dim": "32",
                                    "fpga.vector_format": "bf16"}
    assert "msfp9" in program_version.description and "accuracy" in program_version.description
    stored = registry.reports(program_version)["fpga"]
    assert stored["accuracy"] == report.accuracy and stored["rows"] == len(X) and stored["registered"] == "digits-mlp:3"
    assert abs(stored["drop_points"]) < 5
    assert {f.path for f in program_version.files} == {"program/program.json", "program/weights.npz"}
    served = target.load_version_program(registry, program_version)  # read back from the hash-checked files
    compiled = compile_model(mm.load_model("digits-mlp:2"), "msfp9", native_dim=32)
    assert np.array_equal(Emulator(served).scores(X), Emulator(compiled).scores(X))
    inference = registry.inference(program_version)
    assert inference.script is not None and "Emulator(load_program(" in inference.script
    assert {f.path for f in inference.asset_files} >= {"mlops_magics/fpga/emulator.py", "mlops_magics/errors.py"}
    assert [p.split("==")[0] for p in inference.environment["pip"]] == ["numpy", "ml_dtypes"]
    # the same program again is found, not registered twice; another format is a new version
    assert mm.fpga_compile("digits-mlp:2", format="msfp9", native_dim=32).registered == "digits-mlp:3"
    assert mm.fpga_compile("digits-mlp:3", format="mxfp8", native_dim=32, register=False).registered is None
    assert len(registry.find("digits-mlp")) == 3


def test_the_report_gives_work_emulated_latency_memory_accuracy_and_the_emulators_speed(
        registry: Registry, digits: Any) -> None:
    clf, X, y, sample = digits
    mm.register(clf, "digits-mlp", sample=sample)
    report = mm.fpga_compile("digits-mlp", format="mxfp8", data=X, labels=y, clock_mhz=500, register=False)
    assert [row["kind"] for row in report.layers] == ["dense", "dense", "host"]
    assert report.macs == 64 * 32 + 32 * 10 and report.tiles == 2
    assert sum(row["emulated_cycles"] for row in report.layers) == report.emulated_cycles
    assert report.emulated_us == pytest.approx(report.emulated_cycles / 500)  # at the clock given
    assert report.weight_bytes < report.fp32_weight_bytes / 3
    assert report.fp32_accuracy == pytest.approx(float(np.mean(clf.predict(X) == y)), abs=0.01)
    assert report.agreement is not None and report.agreement > 0.9 and report.emulator_rps and report.emulator_rps > 0
    text, html = repr(report), report._repr_html_()
    for shown in (text, html):
        assert "emulated" in shown and "EMULATED" in shown and "mxfp8" in shown
    assert "us emulated" in text and "requests/s at batch 1 in numpy on this machine" in text
    without = mm.fpga_compile("digits-mlp:2", format="mxfp8", register=False, rps_seconds=0)
    assert (without.accuracy, without.rows, without.emulator_rps) == (None, None, None)
    with pytest.raises(InvalidInputError, match=r"shape \(3, 5\); the program takes rows of shape \(64,\)"):
        mm.fpga_compile("digits-mlp:2", data=np.zeros((3, 5)), register=False)
    with pytest.raises(InvalidInputError, match="Unknown number format 'mxfp3'"):
        mm.fpga_compile("digits-mlp:2", format="mxfp3")


def test_an_unsupported_operator_is_refused_naming_the_operator_and_the_node(ip: Any, registry: Registry) -> None:
    from onnx import helper

    rng = np.random.default_rng(0)
    model = fpga_graphs.graph([helper.make_node("MatMul", ["x", "w"], ["h"], name="dense"),
                               helper.make_node("Exp", ["h"], ["y"], name="grow")], ("x", ["N", 4]), "y",
                              {"w": rng.normal(size=(4, 3)).astype(np.float32)})
    mm.register(model, "odd", sample=np.ones((2, 4), np.float32))
    with pytest.raises(ConversionError, match=r"node 'grow' \(operator Exp\)"):
        mm.fpga_compile("odd")
    with pytest.raises(UsageError, match=r"node 'grow' \(operator Exp\)"):
        ip.run_line_magic("deploy", "odd --target fpga")
    assert len(registry.find("odd")) == 1 and all(d.state != "running" for d in registry.deployments())


def test_the_sweep_tabulates_and_plots_every_format(registry: Registry, ip: Any, digits: Any) -> None:
    clf, X, y, sample = digits
    mm.register(clf, "digits-mlp", sample=sample)
    ip.push({"X_val": X, "y_val": y})
    sweep = ip.run_line_magic("fpga", "sweep digits-mlp --formats mxfp8,fp32,msfp8,mxfp4 --native-dim 64 "
                                      "--data X_val --labels y_val")
    assert isinstance(sweep, SweepReport)
    frame = sweep.frame
    assert list(frame.columns) == list(SWEEP_COLUMNS) and list(frame["format"]) == ["mxfp8", "fp32", "msfp8", "mxfp4"]
    fp32 = frame.set_index("format").loc["fp32"]
    assert fp32["drop_points"] == 0 and fp32["agreement"] == 1 and fp32["bits_per_value"] == 32
    assert frame.set_index("format").loc["mxfp4", "weight_bytes"] < fp32["weight_bytes"] / 5
    assert abs(frame.set_index("format").loc["mxfp8", "drop_points"]) <= 2
    html = sweep._repr_html_()
    assert html.count("data:image/png;base64,") == 1 and "emulated latency" in html
    axes = sweep.figure().axes
    assert len(axes) == 2 and "EMULATED" in axes[1].get_xlabel() and len(axes[0].collections[0].get_offsets()) == 4
    assert "EMULATED" in repr(sweep)
    assert len(registry.find("digits-mlp")) == 2  # the ONNX conversion only: a sweep registers no program
    with pytest.raises(UsageError, match="give data"):
        ip.run_line_magic("fpga", "sweep digits-mlp")


def test_fpga_compile_in_a_real_shell_registers_with_the_cells_lineage(ip: Any, registry: Registry,
                                                                        digits: Any) -> None:
    clf, X, y, sample = digits
    mm.register(clf, "digits-mlp", sample=sample)
    ip.push({"X_val": X, "y_val": y})
    cell = "%fpga compile digits-mlp --format msfp8 --native-dim 128 --data X_val --labels y_val"
    result = ip.run_cell(cell, store_history=True)
    report = result.result
    assert report.registered == "digits-mlp:3" and report.native_dim == 128 and report.rows == len(X)
    version = registry.get("digits-mlp:3")
    assert version.lineage.derived_from == "digits-mlp:2"
    assert version.lineage.cell_source_sha256 == hashlib.sha256(cell.encode()).hexdigest()
    with pytest.raises(UsageError, match="Unknown number format"):
        ip.run_line_magic("fpga", "compile digits-mlp --format int3")
    assert "Examples::" in (ip.find_line_magic("fpga").__doc__ or "")


def test_mlops_fpga_compile_and_sweep_read_their_data_from_files(registry: Registry, digits: Any, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    clf, X, y, sample = digits
    mm.register(clf, "digits-mlp", sample=sample)
    np.save(tmp_path / "x.npy", X[:200])
    (tmp_path / "y.json").write_text(json.dumps(y[:200].tolist()))
    done = mlops(capsys, "fpga", "compile", "digits-mlp", "--format", "mxint8", "--data", str(tmp_path / "x.npy"),
                 "--labels", str(tmp_path / "y.json"), "--json")
    body = done.json
    assert (body["format"], body["rows"], body["registered"]) == ("mxint8", 200, "digits-mlp:3")
    assert "program" not in body and body["emulated_us"] > 0
    done = mlops(capsys, "fpga", "sweep", "digits-mlp:2", "--formats", "fp32,mxfp4", "--data", str(tmp_path / "x.npy"),
                 "--labels", str(tmp_path / "y.json"))
    assert done.code == 0 and "format mxfp4" in done.out and "EMULATED" in done.out
    done = mlops(capsys, "fpga", "sweep", "digits-mlp:2", "--formats", "fp32,nope", "--data", str(tmp_path / "x.npy"))
    assert done.code == 2 and "Unknown number format 'nope'" in done.err


def test_deploy_options_are_checked_and_kept_to_the_fpga_target() -> None:
    with pytest.raises(InvalidInputError, match="are for --target fpga"):
        api.fpga_options("local", format="mxfp8")
    assert api.fpga_options("fpga", format="MXFP8", native_dim=64) == {"format": "mxfp8", "native_dim": 64}
    with pytest.raises(InvalidInputError, match="--runtime 'gpu' is not one of local, docker"):
        target.check_options({"runtime": "gpu"})
    with pytest.raises(InvalidInputError, match="out of range"):
        target.check_options({"native_dim": 0})
    with pytest.raises(InvalidInputError, match="does not take replicas"):
        target.check_options({"replicas": 2})
    with pytest.raises(InvalidInputError, match="--clock-mhz 0 is out of range"):
        engine_of(400, clock_mhz=0)


@pytest.mark.parametrize("make", [fpga_graphs.small_cnn, fpga_graphs.every_pointwise_op], ids=["cnn", "pointwise"])
def test_a_program_written_and_read_back_answers_the_same(make: Any, tmp_path: Path) -> None:
    model = make()
    program = compile_model(model, "mxfp6", native_dim=4)
    artifact.save_program(program, tmp_path)
    back = artifact.load_program(tmp_path)
    x = np.random.default_rng(1).random((6, *program.input_shape), dtype=np.float32)
    first, second = Emulator(program).run(x), Emulator(back).run(x)
    assert first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)
    assert (back.macs, back.tiles, back.instruction_count, back.weight_bits) == (
        program.macs, program.tiles, program.instruction_count, program.weight_bits)
    sources = [(la.attrs.get("weight_source"), la.attrs.get("bias_source")) for la in program.layers]
    assert any(w is not None for w, _ in sources)  # where tuned weights go back (fine-tuning a program's source)
    assert [(la.attrs.get("weight_source"), la.attrs.get("bias_source")) for la in back.layers] == sources
    (tmp_path / artifact.PROGRAM_FILE).write_text(json.dumps({"schema": "other/9"}))
    with pytest.raises(InvalidInputError, match="schema 'other/9'"):
        artifact.load_program(tmp_path)


def test_the_runtime_a_deployment_carries_serves_without_the_installed_package(tmp_path: Path, digits: Any) -> None:
    """A container has no mlops-magics: the copied runtime alone loads the program and answers."""
    proto, X, _, _ = fpga_graphs.digits_mlp()
    program = compile_model(proto, "mxfp8")
    artifact.save_program(program, tmp_path / "model" / "program")
    artifact.write_runtime(tmp_path / "app")
    (tmp_path / "app" / "score.py").write_text(artifact.entry_script("digits", 1, "mxfp8"))
    check = (
        "import json, os, sys\n"
        f"sys.path.insert(0, {str(tmp_path / 'app')!r})\n"
        f"os.environ['AZUREML_MODEL_DIR'] = {str(tmp_path / 'model')!r}\n"
        "import score, mlops_magics\n"
        "score.init()\n"
        "print(json.dumps({'package': mlops_magics.__file__, 'modules': sorted(m for m in sys.modules "
        "if m.startswith('mlops_magics')), 'answer': score.run(json.dumps({'data': json.loads(sys.stdin.read())}))}))\n"
    )
    done = subprocess.run([sys.executable, "-c", check], input=json.dumps(X[:9].tolist()), capture_output=True,
                          text=True, timeout=120, check=True)
    seen = json.loads(done.stdout)
    assert seen["package"].startswith(str(tmp_path / "app"))
    assert set(seen["modules"]) <= {"mlops_magics", "mlops_magics.errors", "mlops_magics.fpga",
                                    "mlops_magics.fpga.formats", "mlops_magics.fpga.compiler",
                                    "mlops_magics.fpga.emulator", "mlops_magics.fpga.artifact"}
    assert seen["answer"] == Emulator(program).predict(X[:9]).tolist()


@pytest.mark.docker
@pytest.mark.slow
def test_the_docker_runtime_serves_the_program_in_a_container(registry: Registry, digits: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.infrastructure import docker_engine

    base = os.environ.get("MLOPS_BASE_IMAGE") or "mlops-base:bookworm"
    client = docker_engine(base)
    monkeypatch.setenv("MLOPS_BASE_IMAGE", base)
    clf, X, _, sample = digits
    mm.register(clf, "digits-mlp", sample=sample)
    try:
        deployed = mm.deploy("digits-mlp", target="fpga", target_options={"format": "msfp9", "runtime": "docker"})
        assert deployed.target == "fpga" and deployed.config.get("container")
        program = target.load_version_program(registry, registry.get(f"{deployed.model_name}:{deployed.model_version}"))
        assert mm.call("digits-mlp", X[:20]) == Emulator(program).predict(X[:20]).tolist()
        assert mm.list_deployments()[0].state == "running"
    finally:
        mm.undeploy(all_services=True)
        for image in client.images.list(filters={"label": f"mlops.home={registry.home}"}):
            client.images.remove(image.id, force=True)

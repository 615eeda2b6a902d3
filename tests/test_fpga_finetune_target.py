"""Fine-tuning offered by %fpga compile --finetune / fpga_compile(finetune=...) / mlops fpga compile --finetune: the
tuned ONNX registered as a derived version, compiled into the program version, the report's before -> after, which
rows measured what, refusals, and the tuned program deployed and called through the HTTP contract.

PyTorch is optional: the tests that tune skip saying so where it is missing (``.ci/run`` installs the CPU wheel and
sets MLOPS_REQUIRE_TORCH); the ones on refusing without it hide it through the import machinery.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from IPython.core.error import UsageError

import mlops_magics as mm
from mlops_magics.errors import InvalidInputError
from mlops_magics.fpga.compiler import compile_model
from mlops_magics.fpga.emulator import Emulator
from mlops_magics.fpga.finetune import TorchMissingError, shared_rows
from mlops_magics.registry import Registry
from mlops_magics.targets import fpga as target
from tests.cli_run import mlops

REASON = "PyTorch is optional and not installed (.ci/run installs the CPU wheel when the machine has it)"


@pytest.fixture(scope="module")
def digits() -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A small MLPClassifier on scikit-learn's digits: the model, its training rows and labels, its test rows and
    labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X.astype(np.float32), y, test_size=0.3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning at this max_iter is fine
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, random_state=0).fit(X_train, y_train)
    return clf, X_train, y_train, X_test, y_test


@pytest.fixture
def torch() -> Any:
    return pytest.importorskip("torch", reason=REASON)


@pytest.fixture
def clean(registry: Registry) -> Iterator[Registry]:
    """The test's registry; every deployment made is stopped afterwards."""
    yield registry
    mm.undeploy(all_services=True)


def _accuracy(program: Any, X: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(Emulator(program).predict(X) == y))


def test_a_fine_tuned_compile_registers_the_tuned_onnx_with_lineage_and_tags_and_compiles_it(
        torch: Any, registry: Registry, digits: Any) -> None:
    clf, X_train, y_train, X_test, y_test = digits
    mm.register(clf, "digits-mlp", sample=X_train[:5])
    report = mm.fpga_compile("digits-mlp", format="msfp8", native_dim=128, data=X_test, labels=y_test, finetune=3,
                             finetune_data=X_train, finetune_labels=y_train)
    tuned, program_version = registry.get("digits-mlp:3"), registry.get("digits-mlp:4")
    assert tuned.flavor == "onnx" and tuned.lineage.derived_from == "digits-mlp:2"  # the ONNX conversion
    assert tuned.tags == {"fpga.finetuned": "3", "fpga.format": "msfp8", "fpga.tuned_from": "digits-mlp:2"}
    assert not target.is_program(tuned) and "fine-tuned for msfp8" in tuned.description
    assert program_version.lineage.derived_from == "digits-mlp:3" and target.is_program(program_version)
    assert program_version.tags[target.SOURCE_TAG] == "digits-mlp:3"
    assert (report.source, report.registered) == ("digits-mlp:3", "digits-mlp:4")
    # the program serves the tuned weights: its answers are the tuned ONNX compiled, not the original
    served = target.load_version_program(registry, program_version)
    tuned_proto, original = mm.load_model("digits-mlp:3"), mm.load_model("digits-mlp:2")
    assert np.array_equal(Emulator(served).scores(X_test),
                          Emulator(compile_model(tuned_proto, "msfp8", native_dim=128)).scores(X_test))
    assert not np.array_equal(Emulator(served).scores(X_test),
                              Emulator(compile_model(original, "msfp8", native_dim=128)).scores(X_test))
    # the stored reports: the tuning's with the tuned version, the program's with the before -> after
    stored = registry.reports(tuned)["finetune"]
    assert stored["tuned_version"] == "digits-mlp:3" and stored["epochs"] == 3 and len(stored["history"]) == 3
    program_report = registry.reports(program_version)["fpga"]
    assert program_report["finetune"]["accuracy_after"] == report.finetune.accuracy_after
    assert program_report["finetune"]["tuned_version"] == "digits-mlp:3"


def test_the_report_shows_before_and_after_on_the_data_rows_and_says_which_rows_measured_what(
        torch: Any, registry: Registry, digits: Any) -> None:
    clf, X_train, y_train, X_test, y_test = digits
    mm.register(clf, "digits-mlp", sample=X_train[:5])
    report = mm.fpga_compile("digits-mlp", format="msfp8", data=X_test, labels=y_test, finetune=5,
                             finetune_data=X_train, finetune_labels=y_train, rps_seconds=0)
    t = report.finetune
    assert t is not None and (t.epochs, t.format, t.vector_format) == (5, "msfp8", "bf16")
    assert (t.train_rows, t.measured_rows, t.overlap_rows) == (len(X_train), len(X_test), 0)
    assert t.measured_on == f"the {len(X_test)} --data rows, none of them trained on"
    original = mm.load_model("digits-mlp:2")
    # before: the original weights, emulated in msfp8 and in fp32 on the same rows (computed here independently)
    assert t.accuracy_before == pytest.approx(_accuracy(compile_model(original, "msfp8"), X_test, y_test))
    assert t.fp32_accuracy_before == pytest.approx(_accuracy(compile_model(original, "fp32"), X_test, y_test))
    # after: what the registered program itself scores, and the tuned weights' own fp32
    assert t.accuracy_after == pytest.approx(report.accuracy) and t.fp32_accuracy_after == report.fp32_accuracy
    assert t.accuracy_after > t.accuracy_before + 0.05  # 73.5% -> 90.6% on this machine (msfp8 loses 22 points)
    assert t.drop_before == pytest.approx((t.fp32_accuracy_before - t.accuracy_before) * 100)
    assert t.fp32_change == pytest.approx((t.fp32_accuracy_after - t.fp32_accuracy_before) * 100)
    text, html = repr(report), report._repr_html_()
    for shown in (text, html):
        assert "fine-tuning (measured)" in shown and f"{t.accuracy_before:.2%} -&gt;" in shown.replace("->", "-&gt;")
        assert "none of them trained on" in shown and "fp32 of the tuned weights" in shown
    assert "fine-tuned 5 epochs from digits-mlp:2" in report.summary()


def test_without_labelled_data_the_effect_is_measured_on_held_out_training_rows_and_no_register_registers_nothing(
        torch: Any, registry: Registry, digits: Any) -> None:
    clf, X_train, y_train, X_test, _ = digits
    mm.register(clf, "digits-mlp", sample=X_train[:5])
    mm.fpga_compile("digits-mlp", format="mxfp8", register=False, rps_seconds=0)  # converts: digits-mlp:2
    report = mm.fpga_compile("digits-mlp:2", format="msfp9", data=X_test, finetune=2, finetune_data=X_train,
                             finetune_labels=y_train, finetune_settings={"holdout": 0.25, "seed": 3},
                             register=False, rps_seconds=0)
    t = report.finetune
    assert t is not None and t.tuned_version is None and report.registered is None
    held = round(len(X_train) * 0.25)
    assert (t.measured_rows, t.train_rows, t.seed) == (held, len(X_train) - held, 3)
    assert "training rows held out" in t.measured_on and "never trained on" in t.measured_on
    assert "--data has no labels" in t.measured_on
    assert report.accuracy is None and report.agreement is not None  # --data without labels: agreement only
    assert "not registered" in report.source and len(registry.find("digits-mlp")) == 2


def test_fine_tuning_is_refused_without_training_rows_on_the_measured_rows_and_with_bad_settings(
        torch: Any, registry: Registry, digits: Any) -> None:
    clf, X_train, y_train, X_test, y_test = digits
    mm.register(clf, "digits-mlp", sample=X_train[:5])
    with pytest.raises(InvalidInputError, match="give the training rows and their labels"):
        mm.fpga_compile("digits-mlp", format="msfp8", data=X_test, labels=y_test, finetune=5)
    mixed = np.concatenate([X_train[:300], X_test[:40]])
    with pytest.raises(InvalidInputError, match="40 of the 540 rows the accuracy is measured on .* are also "
                                                "training rows"):
        mm.fpga_compile("digits-mlp", format="msfp8", data=X_test, labels=y_test, finetune=1, finetune_data=mixed,
                        finetune_labels=np.concatenate([y_train[:300], y_test[:40]]))
    with pytest.raises(InvalidInputError, match="without --finetune EPOCHS"):
        mm.fpga_compile("digits-mlp", format="msfp8", finetune_data=X_train, finetune_labels=y_train)
    with pytest.raises(InvalidInputError, match="--finetune -1 is out of range"):
        mm.fpga_compile("digits-mlp", finetune=-1)
    with pytest.raises(InvalidInputError, match="no setting 'momentum'"):
        mm.fpga_compile("digits-mlp", finetune=1, finetune_data=X_train, finetune_labels=y_train,
                        finetune_settings={"momentum": 0.9})
    names = [v.ref for v in registry.find("digits-mlp")]
    assert not any("fpga.finetuned" in registry.get(ref).tags for ref in names)  # nothing tuned was registered
    # said so, the overlap is allowed and counted
    report = mm.fpga_compile("digits-mlp", format="msfp8", data=X_test, labels=y_test, finetune=1,
                             finetune_data=mixed, finetune_labels=np.concatenate([y_train[:300], y_test[:40]]),
                             finetune_overlap=True, register=False, rps_seconds=0)
    assert report.finetune is not None and report.finetune.overlap_rows == 40
    assert "40 of them also trained on (allowed): the accuracy after is optimistic" in report.finetune.measured_on


def test_rows_are_compared_by_value() -> None:
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert shared_rows(a, a[::-1]) == 4 and shared_rows(a, a[:1].astype(np.float64)) == 1
    assert shared_rows(a, a + 0.5) == 0


def test_without_pytorch_fine_tuning_says_to_install_it_before_registering_anything(
        registry: Registry, digits: Any, ip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    clf, X_train, y_train, _, _ = digits
    mm.register(clf, "digits-mlp", sample=X_train[:5])
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails, as where it is not installed
    with pytest.raises(TorchMissingError, match="pip install torch"):
        mm.fpga_compile("digits-mlp", format="msfp8", finetune=5, finetune_data=X_train, finetune_labels=y_train)
    ip.push({"X_train": X_train, "y_train": y_train})
    with pytest.raises(UsageError, match="needs PyTorch, which is not installed: pip install torch"):
        ip.run_line_magic("fpga", "compile digits-mlp --finetune 5 --train-data X_train --train-labels y_train")
    assert len(registry.find("digits-mlp")) == 1  # not even the ONNX conversion


@pytest.mark.serve
def test_fpga_compile_finetune_in_a_real_shell_then_deploy_and_call_the_tuned_program(
        torch: Any, clean: Registry, ip: Any, digits: Any) -> None:
    clf, X_train, y_train, X_test, y_test = digits
    ip.push({"clf": clf, "X_train": X_train, "y_train": y_train, "X_val": X_test, "y_val": y_test,
             "sample": X_train[:5]})
    ip.run_line_magic("register", "clf --name digits-mlp --sample sample")
    result = ip.run_cell("report = %fpga compile digits-mlp --format msfp9 --native-dim 64 --data X_val "
                         "--labels y_val --finetune 2 --train-data X_train --train-labels y_train",
                         store_history=True)
    result.raise_error()
    report = ip.user_ns["report"]
    assert report.registered == "digits-mlp:4" and report.finetune.tuned_version == "digits-mlp:3"
    assert clean.get("digits-mlp:3").lineage.cell_source_sha256 is not None  # the cell's lineage, as any version
    with pytest.raises(UsageError, match="are also training rows"):
        ip.run_line_magic("fpga", "compile digits-mlp:2 --format msfp9 --data X_val --labels y_val --finetune 1 "
                                  "--train-data X_val --train-labels y_val")
    deployed = ip.run_line_magic("deploy", "digits-mlp --target fpga")
    assert (deployed.target, deployed.state, deployed.model_version) == ("fpga", "running", 4)
    program = target.load_version_program(clean, clean.get("digits-mlp:4"))
    assert program.format.name == "msfp9"
    expected = Emulator(program).predict(X_test[:60]).tolist()
    assert ip.run_line_magic("call", "digits-mlp X_val[:60]") == expected
    tuned_program = compile_model(mm.load_model("digits-mlp:3"), "msfp9", native_dim=64)
    assert expected == Emulator(tuned_program).predict(X_test[:60]).tolist()
    assert len(clean.find("digits-mlp")) == 4  # the deployment served the program as it is, compiled nothing


def test_mlops_fpga_compile_finetune_reads_its_training_rows_from_files(
        torch: Any, registry: Registry, digits: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clf, X_train, y_train, X_test, y_test = digits
    mm.register(clf, "digits-mlp", sample=X_train[:5])
    np.save(tmp_path / "x_train.npy", X_train)
    (tmp_path / "y_train.json").write_text(json.dumps(y_train.tolist()))
    np.save(tmp_path / "x_val.npy", X_test)
    (tmp_path / "y_val.json").write_text(json.dumps(y_test.tolist()))
    done = mlops(capsys, "fpga", "compile", "digits-mlp", "--format", "msfp8", "--data", str(tmp_path / "x_val.npy"),
                 "--labels", str(tmp_path / "y_val.json"), "--finetune", "1", "--train-data",
                 str(tmp_path / "x_train.npy"), "--train-labels", str(tmp_path / "y_train.json"), "--json")
    body = done.json
    assert body["registered"] == "digits-mlp:4" and body["finetune"]["tuned_version"] == "digits-mlp:3"
    assert body["finetune"]["measured_rows"] == len(X_test) and body["finetune"]["epochs"] == 1
    assert registry.get("digits-mlp:3").tags["fpga.finetuned"] == "1"
    done = mlops(capsys, "fpga", "compile", "digits-mlp:2", "--finetune", "1", "--data", str(tmp_path / "x_val.npy"),
                 "--labels", str(tmp_path / "y_val.json"))
    assert done.code == 2 and "give the training rows and their labels" in done.err

"""validate (a CI gate: exit 1 when a check fails), onnx and profile from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlops_magics as mm
from mlops_magics.registry import Registry
from tests.cli_run import mlops


def test_validate_passes_fails_with_exit_1_and_stores_the_verdict(registry: Registry, iris: Any, iris_lr: Any,
                                                                  iris_tree: Any, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    X, y = iris
    mm.register(iris_lr, "iris")
    mm.register(iris_tree, "iris")
    np.save(tmp_path / "X.npy", X)
    (tmp_path / "y.csv").write_text("species\n" + "".join(f"{v}\n" for v in y))
    (tmp_path / "y.json").write_text(json.dumps(y.tolist()))
    data = ["--data", str(tmp_path / "X.npy")]

    passed = mlops(capsys, "validate", "iris:1", *data, "--labels", str(tmp_path / "y.csv"), "--metric",
                   "accuracy>=0.9", "--metric", "f1")
    assert passed.code == 0 and passed.out.startswith("Validation of iris:1 on 150 rows: PASSED")
    stored = registry.reports(registry.get("iris:1"))["validation"]
    as_json = mlops(capsys, "validate", "iris:1", *data, "--labels", str(tmp_path / "y.json"), "--metric",
                    "accuracy>=0.9", "--metric", "f1", "--json")
    assert {k: v for k, v in as_json.json.items() if k != "at"} == {k: v for k, v in stored.items() if k != "at"}

    failed = mlops(capsys, "validate", "iris:2", *data, "--labels", str(tmp_path / "y.csv"), "--metric",
                   "accuracy>=0.99", "--baseline", "iris:1")
    assert failed.code == 1 and "FAILED" in failed.out and "FAIL accuracy>=0.99" in failed.out
    assert registry.reports(registry.get("iris:2"))["validation"]["passed"] is False
    unknown = mlops(capsys, "validate", "iris:1", *data, "--labels", str(tmp_path / "y.csv"), "--metric", "mine")
    assert unknown.code == 2 and "'mine'" in unknown.err


def test_onnx_registers_the_next_version_and_fails_with_exit_1_without_parity(
        registry: Registry, iris: Any, iris_lr: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    X, _ = iris
    mm.register(iris_lr, "iris")
    np.save(tmp_path / "X.npy", X[:20].astype(np.float32))
    converted = mlops(capsys, "onnx", "iris", "--data", str(tmp_path / "X.npy"), "--json").json
    assert converted["registered"] == "iris:2" and converted["parity"]["passed"] is True
    assert converted == registry.reports(registry.get("iris:2"))["onnx"]
    assert registry.get("iris:2").flavor == "onnx"
    again = mlops(capsys, "onnx", "iris:2")
    assert again.code == 2 and "iris:2 is already an ONNX model" in again.err


@pytest.mark.serve
def test_profile_prints_progress_on_stderr_and_the_report_on_stdout(registry: Registry, iris: Any, iris_lr: Any,
                                                                    tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    X, _ = iris
    mm.register(iris_lr, "iris")
    (tmp_path / "one.json").write_text(json.dumps(X[:1].tolist()))
    done = mlops(capsys, "profile", "iris", "--data", str(tmp_path / "one.json"), "--target", "local",
                 "--concurrency", "1", "--duration", "0.5", "--json")
    assert done.json == json.loads(json.dumps(registry.reports(registry.get("iris:1"))["profile"]))
    assert done.json["target"] == "local" and done.json["recommendedCpu"] is not None
    progress = done.err.splitlines()
    assert progress[0].startswith("[0/1] cpu=None, memory=None: deploying") and progress[-1] == "[1/1] done"
    assert [d.state for d in registry.deployments()] == ["deleted"]

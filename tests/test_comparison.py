"""Versions side by side (%compare): metrics, signature differences, validation, profile and ONNX results."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

import mlops_magics as mm
from mlops_magics.cli.output import to_json
from mlops_magics.errors import InvalidInputError, NotFoundError
from mlops_magics.registry import Registry
from mlops_magics.registry.comparison import input_columns


@pytest.fixture
def frames(iris: Any) -> tuple[Any, Any]:
    import pandas as pd

    X = pd.DataFrame(iris[0], columns=["sl", "sw", "pl", "pw"])
    changed = X.drop(columns=["pw"]).assign(area=X.sl * X.sw, sw=X.sw.astype("float32"))
    return X, changed


def test_signature_differences_name_added_removed_and_retyped_columns(
    registry: Registry, iris: Any, frames: tuple[Any, Any]
) -> None:
    from sklearn.tree import DecisionTreeClassifier

    X, changed = frames
    y = iris[1]
    mm.register(DecisionTreeClassifier(max_depth=2).fit(X, y), "iris", sample=X[:3])
    mm.register(DecisionTreeClassifier(max_depth=2).fit(changed, y), "iris", sample=changed[:3])
    mm.register(DecisionTreeClassifier(max_depth=2).fit(X, y), "iris")  # no sample: no signature
    result = mm.compare_models(["iris:1", "iris:2", "iris:3"])
    first, third = result.signatures
    assert (first.ref, first.against) == ("iris:2", "iris:1")
    assert first.added == (("area", "float64"),) and first.removed == (("pw", "float64"),)
    assert first.changed == (("sw", "float64", "float32"),) and not first.same
    assert first.summary() == "+1: area float64; -1: pw float64; ~1: sw float64->float32"
    assert third.missing == "no signature for iris:3 (registered without --sample)" and not third.same
    assert result.row("vs iris:1").values == (None, first.summary(), third.missing)
    assert "iris:2: +1: area float64; -1: pw float64; ~1: sw float64->float32" in repr(result)  # in full
    assert "<li><strong>iris:2</strong>: +1: area float64" in result._repr_html_()
    assert first.as_dict()["changed"] == [{"column": "sw", "from": "float64", "to": "float32"}]


def test_a_tensors_columns_are_its_positions() -> None:
    assert input_columns({"inputs": {"type": "tensor", "dtype": "float64", "shape": [-1, 3]}}) == {
        "[0]": "float64", "[1]": "float64", "[2]": "float64"}
    assert input_columns({"inputs": {"type": "tensor", "dtype": "float32", "shape": [-1, 2, 2]}}) == {
        "tensor": "float32 [-1, 2, 2]"}
    assert input_columns(None) is None


def test_metrics_validation_profile_and_onnx_results_side_by_side(registry: Registry, iris: Any,
                                                                   iris_lr: Any, iris_tree: Any) -> None:
    X, y = iris
    a = mm.register(iris_lr, "iris", metrics={"accuracy": 0.97}, sample=X[:3], alias="production")
    b = mm.register(iris_tree, "iris", metrics={"accuracy": 0.95, "f1": 0.94}, sample=X[:3])
    mm.validate("iris:2", X, y, metrics=["accuracy>=0.99"])
    registry.set_report(a, "profile", {
        "target": "docker", "limits_applied": True, "recommendedCpu": 0.5, "recommendedMemoryInGB": 0.5,
        "recommendedLatencyInMs": 4.25, "configurations": [
            {"measuredQueriesPerSecond": 812.0, "successRate": 1.0, "latencyPercentile95InMs": 4.25}]})
    registry.set_report(b, "profile", {
        "target": "local", "limits_applied": False, "recommendedCpu": None, "recommendedLatencyInMs": None,
        "configurations": [{"measuredQueriesPerSecond": 100.0, "successRate": 0.5, "latencyPercentile95InMs": 9.5},
                           {"measuredQueriesPerSecond": 0.0, "successRate": 0.0, "latencyPercentile95InMs": math.nan}]})
    registry.set_report(b, "onnx", {"source": "iris:1", "parity": {"passed": True},
                                    "speed": {"single_speedup": 3.14, "batch_speedup": 2.0}})
    result = mm.compare_models(["iris@production", "iris:2"])
    assert result.refs == ("iris:1", "iris:2")
    assert result.row("accuracy", "metrics (registered)").values == (0.97, 0.95)
    assert result.row("f1", "metrics (registered)").shown == ("-", "0.94")
    measured = result.row("accuracy", "metrics (measured by validation)")
    assert measured.values[0] is None and measured.values[1] == pytest.approx((iris_tree.predict(X) == y).mean())
    assert result.row("verdict").values == (None, "FAILED")
    assert result.row("checks").shown[1].startswith("FAIL accuracy>=0.99")
    assert result.row("p95 latency (ms)").values == (4.25, 9.5)  # the recommended one, else the best measured
    assert result.row("throughput (req/s)").shown == ("812", "100")
    assert result.row("target").values == ("docker", "local (no CPU/memory limits)")
    assert result.row("single-row speed-up").shown == ("-", "3.1x")
    assert result.row("size (bytes)").values == (a.size, b.size)
    assert result.row("aliases").values == ("production", None)
    frame = result.to_dataframe()
    assert list(frame.columns) == ["iris:1", "iris:2"]
    assert frame.loc[("metrics (registered)", "accuracy"), "iris:2"] == 0.95
    text = repr(result)
    assert text.splitlines()[0].split() == ["iris:1", "iris:2"] and "metrics (registered):" in text
    html = result._repr_html_()
    assert "compared with <strong>iris:1</strong>" in html and "background:#fff3e0" in html  # differences shaded
    shown = json.loads(json.dumps(to_json(result)))  # what mlops --json compare prints
    assert shown["versions"] == ["iris:1", "iris:2"]
    assert {"section": "onnx", "what": "batch speed-up", "values": {"iris:1": None, "iris:2": 2.0}} in shown["rows"]


def test_mistakes_are_answered(registry: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris")
    with pytest.raises(InvalidInputError, match=r"Compare at least two versions, .*\(got 1: iris\)"):
        mm.compare_models(["iris"])
    with pytest.raises(InvalidInputError, match="compare at most 12 at once"):
        mm.compare_models([f"iris:{i}" for i in range(13)])
    with pytest.raises(NotFoundError, match="No model named 'irus'. Did you mean 'iris'"):
        mm.compare_models(["iris:1", "irus:1"])
    with pytest.raises(InvalidInputError, match="'iris:latest' and an earlier reference both name iris:1"):
        mm.compare_models(["iris:1", "iris:latest"])

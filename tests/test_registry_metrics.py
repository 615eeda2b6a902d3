"""Metrics of versions: given at registration (part of the version), measured by a validation (with their source)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mlops_magics as mm
from mlops_magics import api, payloads
from mlops_magics.errors import InvalidInputError, NotFoundError
from mlops_magics.registry import Registry
from mlops_magics.registry.migrations import SCHEMA_VERSION
from tests.schema import roll_back


def test_registered_metrics_are_part_of_the_version(registry: Registry, iris_lr: Any) -> None:
    v = mm.register(iris_lr, "iris", metrics={"accuracy": 0.97, "val/f1": 1})
    assert dict(v.metrics) == {"accuracy": 0.97, "val/f1": 1.0} and v.measured_metrics == ()
    assert dict(mm.register(iris_lr, "iris", metrics=["accuracy=0.9", "rmse=1e-3"]).metrics) == {
        "accuracy": 0.9, "rmse": 0.001}
    assert mm.get_model("iris:1").metrics == v.metrics
    with pytest.raises(TypeError):
        v.metrics["accuracy"] = 0.5  # type: ignore[index]
    manifests = {(name, version): path for name, version, _, path in registry.artifacts.manifest_files()}
    assert registry.artifacts.read_manifest(manifests["iris", 1])["metrics"] == {"accuracy": 0.97, "val/f1": 1.0}


@pytest.mark.parametrize("metrics, message", [
    ({"accuracy": "high"}, r"Metric 'accuracy' is 'high' \(str\): give a number"),
    ({"accuracy": True}, r"Metric 'accuracy' is 'True' \(bool\)"),
    ({"accuracy": float("inf")}, "Metric 'accuracy' is inf: give a finite number"),
    ({"bad name": 1.0}, "Invalid metric name 'bad name'"),
    ({"x" * 65: 1.0}, "at most 64 characters"),
    (["accuracy"], "is not KEY=NUMBER"),
    (["accuracy=0.9", "accuracy=0.8"], r"given twice \(0.9 and 0.8\)"),
    ({f"m{i}": i for i in range(101)}, "101 metrics given: a version holds at most 100"),
])
def test_bad_metrics_are_refused_before_anything_is_written(registry: Registry, iris_lr: Any, metrics: Any,
                                                            message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        mm.register(iris_lr, "iris", metrics=metrics)
    assert mm.list_models() == () and not list(registry.artifacts.staging_root.iterdir())


def test_a_validation_adds_what_it_measured_with_its_source_and_replaces_its_last(
    registry: Registry, iris_lr: Any, iris: Any
) -> None:
    X, y = iris
    mm.register(iris_lr, "iris", metrics={"accuracy": 0.5})
    mm.validate("iris:1", X, y, metrics=["accuracy>=0.9", "f1"])
    v = mm.get_model("iris:1")
    assert dict(v.metrics) == {"accuracy": 0.5}  # what was registered is never changed
    measured = {m.key: m for m in v.measured_metrics}
    assert sorted(measured) == ["accuracy", "f1"] and {m.source for m in measured.values()} == {"validation"}
    assert measured["accuracy"].value == pytest.approx((iris_lr.predict(X) == y).mean(), abs=0)  # exact float
    assert measured["accuracy"].detail["rows"] == 150 and len(measured["accuracy"].detail["data_sha256"]) == 64
    assert v.metric_columns() == {"accuracy": 0.5, "accuracy (validation)": measured["accuracy"].value,
                                  "f1 (validation)": measured["f1"].value}
    mm.validate("iris:1", X[:50], y[:50], metrics=["accuracy"])
    again = mm.get_model("iris:1").measured_metrics
    assert [(m.key, m.value, m.detail["rows"]) for m in again] == [("accuracy", 1.0, 50)]  # f1 was not re-measured
    assert registry.reports(v)["validation"]["rows"] == 50


def test_the_report_and_its_metrics_are_written_together(registry: Registry, iris_lr: Any) -> None:
    v = mm.register(iris_lr, "iris")
    with pytest.raises(InvalidInputError):
        registry.record_measured_metrics(v, {"bad name": 1.0}, source="validation")
    with pytest.raises(InvalidInputError, match="Invalid metric source 'registered'"):
        registry.record_measured_metrics(v, {"accuracy": 1.0}, source="registered")
    with pytest.raises(RuntimeError), registry.write():
        registry.set_report(v, "validation", {"passed": True})
        registry.record_measured_metrics(v, {"accuracy": 1.0, "nan": float("nan")}, source="validation")
        raise RuntimeError("the writer dies before the commit")
    assert registry.reports(v) == {} and mm.get_model("iris:1").measured_metrics == ()
    assert registry.record_measured_metrics(v, {"accuracy": 1.0, "nan": float("nan")}, source="validation") == {
        "accuracy": 1.0}  # a value that is not a number is left out
    mm.delete_model("iris:1")
    with pytest.raises(NotFoundError):
        registry.record_measured_metrics(v, {"accuracy": 1.0}, source="validation")
    assert registry.db.execute("SELECT count(*) FROM measured_metrics").fetchone()[0] == 0


def test_listings_and_payloads_carry_the_metrics(registry: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris", metrics={"accuracy": 0.97})
    v = mm.register(iris_lr, "iris", metrics={"size": 3.0})  # a metric named as a column of the listing
    registry.record_measured_metrics(v, {"accuracy": 0.91}, source="validation", detail={"rows": 10})
    rows = mm.list_models().to_dataframe()
    assert rows["accuracy"].tolist()[0] == 0.97 and rows["accuracy (validation)"].tolist()[1] == 0.91
    assert rows["size (registered)"].tolist()[1] == 3.0 and rows["size"].tolist()[1].endswith("B")
    shown = payloads.version_json(mm.get_model("iris:2"))
    assert shown["metrics"] == {"size": 3.0}
    assert [(m["key"], m["value"], m["source"], m["detail"]) for m in shown["measured_metrics"]] == [
        ("accuracy", 0.91, "validation", {"rows": 10})]
    listed = payloads.models_json(registry=registry)[0]["versions"]
    assert [item["metrics"] for item in listed] == [{"size": 3.0, "accuracy (validation)": 0.91}, {"accuracy": 0.97}]


def test_registered_metrics_survive_a_rebuild_from_the_manifests(registry: Registry, home: Path,
                                                                 iris_lr: Any) -> None:
    mm.register(iris_lr, "iris", metrics={"accuracy": 0.97})
    registry.close()
    for leftover in home.glob("registry.db*"):
        leftover.unlink()
    api.rebuild_registry()
    assert dict(Registry(home).get("iris:1").metrics) == {"accuracy": 0.97}


def test_an_older_registry_gains_metrics_keeping_its_versions(home: Path, iris_lr: Any, iris: Any) -> None:
    mm.register(iris_lr, "iris", registry=Registry(home))
    conn = roll_back(home / "registry.db", 7)
    reg = Registry(home)
    assert conn.execute("SELECT max(id) FROM _migrations").fetchone()[0] == SCHEMA_VERSION
    old = reg.get("iris:1")
    assert dict(old.metrics) == {} and old.measured_metrics == ()
    mm.validate("iris:1", *iris, metrics=["accuracy"], registry=reg)
    assert [m.key for m in reg.get("iris:1").measured_metrics] == ["accuracy"]
    assert dict(mm.register(iris_lr, "iris", metrics={"accuracy": 0.9}, registry=reg).metrics) == {"accuracy": 0.9}

"""Validation gates: metrics, thresholds, a baseline, stored verdicts, gated aliases and deployments."""

from __future__ import annotations

from typing import Any

import pytest

import mlops_magics as mm
from mlops_magics.api import validate
from mlops_magics.errors import ConflictError, InvalidInputError
from mlops_magics.registry import Registry
from mlops_magics.validation import parse_check


def test_checks_pass_and_the_verdict_is_stored(registry: Registry, iris: Any, iris_lr: Any) -> None:
    X, y = iris
    mm.register(iris_lr, "iris")
    report = validate("iris", X, y, metrics=["accuracy>=0.9", "f1", "roc_auc > 0.95"])
    assert report.passed and report.model == "iris:1" and report.rows == 150
    assert report.metrics["accuracy"] == pytest.approx(iris_lr.score(X, y))
    assert [c.check for c in report.checks] == ["accuracy>=0.9", "f1 (no threshold)", "roc_auc>0.95"]
    stored = registry.reports(registry.get("iris:1"))["validation"]
    assert stored["passed"] is True and stored["data_sha256"] == report.data_sha256 and len(stored["checks"]) == 3
    assert "PASSED" in repr(report) and "pass" in report._repr_html_()


def test_a_threshold_missed_fails_naming_the_check(registry: Registry, iris: Any, iris_tree: Any) -> None:
    X, y = iris
    mm.register(iris_tree, "tree")
    report = validate("tree", X, y, metrics=["accuracy>=0.99", "balanced_accuracy>0.5"])
    assert not report.passed
    assert [(c.check, c.passed) for c in report.checks] == [("accuracy>=0.99", False), ("balanced_accuracy>0.5", True)]
    assert "FAIL accuracy>=0.99" in repr(report)


def test_a_regression_against_the_baseline_fails_unless_allowed(registry: Registry, iris: Any, iris_lr: Any,
                                                                iris_tree: Any) -> None:
    X, y = iris
    mm.register(iris_lr, "iris", alias="production")
    mm.register(iris_tree, "iris")  # depth 2: a worse model
    worse = validate("iris:2", X, y, metrics=["accuracy>=0.5"], baseline="iris@production")
    assert not worse.passed and worse.baseline == "iris:1"
    regression = worse.checks[-1]
    assert not regression.passed and regression.check.startswith("accuracy >= iris:1's 0.97")
    allowed = validate("iris:2", X, y, metrics=["accuracy>=0.5"], baseline="iris@production", max_regression=0.1)
    assert allowed.passed


def test_regressor_metrics_and_user_functions(registry: Registry) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True)
    mm.register(Ridge().fit(X, y), "ridge")
    report = validate("ridge", X, y, metrics=["rmse<=80", "r2>=0.3", "mae", "within_50"],
                      functions={"within_50": lambda t, p: float((abs(t - p) <= 50).mean())})
    assert report.passed and 0 < report.metrics["within_50"] <= 1 and report.metrics["rmse"] < 80


def test_mistakes_are_named(registry: Registry, iris: Any, iris_lr: Any) -> None:
    X, y = iris
    mm.register(iris_lr, "iris")
    with pytest.raises(InvalidInputError, match="is not a check"):
        parse_check("accuracy => 0.9")
    with pytest.raises(InvalidInputError, match="Unknown metric 'acuracy'"):
        validate("iris", X, y, metrics=["acuracy>=0.9"])
    with pytest.raises(InvalidInputError, match="--data has 150 rows and --labels 10"):
        validate("iris", X, y[:10], metrics=["accuracy"])
    with pytest.raises(InvalidInputError, match="at least one --metric"):
        validate("iris", X, y, metrics=[])
    assert "validation" not in registry.reports(registry.get("iris:1"))


def test_a_gated_alias_only_takes_validated_versions(registry: Registry, iris: Any, iris_lr: Any,
                                                     iris_tree: Any) -> None:
    X, y = iris
    mm.register(iris_lr, "iris")
    mm.register(iris_tree, "iris")
    with pytest.raises(ConflictError, match=r"iris@production requires a passed validation, and iris:1 has never "
                                            r"been validated"):
        mm.set_alias("iris:1", "production", require_validation=True)
    validate("iris:1", X, y, metrics=["accuracy>=0.9"])
    gated = mm.set_alias("iris:1", "production", require_validation=True)
    assert gated.version.ref == "iris:1" and gated.gated
    assert str(gated) == "iris@production -> iris:1 (new alias; gated: only versions that passed %validate)"
    assert registry.gated_aliases("iris") == ["production"]
    assert str(mm.set_alias("iris:1", "production")).endswith("(unchanged; gated: only versions that passed %validate)")
    assert str(mm.set_alias("iris:2", "staging")) == "iris@staging -> iris:2 (new alias)"  # an ungated one
    validate("iris:2", X, y, metrics=["accuracy>=0.99"])
    with pytest.raises(ConflictError, match=r"iris:2 failed its validation \(accuracy>=0.99\)"):
        mm.set_alias("iris:2", "production")  # the gate stays without repeating the option
    assert registry.get("iris@production").ref == "iris:1"
    with pytest.raises(ConflictError, match="requires a passed validation"):
        mm.register(iris_lr, "iris", alias="production")
    assert [v.ref for v in registry.find(name="iris")] == ["iris:1", "iris:2"]  # nothing half-registered


def test_a_gate_refusal_says_what_must_change(registry: Registry, iris: Any, iris_lr: Any, iris_tree: Any) -> None:
    X, y = iris
    for model in (iris_lr, iris_tree, iris_tree):
        mm.register(model, "iris")
    with pytest.raises(ConflictError, match=r"never been validated. Validate it first: %validate iris:1 --data X "):
        mm.set_alias("iris:1", "production", require_validation=True)
    validate("iris:1", X, y, metrics=["accuracy>=0.9"])
    validate("iris:2", X, y, metrics=["accuracy>=0.99"])
    with pytest.raises(ConflictError) as failed:
        mm.set_alias("iris:2", "production", require_validation=True)
    assert str(failed.value) == (
        "iris@production requires a passed validation, and iris:2 failed its validation (accuracy>=0.99). "
        "Validating iris:2 again on the same data gives the same verdict: the alias needs a version that passes. "
        "Register a better model and validate it, then move the alias. Versions that passed: iris:1 "
        "(%alias iris:1 production).")
    validate("iris:3", X, y, metrics=["accuracy>=0.99"])
    with pytest.raises(ConflictError, match=r"iris:3 failed its validation.*deploy a version that passes") as deploy:
        mm.deploy("iris:3", require_validation=True)
    assert "%validate iris:3" not in str(deploy.value)


def test_deploy_can_require_validation(registry: Registry, iris: Any, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris")
    with pytest.raises(ConflictError, match=r"iris:1 has never been validated, and validation is required"):
        mm.deploy("iris", require_validation=True)
    assert registry.deployments() == []


def test_an_onnx_version_is_validated_through_onnxruntime(registry: Registry, iris: Any, iris_lr: Any) -> None:
    pytest.importorskip("skl2onnx", reason="the onnx extra is not installed")
    X, y = iris
    mm.register(iris_lr, "iris", sample=X[:3])
    converted = mm.to_onnx("iris", data=X, budget=0.02)
    report = validate(str(converted.registered), X, y, metrics=["accuracy>=0.9", "roc_auc>=0.9"],
                      baseline="iris:1")
    assert report.passed and report.metrics["accuracy"] == pytest.approx(iris_lr.score(X, y))


def test_the_validate_magic_with_a_notebook_metric(ip: Any, iris: Any, iris_lr: Any) -> None:
    X, y = iris
    ip.user_ns.update(model=iris_lr, X=X, y=y, errors=lambda t, p: float((t != p).sum()))
    ip.run_line_magic("register", "model --name iris")
    report = ip.run_line_magic("validate", "iris --data X --labels y --metric 'accuracy>=0.9' --metric 'errors<=10'")
    assert report.passed and report.metrics["errors"] == float((iris_lr.predict(X) != y).sum())
    assert ip.run_line_magic("alias", "iris:1 production --require-validation").ref == "iris:1"

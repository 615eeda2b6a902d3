"""ONNX conversion: parity, timings, registration as a derived version, failures named."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mlops_magics as mm
from mlops_magics.errors import ConversionError, InvalidInputError, StorageError
from mlops_magics.onnx import convert as onnx_convert
from mlops_magics.registry import Registry

pytest.importorskip("skl2onnx", reason="the onnx extra (pip install mlops-magics[onnx]) is not installed")


@pytest.fixture(scope="module")
def forest_data() -> tuple[Any, Any]:
    from sklearn.datasets import make_classification

    return make_classification(n_samples=600, n_features=20, n_informative=10, random_state=0)


def _check_registered(registry: Registry, report: Any, source: str) -> None:
    assert report.parity.passed and report.registered
    version = registry.get(report.registered)
    assert version.flavor == "onnx" and version.lineage.derived_from == source
    stored = registry.reports(version)["onnx"]
    assert stored["source"] == source and stored["parity"]["passed"] is True
    assert stored["speed"]["single_speedup"] == pytest.approx(report.speed.single_speedup)


def test_a_logistic_regression_converts_agrees_and_is_timed(registry: Registry, iris: Any, iris_lr: Any) -> None:
    X, _ = iris
    mm.register(iris_lr, "iris", sample=X[:5])
    report = mm.to_onnx("iris", data=X, budget=0.1)
    _check_registered(registry, report, "iris:1")
    assert report.registered == "iris:2" and report.parity.label_agreement == 1.0 and report.parity.rows == 150
    assert report.parity.max_abs_error is not None and report.parity.max_abs_error < 1e-3
    s = report.speed
    assert s.batch_rows == 1000 and min(s.single_native_median_us, s.single_onnx_median_us) > 0
    assert s.single_native_p99_us >= s.single_native_median_us and s.single_onnx_p99_us >= s.single_onnx_median_us
    text = repr(report)
    assert "registered as iris:2" in text and "parity PASSED: 150 rows" in text and "batch of 1000" in text
    html = report._repr_html_()
    assert "data:image/png;base64," in html and "<table" in html


def test_a_model_fitted_on_a_numeric_dataframe_converts_as_one_tensor(registry: Registry) -> None:
    """A plain estimator fitted on named numeric columns (the quickstart's model) takes them as one tensor."""
    import warnings

    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    mm.register(model, "iris", sample=X[:5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the original is timed and checked on the frame: no feature-name warning
        report = mm.to_onnx("iris", data=X, budget=0.05)
    _check_registered(registry, report, "iris:1")
    assert report.parity.label_agreement == 1.0 and report.parity.rows == 150
    onnx_model = mm.load_model(report.registered)
    assert [i.name for i in onnx_model.graph.input] == ["X"]


@pytest.mark.parametrize("kind", ["forest", "boosting"])
def test_tree_ensembles_convert_with_full_label_agreement(registry: Registry, forest_data: Any, kind: str) -> None:
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    X, y = forest_data
    model = (RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0) if kind == "forest"
             else GradientBoostingClassifier(n_estimators=20, random_state=0)).fit(X, y)
    mm.register(model, kind, sample=X[:3])
    report = mm.to_onnx(kind, data=X, budget=0.05)
    _check_registered(registry, report, f"{kind}:1")
    assert report.parity.label_agreement == 1.0 and report.parity.rows == 600


def test_a_dataframe_pipeline_with_scaling_and_one_hot_encoding(registry: Registry) -> None:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.normal(40, 10, 300), "income": rng.normal(50, 15, 300),
                          "city": rng.choice(["paris", "lyon", "nice"], 300)})
    target = ((frame["age"] > 40) ^ (frame["city"] == "nice")).astype(int)
    pipeline = Pipeline([
        ("prepare", ColumnTransformer([("scale", StandardScaler(), ["age", "income"]),
                                       ("encode", OneHotEncoder(handle_unknown="ignore"), ["city"])])),
        ("classify", LogisticRegression()),
    ]).fit(frame, target)
    mm.register(pipeline, "churn", sample=frame.head(4))
    report = mm.to_onnx("churn", data=frame, budget=0.05)
    _check_registered(registry, report, "churn:1")
    assert report.parity.label_agreement == 1.0


def test_a_regressor_is_checked_by_its_errors(registry: Registry) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    X, y = load_diabetes(return_X_y=True)
    mm.register(RandomForestRegressor(n_estimators=10, random_state=0).fit(X, y), "diabetes", sample=X[:3])
    report = mm.to_onnx("diabetes", data=X, budget=0.05)
    _check_registered(registry, report, "diabetes:1")
    assert report.parity.kind == "regressor" and report.parity.label_agreement is None
    assert report.parity.max_rel_error is not None and report.parity.max_rel_error < 1e-3


def test_parity_failure_registers_nothing_unless_forced(registry: Registry, iris: Any, iris_lr: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    X, _ = iris
    mm.register(iris_lr, "iris", sample=X[:5])
    monkeypatch.setattr(onnx_convert, "PROBA_ATOL", 0.0)  # float32 probabilities differ a little: now too much
    report = mm.to_onnx("iris", data=X, budget=0.05)
    assert not report.parity.passed and report.registered is None
    assert [v.ref for v in registry.find(name="iris")] == ["iris:1"]
    assert "parity FAILED" in repr(report) and "not registered" in repr(report)
    forced = mm.to_onnx("iris", data=X, force=True, budget=0.05)
    assert forced.registered == "iris:2" and registry.get("iris:2").tags["onnx.parity"] == "forced"


def test_the_onnx_version_and_its_report_are_stored_together_or_not_at_all(
        registry: Registry, iris: Any, iris_lr: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    X, _ = iris
    mm.register(iris_lr, "iris", sample=X[:5])
    kept = set(registry.artifacts.digests())

    def full_disk(self: Registry, version: Any, kind: str, body: Any) -> None:
        raise StorageError(f"No space left to store the {kind} report of {version.ref}.")

    with monkeypatch.context() as patch:
        patch.setattr(Registry, "set_report", full_disk)
        with pytest.raises(StorageError, match="onnx report of iris:2"):
            mm.to_onnx("iris", data=X, budget=0.05)
    assert [v.ref for v in registry.find(name="iris")] == ["iris:1"], "a version without its report was left"
    assert set(registry.artifacts.digests()) == kept, "the ONNX artifact outlived its rolled-back version"
    assert mm.to_onnx("iris", data=X, budget=0.05).registered == "iris:2"  # the number was not used up
    assert registry.reports(registry.get("iris:2"))["onnx"]["registered"] == "iris:2"


def test_unsupported_models_and_steps_are_named(registry: Registry, iris: Any) -> None:
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    class Doubler(TransformerMixin, BaseEstimator):
        def fit(self, X: Any, y: Any = None) -> Doubler:
            return self

        def transform(self, X: Any) -> Any:
            return np.asarray(X) * 2

    X, y = iris
    mm.register(Pipeline([("double", Doubler()), ("model", LogisticRegression(max_iter=500))]).fit(X, y), "custom",
                sample=X[:3])
    with pytest.raises(ConversionError, match=r"skl2onnx cannot convert step 'double' \(Doubler\).*Supported"):
        mm.to_onnx("custom", budget=0.05)
    mm.register({"weights": [1, 2]}, "table")
    with pytest.raises(InvalidInputError, match="no registered input example"):
        mm.to_onnx("table")
    with pytest.raises(ConversionError, match=r"No ONNX converter for builtins.dict\. Supported: scikit-learn"):
        mm.to_onnx("table", data=[[1.0, 2.0]])
    mm.register(LogisticRegression(max_iter=500).fit(X, y), "linear", sample=X[:3])
    with pytest.raises(ConversionError, match=r"nothing to quantize"):
        mm.to_onnx("linear", quantize="int8")
    assert [v.ref for v in registry.find(name="linear")] == ["linear:1"]


def test_int8_quantization_of_a_neural_network_reports_the_accuracy_change(registry: Registry, iris: Any) -> None:
    from sklearn.neural_network import MLPClassifier

    X, y = iris
    mm.register(MLPClassifier(hidden_layer_sizes=(32,), max_iter=3000, random_state=0).fit(X, y), "mlp", sample=X[:3])
    report = mm.to_onnx("mlp", quantize="int8", data=X, budget=0.05)
    assert report.quantized == "int8" and report.parity.tolerance["min_label_agreement"] == 0.98
    assert report.parity.label_agreement is not None and report.parity.label_agreement >= 0.98
    assert registry.get(str(report.registered)).tags["onnx.quantized"] == "int8"


@pytest.mark.serve
def test_the_onnx_version_deploys_and_answers_like_the_original(registry: Registry, iris: Any,
                                                                 iris_lr: Any) -> None:
    X, _ = iris
    mm.register(iris_lr, "iris", sample=X[:5])
    report = mm.to_onnx("iris", data=X, budget=0.05)
    try:
        mm.deploy(str(report.registered), name="iris-onnx")
        assert mm.call("iris-onnx", X[:20]) == iris_lr.predict(X[:20]).tolist()
    finally:
        mm.undeploy(all_services=True)


def test_the_onnx_magic(ip: Any, iris: Any) -> None:
    from sklearn.tree import DecisionTreeClassifier

    X, y = iris
    ip.user_ns.update(tree=DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y), X=X)
    ip.run_line_magic("register", "tree --sample X[:3]")
    report = ip.run_line_magic("onnx", "tree --data X")
    assert report.registered == "tree:2" and report.parity.rows == 150


@pytest.mark.serve
def test_a_dataframe_pipeline_onnx_version_serves_records_without_scikit_learn(registry: Registry) -> None:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"size": rng.normal(10, 3, 200), "colour": rng.choice(["red", "blue"], 200)})
    target = ((frame["size"] > 10) & (frame["colour"] == "red")).astype(int)
    pipeline = Pipeline([
        ("prepare", ColumnTransformer([("scale", StandardScaler(), ["size"]),
                                       ("encode", OneHotEncoder(), ["colour"])])),
        ("classify", DecisionTreeClassifier(max_depth=3, random_state=0)),
    ]).fit(frame, target)
    mm.register(pipeline, "shapes", sample=frame.head(3))
    report = mm.to_onnx("shapes", data=frame, budget=0.05)
    environment = mm.set_environment(str(report.registered), from_kernel=True)
    packages = {p.split("==")[0].lower() for p in environment.pip}
    assert {"onnxruntime", "numpy"} <= packages and not packages & {"scikit-learn", "pandas", "skl2onnx", "onnx"}
    try:
        mm.deploy(str(report.registered), name="shapes-onnx")
        records = frame.head(25).to_dict(orient="records")
        assert mm.call("shapes-onnx", records) == pipeline.predict(frame.head(25)).tolist()
        with pytest.raises(mm.MlopsError, match=r"answered 400: Bad input: got 1 row x 1 named column, missing "
                                                r"'colour'; expected 2 named columns: 'size', 'colour'\. Send records"):
            mm.call("shapes-onnx", [{"size": 3.0}])
        with pytest.raises(mm.MlopsError, match=r"Bad input: got 2 rows x 3 unnamed columns; expected 2 named"):
            mm.call("shapes-onnx", [[3.0, "red", 1], [4.0, "blue", 1]])
    finally:
        mm.undeploy(all_services=True)


def test_a_lightgbm_model_converts_through_onnxmltools(registry: Registry, forest_data: Any) -> None:
    lightgbm = pytest.importorskip("lightgbm", reason="LightGBM is not installed (pip install lightgbm onnxmltools)")
    pytest.importorskip("onnxmltools", reason="onnxmltools is not installed (pip install onnxmltools)")
    X, y = forest_data
    model = lightgbm.LGBMClassifier(n_estimators=30, verbose=-1, random_state=0).fit(X, y)
    mm.register(model, "gbm", sample=X[:3], flavor="sklearn")
    report = mm.to_onnx("gbm", data=X, budget=0.05)
    assert report.converter.startswith("onnxmltools") and report.parity.label_agreement == 1.0
    _check_registered(registry, report, "gbm:1")


def test_a_pytorch_module_converts_through_torch_onnx(registry: Registry) -> None:
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (CI installs the CPU wheel)")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    X = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    mm.register(net, "net", sample=X[:3])
    report = mm.to_onnx("net", data=X, budget=0.05)
    assert report.converter.startswith("torch.onnx") and report.parity.kind == "other"
    assert report.parity.max_abs_error is not None and report.parity.max_abs_error < 1e-4
    _check_registered(registry, report, "net:1")


def test_the_onnx_magic_records_the_running_cell_as_register_does(ip: Any, iris: Any, iris_lr: Any) -> None:
    X, _ = iris
    ip.user_ns.update(clf=iris_lr, X=X)
    ip.run_cell("%register clf --name iris --sample X[:5]", store_history=True).raise_error()
    source = "report = %onnx iris:1 --data X[:20]"
    result = ip.run_cell(source, store_history=True, cell_id="cell-onnx")
    result.raise_error()
    lineage = mm.get_model(ip.user_ns["report"].registered).lineage
    assert lineage.script is None  # not "ipykernel_launcher.py": the kernel is no script
    assert lineage.cell_execution_count == result.execution_count and lineage.cell_id == "cell-onnx"
    assert lineage.derived_from == "iris:1"

"""Flavors: each kind of model saves, registers and loads back to an equal model."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlops_magics as mm
from mlops_magics import flavors
from mlops_magics.errors import InvalidInputError, NotFoundError, SerializationError
from mlops_magics.registry import Registry


def test_sklearn_pipeline_round_trips_with_joblib(registry: Registry, iris: Any) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = iris
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    v = mm.register(pipe, "pipe")
    assert (v.flavor, v.flavor_options["serializer"]) == ("sklearn", "joblib")
    assert v.flavor_options["class"] == "sklearn.pipeline.Pipeline"
    np.testing.assert_array_equal(mm.load_model("pipe").predict_proba(X), pipe.predict_proba(X))


def test_joblib_artifact_loads_the_azure_way(registry: Registry, iris_lr: Any, iris: Any) -> None:
    import joblib

    v = mm.register(iris_lr, "iris")
    loaded = joblib.load(registry.verified_artifact(v) / "model.pkl")
    np.testing.assert_array_equal(loaded.predict(iris[0]), iris_lr.predict(iris[0]))


class Doubler:
    """A sklearn-like model defined outside sklearn (here: in a test module)."""

    def fit(self, X: Any, y: Any = None) -> Doubler:
        return self

    def predict(self, X: Any) -> Any:
        return np.asarray(X) * 2


def test_anything_with_fit_and_predict_is_the_sklearn_flavor(registry: Registry) -> None:
    v = mm.register(Doubler(), "doubler", sample=np.ones((2, 3)))
    assert v.flavor == "sklearn"
    assert v.signature is not None and v.signature["outputs"]["shape"] == [-1, 3]
    assert mm.load_model("doubler").predict([1, 2]).tolist() == [2, 4]


def test_a_notebook_class_is_pickled_by_value_so_deployments_can_load_it(registry: Registry, home: Path) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(  # a class defined in __main__, as in a notebook cell
        "class Halver:\n"
        "    def fit(self, X, y=None): return self\n"
        "    def predict(self, X): return [x / 2 for x in X]\n",
        namespace,
    )
    model = namespace["Halver"]()
    v = mm.register(model, "halver")
    assert v.flavor_options["serializer"] == "cloudpickle"
    code = ("import mlops_magics as mm; print(mm.load_model('halver').predict([4, 6]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"MLOPS_HOME": str(home), "PATH": ""}).stdout
    assert out.strip() == "[2.0, 3.0]"


def test_any_other_picklable_object_uses_the_labelled_fallback(registry: Registry) -> None:
    def scale(x: float) -> float:
        return x * 3

    v = mm.register({"weights": [1, 2], "fn": scale}, "lookup")
    assert v.flavor == "pickle" and v.flavor_options["serializer"] == "cloudpickle"
    assert "fallback" in flavors.FLAVORS["pickle"].description
    loaded = mm.load_model("lookup")
    assert loaded["weights"] == [1, 2] and loaded["fn"](2) == 6


class Holder:
    def __init__(self) -> None:
        self.config = {"layers": [1, 2], "guard": threading.Lock()}

    def predict(self, X: Any) -> Any:
        return X


def test_unpicklable_object_names_the_attribute_and_type_that_failed(registry: Registry) -> None:
    with pytest.raises(SerializationError, match=r"Cannot save the model: the model.config\['guard'\], "
                       r"a _thread.lock, cannot be pickled.*Set that attribute to None"):
        mm.register(Holder(), "holder")
    assert mm.list_models() == ()
    assert not list(registry.artifacts.staging_root.iterdir())


def test_onnx_model_proto_registers_as_onnx(registry: Registry) -> None:
    onnx = pytest.importorskip("onnx", reason="the onnx package is in the test extra")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    v = mm.register(proto, "relu")
    assert (v.flavor, v.framework, [f.path for f in v.files]) == ("onnx", "onnx", ["model.onnx"])
    assert v.flavor_options["opsets"] == {"ai.onnx": 17}
    assert mm.load_model("relu") == proto
    assert isinstance(mm.load_model("relu"), onnx.ModelProto)


def test_onnx_file_registers_by_path_and_a_broken_one_is_refused(registry: Registry, tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="the onnx package is in the test extra")
    from onnx import TensorProto, helper, save

    graph = helper.make_graph([helper.make_node("Abs", ["x"], ["y"])], "abs",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    save(helper.make_model(graph), str(tmp_path / "abs.onnx"))
    v = mm.register(name="abs", path=tmp_path / "abs.onnx")
    assert v.flavor == "onnx" and v.files[0].path == "abs.onnx"
    (tmp_path / "broken.onnx").write_bytes(b"\x00\x01garbage")
    with pytest.raises(InvalidInputError, match="broken.onnx is not a valid ONNX model"):
        mm.register(name="broken", path=tmp_path / "broken.onnx")


def test_pytorch_module_round_trips(registry: Registry) -> None:
    torch = pytest.importorskip("torch", reason="torch is optional; .ci/run installs the CPU wheel when present")
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    v = mm.register(net, "net")
    assert (v.flavor, v.framework) == ("pytorch", "torch")
    x = torch.ones(2, 4)
    assert torch.equal(mm.load_model("net")(x), net(x))


def test_a_folder_registers_with_its_name_and_loads_as_a_path(registry: Registry, tmp_path: Path) -> None:
    src = tmp_path / "outputs"
    (src / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(b"\x01" * 100)
    (src / "sub" / "vocab.txt").write_text("a\nb\n")
    v = mm.register(name="folder-model", path=src, tags=["origin=spark"])
    assert v.flavor == "files"
    assert sorted(f.path for f in v.files) == ["outputs/sub/vocab.txt", "outputs/weights.bin"]
    loaded = mm.load_model("folder-model")
    assert loaded.name == "outputs" and (loaded / "sub" / "vocab.txt").read_text() == "a\nb\n"


def test_a_trusted_pickle_file_from_elsewhere_loads_with_joblib(registry: Registry, tmp_path: Path,
                                                                iris_lr: Any) -> None:
    import joblib

    joblib.dump(iris_lr, tmp_path / "model.joblib")
    v = mm.register(name="external", path=tmp_path / "model.joblib", trust=True)
    assert (v.flavor, v.origin, v.origin_path, v.trusted) == ("pickle", "path", str(tmp_path / "model.joblib"), True)
    assert mm.load_model("external").predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == [0]


def test_register_path_errors(registry: Registry, tmp_path: Path, iris_lr: Any) -> None:
    with pytest.raises(NotFoundError, match="No file or folder at"):
        mm.register(name="x", path=tmp_path / "missing.pkl")
    with pytest.raises(InvalidInputError, match="not both, not neither"):
        mm.register(iris_lr, "x", path=tmp_path)
    with pytest.raises(InvalidInputError, match="not both, not neither"):
        mm.register(name="x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="The artifact is empty"):
        mm.register(name="x", path=tmp_path / "empty")


def test_a_forced_flavor_must_fit_the_object(registry: Registry) -> None:
    with pytest.raises(InvalidInputError, match=r"is not a 'onnx' model.*it would be 'pickle'"):
        mm.register([1, 2, 3], "numbers", flavor="onnx")
    with pytest.raises(NotFoundError, match="Unknown flavor 'tensorflow'. Flavors: onnx, pytorch"):
        mm.register([1, 2, 3], "numbers", flavor="tensorflow")


def test_a_version_from_memory_keeps_the_file_name_the_previous_file_version_had(registry: Registry, tmp_path: Path,
                                                                                 iris_lr: Any, iris_tree: Any,
                                                                                 iris: Any) -> None:
    import joblib

    joblib.dump(iris_lr, tmp_path / "sklearn_regression_model.pkl")  # as SDK v1 notebooks do before Model.register
    mm.register(name="diabetes", path=tmp_path / "sklearn_regression_model.pkl", trust=True)
    v2 = mm.register(iris_tree, "diabetes")  # %register model2 --name diabetes
    assert [f.path for f in v2.files] == ["sklearn_regression_model.pkl"]
    assert v2.flavor_options["file"] == "sklearn_regression_model.pkl"
    assert mm.load_model("diabetes:2").predict(iris[0]).tolist() == iris_tree.predict(iris[0]).tolist()
    loaded = joblib.load(registry.verified_artifact(v2) / "sklearn_regression_model.pkl")  # what the script opens
    assert loaded.predict(iris[0]).tolist() == iris_tree.predict(iris[0]).tolist()
    assert registry.get("diabetes:1").files[0].path == "sklearn_regression_model.pkl"  # v1 is unchanged


def test_a_file_name_can_be_given_and_is_checked(registry: Registry, iris_lr: Any, iris: Any) -> None:
    v = mm.register(iris_lr, "named", file_name="clf.joblib")
    assert [f.path for f in v.files] == ["clf.joblib"] and v.flavor_options["file"] == "clf.joblib"
    assert mm.load_model("named").predict(iris[0][:3]).tolist() == iris_lr.predict(iris[0][:3]).tolist()
    for bad in ("../x.pkl", "sub/x.pkl", "..", "", "x" * 300):
        with pytest.raises(InvalidInputError, match="file name"):
            mm.register(iris_lr, "named", file_name=bad)
    with pytest.raises(InvalidInputError, match="--file-name.*--path keeps the file's own name"):
        mm.register(name="named", path=Path(__file__), file_name="x.py")


def test_a_previous_file_of_another_kind_is_not_inherited(registry: Registry, tmp_path: Path, iris_lr: Any) -> None:
    (tmp_path / "weights.onnx").write_bytes(b"not really onnx")
    mm.register(name="mixed", path=tmp_path / "weights.onnx", flavor="files")
    v2 = mm.register(iris_lr, "mixed")  # a pickle never takes an .onnx name
    assert [f.path for f in v2.files] == ["model.pkl"]
    v3 = mm.register(iris_lr, "mixed", format="skops")
    assert [f.path for f in v3.files] == ["model.skops"]

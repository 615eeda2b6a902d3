"""The FPGA engine's emulator: fp32 equals onnxruntime; narrow formats round where the hardware would."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from mlops_magics.errors import InvalidInputError
from mlops_magics.fpga.compiler import compile_model
from mlops_magics.fpga.emulator import Emulator, emulate
from tests.fpga_graphs import digits_mlp, every_pointwise_op, graph, onnxruntime_outputs, small_cnn


def test_fp32_equals_onnxruntime_on_a_digits_mlp_probabilities_and_labels() -> None:
    model, X_test, _, _ = digits_mlp()
    expected = onnxruntime_outputs(model, X_test)
    got = Emulator(compile_model(model, "fp32")).run(X_test)
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], rtol=1e-5, atol=1e-6)
    assert np.array_equal(got["label"], expected["label"])


@pytest.mark.parametrize("make", [small_cnn, every_pointwise_op])
def test_fp32_equals_onnxruntime_on_a_cnn_and_on_every_point_wise_operator(make: object) -> None:
    model = make()  # type: ignore[operator]
    shape = (16, 1, 8, 8) if make is small_cnn else (16, 5)
    x = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    expected = next(iter(onnxruntime_outputs(model, x).values()))
    got = next(iter(emulate(compile_model(model, "fp32"), x).values()))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _one_dense(w: np.ndarray, b: np.ndarray | None = None) -> object:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m" if b is not None else "y"], name="mm")]
    weights = {"w": w}
    if b is not None:
        nodes.append(helper.make_node("Add", ["m", "b"], ["y"], name="bias"))
        weights["b"] = b
    return graph(nodes, ("x", ["N", w.shape[0]]), "y", weights)


def test_a_dense_layer_in_mxfp8_matches_the_hand_computed_block_rounding() -> None:
    x = np.array([[1.0, 3.0, 0.1, -7.0]], np.float32)
    w = np.array([[100.0], [1.0], [1.0], [1.0]], np.float32)
    # the activation block (max 7, X = 2^-6): 0.1 -> 6.5/64; the weight block (max 100, X = 2^-2): 100 -> 96;
    # accumulated in float32: 96 + 3 + 0.1015625 - 7 = 92.1015625
    assert emulate(compile_model(_one_dense(w), "mxfp8", vector_format="fp32"), x)["y"].tolist() == [[92.1015625]]
    # the same sum leaves the engine rounded to bfloat16 (8 significant bits): 92.1015625 -> 92.0
    assert emulate(compile_model(_one_dense(w), "mxfp8"), x)["y"].tolist() == [[92.0]]
    # and with a unit weight column, 1 + 3 + 0.1015625 - 7 = -2.8984375 ties between bf16's -2.890625 and -2.90625
    ones = np.ones((4, 1), np.float32)
    assert emulate(compile_model(_one_dense(ones), "mxfp8"), x)["y"].tolist() == [[-2.90625]]


def test_a_dense_layer_in_msfp9_matches_block_floating_point_by_hand() -> None:
    x = np.array([[7.0, 1.1, 0.4, -2.5]], np.float32)  # max 7: step 1, so 7, 1, 0, -2
    w = np.full((4, 1), 0.3, np.float32)  # max 0.3: step 2^-4, so 0.3 -> 5/16 for every row
    got = emulate(compile_model(_one_dense(w), "msfp9", vector_format="fp32"), x)["y"]
    assert got.tolist() == [[(7 + 1 + 0 - 2) * 5 / 16]]


def test_the_bias_is_added_in_the_vector_format() -> None:
    w = np.eye(2, dtype=np.float32)
    b = np.array([1 / 3, 0.0], np.float32)
    got = emulate(compile_model(_one_dense(w, b), "mxfp8"), np.array([[1.0, 0.0]], np.float32))["y"]
    # 1/3 is stored in bfloat16 (0.333984375); 1 + 0.333984375 rounds to bfloat16's 1.3359375
    assert got[0, 0] == np.float32(1.3359375) and got[0, 1] == 0.0


def test_a_batch_gives_what_one_request_at_a_time_gives() -> None:
    model, X_test, _, _ = digits_mlp()
    emulator = Emulator(compile_model(model, "mxfp6"))
    batch = emulator.scores(X_test[:20])
    singles = np.vstack([emulator.scores(row) for row in X_test[:20]])
    assert np.array_equal(batch, singles)
    cnn = Emulator(compile_model(small_cnn(), "mxfp4"))
    x = np.random.default_rng(0).normal(size=(6, 1, 8, 8)).astype(np.float32)
    assert np.array_equal(cnn.scores(x), np.vstack([cnn.scores(x[i]) for i in range(6)]))


def test_narrow_formats_keep_the_labels_and_lose_more_as_bits_fall() -> None:
    model, X_test, y_test, _ = digits_mlp()
    accuracy = {f: float((Emulator(compile_model(model, f)).predict(X_test) == y_test).mean())
                for f in ("fp32", "mxfp8", "mxint8", "mxfp4", "msfp8")}
    assert accuracy["fp32"] > 0.9
    assert abs(accuracy["mxfp8"] - accuracy["fp32"]) <= 0.01 and abs(accuracy["mxint8"] - accuracy["fp32"]) <= 0.01
    assert accuracy["msfp8"] < accuracy["mxfp8"]
    error = {f: np.abs(Emulator(compile_model(model, f)).scores(X_test)
                       - Emulator(compile_model(model, "fp32")).scores(X_test)).mean() for f in ("mxfp8", "mxfp4")}
    assert 0 < error["mxfp8"] < error["mxfp4"]


def test_the_labels_come_from_the_classes_on_the_host() -> None:
    model, X_test, _, clf = digits_mlp()
    emulator = Emulator(compile_model(model, "fp32"))
    assert np.array_equal(emulator.predict(X_test[:30]), clf.predict(X_test[:30]))


def test_a_request_of_the_wrong_shape_is_refused_saying_the_shape_wanted() -> None:
    model, *_ = digits_mlp()
    with pytest.raises(InvalidInputError, match=r"requests of shape \(64,\).*got an array of shape \(2, 10\)"):
        Emulator(compile_model(model)).run(np.zeros((2, 10)))

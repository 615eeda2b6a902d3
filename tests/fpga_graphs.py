"""ONNX graphs for the FPGA engine's tests, built with onnx.helper (no PyTorch needed), and a digits MLP."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def graph(nodes: list[Any], inputs: tuple[str, list[Any]], output: str, weights: dict[str, np.ndarray],
          opset: int = 17) -> Any:
    """A model of ``nodes`` with one float input and one float output (unknown shape)."""
    name, shape = inputs
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def small_cnn(seed: int = 0) -> Any:
    """8x8 one-channel images: Conv 3x3 pad 1 + Relu, MaxPool 2, Conv 3x3 + Tanh, AveragePool 2, Flatten, Gemm,
    Softmax (random weights)."""
    rng = np.random.default_rng(seed)
    w = {"k1": rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32), "b1": rng.normal(0, 0.1, 4).astype(np.float32),
         "k2": rng.normal(0, 0.3, (6, 4, 3, 3)).astype(np.float32), "b2": rng.normal(0, 0.1, 6).astype(np.float32),
         "fc": rng.normal(0, 0.5, (10, 6)).astype(np.float32), "fb": rng.normal(0, 0.1, 10).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "k1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "k2", "b2"], ["c2"], name="conv2"),
             helper.make_node("Tanh", ["c2"], ["t2"], name="tanh2"),
             helper.make_node("AveragePool", ["t2"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p2"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["logits"], name="fc", transB=1),
             helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1)]
    return graph(nodes, ("x", ["N", 1, 8, 8]), "probabilities", w)


def every_pointwise_op(seed: int = 0) -> Any:
    """MatMul + Add + Sigmoid, Gemm (alpha, beta) + Tanh, Mul by a constant, Add of two activations, Relu."""
    rng = np.random.default_rng(seed)
    w = {"w1": rng.normal(0, 0.5, (5, 7)).astype(np.float32), "b1": rng.normal(0, 0.1, (1, 7)).astype(np.float32),
         "w2": rng.normal(0, 0.5, (7, 7)).astype(np.float32), "b2": rng.normal(0, 0.1, 7).astype(np.float32),
         "half": np.float32(0.5)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
             helper.make_node("Add", ["b1", "m1"], ["a1"], name="bias1"),  # the constant first: still a bias
             helper.make_node("Sigmoid", ["a1"], ["s1"], name="sigm1"),
             helper.make_node("Gemm", ["s1", "w2", "b2"], ["g2"], name="gemm2", alpha=2.0, beta=0.5),
             helper.make_node("Tanh", ["g2"], ["t2"], name="tanh2"),
             helper.make_node("Mul", ["t2", "half"], ["h2"], name="half2"),
             helper.make_node("Add", ["h2", "s1"], ["res"], name="residual"),
             helper.make_node("Relu", ["res"], ["y"], name="relu")]
    return graph(nodes, ("x", ["N", 5]), "y", w)


@functools.cache
def digits_mlp(hidden: tuple[int, ...] = (32,), zipmap: bool = False) -> tuple[Any, np.ndarray, np.ndarray, Any]:
    """An MLPClassifier trained on scikit-learn's digits, its ONNX (skl2onnx), and the test rows and labels (cached:
    treat them as read-only)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X.astype(np.float32), y, test_size=0.3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning at a small max_iter is fine here
        clf = MLPClassifier(hidden_layer_sizes=hidden, max_iter=200, random_state=0).fit(X_train, y_train)
        proto = to_onnx(clf, X_train[:1], options={id(clf): {"zipmap": zipmap}})
    return proto, X_test, y_test, clf


def onnxruntime_outputs(model: Any, x: np.ndarray) -> dict[str, Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {name: x}), strict=True))

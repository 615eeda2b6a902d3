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


def rnn_weights(op: str, features: int, hidden: int, seed: int = 0, scale: float = 0.4) -> dict[str, np.ndarray]:
    """Random W, R, B of a GRU (3 gates) or LSTM (4 gates) in ONNX's shapes, and initial_h / initial_c [1, 1, H]."""
    rng = np.random.default_rng(seed)
    gates = 3 if op == "GRU" else 4
    return {"W": rng.normal(0, scale, (1, gates * hidden, features)).astype(np.float32),
            "R": rng.normal(0, scale, (1, gates * hidden, hidden)).astype(np.float32),
            "B": rng.normal(0, 0.2, (1, 2 * gates * hidden)).astype(np.float32),
            "h0": rng.normal(0, 0.5, (1, 1, hidden)).astype(np.float32),
            "c0": rng.normal(0, 0.5, (1, 1, hidden)).astype(np.float32)}


def rnn(op: str, steps: int, features: int, hidden: int, *, bias: bool = True, initial: bool = False,
        outputs: tuple[str, ...] = ("Y", "Y_h"), seed: int = 0, **attributes: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """A batch-first (N, steps, features) input, Transpose(perm=[1, 0, 2]), one GRU or LSTM node ``rnn`` whose
    ``outputs`` (Y, Y_h, Y_c) are the graph's; and the weights (ONNX shapes)."""
    w = rnn_weights(op, features, hidden, seed)
    inputs = ["xt", "W", "R", "B" if bias else "", "", "h0" if initial else ""]
    if op == "LSTM" and initial:
        inputs.append("c0")
    used = {k: v for k, v in w.items() if k in inputs}
    names = {"Y": "Y", "Y_h": "Y_h", "Y_c": "Y_c"}
    node_outputs = [names[k] if k in outputs else "" for k in ("Y", "Y_h", "Y_c")[:3 if op == "LSTM" else 2]]
    while node_outputs and not node_outputs[-1]:
        node_outputs.pop()
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], name="batch_first", perm=[1, 0, 2]),
             helper.make_node(op, inputs, node_outputs, name="rnn", hidden_size=hidden, **attributes)]
    model = graph(nodes, ("x", ["N", steps, features]), outputs[0], used)
    for extra in outputs[1:]:
        model.graph.output.append(helper.make_tensor_value_info(extra, TensorProto.FLOAT, None))
    return model, w


def rnn_classifier(op: str, weights: dict[str, np.ndarray], fc: np.ndarray, fb: np.ndarray, steps: int,
                   last: str = "Y", lbr: int = 1) -> Any:
    """A sequence classifier as torch.onnx exports ``nn.GRU`` / ``nn.LSTM(batch_first=True)`` + ``nn.Linear``: the
    zero initial state built from Shape(x) (Shape, Gather, Unsqueeze, Concat, ConstantOfShape), Transpose, the RNN,
    then ``out[:, -1]`` (Squeeze, Transpose, Gather) for ``last="Y"`` or ``h_n[-1]`` (Gather) for ``last="Y_h"``,
    Gemm (transB), Softmax."""
    hidden, features = weights["R"].shape[2], weights["W"].shape[2]
    consts = {"W": weights["W"], "R": weights["R"], "B": weights["B"], "fc": fc, "fb": fb,
              "zero": np.array(0, np.int64), "one": np.array([1], np.int64), "width": np.array([hidden], np.int64),
              "axes0": np.array([0], np.int64), "axes1": np.array([1], np.int64), "minus1": np.array(-1, np.int64)}
    state = ["zeros", "zeros"] if op == "LSTM" else ["zeros"]
    attrs = {"linear_before_reset": lbr} if op == "GRU" else {}
    outs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    nodes = [helper.make_node("Shape", ["x"], ["shape"], name="shape"),
             helper.make_node("Gather", ["shape", "zero"], ["batch"], name="batch", axis=0),
             helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"], name="unsqueeze"),
             helper.make_node("Concat", ["one", "batch1", "width"], ["state_shape"], name="concat", axis=0),
             helper.make_node("ConstantOfShape", ["state_shape"], ["zeros"], name="zero_state"),
             helper.make_node("Transpose", ["x"], ["xt"], name="batch_first", perm=[1, 0, 2]),
             helper.make_node(op, ["xt", "W", "R", "B", "", *state], outs, name="rnn", hidden_size=hidden, **attrs)]
    if last == "Y":
        nodes += [helper.make_node("Squeeze", ["Y", "axes1"], ["y3"], name="squeeze"),
                  helper.make_node("Transpose", ["y3"], ["yb"], name="batch_first_out", perm=[1, 0, 2]),
                  helper.make_node("Gather", ["yb", "minus1"], ["features"], name="last_step", axis=1)]
    else:
        nodes.append(helper.make_node("Gather", ["Y_h", "zero"], ["features"], name="last_layer", axis=0))
    nodes += [helper.make_node("Gemm", ["features", "fc", "fb"], ["logits"], name="fc", transB=1),
              helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1)]
    return graph(nodes, ("x", ["N", steps, features]), "probabilities", consts)


@functools.cache
def digits_gru(hidden: int = 64) -> tuple[Any, np.ndarray, np.ndarray]:
    """A GRU classifier of scikit-learn's digits read as 8 steps (rows) of 8 pixels (scaled to [0, 1]): random GRU
    weights (a reservoir) and a readout fitted by ridge regression on the last hidden state, in the torch export's
    pattern (:func:`rnn_classifier`); the test rows and labels (cached: read-only)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from mlops_magics.fpga.emulator import gru_step

    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32).reshape(-1, 8, 8)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    rng = np.random.default_rng(0)
    weights = {"W": rng.normal(0, 0.5, (1, 3 * hidden, 8)).astype(np.float32),
               "R": rng.normal(0, 0.75 / np.sqrt(hidden), (1, 3 * hidden, hidden)).astype(np.float32),
               "B": np.zeros((1, 6 * hidden), np.float32)}
    h = np.zeros((len(X_train), hidden), np.float32)
    for t in range(8):
        h = gru_step(X_train[:, t] @ weights["W"][0].T, h, weights["R"][0].T, None, True, lambda v: v, lambda v: v)
    features = np.hstack([h, np.ones((len(h), 1), np.float32)])
    coef = np.linalg.solve(features.T @ features + np.eye(hidden + 1), features.T @ np.eye(10)[y_train])
    fc, fb = coef[:-1].T.astype(np.float32), coef[-1].astype(np.float32)
    return rnn_classifier("GRU", weights, fc, fb, 8, last="Y"), X_test, y_test

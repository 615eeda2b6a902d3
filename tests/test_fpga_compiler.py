"""The FPGA engine's compiler: ONNX operators to Brainwave-style instructions, tiles, MACs and weight memory."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from mlops_magics.errors import ConversionError, InvalidInputError
from mlops_magics.fpga.compiler import Instruction, compile_model
from tests.fpga_graphs import digits_mlp, every_pointwise_op, graph, small_cnn


def test_a_digits_mlp_becomes_two_dense_layers_and_a_host_softmax_with_the_label_on_the_host() -> None:
    model, _, _, clf = digits_mlp(hidden=(100,))
    program = compile_model(model, "mxfp8")
    assert [(layer.kind, layer.ops) for layer in program.layers] == [
        ("dense", ("MatMul", "Add", "Relu")), ("dense", ("MatMul", "Add")), ("host", ("Softmax",))]
    first = program.layers[0]
    assert [str(i) for i in first.instructions] == ["v_rd(X)", "mv_mul(MatMul.W)", "vv_add(Add.b)", "v_relu()",
                                                    "v_wr(next_activations)"]
    assert first.load_instructions == (Instruction("m_rd", ("MatMul.W",), 1),)
    assert (first.macs, first.tiles) == (64 * 100, 1) and program.macs == 64 * 100 + 100 * 10
    # MXFP8 weights: 8 bits each plus one 8-bit scale per 32 rows of each column; the bias in bfloat16
    assert first.weight_bits == 6400 * 8 + 2 * 100 * 8 + 100 * 16
    assert program.outputs == {"label": ("label", "out_activations_result"),
                               "probabilities": ("tensor", "out_activations_result")}
    assert program.classes is not None and program.classes.tolist() == clf.classes_.tolist()
    assert "MatMul" in repr(program) and len(program.table()) == 3


def test_tiles_of_the_native_dimension_set_the_instruction_repeats() -> None:
    model, *_ = digits_mlp(hidden=(100,))
    layer = compile_model(model, "msfp9", native_dim=32).layers[0]  # K = 64: 2 row tiles; N = 100: 4 column tiles
    assert layer.tiles == 8
    assert [(i.op, i.repeat) for i in layer.instructions] == [("v_rd", 2), ("mv_mul", 8), ("vv_add", 4),
                                                              ("vv_add", 4), ("v_relu", 4), ("v_wr", 4)]
    assert layer.instruction_count == 26


def test_conv_is_lowered_to_matrix_vector_work_per_output_position() -> None:
    program = compile_model(small_cnn(), "mxfp8")
    conv1, pool1, conv2 = program.layers[:3]
    assert (conv1.kind, conv1.input_shape, conv1.output_shape) == ("conv", (1, 8, 8), (4, 8, 8))
    assert conv1.macs == 9 * 4 * 64 and conv1.weights is not None and conv1.weights.shape == (9, 4)
    assert [(i.op, i.repeat) for i in conv1.instructions] == [("v_rd", 64), ("mv_mul", 64), ("vv_add", 64),
                                                              ("v_relu", 64), ("v_wr", 64)]
    assert [(i.op, i.repeat) for i in pool1.instructions] == [("v_rd", 64), ("v_max", 48), ("v_wr", 16)]
    assert conv2.output_shape == (6, 2, 2) and conv2.macs == 36 * 6 * 4
    assert [layer.kind for layer in program.layers[3:]] == ["pool", "reshape", "dense", "host"]


def test_point_wise_operators_fuse_into_the_layer_before_when_they_can() -> None:
    program = compile_model(every_pointwise_op(), "fp32")
    assert [(layer.kind, layer.ops) for layer in program.layers] == [
        ("dense", ("MatMul", "Add", "Sigmoid")), ("dense", ("Gemm", "Tanh")), ("pointwise", ("Mul",)),
        ("pointwise", ("Add", "Relu"))]
    assert program.layers[0].bias is not None and program.layers[0].bias.shape == (7,)


def test_weights_are_rounded_once_at_compile_time_along_the_reduction_axis() -> None:
    w = np.ones((4, 2), np.float32)
    w[0, 0] = 100.0  # column 0's block has max 100: MXFP8 scale 2^-2, so 100 -> 96 and the ones stay exact
    model = graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], ("x", ["N", 4]), "y", {"w": w})
    weights = compile_model(model, "mxfp8").layers[0].weights
    assert weights is not None
    assert weights[:, 0].tolist() == [96.0, 1.0, 1.0, 1.0] and weights[:, 1].tolist() == [1.0] * 4


def test_a_classifier_with_zipmap_gives_probabilities_and_labels() -> None:
    model, *_ = digits_mlp(zipmap=True)
    program = compile_model(model, "fp32")
    assert program.outputs["output_label"][0] == "label" and program.outputs["output_probability"][0] == "tensor"


def test_an_unsupported_operator_is_refused_naming_it_and_the_node() -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="dense1"),
             helper.make_node("LeakyRelu", ["h"], ["y"], name="leaky")]
    model = graph(nodes, ("x", ["N", 3]), "y", {"w": np.ones((3, 3), np.float32)})
    with pytest.raises(ConversionError, match=r"node 'leaky' \(operator LeakyRelu\).*not supported.*Supported "
                                              r"operators: Gemm, MatMul"):
        compile_model(model)


@pytest.mark.parametrize(("node", "shape", "weights", "message"), [
    (helper.make_node("MatMul", ["x", "x"], ["y"], name="mm"), ["N", 3], {}, "must be a constant"),
    (helper.make_node("Gemm", ["x", "w"], ["y"], name="g", transA=1), ["N", 3], {"w": np.ones((3, 3))}, "transA"),
    (helper.make_node("Conv", ["x", "k"], ["y"], name="c", group=2), ["N", 2, 4, 4],
     {"k": np.ones((2, 1, 3, 3))}, "groups"),
    (helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[2, 2], pads=[1, 1, 1, 1]),
     ["N", 1, 4, 4], {}, "padding"),
    (helper.make_node("Softmax", ["x"], ["y"], name="s", axis=0), ["N", 3], {}, "softmax over the features"),
    (helper.make_node("Reshape", ["x", "s"], ["y"], name="r"), ["N", 4], {"s": np.array([-1, 2, 2])}, "Reshape to"),
    (helper.make_node("Cast", ["x"], ["y"], name="cast", to=7), ["N", 3], {}, "cast to float"),
    (helper.make_node("LSTM", ["x", "w", "w"], ["y"], name="rnn"), ["N", 3], {"w": np.ones(3)}, "LSTM"),
])
def test_unsupported_attributes_are_refused_with_the_reason(node: object, shape: list[object],
                                                             weights: dict[str, np.ndarray], message: str) -> None:
    model = graph([node], ("x", shape), "y", {k: np.asarray(v, np.float32 if k != "s" else np.int64)
                                               for k, v in weights.items()})
    with pytest.raises(ConversionError, match=message):
        compile_model(model)


def test_an_input_without_fixed_feature_dimensions_is_refused() -> None:
    model = graph([helper.make_node("Relu", ["x"], ["y"])], ("x", ["N", "F"]), "y", {})
    with pytest.raises(ConversionError, match="fixed other dimensions"):
        compile_model(model)
    with pytest.raises(InvalidInputError, match="native dimension"):
        compile_model(small_cnn(), native_dim=0)

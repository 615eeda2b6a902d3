"""The FPGA engine's recurrent layers: GRU and LSTM compiled to per-step instruction chains, emulated, timed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from mlops_magics.errors import ConversionError, InvalidInputError
from mlops_magics.fpga.artifact import load_program, save_program
from mlops_magics.fpga.compiler import compile_model
from mlops_magics.fpga.emulator import Emulator
from mlops_magics.fpga.finetune import check_tunable
from mlops_magics.fpga.formats import fake_quantize
from mlops_magics.fpga.latency import Engine, estimate_latency, instruction_cycles
from tests.fpga_graphs import digits_gru, graph, onnxruntime_outputs, rnn, rnn_classifier, rnn_weights, small_cnn

NATIVE = 16  # smaller than the hidden sizes below, so the weights span several tiles


def _x(steps: int, features: int, rows: int = 4, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, steps, features)).astype(np.float32)


def _outputs(op: str) -> tuple[str, ...]:
    return ("Y", "Y_h", "Y_c") if op == "LSTM" else ("Y", "Y_h")


CELLS = [("GRU", {"linear_before_reset": 0}), ("GRU", {"linear_before_reset": 1}), ("LSTM", {})]
CELL_IDS = ["gru", "gru-linear-before-reset", "lstm"]


@pytest.mark.parametrize(("op", "attributes"), CELLS, ids=CELL_IDS)
@pytest.mark.parametrize(("steps", "hidden", "bias"), [(1, 20, True), (3, 40, False), (9, 33, True)])
def test_fp32_equals_onnxruntime_for_every_output_and_sequence_length(op: str, attributes: dict[str, int], steps: int,
                                                                      hidden: int, bias: bool) -> None:
    model, _ = rnn(op, steps, 7, hidden, bias=bias, outputs=_outputs(op), seed=steps, **attributes)
    x = _x(steps, 7)
    expected = onnxruntime_outputs(model, x)
    got = Emulator(compile_model(model, "fp32", native_dim=NATIVE)).run(x)
    assert set(got) == set(expected)
    for name in expected:  # Y is [seq_length, 1, batch, hidden], Y_h and Y_c [1, batch, hidden], as ONNX has them
        assert got[name].shape == expected[name].shape
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize(("op", "attributes"), CELLS, ids=CELL_IDS)
def test_initial_states_start_every_request_as_onnxruntime_starts_a_batch_of_one(op: str,
                                                                                 attributes: dict[str, int]) -> None:
    model, _ = rnn(op, 4, 5, 24, initial=True, outputs=_outputs(op), **attributes)
    x = _x(4, 5, rows=3)
    got = Emulator(compile_model(model, "fp32", native_dim=NATIVE)).run(x)
    for row in range(3):  # a constant initial state is [1, 1, hidden]: onnxruntime takes one sequence at a time
        expected = onnxruntime_outputs(model, x[row:row + 1])
        np.testing.assert_allclose(got["Y"][:, :, row:row + 1], expected["Y"], rtol=1e-5, atol=2e-6)
        np.testing.assert_allclose(got["Y_h"][:, row:row + 1], expected["Y_h"], rtol=1e-5, atol=2e-6)
    zero_start, _ = rnn(op, 4, 5, 24, initial=False, outputs=_outputs(op), **attributes)
    assert not np.allclose(Emulator(compile_model(zero_start, "fp32")).run(x)["Y_h"], got["Y_h"])


@pytest.mark.parametrize("last", ["Y", "Y_h"])
@pytest.mark.parametrize("op", ["GRU", "LSTM"])
def test_a_classifier_as_torch_exports_it_compiles_and_equals_onnxruntime(op: str, last: str) -> None:
    weights = rnn_weights(op, 8, 24, seed=2)
    rng = np.random.default_rng(3)
    model = rnn_classifier(op, weights, rng.normal(0, 0.5, (10, 24)).astype(np.float32),
                           rng.normal(0, 0.1, 10).astype(np.float32), steps=6, last=last)
    program = compile_model(model, "fp32", native_dim=NATIVE)
    # the zero state's Shape ... ConstantOfShape is evaluated at compile time; the re-layouts cost nothing
    assert [layer.kind for layer in program.layers] == (
        ["reshape", "rnn", "reshape", "reshape", "select", "dense", "host"] if last == "Y"
        else ["reshape", "rnn", "select", "dense", "host"])
    assert "initial_h" not in program.layers[1].attrs and program.output_axes == {}
    x = _x(6, 8, rows=5)
    np.testing.assert_allclose(Emulator(program).run(x)["probabilities"],
                               onnxruntime_outputs(model, x)["probabilities"], rtol=1e-5, atol=1e-6)


# -- narrow formats: a numpy reference straight from ONNX's equations, rounded at the documented points ------------
def _sigmoid(v: np.ndarray) -> np.ndarray:
    return np.float32(1) / (np.float32(1) + np.exp(-v))


def _reference(op: str, w: dict[str, np.ndarray], x: np.ndarray, fmt: str, vfmt: str, lbr: int) -> np.ndarray:
    """The last hidden state: weights rounded to ``fmt`` along their reduction axis, x_t, h (and r * h) rounded
    to ``fmt`` entering a matrix product, each gate's products plus bias and every point-wise result rounded to
    ``vfmt``."""
    q = lambda v: fake_quantize(v, fmt, axis=-1)  # noqa: E731
    v = lambda a: fake_quantize(a, vfmt)  # noqa: E731
    gates = 3 if op == "GRU" else 4
    n = w["R"].shape[2]
    W = [fake_quantize(w["W"][0, g * n:(g + 1) * n].T, fmt, axis=0) for g in range(gates)]
    R = [fake_quantize(w["R"][0, g * n:(g + 1) * n].T, fmt, axis=0) for g in range(gates)]
    Wb = [w["B"][0, g * n:(g + 1) * n] for g in range(gates)]
    Rb = [w["B"][0, (gates + g) * n:(gates + g + 1) * n] for g in range(gates)]
    h = np.zeros((x.shape[0], n), np.float32)
    c = np.zeros_like(h)
    for t in range(x.shape[1]):
        xq, hq = q(x[:, t]), q(h)
        if op == "LSTM":  # gates i, o, f, c
            pre = [v(xq @ W[g] + hq @ R[g] + v(Wb[g] + Rb[g])) for g in range(4)]
            i, o, f = (v(_sigmoid(p)) for p in pre[:3])
            c = v(v(f * c) + v(i * v(np.tanh(pre[3]))))
            h = v(o * v(np.tanh(c)))
            continue
        z, r = (v(_sigmoid(v(xq @ W[g] + hq @ R[g] + v(Wb[g] + Rb[g])))) for g in range(2))
        if lbr:
            candidate = v(np.tanh(v(v(xq @ W[2] + v(Wb[2])) + v(r * v(hq @ R[2] + v(Rb[2]))))))
        else:
            candidate = v(np.tanh(v(xq @ W[2] + q(v(r * h)) @ R[2] + v(Wb[2] + Rb[2]))))
        h = v(candidate + v(z * v(h - candidate)))
    return h


@pytest.mark.parametrize(("op", "attributes"), CELLS, ids=CELL_IDS)
@pytest.mark.parametrize(("fmt", "vfmt"), [("mxfp8", "bf16"), ("msfp9", "bf16"), ("mxfp4", "fp16")])
def test_narrow_formats_round_where_the_reference_does(op: str, attributes: dict[str, int], fmt: str,
                                                       vfmt: str) -> None:
    model, w = rnn(op, 5, 40, 48, outputs=("Y", "Y_h"), seed=4, **attributes)
    x = _x(5, 40, rows=6)
    program = compile_model(model, fmt, native_dim=NATIVE, vector_format=vfmt)
    got = Emulator(program).run(x)
    expected = _reference(op, w, x, fmt, vfmt, attributes.get("linear_before_reset", 0))
    # the same roundings in the same order: equal up to the order of float32 additions inside a matrix product
    # (which can move a value across one rounding boundary of the vector format: its step is 2^-8 for bf16)
    step = 2.0 ** (-8 if vfmt == "bf16" else -11)
    np.testing.assert_allclose(got["Y_h"][0], expected, rtol=2 * step, atol=step)
    assert np.mean(got["Y_h"][0] == expected) > 0.98
    fp32 = Emulator(compile_model(model, "fp32")).run(x)["Y_h"][0]
    assert np.abs(got["Y_h"][0] - fp32).max() > 20 * step  # and the narrow format does round
    # every hidden state the engine keeps is a value of the vector format; the weights are blocks of the format
    assert np.array_equal(fake_quantize(got["Y"], vfmt), got["Y"])
    layer = program.layers[1]
    assert layer.weights is not None
    assert np.array_equal(layer.weights[:40], fake_quantize(w["W"][0].T, fmt, axis=0))
    assert np.array_equal(layer.weights[40:], fake_quantize(w["R"][0].T, fmt, axis=0))


def test_a_batch_gives_what_one_request_at_a_time_gives() -> None:
    model, _ = rnn("LSTM", 6, 9, 20, outputs=("Y_h",))
    emulator = Emulator(compile_model(model, "mxfp6", native_dim=NATIVE))
    x = _x(6, 9, rows=5)
    batch = emulator.run(x)["Y_h"]
    assert np.array_equal(batch, np.concatenate([emulator.run(x[i])["Y_h"] for i in range(5)], axis=1))


# -- the program: instructions per step, tiles, MACs, memory -------------------------------------------------------
def test_a_gru_step_is_one_chain_of_brainwave_instructions_over_tiles() -> None:
    model, _ = rnn("GRU", 8, 20, 40, outputs=("Y_h",))  # x: 2 vectors of 16; a gate: 3 vectors (40 = 16 + 16 + 8)
    layer = compile_model(model, "mxfp8", native_dim=NATIVE).layers[1]
    assert (layer.kind, layer.ops, layer.time_steps, layer.input_shape) == ("rnn", ("GRU",), 8, (8, 20))
    assert [(i.op, i.repeat) for i in layer.instructions] == [
        ("v_rd", 2), ("mv_mul", 2 * 3 * 3), ("vv_add", 1 * 3 * 3),  # x_t times W (z, r, h), partial sums
        ("v_rd", 3), ("mv_mul", 3 * 2 * 3), ("vv_add", 2 * 2 * 3),  # h times R (z, r)
        ("vv_add", 6), ("vv_add", 6), ("v_sigm", 6),  # x part + h part, bias, sigmoid of z and r
        ("vv_mul", 3), ("mv_mul", 3 * 3), ("vv_add", 2 * 3), ("vv_add", 3), ("vv_add", 3), ("v_tanh", 3),  # h~
        ("vv_sub", 3), ("vv_mul", 3), ("vv_add", 3), ("v_wr", 3)]  # h = h~ + z * (h - h~)
    per_step = sum(i.repeat for i in layer.instructions)
    assert layer.instruction_count == 8 * per_step
    assert layer.macs == 8 * 3 * 40 * (20 + 40) and layer.tiles == (2 + 3) * 3 * 3
    assert [(i.op, i.repeat) for i in layer.load_instructions] == [("m_rd", 18), ("m_rd", 27)]
    # MXFP8 weights: 8 bits a value, an 8-bit scale per block of 32 rows (W: 20 rows, 1 block; R: 40 rows, 2);
    # the bias (Wb + Rb, 120 values) in bfloat16
    assert layer.weight_bits == 20 * 120 * 8 + 120 * 8 + 40 * 120 * 8 + 2 * 120 * 8 + 120 * 16
    assert "8 steps of: v_rd(x_t)" in repr(compile_model(model, "mxfp8", native_dim=NATIVE))


def test_an_lstm_step_computes_four_gates_and_keeps_the_cell_state() -> None:
    model, _ = rnn("LSTM", 3, 16, 16, bias=False, initial=True, outputs=("Y", "Y_h", "Y_c"))
    layer = compile_model(model, "fp32", native_dim=NATIVE).layers[1]
    assert [(i.op, i.repeat) for i in layer.instructions] == [
        ("v_rd", 1), ("mv_mul", 4), ("v_rd", 1), ("mv_mul", 4), ("vv_add", 4), ("v_sigm", 3), ("v_tanh", 1),
        ("vv_mul", 1), ("vv_mul", 1), ("vv_add", 1), ("v_tanh", 1), ("vv_mul", 1), ("v_wr", 1)]
    assert layer.attrs["initial_h"].shape == (16,) and layer.attrs["initial_c"].shape == (16,)
    assert layer.weight_bits == (16 + 16) * 64 * 32 + 2 * 16 * 32  # weights, and the two initial states


def test_latency_is_the_cycles_of_one_step_times_the_sequence_length() -> None:
    engine = Engine(clock_mhz=200, native_dim=NATIVE, lanes=8, tile_engines=4, dispatch_cycles=1)  # 2 cycles/vector
    model, _ = rnn("GRU", 8, 20, 40, outputs=("Y_h",))
    program = compile_model(model, "mxfp8", native_dim=NATIVE)
    layer = program.layers[1]
    # per step: mv_mul x18, x18, x9 over 4 tile engines: 5, 5 and 3 rounds of 2 cycles; the 16 vector instructions
    # hold 2+9+3+12+6+6+6+3+6+3+3+3+3+3+3+3 = 74 vectors of 2 cycles; 19 instructions, 1 dispatch cycle each
    step = (5 + 5 + 3) * 2 + 74 * 2 + 19
    assert sum(instruction_cycles(i, engine) for i in layer.instructions) == step == 193
    report = estimate_latency(program, engine)
    assert report.layers[1].cycles == 8 * 193 and report.cycles == 8 * 193  # the Transpose costs nothing
    assert report.microseconds == pytest.approx(8 * 193 / 200)
    assert report.load_cycles == (18 * NATIVE * 2 + 1) + (27 * NATIVE * 2 + 1)  # m_rd of W's and R's tiles, once
    longer, _ = rnn("GRU", 16, 20, 40, outputs=("Y_h",))
    assert estimate_latency(compile_model(longer, "mxfp8", native_dim=NATIVE), engine).cycles == 16 * 193


def test_the_program_is_compiled_for_its_sequence_length() -> None:
    model, _ = rnn("GRU", 5, 3, 4)
    emulator = Emulator(compile_model(model))
    with pytest.raises(InvalidInputError, match=r"requests of shape \(5, 3\).*got an array of shape \(2, 6, 3\)"):
        emulator.run(np.zeros((2, 6, 3)))
    dynamic = graph([helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
                     helper.make_node("GRU", ["xt", "W", "R"], ["Y"], name="g", hidden_size=4)],
                    ("x", ["N", "T", 3]), "Y", {"W": np.ones((1, 12, 3), np.float32),
                                                "R": np.ones((1, 12, 4), np.float32)})
    with pytest.raises(ConversionError, match="compiled for one sequence length: export it with a fixed one"):
        compile_model(dynamic)


def test_a_program_with_a_recurrent_layer_written_and_read_back_answers_the_same(tmp_path: Any) -> None:
    model, _ = rnn("LSTM", 4, 6, 20, initial=True, outputs=("Y", "Y_h", "Y_c"))
    program = compile_model(model, "mxfp8", native_dim=NATIVE)
    save_program(program, tmp_path)
    loaded = load_program(tmp_path)
    x = _x(4, 6)
    before, after = Emulator(program).run(x), Emulator(loaded).run(x)
    assert loaded.output_axes == {"Y": 2, "Y_h": 1, "Y_c": 1} and loaded.layers[1].time_steps == 4
    assert all(np.array_equal(before[name], after[name]) for name in before)
    assert np.array_equal(loaded.layers[1].attrs["initial_c"], program.layers[1].attrs["initial_c"])


# -- refusals: the operator, the node and the attribute named -------------------------------------------------------
def _refused(op: str, **attributes: Any) -> Any:
    model, _ = rnn(op, 3, 4, 5, **attributes)
    return model


@pytest.mark.parametrize(("model", "message"), [
    (_refused("GRU", direction="bidirectional"), r"'rnn' \(operator GRU\).*direction='bidirectional'"),
    (_refused("LSTM", direction="reverse"), r"'rnn' \(operator LSTM\).*direction='reverse'.*forward"),
    (_refused("GRU", layout=1), r"operator GRU.*layout=1"),
    (_refused("LSTM", activations=["Sigmoid", "Relu", "Tanh"]), r"operator LSTM.*activations=\['Sigmoid', 'Relu'"),
    (_refused("GRU", activations=["Sigmoid", "Tanh"], activation_alpha=[1.0]), r"operator GRU.*activation_alpha"),
    (_refused("LSTM", clip=3.0), r"operator LSTM.*clip=3.0"),
    (_refused("LSTM", input_forget=1), r"operator LSTM.*input_forget=1"),
], ids=["bidirectional", "reverse", "layout", "activations", "activation_alpha", "clip", "input_forget"])
def test_unsupported_attributes_are_refused_naming_operator_node_and_attribute(model: Any, message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        compile_model(model)


def _with_input(op: str, position: int, tensor: str, value: np.ndarray) -> Any:
    model, _ = rnn(op, 3, 4, 5)
    node = model.graph.node[1]
    while len(node.input) <= position:
        node.input.append("")
    node.input[position] = tensor
    model.graph.initializer.append(helper.make_tensor(tensor, TensorProto.FLOAT if value.dtype == np.float32
                                                      else TensorProto.INT32, value.shape, value.reshape(-1)))
    return model


@pytest.mark.parametrize(("model", "message"), [
    (_with_input("LSTM", 7, "P", np.ones((1, 15), np.float32)), r"operator LSTM.*input P \(peepholes\)"),
    (_with_input("GRU", 4, "lens", np.array([3], np.int32)), r"operator GRU.*input sequence_lens"),
    (_with_input("GRU", 5, "h0", np.ones((1, 2, 5), np.float32)), r"initial_h holds a state per batch row"),
], ids=["peepholes", "sequence_lens", "initial_h-per-row"])
def test_unsupported_inputs_are_refused_naming_them(model: Any, message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        compile_model(model)


def test_graphs_the_engine_cannot_lay_out_are_refused_with_what_to_do() -> None:
    weights = {"W": np.ones((1, 15, 4), np.float32), "R": np.ones((1, 15, 5), np.float32)}
    direct = graph([helper.make_node("GRU", ["x", "W", "R"], ["Y"], name="g", hidden_size=5)], ("x", [3, "N", 4]),
                   "Y", weights)
    with pytest.raises(ConversionError, match=r"'g' \(operator GRU\).*batch first.*Transpose\(perm=\[1, 0, 2\]\)"):
        compile_model(direct)
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             helper.make_node("GRU", ["xt", "W", "R"], ["Y", "Y_h"], name="g", hidden_size=5),
             helper.make_node("Relu", ["Y_h"], ["y"], name="relu")]
    with pytest.raises(ConversionError, match=r"'relu' \(operator Relu\).*batch axis at 1, not first"):
        compile_model(graph(nodes, ("x", ["N", 3, 4]), "y", weights))
    reorder = graph([helper.make_node("Transpose", ["x"], ["y"], name="t", perm=[0, 2, 1])], ("x", ["N", 3, 4]),
                    "y", {})
    with pytest.raises(ConversionError, match=r"'t' \(operator Transpose\).*perm=\[0, 2, 1\] reorders"):
        compile_model(reorder)


def test_fine_tuning_refuses_a_recurrent_layer_clearly() -> None:
    model, _ = rnn("GRU", 3, 4, 5)
    with pytest.raises(ConversionError, match=r"Fine-tuning does not support layer 'rnn' \(GRU, a rnn layer\)"):
        check_tunable(compile_model(model))
    check_tunable(compile_model(small_cnn()))  # dense, convolution, pooling: tunable


# -- end to end: a GRU classifier of digits rows ------------------------------------------------------------------
def test_a_digits_gru_classifier_keeps_its_accuracy_in_8_bits_and_loses_more_at_4() -> None:
    model, X_test, y_test = digits_gru()
    reference = onnxruntime_outputs(model, X_test)["probabilities"]
    accuracy = {}
    for fmt in ("fp32", "mxint8", "mxfp8", "mxfp4"):
        program = compile_model(model, fmt, native_dim=32)  # hidden 64: two vectors a gate
        predicted = Emulator(program).predict(X_test)
        accuracy[fmt] = float((predicted == y_test).mean())
        if fmt == "fp32":
            assert np.array_equal(predicted, reference.argmax(axis=1))
    assert accuracy["fp32"] > 0.85
    assert accuracy["mxint8"] >= accuracy["fp32"] - 0.03 and accuracy["mxfp8"] >= accuracy["fp32"] - 0.03
    assert accuracy["mxfp4"] < accuracy["mxfp8"]

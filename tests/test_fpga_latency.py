"""The FPGA engine's latency model: cycles from instructions, tiles and the engine's size (all emulated)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from mlops_magics.errors import InvalidInputError
from mlops_magics.fpga.compiler import Instruction, compile_model
from mlops_magics.fpga.latency import BRAINWAVE_S10, Engine, estimate_latency, instruction_cycles
from tests.fpga_graphs import graph, small_cnn


def _dense(k: int, n: int) -> object:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    return graph(nodes, ("x", ["N", k]), "y", {"w": np.ones((k, n), np.float32), "b": np.zeros(n, np.float32)})


def test_the_default_engine_is_brainwaves_stratix_10_instance() -> None:
    assert BRAINWAVE_S10.macs_per_cycle == 96_000 and BRAINWAVE_S10.clock_mhz == 250
    assert BRAINWAVE_S10.peak_tflops == pytest.approx(48.0)


def test_a_dense_layer_with_known_dimensions_takes_known_cycles() -> None:
    # K = 300, N = 200, native 128: 3 row tiles x 2 column tiles; 32 lanes -> 4 cycles per native vector
    program = compile_model(_dense(300, 200), "mxfp8", native_dim=128)
    engine = Engine(clock_mhz=200, native_dim=128, lanes=32, tile_engines=4, dispatch_cycles=1)
    report = estimate_latency(program, engine)
    # v_rd x3: 12; mv_mul x6 over 4 tile engines: 2 rounds x 4 = 8; vv_add of partial sums x(3 - 1) * 2: 16;
    # vv_add bias x2: 8; v_relu x2: 8; v_wr x2: 8 -> 60, plus 1 dispatch cycle for each of the 6 instructions -> 66
    assert report.cycles == 66 and report.layers[0].cycles == 66
    assert report.microseconds == pytest.approx(66 / 200)
    assert report.macs == 300 * 200
    assert report.utilization == pytest.approx(60_000 / (66 * 128 * 32 * 4))
    assert report.load_cycles == 6 * 128 * 4 + 1  # m_rd of 6 tiles, each 128 vectors of 4 cycles
    assert "emulated" in repr(report)


def test_instruction_cycles_follow_the_rules() -> None:
    engine = Engine(native_dim=400, lanes=40, tile_engines=6, dispatch_cycles=0)
    assert instruction_cycles(Instruction("mv_mul", (), 7), engine) == 2 * 10
    assert instruction_cycles(Instruction("v_sigm", (), 3), engine) == 30
    with pytest.raises(InvalidInputError, match="Unknown instruction 'v_exp'"):
        instruction_cycles(Instruction("v_exp"), engine)


def test_host_layers_take_no_engine_cycles_and_the_native_dimension_must_match() -> None:
    program = compile_model(small_cnn(), "mxfp8", native_dim=128)
    report = estimate_latency(program)  # Brainwave's engine with the program's native dimension
    host = [layer for layer in report.layers if layer.host]
    assert [layer.layer for layer in host] == ["softmax"] and host[0].cycles == 0
    assert report.cycles == sum(layer.cycles for layer in report.layers) > 0
    with pytest.raises(InvalidInputError, match="compile with native_dim=400"):
        estimate_latency(program, BRAINWAVE_S10)

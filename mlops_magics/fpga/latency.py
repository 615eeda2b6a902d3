"""The latency model of the emulated engine: cycles per layer from its instructions, tiles and the engine's size.

Every figure here is EMULATED: computed from a model of the hardware, never measured on an FPGA.

The engine (Brainwave's NPU as Fowers et al. describe it, "A Configurable Cloud-Scale DNN Processor for Real-Time
AI", ISCA 2018): ``tile_engines`` matrix-vector tile engines, each holding ``native_dim`` dot-product units that
consume ``lanes`` values per cycle, so one native tile (native_dim x native_dim) times a native vector takes
ceil(native_dim / lanes) cycles on one tile engine, and the engine does native_dim x lanes x tile_engines
multiply-accumulates per cycle. Defaults (:data:`BRAINWAVE_S10`): the paper's Stratix 10 280 instance at 250 MHz,
native dimension 400, 40 lanes, 6 tile engines: 96,000 MACs (the figure of the paper's abstract), 48 TFLOPS
peak.

Cycles, per instruction, ``r`` being its repeat count and ``v = ceil(native_dim / lanes)``:

- ``mv_mul``: ceil(r / tile_engines) x v (independent tiles spread over the tile engines);
- ``v_rd``, ``v_wr``, ``vv_add``, ``vv_sub``, ``vv_mul``, ``v_max``, ``v_relu``, ``v_sigm``, ``v_tanh``: r x v
  (one native vector per repeat through a ``lanes``-wide vector pipeline);
- plus ``dispatch_cycles`` per instruction (not per repeat): an assumption of this model, not a published figure;
- ``m_rd`` runs once when the program is loaded (weights stay on chip): native_dim x v cycles per tile, load
  cycles outside the request latency;
- host operations (softmax, the label's argmax) take no engine cycles; the report marks them ``host``.
- a recurrent layer (GRU, LSTM) issues one time step's instructions ``time_steps`` times, one step after the other
  (step t + 1 needs h_t, so tiles of different steps never share a round of the tile engines): its cycles are
  the sequence length the program was compiled for times the cycles of one step, dispatch included.

Batch 1, one request after another, no overlap between instructions: the model is meant to be explainable
(MACs, tiles and instruction counts you can check by hand), not cycle-accurate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlops_magics.errors import InvalidInputError
from mlops_magics.fpga.compiler import Instruction, Layer, Program

VECTOR_OPS = ("v_rd", "v_wr", "vv_add", "vv_sub", "vv_mul", "v_max", "v_relu", "v_sigm", "v_tanh")


@dataclass(frozen=True)
class Engine:
    """The emulated engine's size and clock (see the module's docstring for the model)."""

    clock_mhz: float = 250.0
    native_dim: int = 400
    lanes: int = 40
    tile_engines: int = 6
    dispatch_cycles: int = 1
    source: str = "Fowers et al., ISCA 2018 (Brainwave NPU on a Stratix 10 280 FPGA)"

    @property
    def macs_per_cycle(self) -> int:
        """Multiply-accumulate units: native_dim x lanes x tile_engines (96,000 for the defaults)."""
        return self.native_dim * self.lanes * self.tile_engines

    @property
    def peak_tflops(self) -> float:
        """Peak tera-operations per second, a MAC counting two."""
        return 2 * self.macs_per_cycle * self.clock_mhz * 1e6 / 1e12

    @property
    def vector_cycles(self) -> int:
        """Cycles for one native vector through a ``lanes``-wide pipeline."""
        return math.ceil(self.native_dim / self.lanes)


BRAINWAVE_S10 = Engine()


@dataclass(frozen=True)
class LayerLatency:
    """Emulated cycles and time of one layer at batch 1."""

    layer: str
    kind: str
    cycles: int
    microseconds: float
    macs: int
    instructions: int
    utilization: float
    host: bool


@dataclass(frozen=True)
class LatencyReport:
    """Emulated latency of a program on an engine, per layer and in total (batch 1). Every figure is emulated."""

    engine: Engine
    layers: tuple[LayerLatency, ...]
    load_cycles: int

    @property
    def cycles(self) -> int:
        """Engine cycles per request (emulated)."""
        return sum(layer.cycles for layer in self.layers)

    @property
    def microseconds(self) -> float:
        """Emulated engine time per request, microseconds."""
        return self.cycles / self.engine.clock_mhz

    @property
    def macs(self) -> int:
        """Multiply-accumulates per request."""
        return sum(layer.macs for layer in self.layers)

    @property
    def utilization(self) -> float:
        """MACs done / MACs the engine could have done in those cycles (emulated)."""
        return self.macs / (self.cycles * self.engine.macs_per_cycle) if self.cycles else 0.0

    def __repr__(self) -> str:
        e = self.engine
        lines = [f"Emulated latency (batch 1) on {e.macs_per_cycle:,} MACs at {e.clock_mhz:g} MHz (native dimension "
                 f"{e.native_dim}, {e.lanes} lanes, {e.tile_engines} tile engines): {self.cycles:,} cycles = "
                 f"{self.microseconds:.3f} us emulated, utilization {self.utilization:.2%} emulated"]
        for layer in self.layers:
            where = "host, not in engine cycles" if layer.host else f"{layer.microseconds:.3f} us emulated"
            lines.append(f"  {layer.layer:<20} {layer.kind:<9} {layer.cycles:>8,} cycles  {where}")
        return "\n".join(lines)


def instruction_cycles(instruction: Instruction, engine: Engine) -> int:
    """Emulated cycles of one instruction with its repeats (``m_rd`` included: the load-time cost)."""
    v = engine.vector_cycles
    if instruction.op == "mv_mul":
        work = math.ceil(instruction.repeat / engine.tile_engines) * v
    elif instruction.op in VECTOR_OPS:
        work = instruction.repeat * v
    elif instruction.op == "m_rd":
        work = instruction.repeat * engine.native_dim * v  # a tile is native_dim vectors
    else:
        raise InvalidInputError(f"Unknown instruction {instruction.op!r}; the engine has "
                                f"{', '.join(('m_rd', 'mv_mul', *VECTOR_OPS))}.")
    return work + engine.dispatch_cycles


def layer_cycles(layer: Layer, engine: Engine) -> int:
    """Emulated engine cycles of one layer per request (0 for host operations and reshapes; an RNN's time steps
    times the cycles of one step)."""
    return layer.time_steps * sum(instruction_cycles(i, engine) for i in layer.instructions)


def estimate_latency(program: Program, engine: Engine | None = None) -> LatencyReport:
    """The emulated latency of ``program`` at batch 1, per layer and in total.

    Args:
        program: a compiled program; its native dimension is the engine's.
        engine: clock, lanes and tile engines; default :data:`BRAINWAVE_S10` with the program's native dimension.

    Returns:
        A :class:`LatencyReport` (every figure emulated).

    Raises:
        InvalidInputError: the engine's native dimension differs from the program's (compile for the engine).
    """
    if engine is None:
        engine = Engine(native_dim=program.native_dim)
    if engine.native_dim != program.native_dim:
        raise InvalidInputError(f"The program was compiled for native dimension {program.native_dim}, the engine has "
                                f"{engine.native_dim}; compile with native_dim={engine.native_dim}.")
    rows = []
    for layer in program.layers:
        cycles = layer_cycles(layer, engine)
        utilization = layer.macs / (cycles * engine.macs_per_cycle) if cycles else 0.0
        rows.append(LayerLatency(layer.name, layer.kind, cycles, cycles / engine.clock_mhz, layer.macs,
                                 layer.instruction_count, utilization, layer.kind == "host"))
    load = sum(instruction_cycles(i, engine) for layer in program.layers for i in layer.load_instructions)
    return LatencyReport(engine, tuple(rows), load)

"""From an ONNX feed-forward network to a program for a Brainwave-style narrow-precision matrix-vector engine.

The instruction set follows Project Brainwave's single-threaded SIMD ISA (Fowers et al., "A Configurable
Cloud-Scale DNN Processor for Real-Time AI", ISCA 2018; its LSTM example reads ``v_rd; mv_mul; vv_add; v_sigm;
vv_mul; v_tanh; v_wr``): every instruction works on native vectors (``native_dim`` values) or native matrix
tiles (``native_dim`` x ``native_dim``), and carries a repeat count rather than being unrolled.

- ``m_rd``: load a weight tile into the matrix register file, once, when the program is loaded (Brainwave pins
  a model's weights on chip), so it is listed apart from the per-request instructions.
- ``v_rd`` / ``v_wr``: read / write a native vector from / to the vector memory (or the network queue).
- ``mv_mul``: one weight tile times one native vector, products accumulated in float32.
- ``vv_add``, ``vv_sub``, ``vv_mul``, ``v_max``: point-wise add / subtract / multiply / maximum of two vectors
  (partial sums of the row tiles, bias, residuals; pooling windows; a recurrent cell's gating; ``vv_sub`` is
  Brainwave's ``vv_a_sub_b``); ``v_relu``, ``v_sigm``, ``v_tanh``: point-wise activations.

Supported operators: Gemm, MatMul (+ Add of a bias), Conv (2D, group 1, lowered to matrix-vector work over
im2col patches: one ``mv_mul`` chain per output position), MaxPool / AveragePool (no padding), Relu, Sigmoid,
Tanh, Add / Mul (with a constant or another activation), Flatten and Reshape that only flatten, Identity,
Dropout, and Cast to float. Softmax runs on the host, in float32, outside the engine (the ISA has no exponent
or reduction), as do a classifier's label outputs: ArgMax and what follows it (ArrayFeatureExtractor over the
classes, Reshape, Cast, ZipMap) become ``label = classes[argmax(probabilities)]`` on the host. Any other
operator is refused, naming the operator and the node.

Recurrent layers: GRU and LSTM (one layer per node, forward direction, the default activations, layout 0, no clip,
no input_forget, no peepholes, no sequence_lens; GRU with either ``linear_before_reset``). The network's input is
batch first, ``(batch, seq_length, input_size)``, with a fixed sequence length: the program is compiled for it
(:attr:`Layer.time_steps`), and a Transpose(perm=[1, 0, 2]) gives the RNN its ONNX ``[seq_length, batch,
input_size]``, as torch exports ``batch_first=True``. A transpose that only moves the batch axis, a Squeeze of a
size-1 axis and a Gather of one index (a time step, ``out[:, -1]``; ``h_n[-1]``) cost nothing on the engine; the
shape arithmetic torch emits to build a zero initial state (Shape, Gather, Unsqueeze, Concat, ConstantOfShape) is
evaluated at compile time. Each time step is one chain of instructions (:meth:`_Compiler.rnn` lists them): the
input and the recurrent weights are matrix tiles (``mv_mul`` chains on x_t and on the hidden state, weights in the
block format), the gates are point-wise ``v_sigm`` / ``v_tanh`` / ``vv_mul`` / ``vv_add`` / ``vv_sub`` on vectors
in the vector format, and the hidden state (and an LSTM's cell state) stays in a vector register from one step to
the next. The instructions of a step are issued ``time_steps`` times, one step after the other (step t + 1 needs
h_t): the latency model counts a step's cycles times the sequence length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlops_magics.errors import ConversionError, InvalidInputError
from mlops_magics.fpga.formats import NumberFormat, fake_quantize, get_format

OPCODES = ("m_rd", "v_rd", "v_wr", "mv_mul", "vv_add", "vv_sub", "vv_mul", "v_max", "v_relu", "v_sigm", "v_tanh")
ACTIVATIONS = {"Relu": "v_relu", "Sigmoid": "v_sigm", "Tanh": "v_tanh"}
SUPPORTED = ("Gemm", "MatMul", "Add", "Mul", "Conv", "MaxPool", "AveragePool", "Relu", "Sigmoid", "Tanh",
             "Softmax", "Flatten", "Reshape", "Identity", "Dropout", "Cast", "GRU", "LSTM", "Transpose", "Squeeze",
             "Gather")
#: Operators evaluated at compile time on shapes (torch's zero initial state of an RNN: Shape -> ... ->
#: ConstantOfShape).
SHAPE_OPS = ("Shape", "Gather", "Unsqueeze", "Concat", "Cast", "ConstantOfShape")
RNN_GATES = {"GRU": 3, "LSTM": 4}
_RNN_ACTIVATIONS = {"GRU": ["sigmoid", "tanh"], "LSTM": ["sigmoid", "tanh", "tanh"]}
_LABEL_TAIL = {"ArgMax", "ArrayFeatureExtractor", "Reshape", "Cast", "ZipMap", "Identity"}
_FLOAT = 1  # onnx.TensorProto.FLOAT


@dataclass(frozen=True)
class Instruction:
    """One instruction of the engine, issued ``repeat`` times (tiles x output positions)."""

    op: str
    operands: tuple[str, ...] = ()
    repeat: int = 1

    def __str__(self) -> str:
        text = f"{self.op}({', '.join(self.operands)})"
        return f"{text} x{self.repeat}" if self.repeat != 1 else text


@dataclass(frozen=True)
class Source:
    """Where a layer's weights or bias come from in the ONNX graph, so a tuned array can be written back.

    ``name`` is the constant (an initializer, or a Constant node's output) of shape ``shape``; the layer's array is
    ``layout(constant) * scale``: ``matrix`` (K x N as stored: MatMul, Gemm), ``transposed`` (N x K: Gemm with
    transB=1), ``kernel`` (M x C x kh x kw, seen as C*kh*kw x M: Conv) or ``vector`` (a bias, broadcast to N).
    """

    name: str
    layout: str
    shape: tuple[int, ...]
    scale: float = 1.0

    def restore(self, array: np.ndarray) -> np.ndarray:
        """The constant (float32, of :attr:`shape`) that compiles to the layer's ``array``.

        Raises:
            InvalidInputError: a bias that was broadcast from fewer values than ``array`` has (it has no inverse).
        """
        values = np.asarray(array, np.float32)
        if self.scale != 1.0:
            values = values / np.float32(self.scale)
        if self.layout in ("transposed", "kernel"):
            values = values.T
        if values.size != math.prod(self.shape):
            raise InvalidInputError(f"Constant {self.name!r} of shape {self.shape} was broadcast to {values.shape}; "
                                    f"it cannot take back {values.size} separate values.")
        return np.ascontiguousarray(values.reshape(self.shape), dtype=np.float32)


@dataclass(frozen=True)
class Layer:
    """One layer of a program: the ONNX nodes it covers, its instructions and its work.

    ``kind`` is ``dense`` (matrix-vector), ``conv`` (matrix-vector per output position), ``pointwise``,
    ``pool``, ``rnn`` (a GRU or LSTM: its ``instructions`` are one time step's, issued ``time_steps`` times),
    ``reshape`` or ``select`` (one index of an axis: no work) or ``host`` (softmax, run on the host in float32).
    ``weights`` are already
    rounded to the program's format along the reduction axis (rows of the K x N matrix); ``bias`` and other
    vectors are rounded to the vector format. Shapes are per request (no batch axis). ``attrs["weight_source"]``
    and ``attrs["bias_source"]`` (a :class:`Source`) name the ONNX constants the weights and the bias come from.
    An ``rnn`` layer's ``weights`` are the input weights (input_size x gates*hidden) above the recurrent ones
    (hidden x gates*hidden), each rounded along its own reduction axis, gate columns in ONNX's order (GRU z, r, h;
    LSTM i, o, f, c).
    """

    name: str
    kind: str
    ops: tuple[str, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    instructions: tuple[Instruction, ...]
    load_instructions: tuple[Instruction, ...] = ()
    macs: int = 0
    tiles: int = 0
    weight_bits: int = 0
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    output: str = ""
    time_steps: int = 1

    @property
    def instruction_count(self) -> int:
        """Instructions issued per request (repeats and time steps counted)."""
        return self.time_steps * sum(i.repeat for i in self.instructions)


@dataclass(frozen=True)
class Program:
    """A compiled network: layers in execution order, the number format, the engine's native dimension.

    ``outputs`` maps each ONNX output name to what gives it: ``("tensor", name)`` for a tensor the layers
    compute (probabilities, scores), ``("label", name)`` for a label taken on the host as
    ``classes[argmax(tensor)]`` (``classes`` is None when the graph's label is the index itself).
    ``output_axes`` gives, for an output whose batch axis is not the first (an RNN's Y is ``[seq_length, 1,
    batch, hidden]``), where ONNX puts it; the emulator computes every tensor batch first and moves that axis.
    """

    layers: tuple[Layer, ...]
    format: NumberFormat
    vector_format: NumberFormat
    native_dim: int
    input_name: str
    input_shape: tuple[int, ...]
    outputs: dict[str, tuple[str, str]]
    classes: np.ndarray | None = None
    output_axes: dict[str, int] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        """Multiply-accumulates per request."""
        return sum(layer.macs for layer in self.layers)

    @property
    def tiles(self) -> int:
        """Weight tiles of native_dim x native_dim."""
        return sum(layer.tiles for layer in self.layers)

    @property
    def weight_bits(self) -> int:
        """Weight memory in the program's format (biases in the vector format included)."""
        return sum(layer.weight_bits for layer in self.layers)

    @property
    def instruction_count(self) -> int:
        """Instructions issued per request."""
        return sum(layer.instruction_count for layer in self.layers)

    def table(self) -> list[dict[str, Any]]:
        """One row per layer: name, kind, shapes, instructions, tiles, MACs, weight bytes."""
        return [{"layer": layer.name, "kind": layer.kind, "ops": "+".join(layer.ops),
                 "input": layer.input_shape, "output": layer.output_shape,
                 "instructions": layer.instruction_count, "tiles": layer.tiles, "macs": layer.macs,
                 "weight_bytes": layer.weight_bits / 8,
                 "program": (f"{layer.time_steps} steps of: " if layer.time_steps != 1 else "")
                 + "; ".join(str(i) for i in layer.instructions)} for layer in self.layers]

    def __repr__(self) -> str:
        lines = [f"Program: {len(self.layers)} layers, format {self.format.name} (vectors {self.vector_format.name}),"
                 f" native dimension {self.native_dim}: {self.macs:,} MACs, {self.tiles} tiles,"
                 f" {self.instruction_count:,} instructions per request, weights {self.weight_bits / 8:,.0f} bytes"]
        for row in self.table():
            lines.append(f"  {row['layer']:<20} {row['kind']:<9} {row['input']!s:>14} -> {row['output']!s:<14}"
                         f" {row['macs']:>9,} MACs {row['tiles']:>3} tiles  {row['program']}")
        return "\n".join(lines)


def compile_model(model: Any, format: str | NumberFormat = "fp32", *, native_dim: int = 400,
                  vector_format: str | NumberFormat | None = None) -> Program:
    """Compile an ONNX feed-forward network (an ``onnx.ModelProto``) to a :class:`Program` for the engine.

    Args:
        model: the ONNX model (one float input, batch axis first).
        format: the number format of weights and of the activations entering each ``mv_mul``.
        native_dim: the engine's native vector length (tiles are native_dim x native_dim); 400 is Brainwave's
            (:data:`mlops_magics.fpga.latency.BRAINWAVE_S10`).
        vector_format: the precision of point-wise operations; default ``fp32`` for an fp32 program and ``bf16``
            for a narrow one (the MX practice: element-wise work in bfloat16).

    Returns:
        The program, its weights rounded once, at compile time.

    Raises:
        ConversionError: an operator (or an attribute of one) the engine does not support; names the operator and
            the node.
        InvalidInputError: a bad format or native dimension.
    """
    fmt = get_format(format)
    vfmt = get_format(vector_format or ("fp32" if fmt.is_exact else "bf16"))
    if native_dim < 1:
        raise InvalidInputError(f"The native dimension must be >= 1, got {native_dim}.")
    return _Compiler(model, fmt, vfmt, native_dim).run()


_RNN_LAYOUT_HINT = ("its X {x!r} is the network's input, but X is [seq_length, batch, input_size] (layout 0) and the "
                    "engine takes requests batch first: make the input (batch, seq_length, input_size) and put a "
                    "Transpose(perm=[1, 0, 2]) before the RNN, as torch exports batch_first=True")


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _node_label(node: Any, index: int) -> str:
    return node.name or f"#{index} ({node.op_type})"


class _Compiler:
    def __init__(self, model: Any, fmt: NumberFormat, vfmt: NumberFormat, native_dim: int) -> None:
        from onnx import numpy_helper

        self.graph = model.graph
        self.fmt, self.vfmt, self.dim = fmt, vfmt, native_dim
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.shapes: dict[str, tuple[int, ...]] = {}  # activation name -> per-request shape
        self.alias: dict[str, str] = {}
        self.layers: list[Layer] = []
        self.producer: dict[str, int] = {}  # activation name -> index of the layer writing it
        self.consumers: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
        for node in self.graph.node:
            if node.op_type == "Constant":
                self.consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
        self.labels: dict[str, str] = {}  # tensor name in the label tail -> the probabilities it derives from
        self.classes: np.ndarray | None = None
        # where the batch axis of an activation sits in its ONNX tensor (0 unless an RNN or a Transpose moved it)
        self.batch_axis: dict[str, int] = {}
        # shape arithmetic evaluated at compile time: 0-d or 1-d object arrays of ints and "N" (the batch)
        self.symbolic: dict[str, np.ndarray] = {}
        # ConstantOfShape over a shape holding the batch: per-request values and the ONNX batch axis
        self.fills: dict[str, tuple[np.ndarray, int]] = {}

    # -- helpers -------------------------------------------------------------------------------------------------
    def name(self, tensor: str) -> str:
        while tensor in self.alias:
            tensor = self.alias[tensor]
        return tensor

    def refuse(self, node: Any, index: int, why: str) -> ConversionError:
        return ConversionError(f"Cannot compile node {_node_label(node, index)!r} (operator {node.op_type}) for the "
                               f"FPGA engine: {why}. Supported operators: {', '.join(SUPPORTED)}.")

    def tiles(self, k: int, n: int) -> tuple[int, int]:
        return math.ceil(k / self.dim), math.ceil(n / self.dim)

    def add(self, layer: Layer) -> None:
        self.producer[layer.output] = len(self.layers)
        self.shapes[layer.output] = layer.output_shape
        self.layers.append(layer)

    def weight(self, matrix: np.ndarray) -> tuple[np.ndarray, int]:
        w = np.asarray(matrix, np.float32)
        return fake_quantize(w, self.fmt, axis=0), self.fmt.memory_bits(w.shape, axis=0)

    def vector(self, values: np.ndarray) -> np.ndarray:
        return fake_quantize(np.asarray(values, np.float32), self.vfmt)

    # -- the pass ------------------------------------------------------------------------------------------------
    def run(self) -> Program:
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise ConversionError(f"The FPGA engine compiles a network with one input; this graph has {len(inputs)}"
                                  f" ({', '.join(i.name for i in inputs)}).")
        source = inputs[0]
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in source.type.tensor_type.shape.dim]
        rnn_inputs = [n for n in self.graph.node if n.op_type in RNN_GATES and n.input and n.input[0] == source.name]
        if rnn_inputs:
            node = rnn_inputs[0]
            raise self.refuse(node, list(self.graph.node).index(node), _RNN_LAYOUT_HINT.format(x=source.name))
        if len(dims) < 2 or any(d <= 0 for d in dims[1:]):
            hint = ("; a sequence model is compiled for one sequence length: export it with a fixed one"
                    if any(n.op_type in RNN_GATES for n in self.graph.node) else "")
            raise ConversionError(f"Input {source.name!r} must have a batch axis and fixed other dimensions; "
                                  f"its shape is {dims}. Export the model with a known feature count{hint}.")
        input_shape = tuple(dims[1:])
        self.shapes[source.name] = input_shape
        for index, node in enumerate(self.graph.node):
            self.node(node, index)
        outputs: dict[str, tuple[str, str]] = {}
        axes: dict[str, int] = {}
        for out in self.graph.output:
            name = self.name(out.name)
            if name in self.labels:
                outputs[out.name] = ("label", self.labels[name])
            elif name in self.shapes:
                outputs[out.name] = ("tensor", name)
                if self.axis_of(name):
                    axes[out.name] = self.axis_of(name)
            else:
                raise ConversionError(f"Output {out.name!r} is not computed by operators the FPGA engine supports.")
        return Program(tuple(self.layers), self.fmt, self.vfmt, self.dim, source.name, input_shape, outputs,
                       self.classes, axes)

    def axis_of(self, tensor: str) -> int:
        return self.batch_axis.get(tensor, 0)

    def node(self, node: Any, index: int) -> None:
        op = node.op_type
        ins = [self.name(i) for i in node.input]
        if any(i in self.labels for i in ins if i):
            return self.label_tail(node, index, ins)
        if op == "Constant":
            return None
        if op == "Shape" or (op in SHAPE_OPS and any(i in self.symbolic for i in ins if i)):
            return self.shape_op(node, index, ins)
        if op in ("Identity", "Dropout"):
            self.alias[node.output[0]] = ins[0]
            return None
        if op == "Cast":
            if _attrs(node).get("to") != _FLOAT:
                raise self.refuse(node, index, "only a cast to float is supported inside the network")
            self.alias[node.output[0]] = ins[0]
            return None
        if op == "ZipMap":  # probabilities as a list of dicts: here, the probabilities themselves
            self.alias[node.output[0]] = ins[0]
            return None
        if op in RNN_GATES:
            return self.rnn(node, index, ins)
        if op in ("Transpose", "Squeeze", "Gather"):
            return self.relayout(node, index, ins)
        moved = [i for i in ins if i and self.axis_of(i)]
        if moved:
            raise self.refuse(node, index, f"its input {moved[0]!r} has its batch axis at {self.axis_of(moved[0])},"
                                           f" not first (an RNN's output): Squeeze, Transpose or Gather it to "
                                           f"(batch, ...) first, e.g. Y_h[-1] or Y[:, -1]")
        if op in ("Add", "Mul"):
            return self.binary(node, index, ins)
        x = ins[0]
        if x not in self.shapes:
            raise self.refuse(node, index, f"its input {x!r} is neither the network's input nor computed before")
        if op == "ArgMax":
            return self.label_tail(node, index, ins)
        if op in ("MatMul", "Gemm"):
            return self.dense(node, index, ins)
        if op == "Conv":
            return self.conv(node, index, ins)
        if op in ACTIVATIONS:
            return self.activation(node, index, x)
        if op in ("MaxPool", "AveragePool"):
            return self.pool(node, index, x)
        if op in ("Flatten", "Reshape"):
            return self.flatten(node, index, ins)
        if op == "Softmax":
            return self.softmax(node, index, x)
        raise self.refuse(node, index, "this operator is not supported")

    def dense(self, node: Any, index: int, ins: list[str]) -> None:
        x, shape = ins[0], self.shapes[ins[0]]
        if len(shape) != 1:
            raise self.refuse(node, index, f"it needs a flat input; {x!r} has shape {shape} (add a Flatten)")
        if len(ins) < 2 or ins[1] not in self.consts:
            raise self.refuse(node, index, "the weight matrix must be a constant (an initializer)")
        w = np.asarray(self.consts[ins[1]], np.float32)
        bias = None
        sources = {"weight_source": Source(ins[1], "matrix", w.shape)}
        if node.op_type == "Gemm":
            a = _attrs(node)
            if a.get("transA", 0):
                raise self.refuse(node, index, "transA=1 is not supported")
            alpha = float(a.get("alpha", 1.0))
            sources["weight_source"] = Source(ins[1], "transposed" if a.get("transB", 0) else "matrix", w.shape, alpha)
            if a.get("transB", 0):
                w = w.T
            w = w * np.float32(alpha)
            if len(ins) > 2 and ins[2]:
                if ins[2] not in self.consts:
                    raise self.refuse(node, index, "the bias C must be a constant")
                beta = float(a.get("beta", 1.0))
                bias = np.broadcast_to(self.consts[ins[2]] * np.float32(beta), (w.shape[1],))
                sources["bias_source"] = Source(ins[2], "vector", tuple(np.shape(self.consts[ins[2]])), beta)
        if w.ndim != 2 or w.shape[0] != shape[0]:
            raise self.refuse(node, index, f"weights of shape {w.shape} do not fit an input of {shape[0]} values")
        self.add(self.matrix_layer(node, index, "dense", x, shape, (w.shape[1],), w, bias, positions=1,
                                   attrs=sources))

    def matrix_layer(self, node: Any, index: int, kind: str, x: str, in_shape: tuple[int, ...],
                     out_shape: tuple[int, ...], w: np.ndarray, bias: np.ndarray | None, *, positions: int,
                     attrs: dict[str, Any] | None = None) -> Layer:
        k, n = w.shape
        rows, cols = self.tiles(k, n)
        wq, bits = self.weight(w)
        name = _node_label(node, index)
        program = [Instruction("v_rd", (x,), rows * positions), Instruction("mv_mul", (name + ".W",),
                                                                              rows * cols * positions)]
        if rows > 1:
            program.append(Instruction("vv_add", ("partial sums",), (rows - 1) * cols * positions))
        bq = None
        if bias is not None:
            bq = self.vector(bias)
            bits += self.vfmt.memory_bits(bq.shape)
            program.append(Instruction("vv_add", (name + ".b",), cols * positions))
        program.append(Instruction("v_wr", (node.output[0],), cols * positions))
        return Layer(name, kind, (node.op_type,), in_shape, out_shape, tuple(program),
                     (Instruction("m_rd", (name + ".W",), rows * cols),), k * n * positions, rows * cols, bits, wq, bq,
                     attrs or {}, (x,), node.output[0])

    def fusable(self, x: str) -> Layer | None:
        """The layer writing ``x`` if a point-wise op may join it (x is read once, by that op, and not an output)."""
        index = self.producer.get(x)
        outputs = {o.name for o in self.graph.output}
        if index is None or self.consumers.get(x, 0) != 1 or x in outputs or index != len(self.layers) - 1:
            return None
        layer = self.layers[index]
        return layer if layer.kind in ("dense", "conv", "pointwise") else None

    def extend(self, layer: Layer, node: Any, extra: list[Instruction], **changes: Any) -> None:
        body = list(layer.instructions[:-1])  # the v_wr moves to the end
        last = layer.instructions[-1]
        self.layers.pop()
        self.producer.pop(layer.output, None)
        attrs = {**layer.attrs, **changes.pop("attrs", {})}
        fused = Layer(layer.name, layer.kind, (*layer.ops, node.op_type), layer.input_shape, layer.output_shape,
                      tuple(body + extra + [Instruction("v_wr", (node.output[0],), last.repeat)]),
                      layer.load_instructions, layer.macs, layer.tiles, layer.weight_bits + changes.pop("bits", 0),
                      layer.weights, changes.pop("bias", layer.bias), attrs, layer.inputs, node.output[0])
        self.add(fused)

    def vectors(self, shape: tuple[int, ...]) -> int:
        """Native vectors holding one activation of ``shape`` (channels of a feature map are the vector axis)."""
        if len(shape) == 3:
            return math.ceil(shape[0] / self.dim) * shape[1] * shape[2]
        return math.ceil(math.prod(shape) / self.dim)

    def activation(self, node: Any, index: int, x: str) -> None:
        fn = node.op_type.lower()
        layer = self.fusable(x)
        count = self.vectors(self.shapes[x])
        if layer is not None and "activation" not in layer.attrs:
            return self.extend(layer, node, [Instruction(ACTIVATIONS[node.op_type], (), count)],
                               attrs={"activation": fn})
        shape = self.shapes[x]
        self.add(Layer(_node_label(node, index), "pointwise", (node.op_type,), shape, shape,
                       (Instruction("v_rd", (x,), count), Instruction(ACTIVATIONS[node.op_type], (), count),
                        Instruction("v_wr", (node.output[0],), count)), attrs={"steps": [(fn, None)]}, inputs=(x,),
                       output=node.output[0]))

    def binary(self, node: Any, index: int, ins: list[str]) -> None:
        op = "add" if node.op_type == "Add" else "mul"
        opcode = "vv_add" if op == "add" else "vv_mul"
        x, other = ins[0], ins[1]
        if x in self.consts and other in self.shapes:
            x, other = other, x
        if x not in self.shapes:
            raise self.refuse(node, index, f"its input {x!r} is neither the network's input nor computed before")
        shape = self.shapes[x]
        count = self.vectors(shape)
        if other in self.consts:
            raw = np.asarray(self.consts[other], np.float32)
            try:  # the constant broadcasts against (batch, *shape) without growing the batch axis
                const = np.array(np.broadcast_to(raw, (1, *shape))[0])
            except ValueError:
                raise self.refuse(node, index, f"a constant of shape {raw.shape} does not broadcast to one "
                                               f"request's {shape}") from None
            layer = self.fusable(x)
            if (op == "add" and layer is not None and layer.kind == "dense" and layer.bias is None
                    and "activation" not in layer.attrs):
                bias = self.vector(const)
                return self.extend(layer, node, [Instruction("vv_add", (_node_label(node, index) + ".b",), count)],
                                   bias=bias, bits=self.vfmt.memory_bits(bias.shape),
                                   attrs={"bias_source": Source(other, "vector", raw.shape)})
            steps = [(op, self.vector(const))]
            self.add(Layer(_node_label(node, index), "pointwise", (node.op_type,), shape, shape,
                           (Instruction("v_rd", (x,), count), Instruction(opcode, (other,), count),
                            Instruction("v_wr", (node.output[0],), count)), weight_bits=self.vfmt.memory_bits(
                                raw.shape or (1,)), attrs={"steps": steps}, inputs=(x,), output=node.output[0]))
            return None
        if other not in self.shapes:
            raise self.refuse(node, index, f"its input {other!r} is neither a constant nor computed before")
        if self.shapes[other] != shape:
            raise self.refuse(node, index, f"inputs of shapes {shape} and {self.shapes[other]} (no broadcasting)")
        self.add(Layer(_node_label(node, index), "pointwise", (node.op_type,), shape, shape,
                       (Instruction("v_rd", (x,), count), Instruction(opcode, (other,), count),
                        Instruction("v_wr", (node.output[0],), count)), attrs={"steps": [(op + "_tensor", other)]},
                       inputs=(x, other), output=node.output[0]))
        return None

    def conv(self, node: Any, index: int, ins: list[str]) -> None:
        x, shape = ins[0], self.shapes[ins[0]]
        a = _attrs(node)
        if len(shape) != 3:
            raise self.refuse(node, index, f"only 2D convolutions (input C x H x W) are supported, not {shape}")
        if ins[1] not in self.consts:
            raise self.refuse(node, index, "the kernel must be a constant (an initializer)")
        kernel = np.asarray(self.consts[ins[1]], np.float32)
        m, c, kh, kw = kernel.shape
        if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])):
            raise self.refuse(node, index, "groups and dilations other than 1 are not supported")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise self.refuse(node, index, "auto_pad is not supported; give explicit pads")
        if c != shape[0]:
            raise self.refuse(node, index, f"a kernel for {c} channels on an input of {shape[0]}")
        sh, sw = a.get("strides", [1, 1])
        top, left, bottom, right = a.get("pads", [0, 0, 0, 0])
        ho = (shape[1] + top + bottom - kh) // sh + 1
        wo = (shape[2] + left + right - kw) // sw + 1
        w = kernel.reshape(m, c * kh * kw).T  # K = C*kh*kw rows (the reduction axis), M columns
        bias = self.consts[ins[2]] if len(ins) > 2 and ins[2] else None
        if len(ins) > 2 and ins[2] and ins[2] not in self.consts:
            raise self.refuse(node, index, "the bias must be a constant")
        attrs: dict[str, Any] = {"kernel": (kh, kw), "strides": (sh, sw), "pads": (top, left, bottom, right),
                                 "weight_source": Source(ins[1], "kernel", kernel.shape)}
        if bias is not None:
            attrs["bias_source"] = Source(ins[2], "vector", tuple(np.shape(bias)))
        self.add(self.matrix_layer(node, index, "conv", x, shape, (m, ho, wo), w, bias, positions=ho * wo,
                                   attrs=attrs))

    def pool(self, node: Any, index: int, x: str) -> None:
        a = _attrs(node)
        shape = self.shapes[x]
        if len(shape) != 3:
            raise self.refuse(node, index, f"pooling needs a C x H x W input, not {shape}")
        kh, kw = a["kernel_shape"]
        sh, sw = a.get("strides", [1, 1])
        if any(a.get("pads", [0, 0, 0, 0])) or a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])):
            raise self.refuse(node, index, "padding, ceil_mode and dilations are not supported in pooling")
        ho, wo = (shape[1] - kh) // sh + 1, (shape[2] - kw) // sw + 1
        out = (shape[0], ho, wo)
        per = math.ceil(shape[0] / self.dim) * ho * wo
        window = kh * kw
        kind = "max" if node.op_type == "MaxPool" else "avg"
        program = [Instruction("v_rd", (x,), per * window)]
        program.append(Instruction("v_max" if kind == "max" else "vv_add", (), per * (window - 1)))
        if kind == "avg":
            program.append(Instruction("vv_mul", (f"1/{window}",), per))
        program.append(Instruction("v_wr", (node.output[0],), per))
        self.add(Layer(_node_label(node, index), "pool", (node.op_type,), shape, out, tuple(program),
                       attrs={"pool": kind, "kernel": (kh, kw), "strides": (sh, sw)}, inputs=(x,),
                       output=node.output[0]))

    def flatten(self, node: Any, index: int, ins: list[str]) -> None:
        x, shape = ins[0], self.shapes[ins[0]]
        size = math.prod(shape)
        if node.op_type == "Flatten":
            if _attrs(node).get("axis", 1) != 1:
                raise self.refuse(node, index, "only Flatten with axis=1 (keep the batch axis) is supported")
        else:
            target = [int(v) for v in np.asarray(self.consts.get(ins[1], np.array([]))).reshape(-1)]
            if len(target) != 2 or target[1] not in (size, -1) or (target[0] not in (-1, 0, 1) and target[1] == -1):
                raise self.refuse(node, index, f"only a Reshape to (batch, {size}) is supported, not {target}")
        self.add(Layer(_node_label(node, index), "reshape", (node.op_type,), shape, (size,), (), inputs=(x,),
                       output=node.output[0]))

    def softmax(self, node: Any, index: int, x: str) -> None:
        shape = self.shapes[x]
        axis = _attrs(node).get("axis", -1)
        if len(shape) != 1 or axis not in (-1, 1):
            raise self.refuse(node, index, "only a softmax over the features of a flat vector is supported")
        self.add(Layer(_node_label(node, index), "host", ("Softmax",), shape, shape, (), attrs={"host": "softmax"},
                       inputs=(x,), output=node.output[0]))

    # -- recurrent layers ----------------------------------------------------------------------------------------
    def shape_op(self, node: Any, index: int, ins: list[str]) -> None:
        """Shape arithmetic at compile time, the batch a symbol "N" (torch's zero initial state of an RNN)."""
        from onnx import numpy_helper

        op, a, out = node.op_type, _attrs(node), node.output[0]

        def value(name: str) -> np.ndarray:
            if name in self.symbolic:
                return self.symbolic[name]
            if name in self.consts:
                return np.asarray(self.consts[name]).astype(object)
            raise self.refuse(node, index, f"its input {name!r} is neither a constant nor a shape known at compile "
                                           f"time (shape arithmetic only builds an RNN's initial state here)")

        def constant(name: str, what: str) -> np.ndarray:
            if not name or name not in self.consts:
                raise self.refuse(node, index, f"its {what} must be a constant")
            return np.asarray(self.consts[name])

        if op == "Shape":
            x = ins[0]
            if x not in self.shapes:
                raise self.refuse(node, index, f"its input {x!r} is neither the network's input nor computed before")
            dims: list[Any] = list(self.shapes[x])
            dims.insert(self.axis_of(x), "N")
            self.symbolic[out] = np.array(dims[a.get("start", 0):a.get("end", len(dims))], dtype=object)
        elif op == "Gather":
            if a.get("axis", 0) != 0:
                raise self.refuse(node, index, "shape arithmetic gathers along axis 0 only")
            self.symbolic[out] = np.array(np.take(value(ins[0]), constant(ins[1], "indices").astype(np.int64)),
                                          dtype=object)
        elif op == "Unsqueeze":
            v = value(ins[0])
            axes = a["axes"] if "axes" in a else constant(ins[1] if len(ins) > 1 else "", "axes").reshape(-1)
            for axis in sorted(int(i) for i in axes):
                v = np.expand_dims(v, axis)
            self.symbolic[out] = v
        elif op == "Concat":
            self.symbolic[out] = np.concatenate([value(i).reshape(-1) for i in ins if i])
        elif op == "Cast":
            self.symbolic[out] = value(ins[0])
        else:  # ConstantOfShape
            dims = list(value(ins[0]).reshape(-1))
            fill = numpy_helper.to_array(a["value"]).reshape(-1) if "value" in a else np.zeros(1, np.float32)
            if dims.count("N") > 1 or any(isinstance(d, str) and d != "N" for d in dims):
                raise self.refuse(node, index, f"a shape {dims} with the batch more than once is not supported")
            if "N" not in dims:
                self.consts[out] = np.full([int(d) for d in dims], fill[0], dtype=fill.dtype)
            else:
                rest = [int(d) for d in dims if d != "N"]
                self.fills[out] = (np.full(rest, fill[0], dtype=np.float32), dims.index("N"))
        return None

    def relayout(self, node: Any, index: int, ins: list[str]) -> None:
        """Transpose (moving the batch axis only), Squeeze of size-1 axes, Gather of one index: no engine work."""
        op, a, x = node.op_type, _attrs(node), ins[0]
        if x not in self.shapes:
            raise self.refuse(node, index, f"its input {x!r} is neither the network's input nor computed before")
        shape, batch = self.shapes[x], self.axis_of(x)
        rank = len(shape) + 1
        kind, attrs = "reshape", {}
        if op == "Transpose":
            perm = [int(p) for p in a.get("perm", reversed(range(rank)))]
            rest = [p for p in perm if p != batch]
            if sorted(perm) != list(range(rank)) or rest != sorted(rest):
                raise self.refuse(node, index, f"perm={perm} reorders the axes of a request (batch axis {batch} of "
                                               f"{rank}); only a Transpose that moves the batch axis is supported")
            out_shape, axis = shape, perm.index(batch)
        elif op == "Squeeze":
            raw = a.get("axes") if "axes" in a else (self.consts.get(ins[1]) if len(ins) > 1 and ins[1] else None)
            if raw is None:
                raise self.refuse(node, index, "a Squeeze without axes is not supported (it would squeeze a batch of "
                                               "1): give the axes")
            axes = sorted({int(v) % rank for v in np.asarray(raw).reshape(-1)})
            per = [v if v < batch else v - 1 for v in axes]
            if batch in axes or any(shape[p] != 1 for p in per):
                raise self.refuse(node, index, f"axes={axes} are not all of size 1 besides the batch axis {batch} "
                                               f"(request shape {shape})")
            out_shape = tuple(d for i, d in enumerate(shape) if i not in per)
            axis = batch - sum(v < batch for v in axes)
        else:  # Gather
            where = int(a.get("axis", 0)) % rank
            indices = np.asarray(self.consts.get(ins[1], np.zeros((0,)))) if len(ins) > 1 else np.zeros((0,))
            if ins[1] not in self.consts or indices.ndim != 0:
                raise self.refuse(node, index, "only a Gather of one constant index (a scalar: out[:, -1], h_n[-1])"
                                               " is supported")
            if where == batch:
                raise self.refuse(node, index, f"axis={where} is the batch axis")
            p = where if where < batch else where - 1
            i = int(indices)
            if not -shape[p] <= i < shape[p]:
                raise self.refuse(node, index, f"index {i} is out of range for an axis of {shape[p]}")
            out_shape = shape[:p] + shape[p + 1:]
            axis = batch if where > batch else batch - 1
            kind, attrs = "select", {"axis": p, "index": i % shape[p]}
        self.add(Layer(_node_label(node, index), kind, (op,), shape, out_shape, (), attrs=attrs, inputs=(x,),
                       output=node.output[0]))
        if axis:
            self.batch_axis[node.output[0]] = axis
        return None

    def initial_state(self, node: Any, index: int, tensor: str, what: str, hidden: int) -> np.ndarray | None:
        """An RNN's initial_h / initial_c as one vector for every request (None: zeros)."""
        if not tensor:
            return None
        if tensor in self.fills:
            values, axis = self.fills[tensor]
            if axis != 1 or values.shape != (1, hidden):
                raise self.refuse(node, index, f"input {what} must be [1, batch, {hidden}]")
            return None if not values.any() else self.vector(values.reshape(hidden))
        if tensor in self.consts:
            values = np.asarray(self.consts[tensor], np.float32)
            if values.ndim == 3 and values.shape[0] == 1 and values.shape[2] == hidden and values.shape[1] > 1:
                raise self.refuse(node, index, f"input {what} holds a state per batch row ({values.shape}); the "
                                               f"engine serves one request at a time: give one state, [1, 1, "
                                               f"{hidden}]")
            if values.shape != (1, 1, hidden):
                raise self.refuse(node, index, f"input {what} of shape {values.shape} is not [1, 1, {hidden}]")
            return self.vector(values.reshape(hidden))
        raise self.refuse(node, index, f"input {what} must be a constant or the zero state (ConstantOfShape), not a "
                                       f"tensor the network computes")

    def rnn(self, node: Any, index: int, ins: list[str]) -> None:
        """A GRU or LSTM node: one chain of instructions per time step, issued seq_length times.

        A step, with kx = ceil(input_size / native_dim) and c = ceil(hidden / native_dim) native vectors (every
        gate is its own c column tiles): ``v_rd`` x_t (kx); ``mv_mul`` by the input weights (kx row tiles x gates
        x c) and ``vv_add`` of their partial sums; ``v_rd`` of the hidden state from its vector register (c) and
        ``mv_mul`` by the recurrent weights (c x gates x c, partial sums added); ``vv_add`` of the two parts and of
        the bias; then the gates. GRU: ``v_sigm`` of z, r; h~ = tanh(x Wh + (r * h) Rh + b) (``vv_mul`` r * h
        before its ``mv_mul``), or, with linear_before_reset, tanh(x Wh + Wbh + r * (h Rh + Rbh)); h = h~ + z *
        (h - h~) (``vv_sub``, ``vv_mul``, ``vv_add``). LSTM: ``v_sigm`` of i, o, f, ``v_tanh`` of c~; C = f * C +
        i * c~; h = o * tanh(C). Last, ``v_wr`` of h (Y_t; the last step's is Y_h).
        """
        op, a = node.op_type, _attrs(node)
        gates = RNN_GATES[op]

        def refuse(attribute: str, why: str) -> ConversionError:
            return self.refuse(node, index, f"{attribute} is not supported: {why}")

        direction = a.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else str(direction)
        if direction != "forward":
            raise refuse(f"direction={direction!r}", "only the forward direction is compiled")
        if a.get("layout", 0) != 0:
            raise refuse(f"layout={a['layout']}", "only layout 0 ([seq_length, batch, input_size]) is compiled")
        activations = [v.decode() if isinstance(v, bytes) else str(v) for v in a.get("activations", [])]
        if activations and [v.lower() for v in activations] != _RNN_ACTIVATIONS[op]:
            default = [v.capitalize() for v in _RNN_ACTIVATIONS[op]]
            raise refuse(f"activations={activations}", f"only the default {default} are compiled")
        for name in ("activation_alpha", "activation_beta", "clip"):
            if name in a:
                raise refuse(f"{name}={a[name]}", "only the default activations, without clipping, are compiled")
        if a.get("input_forget", 0):
            raise refuse(f"input_forget={a['input_forget']}", "the input and forget gates are not coupled here")
        ins = [*ins, *[""] * (8 - len(ins))]
        x, w_name, r_name, b_name, seq_name, h0_name, c0_name, p_name = ins[:8]
        if seq_name:
            raise refuse("input sequence_lens", "every request is a whole sequence of the compiled length")
        if op == "LSTM" and p_name:
            raise refuse("input P (peepholes)", "the cell has no peephole connections here")
        if x not in self.shapes:
            raise self.refuse(node, index, f"its input {x!r} is neither the network's input nor computed before")
        shape = self.shapes[x]
        if self.axis_of(x) != 1 or len(shape) != 2:
            raise self.refuse(node, index, f"X must be [seq_length, batch, input_size]: {x!r} has the batch axis at "
                                           f"{self.axis_of(x)} and request shape {shape}; give the network a "
                                           f"(batch, seq_length, input_size) input and a Transpose(perm=[1, 0, 2])")
        steps, features = shape
        for tensor, what in ((w_name, "W"), (r_name, "R"), (b_name, "B")):
            if tensor and tensor not in self.consts:
                raise refuse(f"a computed {what}", f"the weights {what} must be a constant (an initializer)")
        w = np.asarray(self.consts[w_name], np.float32)
        if w.ndim != 3 or w.shape[0] != 1 or w.shape[2] != features or w.shape[1] % gates:
            raise self.refuse(node, index, f"W of shape {w.shape} is not [1, {gates} * hidden, {features}]")
        hidden = w.shape[1] // gates
        if int(a.get("hidden_size", hidden)) != hidden:
            raise self.refuse(node, index, f"hidden_size={a['hidden_size']} does not match W ({hidden})")
        r = np.asarray(self.consts[r_name], np.float32)
        if r.shape != (1, gates * hidden, hidden):
            raise self.refuse(node, index, f"R of shape {r.shape} is not [1, {gates * hidden}, {hidden}]")
        lbr = int(a.get("linear_before_reset", 0)) if op == "GRU" else 0
        wx, bits_x = self.weight(w[0].T)
        wh, bits_h = self.weight(r[0].T)
        bits = bits_x + bits_h
        bias = None
        if b_name:
            b = np.asarray(self.consts[b_name], np.float32)
            if b.shape != (1, 2 * gates * hidden):
                raise self.refuse(node, index, f"B of shape {b.shape} is not [1, {2 * gates * hidden}]")
            wb, rb = b[0, :gates * hidden], b[0, gates * hidden:]
            if lbr:  # z, r: Wb + Rb; h: Wbh and Rbh apart (Rbh is inside r * (...))
                raw = np.concatenate([wb[:2 * hidden] + rb[:2 * hidden], wb[2 * hidden:], rb[2 * hidden:]])
            else:
                raw = wb + rb
            bias = self.vector(raw)
            bits += self.vfmt.memory_bits(bias.shape)
        name = _node_label(node, index)
        outs = [*node.output, "", "", ""]
        named = {key: outs[i] for i, key in enumerate(("Y", "Y_h", "Y_c")) if outs[i] and (op == "LSTM" or i < 2)}
        attrs: dict[str, Any] = {"cell": op.lower(), "input_size": features, "hidden_size": hidden,
                                 "linear_before_reset": lbr, "outputs": named}
        for tensor, what in ((h0_name, "initial_h"), (c0_name if op == "LSTM" else "", "initial_c")):
            state = self.initial_state(node, index, tensor, what, hidden)
            if state is not None:
                attrs[what] = state
                bits += self.vfmt.memory_bits(state.shape)
        kx, c = math.ceil(features / self.dim), math.ceil(hidden / self.dim)
        written = named.get("Y") or named.get("Y_h") or named.get("Y_c") or name + ".h"
        chain: list[tuple[str, tuple[str, ...], int]] = [
            ("v_rd", ("x_t",), kx), ("mv_mul", (name + ".W",), kx * gates * c),
            ("vv_add", ("partial sums",), (kx - 1) * gates * c), ("v_rd", ("h",), c)]
        if op == "LSTM":
            chain += [("mv_mul", (name + ".R",), c * gates * c), ("vv_add", ("partial sums",), (c - 1) * gates * c),
                      ("vv_add", ("x part + h part",), gates * c), ("vv_add", (name + ".b",), gates * c * bool(b_name)),
                      ("v_sigm", ("i, o, f",), 3 * c), ("v_tanh", ("c~",), c), ("vv_mul", ("f * C",), c),
                      ("vv_mul", ("i * c~",), c), ("vv_add", ("C",), c), ("v_tanh", ("C",), c),
                      ("vv_mul", ("o * tanh(C)",), c)]
        else:
            with_bias = bool(b_name)
            chain += [("mv_mul", (name + (".R" if lbr else ".R[z,r]"),), c * (3 if lbr else 2) * c),
                      ("vv_add", ("partial sums",), (c - 1) * (3 if lbr else 2) * c),
                      ("vv_add", ("x part + h part (z, r)",), 2 * c),
                      ("vv_add", (name + ".b[z,r]",), 2 * c * with_bias),
                      ("v_sigm", ("z, r",), 2 * c)]
            if lbr:
                chain += [("vv_add", (name + ".Rb[h]",), c * with_bias), ("vv_mul", ("r * (h Rh + Rbh)",), c),
                          ("vv_add", (name + ".Wb[h]",), c * with_bias), ("vv_add", ("x part + r * (...)",), c)]
            else:
                chain += [("vv_mul", ("r * h",), c), ("mv_mul", (name + ".R[h]",), c * c),
                          ("vv_add", ("partial sums",), (c - 1) * c), ("vv_add", ("x part + h part",), c),
                          ("vv_add", (name + ".b[h]",), c * with_bias)]
            chain += [("v_tanh", ("h~",), c), ("vv_sub", ("h - h~",), c), ("vv_mul", ("z * (h - h~)",), c),
                      ("vv_add", ("h~ + z * (h - h~)",), c)]
        chain.append(("v_wr", (written,), c))
        program = tuple(Instruction(o, operands, repeat) for o, operands, repeat in chain if repeat > 0)
        load = (Instruction("m_rd", (name + ".W",), kx * gates * c), Instruction("m_rd", (name + ".R",), c * gates * c))
        per_step: dict[str, tuple[tuple[int, ...], int]] = {"Y": ((steps, 1, hidden), 2), "Y_h": ((1, hidden), 1),
                                                              "Y_c": ((1, hidden), 1)}
        first = next(iter(named.values()), name + ".h")
        self.add(Layer(name, "rnn", (op,), shape, per_step["Y"][0], program, load,
                       steps * gates * hidden * (features + hidden), (kx + c) * gates * c, bits,
                       np.vstack([wx, wh]), bias, attrs, (x,), first, steps))
        for key, tensor in named.items():
            self.producer[tensor] = len(self.layers) - 1
            self.shapes[tensor], self.batch_axis[tensor] = per_step[key]
        return None

    def label_tail(self, node: Any, index: int, ins: list[str]) -> None:
        op = node.op_type
        if op not in _LABEL_TAIL:
            raise self.refuse(node, index, "after an ArgMax only the label's own operators are supported")
        if op == "ArgMax":
            a = _attrs(node)
            if a.get("axis", 0) not in (1, -1) or len(self.shapes[ins[0]]) != 1:
                raise self.refuse(node, index, "only an ArgMax over the features of a flat vector is supported")
            self.labels[node.output[0]] = ins[0]
            return None
        if op == "ArrayFeatureExtractor":
            classes, indices = ins[0], ins[1]
            if classes not in self.consts or indices not in self.labels:
                raise self.refuse(node, index, "only the label lookup classes[argmax] is supported")
            self.classes = np.asarray(self.consts[classes]).reshape(-1)
            self.labels[node.output[0]] = self.labels[indices]
            return None
        source = next(i for i in ins if i in self.labels)
        self.labels[node.output[0]] = self.labels[source]
        return None

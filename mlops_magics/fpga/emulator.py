"""Runs a compiled :class:`~mlops_magics.fpga.compiler.Program` in numpy, rounding where the hardware would.

Where values are rounded (the practice of Brainwave and of the OCP MX formats):

- weights: once, at compile time, to the program's format, blocks along the reduction axis (the rows of the
  K x N matrix; for a convolution the C x kh x kw patch axis);
- activations entering each ``mv_mul``: to the program's format, blocks along the same reduction axis;
- accumulation of the products: float32 (Brainwave accumulates in wider precision than its inputs; numpy's
  float32 matmul is the whole tile chain of ``mv_mul`` plus the ``vv_add`` of partial sums, up to the order of
  the additions);
- point-wise work (bias, activations, pooling, residual adds): float32 arithmetic, each result rounded to the
  program's vector format: bfloat16 by default for narrow formats (the MX practice: element-wise work in
  bfloat16; Brainwave's multifunction units used float16, ``vector_format="fp16"``), float32 for fp32.
- host operations (softmax, the label's argmax): float32, outside the engine.
- a GRU or LSTM, step by step: x_t and the hidden state h each rounded to the program's format as they enter their
  ``mv_mul`` chains (so is r * h before a GRU's R_h); a gate's matrix-vector results (input part + recurrent
  part, float32 accumulation) plus its bias rounded once to the vector format; each sigmoid, tanh, product, sum
  and difference of the gating rounded to the vector format; h (and an LSTM's C) kept in the vector format from
  one step to the next. :func:`gru_step` and :func:`lstm_step` are the steps.

The emulator executes each layer's instructions as whole-layer numpy operations over a batch of requests: one
row is one request at batch 1, several rows are the same requests run one after another, only faster. Tensors are
computed batch first; an output whose ONNX batch axis is elsewhere (an RNN's Y, Y_h) is given in ONNX's layout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mlops_magics.errors import InvalidInputError
from mlops_magics.fpga.compiler import Layer, Program
from mlops_magics.fpga.formats import NumberFormat, fake_quantize

Kernel = Callable[[dict[str, np.ndarray]], None]
_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda v: np.maximum(v, np.float32(0)),
    "sigmoid": lambda v: np.float32(1) / (np.float32(1) + np.exp(-v)),
    "tanh": np.tanh,
}


class Emulator:
    """An emulated engine loaded with one program: ``run`` answers requests as the engine would.

    Args:
        program: the compiled program (its weights are already rounded).
    """

    def __init__(self, program: Program) -> None:
        self.program = program
        self._rounder = _rounding(program.format)
        self._vector = _rounding(program.vector_format)
        self._kernels = [self._kernel(layer) for layer in program.layers]

    def run(self, x: Any) -> dict[str, np.ndarray]:
        """Every output of the program for a batch of requests (rows), by the ONNX output's name.

        Raises:
            InvalidInputError: the input does not have the shape the program was compiled for.
        """
        env = {self.program.input_name: self._input(x)}
        for kernel in self._kernels:
            kernel(env)
        out: dict[str, np.ndarray] = {}
        for name, (kind, tensor) in self.program.outputs.items():
            if kind == "tensor":
                axis = self.program.output_axes.get(name, 0)
                out[name] = np.moveaxis(env[tensor], 0, axis) if axis else env[tensor]
            else:
                index = np.argmax(env[tensor], axis=-1)
                out[name] = self.program.classes[index] if self.program.classes is not None else index
        return out

    def scores(self, x: Any) -> np.ndarray:
        """The first tensor output (a classifier's probabilities, a regressor's values) for a batch of requests."""
        env = {self.program.input_name: self._input(x)}
        for kernel in self._kernels:
            kernel(env)
        tensor = next(t for kind, t in self.program.outputs.values() if kind == "tensor")
        return env[tensor]

    def predict(self, x: Any) -> np.ndarray:
        """Labels, taken on the host: ``classes[argmax(probabilities)]`` (or the index without classes)."""
        index = np.argmax(self.scores(x), axis=-1)
        labels: np.ndarray = self.program.classes[index] if self.program.classes is not None else index
        return labels

    def _input(self, x: Any) -> np.ndarray:
        array = np.asarray(x, dtype=np.float32)
        shape = self.program.input_shape
        if array.shape == shape:
            array = array[None]
        if array.shape[1:] != shape:
            raise InvalidInputError(f"The program takes requests of shape {shape} (rows of a batch: (n, "
                                    f"{', '.join(map(str, shape))})); got an array of shape {array.shape}.")
        return array

    def _kernel(self, layer: Layer) -> Kernel:
        build = {"dense": self._dense, "conv": self._conv, "pointwise": self._pointwise, "pool": self._pool,
                 "reshape": self._reshape, "select": self._select, "rnn": self._rnn, "host": self._host}[layer.kind]
        return build(layer)

    def _finish(self, layer: Layer) -> Callable[[np.ndarray], np.ndarray]:
        """Bias, then the fused activation, each result rounded to the vector format."""
        vector, bias = self._vector, layer.bias
        act = _ACTIVATIONS.get(layer.attrs.get("activation", ""))

        def finish(acc: np.ndarray) -> np.ndarray:
            acc = vector(acc + bias) if bias is not None else vector(acc)
            if act is not None:
                acc = vector(act(acc))
            return acc

        return finish

    def _dense(self, layer: Layer) -> Kernel:
        assert layer.weights is not None
        w, rounder, finish, src, dst = layer.weights, self._rounder, self._finish(layer), layer.inputs[0], layer.output

        def dense(env: dict[str, np.ndarray]) -> None:
            env[dst] = finish(rounder(env[src]) @ w)

        return dense

    def _conv(self, layer: Layer) -> Kernel:
        assert layer.weights is not None
        w, rounder, finish, src, dst = layer.weights, self._rounder, self._finish(layer), layer.inputs[0], layer.output
        kh, kw = layer.attrs["kernel"]
        sh, sw = layer.attrs["strides"]
        top, left, bottom, right = layer.attrs["pads"]
        m, ho, wo = layer.output_shape

        def conv(env: dict[str, np.ndarray]) -> None:
            x = env[src]
            if top or left or bottom or right:
                x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
            windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
            windows = windows[:, :, :ho, :wo]  # (B, C, Ho, Wo, kh, kw)
            patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(x.shape[0] * ho * wo, -1)
            out = finish(rounder(patches) @ w)
            env[dst] = np.ascontiguousarray(out.reshape(x.shape[0], ho, wo, m).transpose(0, 3, 1, 2))

        return conv

    def _pointwise(self, layer: Layer) -> Kernel:
        vector, steps, src, dst = self._vector, layer.attrs.get("steps", []), layer.inputs[0], layer.output
        act = _ACTIVATIONS.get(layer.attrs.get("activation", ""))

        def pointwise(env: dict[str, np.ndarray]) -> None:
            v = env[src]
            for op, arg in steps:
                if op == "add":
                    v = vector(v + arg)
                elif op == "mul":
                    v = vector(v * arg)
                elif op == "add_tensor":
                    v = vector(v + env[arg])
                elif op == "mul_tensor":
                    v = vector(v * env[arg])
                else:
                    v = vector(_ACTIVATIONS[op](v))
            if act is not None:
                v = vector(act(v))
            env[dst] = v

        return pointwise

    def _pool(self, layer: Layer) -> Kernel:
        vector, src, dst = self._vector, layer.inputs[0], layer.output
        kh, kw = layer.attrs["kernel"]
        sh, sw = layer.attrs["strides"]
        is_max = layer.attrs["pool"] == "max"
        _, ho, wo = layer.output_shape
        inverse = np.float32(1 / (kh * kw))

        def pool(env: dict[str, np.ndarray]) -> None:
            windows = np.lib.stride_tricks.sliding_window_view(env[src], (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
            windows = windows[:, :, :ho, :wo]
            if is_max:
                env[dst] = windows.max(axis=(4, 5))
            else:
                env[dst] = vector(vector(windows.sum(axis=(4, 5), dtype=np.float32)) * inverse)

        return pool

    def _reshape(self, layer: Layer) -> Kernel:
        src, dst, shape = layer.inputs[0], layer.output, layer.output_shape

        def reshape(env: dict[str, np.ndarray]) -> None:
            env[dst] = env[src].reshape(env[src].shape[0], *shape)

        return reshape

    def _select(self, layer: Layer) -> Kernel:
        src, dst, axis, index = layer.inputs[0], layer.output, layer.attrs["axis"] + 1, layer.attrs["index"]

        def select(env: dict[str, np.ndarray]) -> None:
            env[dst] = np.ascontiguousarray(np.take(env[src], index, axis=axis))

        return select

    def _rnn(self, layer: Layer) -> Kernel:
        assert layer.weights is not None
        a = layer.attrs
        features, hidden = a["input_size"], a["hidden_size"]
        wx, wh = layer.weights[:features], layer.weights[features:]
        src, outputs, lstm = layer.inputs[0], a["outputs"], a["cell"] == "lstm"
        rnd, vec, bias, lbr = self._rounder, self._vector, layer.bias, bool(a.get("linear_before_reset", 0))
        h0 = a.get("initial_h")
        c0 = a.get("initial_c")

        def rnn(env: dict[str, np.ndarray]) -> None:
            x = env[src]
            batch = x.shape[0]
            h = np.zeros((batch, hidden), np.float32) if h0 is None else np.tile(h0, (batch, 1))
            c = np.zeros((batch, hidden), np.float32) if c0 is None else np.tile(c0, (batch, 1))
            ys = []
            projections = rnd(x) @ wx  # x_t's input part of every step (blocks along the features of each x_t)
            for t in range(x.shape[1]):
                if lstm:
                    h, c = lstm_step(projections[:, t], h, c, wh, bias, rnd, vec)
                else:
                    h = gru_step(projections[:, t], h, wh, bias, lbr, rnd, vec)
                ys.append(h)
            if "Y" in outputs:
                env[outputs["Y"]] = np.stack(ys, axis=1)[:, :, None, :]
            if "Y_h" in outputs:
                env[outputs["Y_h"]] = h[:, None, :]
            if "Y_c" in outputs:
                env[outputs["Y_c"]] = c[:, None, :]

        return rnn

    def _host(self, layer: Layer) -> Kernel:
        src, dst = layer.inputs[0], layer.output

        def softmax(env: dict[str, np.ndarray]) -> None:
            v = env[src].astype(np.float32)
            e = np.exp(v - v.max(axis=-1, keepdims=True))
            env[dst] = e / e.sum(axis=-1, keepdims=True)

        return softmax


Rounder = Callable[[np.ndarray], np.ndarray]


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return _ACTIVATIONS["sigmoid"](v)


def gru_step(gx: np.ndarray, h: np.ndarray, wh: np.ndarray, bias: np.ndarray | None,
             linear_before_reset: bool, rounder: Rounder, vector: Rounder) -> np.ndarray:
    """One GRU time step on the engine (ONNX gates z, r, h): the new hidden state, in the vector format.

    Args:
        gx: the step's input part, ``rounder(x_t) @ wx`` (batch, 3 hidden): it does not depend on h, so the
            emulator computes it for every step at once (the engine's ``mv_mul`` chain on x_t, float32 sums).
        h: h_(t-1), (batch, hidden), in the vector format.
        wh: the recurrent weights (hidden x 3 hidden), already rounded.
        bias: Wb + Rb (3 hidden), or with linear_before_reset Wb[z,r] + Rb[z,r], Wb[h], Rb[h] (4 hidden); or None.
        rounder, vector: rounding to the program's format (blocks along the last axis) and to the vector format.
    """
    n = h.shape[1]
    hq = rounder(h)
    if linear_before_reset:
        gh = hq @ wh
        zr = gx[:, :2 * n] + gh[:, :2 * n]
    else:
        zr = gx[:, :2 * n] + hq @ wh[:, :2 * n]
    zr = vector(_sigmoid(vector(zr + bias[:2 * n] if bias is not None else zr)))
    z, r = zr[:, :n], zr[:, n:]
    if linear_before_reset:
        xh = vector(gx[:, 2 * n:] + bias[2 * n:3 * n] if bias is not None else gx[:, 2 * n:])
        hh = vector(gh[:, 2 * n:] + bias[3 * n:] if bias is not None else gh[:, 2 * n:])
        pre = vector(xh + vector(r * hh))
    else:
        pre = gx[:, 2 * n:] + rounder(vector(r * h)) @ wh[:, 2 * n:]
        pre = vector(pre + bias[2 * n:] if bias is not None else pre)
    candidate = vector(np.tanh(pre))
    return vector(candidate + vector(z * vector(h - candidate)))


def lstm_step(gx: np.ndarray, h: np.ndarray, c: np.ndarray, wh: np.ndarray, bias: np.ndarray | None,
              rounder: Rounder, vector: Rounder) -> tuple[np.ndarray, np.ndarray]:
    """One LSTM time step on the engine (ONNX gates i, o, f, c): the new hidden and cell states (vector format).

    ``gx`` is the step's input part ``rounder(x_t) @ wx`` (batch, 4 hidden), ``c`` the cell state, ``bias``
    Wb + Rb (4 hidden) or None; the other arguments as for :func:`gru_step`.
    """
    n = h.shape[1]
    pre = gx + rounder(h) @ wh
    pre = vector(pre + bias if bias is not None else pre)
    iof = vector(_sigmoid(pre[:, :3 * n]))
    candidate = vector(np.tanh(pre[:, 3 * n:]))
    i, o, f = iof[:, :n], iof[:, n:2 * n], iof[:, 2 * n:]
    c = vector(vector(f * c) + vector(i * candidate))
    return vector(o * vector(np.tanh(c))), c


def _rounding(fmt: NumberFormat) -> Callable[[np.ndarray], np.ndarray]:
    if fmt.is_exact:
        return lambda v: v

    def rounder(v: np.ndarray) -> np.ndarray:
        return fake_quantize(v, fmt, axis=-1)

    return rounder


def emulate(program: Program, x: Any) -> dict[str, np.ndarray]:
    """Run ``program`` on a batch of requests ``x``: every output by name (see :meth:`Emulator.run`)."""
    return Emulator(program).run(x)

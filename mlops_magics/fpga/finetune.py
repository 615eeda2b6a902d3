"""Quantization-aware fine-tuning for the FPGA engine: a few epochs of PyTorch through the engine's own rounding.

PyTorch is optional: nothing here imports it until :func:`finetune` (or :func:`torch_module`) is called, and without
it they raise an error that says how to install it. The network trained is the compiled program itself, layer by
layer as the emulator runs it (:mod:`mlops_magics.fpga.emulator`): weights and the activations entering each
matrix-vector multiply are rounded to the program's format, blocks along the reduction axis; the bias, each
point-wise result and pooled sums to the vector format (bfloat16 by default). The forward pass rounds with
:func:`mlops_magics.fpga.formats.fake_quantize` itself, so what is trained is bit for bit what the emulator
computes; the backward pass lets gradients through every rounding unchanged (the straight-through estimator of
Bengio et al., 2013, the usual quantization-aware training). The float weights it learns go back into a copy of
the ONNX model (same graph, new initializers), which compiles as any other. Accuracy before and after is measured
by the real emulator of :func:`~mlops_magics.fpga.compiler.compile_model`, on rows the training did not see, in
the format and in fp32: tuning for a narrow format can cost fp32 accuracy, and the result says by how much.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np

from mlops_magics.display import card, table
from mlops_magics.errors import ConversionError, InvalidInputError, MlopsError
from mlops_magics.fpga.compiler import Layer, Program, Source, compile_model
from mlops_magics.fpga.emulator import Emulator
from mlops_magics.fpga.formats import NumberFormat, fake_quantize, get_format

MAX_EPOCHS = 1000
MAX_ROWS = 10_000_000


class TorchMissingError(MlopsError, ImportError):
    """PyTorch, which fine-tuning needs (and nothing else does), is not installed."""


@dataclass(frozen=True)
class Epoch:
    """One epoch of fine-tuning: the training loss and accuracy in the rounded forward pass, and the emulated
    accuracy on the validation rows of the weights as they are after it."""

    epoch: int
    loss: float
    train_accuracy: float
    accuracy: float
    seconds: float


@dataclass(frozen=True)
class FineTuned:
    """The result of :func:`finetune`: the tuned ONNX model and what tuning did to the emulated accuracy.

    ``accuracy_before`` / ``accuracy_after`` are the emulated accuracy in ``format`` of the original and the tuned
    model, ``fp32_accuracy_before`` / ``fp32_accuracy_after`` the same in fp32, all on the ``validation_rows``
    rows (``validation`` says which: held out of the data, or given). Fractions in [0, 1].
    """

    model: Any
    format: NumberFormat
    vector_format: NumberFormat
    epochs: int
    accuracy_before: float
    accuracy_after: float
    fp32_accuracy_before: float
    fp32_accuracy_after: float
    history: tuple[Epoch, ...]
    train_rows: int
    validation_rows: int
    validation: str
    learning_rate: float
    batch_size: int
    seed: int
    seconds: float

    @property
    def drop_before(self) -> float:
        """Points lost to the format before tuning: fp32 accuracy of the original minus its accuracy in format."""
        return (self.fp32_accuracy_before - self.accuracy_before) * 100

    @property
    def drop_after(self) -> float:
        """Points lost after tuning, against the same reference (the original model in fp32)."""
        return (self.fp32_accuracy_before - self.accuracy_after) * 100

    @property
    def fp32_change(self) -> float:
        """Points the tuned model gained (+) or lost (-) in fp32."""
        return (self.fp32_accuracy_after - self.fp32_accuracy_before) * 100

    def summary(self) -> list[str]:
        """The result in a few lines of text."""
        name = self.format.name
        cost = "; tuning for the format cost fp32 accuracy" if self.fp32_change < 0 else ""
        lines = [f"Fine-tuned for {name} (vectors {self.vector_format.name}): {self.epochs} epochs on "
                 f"{self.train_rows} rows, learning rate {self.learning_rate:g}, batch {self.batch_size}, seed "
                 f"{self.seed}, {self.seconds:.1f} s",
                 f"  {name} accuracy (emulated): {self.accuracy_before:.2%} -> {self.accuracy_after:.2%} "
                 f"(drop vs fp32 {self.drop_before:+.2f} -> {self.drop_after:+.2f} points)",
                 f"  fp32 accuracy: {self.fp32_accuracy_before:.2%} -> {self.fp32_accuracy_after:.2%} "
                 f"({self.fp32_change:+.2f} points{cost})",
                 f"  on {self.validation_rows} validation rows ({self.validation})"]
        return lines

    def __repr__(self) -> str:
        rows = [f"    epoch {e.epoch}: loss {e.loss:.4f}, train {e.train_accuracy:.2%}, {self.format.name} "
                f"{e.accuracy:.2%} (emulated), {e.seconds:.2f} s" for e in self.history]
        return "\n".join(self.summary() + rows)

    def _repr_html_(self) -> str:
        name = escape(self.format.name)
        fp32_note = " (tuning for the format cost fp32 accuracy)" if self.fp32_change < 0 else ""
        fields = [
            (f"{self.format.name} accuracy (emulated)",
             f"{self.accuracy_before:.2%} &rarr; <b>{self.accuracy_after:.2%}</b>"),
            ("drop vs fp32 (points)", f"{self.drop_before:+.2f} &rarr; <b>{self.drop_after:+.2f}</b>"),
            ("fp32 accuracy", f"{self.fp32_accuracy_before:.2%} &rarr; {self.fp32_accuracy_after:.2%} "
                              f"({self.fp32_change:+.2f} points){fp32_note}"),
            ("validation", escape(f"{self.validation_rows} rows, {self.validation}")),
            ("training", escape(f"{self.epochs} epochs on {self.train_rows} rows, learning rate "
                                f"{self.learning_rate:g}, batch {self.batch_size}, seed {self.seed}, "
                                f"{self.seconds:.1f} s")),
            ("history", table([{"epoch": e.epoch, "loss": f"{e.loss:.4f}", "train accuracy": f"{e.train_accuracy:.2%}",
                                f"{self.format.name} accuracy (emulated)": f"{e.accuracy:.2%}",
                                "seconds": f"{e.seconds:.2f}"} for e in self.history])),
        ]
        title = (f"<b>Fine-tuned for {name}</b> (quantization-aware, vectors {escape(self.vector_format.name)}; "
                 f"accuracies emulated)")
        return card(title, fields)


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise TorchMissingError("Fine-tuning for the FPGA engine needs PyTorch, which is not installed: pip install "
                                "torch (the CPU build is enough). Fine-tuning is optional; compiling, emulating and "
                                "sweeping formats work without it.") from exc
    return torch


def require_torch() -> None:
    """Check that PyTorch can be imported, before any work that fine-tuning would follow.

    Raises:
        TorchMissingError: PyTorch is not installed (the message says ``pip install torch``).
    """
    _import_torch()


def shared_rows(rows: Any, others: Any) -> int:
    """How many of ``rows`` (an array, batch axis first) are, value for value, also rows of ``others``.

    Rows compare by their float32 bytes (so 1 and 1.0 match, and -0.0 and 0.0 do not); at most
    :data:`MAX_ROWS` of each are compared.

    Raises:
        InvalidInputError: too many rows.
    """
    a, b = (np.ascontiguousarray(np.asarray(r, dtype=np.float32)) for r in (rows, others))
    if len(a) > MAX_ROWS or len(b) > MAX_ROWS:
        raise InvalidInputError(f"Too many rows to compare: at most {MAX_ROWS:,} of each.")
    seen = {row.tobytes() for row in b.reshape(len(b), -1)}
    return sum(row.tobytes() in seen for row in a.reshape(len(a), -1))


def quantizer(format: str | NumberFormat, axis: int = -1) -> Callable[[Any], Any]:
    """A function rounding a torch tensor to ``format`` (blocks along ``axis``) exactly as
    :func:`~mlops_magics.fpga.formats.fake_quantize` does, with a straight-through gradient.

    Raises:
        TorchMissingError: PyTorch is not installed.
    """
    fmt = get_format(format)
    function = _ste(_import_torch())
    if fmt.is_exact:
        return lambda tensor: tensor
    return lambda tensor: function.apply(tensor, fmt, axis)


@functools.cache
def _ste(torch: Any) -> Any:
    class RoundStraightThrough(torch.autograd.Function):  # type: ignore[misc, unused-ignore]
        """Forward: formats.fake_quantize on the tensor's values; backward: the gradient unchanged."""

        @staticmethod
        def forward(ctx: Any, tensor: Any, fmt: NumberFormat, axis: int) -> Any:
            values = tensor.detach().cpu().numpy()
            return torch.from_numpy(fake_quantize(values, fmt, axis=axis)).to(tensor.device)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            return grad, None, None

    return RoundStraightThrough


def torch_module(onnx_model: Any, format: str | NumberFormat = "fp32", *,
                 vector_format: str | NumberFormat | None = None) -> Any:
    """The network of an ONNX model as a ``torch.nn.Module`` that rounds where the emulator does.

    Its ``forward(x)`` gives the model's scores (the first tensor output, as
    :meth:`~mlops_magics.fpga.emulator.Emulator.scores`), ``logits(x)`` what enters the host softmax (the scores
    themselves without one). The weights and biases of dense and convolution layers are its parameters (as the
    compiled layer sees them: K x N matrices); ``weights()`` gives them back as ONNX constants by name.

    Args:
        onnx_model: an ``onnx.ModelProto`` the FPGA compiler accepts.
        format: the number format of weights and of activations entering each matrix-vector multiply.
        vector_format: the precision of point-wise work; the compiler's default when None.

    Raises:
        TorchMissingError: PyTorch is not installed.
        ConversionError: the model has an operator the FPGA compiler does not support.
    """
    torch = _import_torch()
    fmt = get_format(format)
    vfmt = get_format(vector_format or ("fp32" if fmt.is_exact else "bf16"))
    return _network_class(torch)(compile_model(onnx_model, "fp32", vector_format="fp32"), fmt, vfmt)


#: The layer kinds the torch module reproduces (an RNN's and a time-step selection's are not, yet).
TUNABLE_KINDS = ("dense", "conv", "pointwise", "pool", "reshape", "host")


def check_tunable(program: Program) -> None:
    """Refuse a program with a layer fine-tuning cannot reproduce in torch (a GRU or LSTM, for now).

    Raises:
        ConversionError: names the layer, its operators and what to do instead.
    """
    for layer in program.layers:
        if layer.kind not in TUNABLE_KINDS:
            raise ConversionError(f"Fine-tuning does not support layer {layer.name!r} ({'+'.join(layer.ops)}, a "
                                  f"{layer.kind} layer) yet: only dense, convolution, point-wise and pooling layers "
                                  f"are tuned. Compile the model without fine-tuning (%fpga compile), or train it "
                                  f"quantization-aware in your own framework and export it again.")


@functools.cache
def _network_class(torch: Any) -> Any:
    functional = torch.nn.functional
    activations = {"relu": torch.relu, "sigmoid": lambda v: 1 / (1 + torch.exp(-v)), "tanh": torch.tanh}

    class QuantizedNetwork(torch.nn.Module):  # type: ignore[misc, unused-ignore]
        """A compiled program as a torch module: each layer as the emulator runs it, rounding included."""

        def __init__(self, program: Program, fmt: NumberFormat, vfmt: NumberFormat) -> None:
            super().__init__()
            check_tunable(program)
            self.program, self.format, self.vector_format = program, fmt, vfmt
            self.activation_round = quantizer(fmt, axis=-1)
            self.weight_round = quantizer(fmt, axis=0)
            self.vector_round = quantizer(vfmt, axis=-1)
            self.parameter_sources: dict[str, Source] = {}
            self.runs: list[Callable[[dict[str, Any]], None]] = []
            uses: dict[str, int] = {}
            for layer in program.layers:
                for key in ("weight_source", "bias_source"):
                    if key in layer.attrs:
                        uses[layer.attrs[key].name] = uses.get(layer.attrs[key].name, 0) + 1
            for index, layer in enumerate(program.layers):
                self.runs.append(self.layer_run(index, layer, uses))
            tensor = next(t for kind, t in program.outputs.values() if kind == "tensor")
            self.scores_name = tensor
            producer = next((la for la in program.layers if la.output == tensor), None)
            self.logits_name = producer.inputs[0] if producer is not None and producer.kind == "host" else tensor

        def parameter(self, index: int, role: str, values: np.ndarray, source: Source | None,
                      uses: dict[str, int]) -> Any:
            """A trainable parameter when its ONNX constant can take it back (used once, not broadcast), else a
            constant buffer."""
            key = f"layer{index}_{role}"
            tensor = torch.tensor(np.array(values, np.float32))
            if (source is not None and uses.get(source.name, 0) == 1
                    and tensor.numel() == int(np.prod(source.shape, dtype=np.int64))):
                self.register_parameter(key, torch.nn.Parameter(tensor))
                self.parameter_sources[key] = source
            else:
                self.register_buffer(key, tensor)
            return key

        def layer_run(self, index: int, layer: Layer, uses: dict[str, int]) -> Callable[[dict[str, Any]], None]:
            src, dst = (layer.inputs[0] if layer.inputs else ""), layer.output
            vround = self.vector_round
            if layer.kind in ("dense", "conv"):
                assert layer.weights is not None
                w_key = self.parameter(index, "weight", layer.weights, layer.attrs.get("weight_source"), uses)
                b_key = None
                if layer.bias is not None:
                    b_key = self.parameter(index, "bias", layer.bias, layer.attrs.get("bias_source"), uses)
                act = activations.get(layer.attrs.get("activation", ""))

                def matrix(patches: Any) -> Any:
                    acc = self.activation_round(patches) @ self.weight_round(getattr(self, w_key))
                    acc = vround(acc + vround(getattr(self, b_key))) if b_key is not None else vround(acc)
                    return vround(act(acc)) if act is not None else acc

                if layer.kind == "dense":
                    def dense(env: dict[str, Any]) -> None:
                        env[dst] = matrix(env[src])

                    return dense
                kh, kw = layer.attrs["kernel"]
                stride = layer.attrs["strides"]
                top, left, bottom, right = layer.attrs["pads"]
                m, ho, wo = layer.output_shape

                def conv(env: dict[str, Any]) -> None:
                    x = env[src]
                    if top or left or bottom or right:
                        x = functional.pad(x, (left, right, top, bottom))
                    cols = functional.unfold(x, (kh, kw), stride=stride)  # (B, C*kh*kw, Ho*Wo), C-major patches
                    batch = x.shape[0]
                    patches = cols.transpose(1, 2).reshape(batch * ho * wo, -1)
                    env[dst] = matrix(patches).reshape(batch, ho, wo, m).permute(0, 3, 1, 2)

                return conv
            if layer.kind == "pointwise":
                steps = []
                for number, (op, arg) in enumerate(layer.attrs.get("steps", [])):
                    if isinstance(arg, np.ndarray):
                        key = f"layer{index}_const{number}"
                        self.register_buffer(key, torch.tensor(np.array(arg, np.float32)))
                        arg = key
                    steps.append((op, arg))
                act = activations.get(layer.attrs.get("activation", ""))

                def pointwise(env: dict[str, Any]) -> None:
                    v = env[src]
                    for op, arg in steps:
                        if op in ("add", "mul"):
                            const = getattr(self, arg)
                            v = vround(v + const if op == "add" else v * const)
                        elif op in ("add_tensor", "mul_tensor"):
                            v = vround(v + env[arg] if op == "add_tensor" else v * env[arg])
                        else:
                            v = vround(activations[op](v))
                    env[dst] = vround(act(v)) if act is not None else v

                return pointwise
            if layer.kind == "pool":
                kernel, stride = layer.attrs["kernel"], layer.attrs["strides"]
                inverse = float(np.float32(1 / (kernel[0] * kernel[1])))
                is_max = layer.attrs["pool"] == "max"

                def pool(env: dict[str, Any]) -> None:
                    if is_max:
                        env[dst] = functional.max_pool2d(env[src], kernel, stride)
                    else:
                        total = functional.avg_pool2d(env[src], kernel, stride, divisor_override=1)
                        env[dst] = vround(vround(total) * inverse)

                return pool
            if layer.kind == "reshape":
                shape = layer.output_shape

                def reshape(env: dict[str, Any]) -> None:
                    env[dst] = env[src].reshape(env[src].shape[0], *shape)

                return reshape

            def softmax(env: dict[str, Any]) -> None:
                env[dst] = torch.softmax(env[src], dim=-1)

            return softmax

        def tensors(self, x: Any) -> dict[str, Any]:
            env = {self.program.input_name: x}
            for run in self.runs:
                run(env)
            return env

        def forward(self, x: Any) -> Any:
            return self.tensors(x)[self.scores_name]

        def logits(self, x: Any) -> Any:
            return self.tensors(x)[self.logits_name]

        def weights(self) -> dict[str, np.ndarray]:
            """The trainable parameters as the ONNX constants they compile from, by constant name."""
            return {source.name: source.restore(getattr(self, key).detach().cpu().numpy())
                    for key, source in self.parameter_sources.items()}

    return QuantizedNetwork


def with_weights(onnx_model: Any, weights: dict[str, np.ndarray]) -> Any:
    """A copy of ``onnx_model`` whose constants named in ``weights`` (initializers or Constant nodes) hold the new
    values, in each constant's own element type; the graph is unchanged.

    Raises:
        InvalidInputError: a name is neither an initializer nor a Constant node's output, or a shape differs.
    """
    from onnx import ModelProto, numpy_helper

    copy = ModelProto()
    copy.CopyFrom(onnx_model)
    initializers = {t.name: t for t in copy.graph.initializer}
    constants = {n.output[0]: n for n in copy.graph.node if n.op_type == "Constant"}
    for name, values in weights.items():
        if name in initializers:
            old = initializers[name]
        elif name in constants:
            old = next(a.t for a in constants[name].attribute if a.name == "value")
        else:
            raise InvalidInputError(f"The model has no constant {name!r} to write; it has "
                                    f"{', '.join(sorted(initializers)) or 'no initializers'}.")
        previous = numpy_helper.to_array(old)
        if previous.shape != values.shape:
            raise InvalidInputError(f"Constant {name!r} has shape {previous.shape}; the new values have "
                                    f"{values.shape}.")
        old.CopyFrom(numpy_helper.from_array(np.asarray(values).astype(previous.dtype), name))
    return copy


def emulated_accuracy(onnx_model: Any, format: str | NumberFormat, data: Any, label_index: np.ndarray, *,
                      vector_format: str | NumberFormat | None = None) -> float:
    """The share of rows whose class (argmax of the emulated scores) is ``label_index``, the model compiled for
    ``format`` and run by the emulator."""
    program = compile_model(onnx_model, format, vector_format=vector_format)
    scores = Emulator(program).scores(data)
    return float((np.argmax(scores, axis=-1) == label_index).mean())


def _label_index(program: Program, labels: np.ndarray, classes: int) -> np.ndarray:
    if program.classes is not None:
        lookup = {_plain(c): i for i, c in enumerate(program.classes)}
        unknown = sorted({_plain(v) for v in labels if _plain(v) not in lookup}, key=str)
        if unknown:
            raise InvalidInputError(f"Labels {unknown[:5]!r} are not classes of the model; its classes are "
                                    f"{list(lookup)[:20]!r}.")
        return np.array([lookup[_plain(v)] for v in labels], np.int64)
    if labels.dtype.kind not in "iu" or (labels.size and (labels.min() < 0 or labels.max() >= classes)):
        raise InvalidInputError(f"The model has no class list, so labels must be class indices 0..{classes - 1}; "
                                f"got values of type {labels.dtype} from {labels.min()!r} to {labels.max()!r}.")
    return labels.astype(np.int64)


def _plain(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return value.decode() if isinstance(value, bytes) else value


def finetune(onnx_model: Any, format: str | NumberFormat, data: Any, labels: Any, *, epochs: int = 5,
             learning_rate: float = 1e-3, batch_size: int = 32, seed: int = 0,
             validation: tuple[Any, Any] | None = None, holdout: float = 0.2,
             vector_format: str | NumberFormat | None = None,
             progress: Callable[[Epoch], None] | None = None) -> FineTuned:
    """Fine-tune a classifier for an FPGA number format, quantization-aware: a few epochs through the engine's rounding.

    The network trains as the emulator runs it (weights and matrix inputs rounded to ``format``, point-wise work
    to the vector format; gradients straight through the rounding), with Adam on the cross-entropy of the logits,
    starting from the model's own weights; the last epoch's weights are the result. Emulated accuracy, before and
    after, in ``format`` and in fp32, is measured on ``validation`` or, without it, on a share ``holdout`` of the
    rows set aside (at random, by ``seed``) and never trained on.

    Examples::

        tuned = finetune(onnx_model, "msfp9", X_train, y_train)             # 20% of X_train held out
        tuned = finetune(onnx_model, "mxfp4", X_train, y_train, epochs=10, validation=(X_val, y_val))
        compile_model(tuned.model, "msfp9")                                 # the tuned weights compile as usual

    Args:
        onnx_model: an ``onnx.ModelProto`` the FPGA compiler accepts, ending in class scores (probabilities or
            logits), e.g. from skl2onnx or torch.onnx.
        format: the number format to tune for (``msfp9``, ``mxfp8``, ``mxfp4`` ...).
        data: training rows, shaped as the model's input with a batch axis first.
        labels: the class of each row: one of the model's classes when its graph has a class list (skl2onnx
            classifiers), else the index of the score.
        epochs: passes over the training rows (1 to 1000).
        learning_rate: Adam's step size; small, as the model is already trained.
        batch_size: rows per step.
        seed: the seed of the hold-out split and of the order of the rows.
        validation: rows and labels to measure on instead of a held-out share.
        holdout: the share of ``data`` held out for measuring when ``validation`` is None (0 < holdout < 1).
        vector_format: the precision of point-wise work; the compiler's default (bf16 for a narrow format) if None.
        progress: called with each :class:`Epoch` as it ends.

    Returns:
        A :class:`FineTuned`: the tuned ONNX model (a copy, same graph, new weights), accuracies before and after
        (emulated, in the format and in fp32) and the history per epoch.

    Raises:
        TorchMissingError: PyTorch is not installed (``pip install torch``; fine-tuning is optional).
        InvalidInputError: bad settings, data and labels of different lengths, labels that are not classes.
        ConversionError: the model has an operator the FPGA compiler does not support.
    """
    torch = _import_torch()
    fmt = get_format(format)
    vfmt = get_format(vector_format or ("fp32" if fmt.is_exact else "bf16"))
    if not 1 <= epochs <= MAX_EPOCHS:
        raise InvalidInputError(f"epochs must be 1 to {MAX_EPOCHS}, got {epochs}.")
    if not learning_rate > 0 or not np.isfinite(learning_rate):
        raise InvalidInputError(f"learning_rate must be a positive number, got {learning_rate}.")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}.")
    started = time.perf_counter()
    network = _network_class(torch)(compile_model(onnx_model, "fp32", vector_format="fp32"), fmt, vfmt)
    program: Program = network.program
    x, y = _rows(data, labels, program, "data")
    if validation is None:
        if not 0 < holdout < 1:
            raise InvalidInputError(f"holdout must be between 0 and 1 (a share of the rows), got {holdout}.")
        order = np.random.default_rng(seed).permutation(len(x))
        cut = round(len(x) * holdout)
        if cut < 1 or cut >= len(x):
            raise InvalidInputError(f"Holding out {holdout:g} of {len(x)} rows leaves no row to train or to measure "
                                    f"on; give more rows or validation=(rows, labels).")
        x_val, y_val, x, y = x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
        where = f"{holdout:.0%} of the data held out at random (seed {seed})"
    else:
        x_val, y_val = _rows(validation[0], validation[1], program, "validation")
        where = "given"
    classes = network(torch.from_numpy(x[:1])).shape[-1]
    index, index_val = _label_index(program, y, classes), _label_index(program, y_val, classes)

    before = emulated_accuracy(onnx_model, fmt, x_val, index_val, vector_format=vfmt)
    fp32_before = emulated_accuracy(onnx_model, "fp32", x_val, index_val)
    trainable = [p for p in network.parameters() if p.requires_grad]
    if not trainable:
        raise InvalidInputError("The model has no dense or convolution weights that can be tuned.")
    optimizer = torch.optim.Adam(trainable, lr=learning_rate)
    steps = max(1, -(-len(x) // batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps)
    rng = np.random.default_rng(seed + 1)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(index)
    history: list[Epoch] = []
    tuned = onnx_model
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        network.train()
        total, correct = 0.0, 0
        for rows in np.array_split(rng.permutation(len(x)), steps):
            batch = torch.from_numpy(rows)
            optimizer.zero_grad()
            logits = network.logits(inputs[batch])
            loss = torch.nn.functional.cross_entropy(logits, targets[batch], reduction="sum")
            (loss / len(rows)).backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
            correct += int((logits.detach().argmax(-1) == targets[batch]).sum())
        tuned = with_weights(onnx_model, network.weights())
        record = Epoch(epoch, total / len(x), correct / len(x),
                       emulated_accuracy(tuned, fmt, x_val, index_val, vector_format=vfmt),
                       time.perf_counter() - epoch_start)
        history.append(record)
        if progress is not None:
            progress(record)
    return FineTuned(tuned, fmt, vfmt, epochs, before, history[-1].accuracy, fp32_before,
                     emulated_accuracy(tuned, "fp32", x_val, index_val), tuple(history), len(x), len(x_val), where,
                     learning_rate, batch_size, seed, time.perf_counter() - started)


def _rows(data: Any, labels: Any, program: Program, what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(np.asarray(data, dtype=np.float32))
    y = np.asarray(labels).reshape(-1)
    if x.shape[1:] != program.input_shape:
        raise InvalidInputError(f"The {what} rows must have shape (n, {', '.join(map(str, program.input_shape))}) "
                                f"for this model; got {x.shape}.")
    if len(x) != len(y):
        raise InvalidInputError(f"The {what} has {len(x)} rows but {len(y)} labels; give one label per row.")
    if not 0 < len(x) <= MAX_ROWS:
        raise InvalidInputError(f"The {what} must have 1 to {MAX_ROWS:,} rows, got {len(x)}.")
    if not np.isfinite(x).all():
        raise InvalidInputError(f"The {what} rows hold NaN or infinite values; clean them before fine-tuning.")
    return x, y

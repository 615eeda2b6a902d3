"""ONNX: convert a model, check it against the original, measure both.

Converters: scikit-learn estimators and pipelines (skl2onnx), LightGBM and XGBoost (onnxmltools), PyTorch
modules (torch.onnx), each when its library is installed. The converted model is compared with the
original on the registered input example (or given data) and timed beside it in this process: one row at
a time (median and p99) and batches of 1,000 rows. :func:`mlops_magics.api.to_onnx` registers it as the next
version of the same model (flavor ``onnx``, ``derived_from`` the original) only when it agrees within the
tolerance.

Sessions use onnxruntime's default thread pool (every core). Measured here, a single intra-op thread made
a 100-tree GradientBoosting batch of 1,000 rows 15% slower than scikit-learn, and every core made it 50%
faster; single rows are not affected. When the batch path is still slower than the original, the report
says so and recommends the original for batch scoring (online scoring keeps the ONNX version).
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

from mlops_magics.errors import ConversionError, InvalidInputError
from mlops_magics.onnx.report import OnnxReport, Parity, Speed

#: Rows in the batch measurement.
BATCH_ROWS = 1000
#: Tolerances: classifiers must agree on every label and probabilities within PROBA_ATOL; regressors within
#: |a - b| <= ATOL_SCALE * std(native) + RTOL * |a|. Quantized models get the QUANTIZED_* tolerances.
PROBA_ATOL = 1e-3
RTOL = 1e-3
ATOL_SCALE = 1e-3
QUANTIZED_MIN_AGREEMENT = 0.98
QUANTIZED_PROBA_ATOL = 0.05
QUANTIZED_RTOL = 0.05


# -- data --------------------------------------------------------------------------------------


def _frame_like(data: Any) -> bool:
    return hasattr(data, "columns") and hasattr(data, "iloc")


def _rows(data: Any, count: int) -> Any:
    """``count`` rows from ``data``, repeating it when it is shorter (for batch timings)."""
    import numpy as np

    if _frame_like(data):
        import pandas as pd

        repeats = -(-count // len(data))
        return pd.concat([data] * repeats, ignore_index=True).iloc[:count]
    array = np.asarray(data)
    return np.resize(array, (count, *array.shape[1:])) if len(array) < count else array[:count]


def onnx_feed(session: Any, data: Any) -> dict[str, Any]:
    """The onnxruntime inputs for ``data`` (an array, or a data frame with one input per column)."""
    import numpy as np

    types = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32, "tensor(string)": object, "tensor(bool)": np.bool_}
    inputs = session.get_inputs()
    if _frame_like(data) and len(inputs) > 1:
        feed = {}
        for item in inputs:
            column = data[item.name].to_numpy().reshape(-1, 1)
            dtype = types.get(item.type, np.float32)
            feed[item.name] = column.astype(str).astype(object) if dtype is object else column.astype(dtype)
        return feed
    array = data.to_numpy() if _frame_like(data) else np.asarray(data)
    return {inputs[0].name: array.astype(types.get(inputs[0].type, np.float32))}


# -- converters --------------------------------------------------------------------------------


def _is_sklearn(model: Any) -> bool:
    return type(model).__module__.split(".")[0] == "sklearn"


def _kind(model: Any) -> str:
    if _is_sklearn(model):
        from sklearn.base import is_classifier, is_regressor

        return "classifier" if is_classifier(model) else "regressor" if is_regressor(model) else "other"
    name = type(model).__name__.lower()
    return "classifier" if "classifier" in name else "regressor" if "regressor" in name else "other"


def _convert(model: Any, sample: Any, opset: int | None) -> tuple[Any, str]:
    """The ONNX ModelProto of ``model`` and the converter's name.

    Raises:
        ConversionError: no converter for the type, or one pipeline step cannot be converted.
    """
    module = type(model).__module__.split(".")[0]
    if _is_sklearn(model):
        try:
            import skl2onnx
        except ImportError as exc:
            raise ConversionError(f"Converting scikit-learn models needs skl2onnx ({exc}): pip install skl2onnx, "
                                  "or mlops-magics[onnx].") from None
        import numpy as np

        if _frame_like(sample):
            sample = sample.copy()
            for column in sample.columns:
                if sample[column].dtype.kind == "f":
                    sample[column] = sample[column].astype(np.float32)
                elif sample[column].dtype.kind == "O":
                    sample[column] = sample[column].astype(str)
        else:
            sample = np.asarray(sample, dtype=np.float32)
        options = {id(model): {"zipmap": False}} if _kind(model) == "classifier" else None
        try:
            proto = skl2onnx.to_onnx(model, sample, target_opset=opset, options=options)
        except Exception as exc:  # noqa: BLE001 - skl2onnx raises any type for what it cannot convert
            # A frame gives one input per column, which a column transformer needs; a model fitted on numeric
            # columns whose first step takes one matrix (a plain estimator, a scaler) takes them as one tensor.
            if not (_frame_like(sample) and all(kind in "fiub" for kind in sample.dtypes.map(lambda d: d.kind))):
                raise ConversionError(_unsupported(model, exc)) from None
            try:
                proto = skl2onnx.to_onnx(model, sample.to_numpy(np.float32), target_opset=opset, options=options)
            except Exception:  # noqa: BLE001
                raise ConversionError(_unsupported(model, exc)) from None
        return proto, f"skl2onnx {skl2onnx.__version__}"
    if module in ("lightgbm", "xgboost"):
        try:
            import onnxmltools
            from onnxmltools.convert.common.data_types import FloatTensorType
        except ImportError as exc:
            raise ConversionError(f"Converting {module} models needs onnxmltools ({exc}): pip install onnxmltools."
                                  ) from None
        import numpy as np

        width = np.asarray(sample).shape[1]
        types = [("X", FloatTensorType([None, width]))]
        try:
            if module == "lightgbm":  # probabilities as a tensor, not a list of dicts
                proto = onnxmltools.convert_lightgbm(model, initial_types=types, target_opset=opset,
                                                     zipmap=_kind(model) != "classifier")
            else:
                proto = onnxmltools.convert_xgboost(model, initial_types=types, target_opset=opset)
            return proto, f"onnxmltools {onnxmltools.__version__}"
        except Exception as exc:  # noqa: BLE001 - converters raise any type
            raise ConversionError(f"onnxmltools could not convert the {type(model).__name__}: {exc}") from None
    if module == "torch" or any(c.__module__.startswith("torch.nn") for c in type(model).__mro__):
        return _convert_torch(model, sample, opset)
    raise ConversionError(
        f"No ONNX converter for {type(model).__module__}.{type(model).__name__}. Supported: scikit-learn estimators "
        "and pipelines (skl2onnx), LightGBM and XGBoost (onnxmltools), PyTorch modules (torch.onnx).")


def _unsupported(model: Any, exc: Exception) -> str:
    """Name the pipeline step skl2onnx stopped at."""
    text = str(exc)
    steps = getattr(model, "steps", None) or []
    culprit = next((f"step {name!r} ({type(step).__name__})" for name, step in steps
                    if type(step).__name__ in text), None)
    where = culprit or type(model).__name__
    first = text.splitlines()[0][:300].rstrip(".") if text else type(exc).__name__
    return (f"skl2onnx cannot convert {where}: {first}. Supported: the scikit-learn estimators "
            "and transformers skl2onnx lists (https://onnx.ai/sklearn-onnx/supported.html); replace that step, or "
            "register a custom converter with skl2onnx.update_registered_converter.")


def _convert_torch(model: Any, sample: Any, opset: int | None) -> tuple[Any, str]:
    import tempfile
    from pathlib import Path

    import numpy as np
    import onnx
    import torch

    model.eval()
    example = torch.as_tensor(np.asarray(sample, dtype=np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            with warnings.catch_warnings():
                # The TorchScript exporter is deprecated in favour of torch.export's, which needs onnxscript
                # as well; it still exports plain modules exactly, so it stays until onnxscript is common.
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(model, (example,), str(path), input_names=["X"], output_names=["output"],
                                  dynamic_axes={"X": {0: "batch"}, "output": {0: "batch"}},
                                  opset_version=opset or 17, dynamo=False)
        except Exception as exc:  # noqa: BLE001 - the exporter raises any type
            raise ConversionError(f"torch.onnx could not export the {type(model).__name__}: {exc}") from None
        return onnx.load(str(path)), f"torch.onnx {torch.__version__}"


# -- checking and timing ---------------------------------------------------------------------


def _native_outputs(model: Any, data: Any, kind: str) -> tuple[Any, Any]:
    """(labels or values, probabilities or None) from the original model."""
    if hasattr(model, "forward") and not hasattr(model, "predict"):
        import numpy as np
        import torch

        with torch.no_grad():
            return model(torch.as_tensor(np.asarray(data, dtype=np.float32))).numpy(), None
    values = model.predict(data)
    proba = model.predict_proba(data) if kind == "classifier" and hasattr(model, "predict_proba") else None
    return values, proba


def _parity(kind: str, native: tuple[Any, Any], onnx_out: list[Any], quantized: bool) -> Parity:
    import numpy as np

    values, proba = native
    first = np.asarray(onnx_out[0])
    rows = len(first)
    if kind == "classifier":
        labels = np.asarray(values).reshape(-1)
        agreement = float(np.mean(labels == first.reshape(-1)))
        abs_error = None
        if proba is not None and len(onnx_out) > 1:
            abs_error = float(np.max(np.abs(np.asarray(proba) - np.asarray(onnx_out[1])))) if rows else 0.0
        minimum = QUANTIZED_MIN_AGREEMENT if quantized else 1.0
        atol = QUANTIZED_PROBA_ATOL if quantized else PROBA_ATOL
        passed = agreement >= minimum and (abs_error is None or abs_error <= atol)
        worst = tuple({"row": int(i), "original": labels[i].item(), "onnx": first.reshape(-1)[i].item()}
                      for i in np.flatnonzero(labels != first.reshape(-1))[:5])
        return Parity(kind, rows, agreement, abs_error, None, passed,
                      {"min_label_agreement": minimum, "probability_atol": atol}, worst)
    expected = np.asarray(values, dtype=np.float64).reshape(rows, -1)
    got = first.astype(np.float64).reshape(rows, -1)
    diff = np.abs(expected - got)
    rtol = QUANTIZED_RTOL if quantized else RTOL
    atol = ATOL_SCALE * float(np.std(expected) or 1.0)
    passed = bool(np.all(diff <= atol + rtol * np.abs(expected)))
    rel = diff / np.maximum(np.abs(expected), 1e-12)
    order = np.argsort(-diff.max(axis=1))[:5]
    worst = tuple({"row": int(i), "original": expected[i].tolist(), "onnx": got[i].tolist()}
                  for i in order if diff[i].max() > atol + rtol * np.abs(expected[i]).max())
    return Parity(kind, rows, None, float(diff.max()) if rows else 0.0, float(rel.max()) if rows else 0.0, passed,
                  {"rtol": rtol, "atol": atol}, worst)


def _times(fn: Callable[[], Any], budget: float, least: int) -> list[float]:
    fn()  # warm
    times: list[float] = []
    deadline = time.perf_counter() + budget
    while len(times) < least or time.perf_counter() < deadline:
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
        if len(times) >= 20_000:
            break
    return times


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def measure(native: Callable[[Any], Any], onnx_run: Callable[[Any], Any], one: Any, batch: Any, *,
            budget: float = 1.0) -> Speed:
    """Time single rows and a batch through both models, interleaved in this process."""
    single_native = _times(lambda: native(one), budget, 50)
    single_onnx = _times(lambda: onnx_run(one), budget, 50)
    batch_native = _times(lambda: native(batch), budget, 5)
    batch_onnx = _times(lambda: onnx_run(batch), budget, 5)
    rows = len(batch)
    return Speed(
        single_native_median_us=statistics.median(single_native) * 1e6, single_native_p99_us=_p99(single_native) * 1e6,
        single_onnx_median_us=statistics.median(single_onnx) * 1e6, single_onnx_p99_us=_p99(single_onnx) * 1e6,
        batch_rows=rows, batch_native_rows_per_s=rows / statistics.median(batch_native),
        batch_onnx_rows_per_s=rows / statistics.median(batch_onnx))


#: Operators whose weights dynamic quantization turns into int8.
QUANTIZABLE = {"MatMul", "Gemm", "Conv", "Attention", "LSTM", "GRU"}


def quantize_int8(proto: Any) -> Any:
    """Dynamic int8 quantization of the weights of MatMul/Gemm/Conv... nodes.

    Raises:
        ConversionError: the graph has none (tree ensembles and linear ``ai.onnx.ml`` operators stay float).
    """
    import logging
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    found = sorted({node.op_type for node in proto.graph.node})
    if not QUANTIZABLE & set(found):
        raise ConversionError(f"--quantize int8 quantizes the weights of {', '.join(sorted(QUANTIZABLE))} nodes; this "
                              f"model has none ({', '.join(found)}), so there is nothing to quantize.")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime advises pre-processing on the root logger for every model
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source, target = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
            onnx.save(proto, source)
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
            return onnx.load(str(target))
    finally:
        root.setLevel(level)


# -- one conversion ----------------------------------------------------------------------------


def convert_model(model: Any, data: Any, *, source: str, opset: int | None = None, quantize: str | None = None,
                  budget: float = 1.0) -> tuple[Any, OnnxReport]:
    """Convert an in-memory model to ONNX, check its parity on ``data`` and time it beside the original.

    Args:
        model: the original (scikit-learn, LightGBM, XGBoost or PyTorch).
        data: the rows to check parity on and to time.
        source: the original's reference, for the report.
        opset: the ONNX opset (default: the converter's newest supported).
        quantize: ``"int8"`` applies onnxruntime's dynamic quantization (weights of MatMul/Gemm).
        budget: seconds spent timing each of the four measures.

    Returns:
        The ONNX model (a ``ModelProto``) and the report (``registered`` is None: nothing is registered here).

    Raises:
        InvalidInputError: an unknown ``quantize``.
        ConversionError: no converter for the model, or a step that cannot be converted (named).
    """
    if quantize not in (None, "int8"):
        raise InvalidInputError(f"--quantize {quantize!r} is not supported: use int8.")
    kind = _kind(model)
    proto, converter = _convert(model, data, opset)
    if quantize:
        proto = quantize_int8(proto)
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])

    def onnx_run(rows: Any) -> Any:
        return session.run(None, onnx_feed(session, rows))

    parity = _parity(kind, _native_outputs(model, data, kind), onnx_run(data), bool(quantize))
    native_predict = (model.predict if hasattr(model, "predict")
                      else lambda rows: _native_outputs(model, rows, kind))
    speed = measure(native_predict, onnx_run, _rows(data, 1), _rows(data, BATCH_ROWS), budget=budget)
    opset_used = max((op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")), default=0)
    notes = []
    if parity.rows < 20:
        notes.append(f"parity was checked on {parity.rows} rows only: pass --data with more rows for a stronger check")
    if speed.batch_speedup < 1:
        notes.append(f"for batches of {speed.batch_rows} rows the original is faster ({speed.batch_speedup:.2f}x): "
                     "keep the original for batch scoring, the ONNX version for online requests")
    return proto, OnnxReport(source=source, converter=converter, opset=opset_used, quantized=quantize,
                             parity=parity, speed=speed, notes=tuple(notes))

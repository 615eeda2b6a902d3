"""Input/output signatures and input examples inferred from a sample."""

from __future__ import annotations

import math
from typing import Any

from mlops_magics.errors import InvalidInputError

#: Rows of the sample kept as the registered input example.
EXAMPLE_ROWS = 5


def _jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return _jsonable(value.item())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def describe(data: Any) -> dict[str, Any]:
    """The schema of one value: a dataframe's columns, an array's dtype and shape, or its JSON type."""
    pd = _module("pandas")
    np = _module("numpy")
    if pd is not None and isinstance(data, pd.DataFrame):
        return {"type": "dataframe", "columns": [{"name": str(c), "dtype": str(t)} for c, t in data.dtypes.items()]}
    if pd is not None and isinstance(data, pd.Series):
        return {"type": "series", "name": None if data.name is None else str(data.name), "dtype": str(data.dtype)}
    if np is not None and isinstance(data, np.ndarray):
        return {"type": "tensor", "dtype": str(data.dtype), "shape": [-1, *data.shape[1:]]}
    if isinstance(data, (list, tuple)) and np is not None:
        try:
            return describe(np.asarray(data))
        except (ValueError, TypeError):
            pass
    return {"type": type(data).__name__}


def example(data: Any, rows: int = EXAMPLE_ROWS) -> dict[str, Any]:
    """The first ``rows`` rows of ``data`` as JSON, with what is needed to rebuild it."""
    pd = _module("pandas")
    np = _module("numpy")
    if pd is not None and isinstance(data, pd.DataFrame):
        head = data.head(rows)
        return {"type": "dataframe", "columns": [str(c) for c in head.columns],
                "data": _jsonable(head.to_numpy().tolist())}
    if pd is not None and isinstance(data, pd.Series):
        return {"type": "series", "data": _jsonable(data.head(rows).tolist())}
    if np is not None and isinstance(data, np.ndarray):
        return {"type": "ndarray", "dtype": str(data.dtype), "data": _jsonable(data[:rows].tolist())}
    if isinstance(data, (list, tuple)):
        return {"type": "list", "data": _jsonable(list(data[:rows]))}
    return {"type": "json", "data": _jsonable(data)}


def infer(model: Any, sample: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (signature, input example) for ``sample``; outputs come from ``model.predict``.

    Raises:
        InvalidInputError: the model has ``predict`` and it fails on the sample.
    """
    signature: dict[str, Any] = {"inputs": describe(sample)}
    predict = getattr(model, "predict", None)
    if callable(predict):
        head = sample.head(EXAMPLE_ROWS) if hasattr(sample, "head") else sample[:EXAMPLE_ROWS]
        try:
            output = predict(head)
        except Exception as exc:
            raise InvalidInputError(
                f"The model's predict() failed on the sample ({type(exc).__name__}: {exc}). "
                "Give a sample the model accepts, e.g. --sample X_test[:5]."
            ) from exc
        signature["outputs"] = describe(output)
    return signature, example(sample)


def rebuild(stored: dict[str, Any]) -> Any:
    """Turn a stored input example back into the value it was taken from."""
    kind = stored.get("type")
    if kind == "dataframe":
        import pandas as pd

        return pd.DataFrame(stored["data"], columns=stored["columns"])
    if kind == "ndarray":
        import numpy as np

        return np.asarray(stored["data"], dtype=stored.get("dtype"))
    return stored.get("data")


def _module(name: str) -> Any:
    """The module if it is already imported (a sample of its type cannot exist otherwise)."""
    import sys

    return sys.modules.get(name)

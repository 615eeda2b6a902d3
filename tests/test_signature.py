"""Signatures and input examples from a sample."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_magics import signature
from mlops_magics.errors import InvalidInputError


def test_dataframe_sample_records_columns_and_rebuilds_equal() -> None:
    df = pd.DataFrame({"age": [30, 40, 50], "city": ["a", "b", "c"], "score": [0.5, np.nan, 1.5]})
    sig, example = signature.infer(object(), df)
    assert sig == {"inputs": {"type": "dataframe", "columns": [
        {"name": "age", "dtype": "int64"}, {"name": "city", "dtype": str(df.dtypes["city"])},
        {"name": "score", "dtype": "float64"}]}}
    rebuilt = signature.rebuild(example)
    assert list(rebuilt.columns) == ["age", "city", "score"]
    assert rebuilt["age"].tolist() == [30, 40, 50] and rebuilt["score"].isna().tolist() == [False, True, False]


def test_array_sample_keeps_at_most_five_rows_and_the_dtype(iris_lr: Any, iris: Any) -> None:
    X, _ = iris
    sig, example = signature.infer(iris_lr, X[:20])
    assert sig["inputs"]["shape"] == [-1, 4] and sig["outputs"] == {"type": "tensor", "dtype": "int64", "shape": [-1]}
    rebuilt = signature.rebuild(example)
    assert rebuilt.shape == (5, 4) and rebuilt.dtype == np.float64
    np.testing.assert_array_equal(rebuilt, X[:5])


def test_a_list_sample_is_described_as_an_array() -> None:
    sig, example = signature.infer(object(), [[1, 2], [3, 4]])
    assert sig["inputs"] == {"type": "tensor", "dtype": "int64", "shape": [-1, 2]}
    assert signature.rebuild(example) == [[1, 2], [3, 4]]


def test_a_sample_the_model_rejects_is_reported(iris_lr: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"predict\(\) failed on the sample \(ValueError"):
        signature.infer(iris_lr, np.ones((2, 7)))

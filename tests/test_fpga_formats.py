"""Number formats of the FPGA engine: block rounding checked against hand-computed cases and the OCP MX rules."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from mlops_magics.errors import InvalidInputError
from mlops_magics.fpga.formats import FORMATS, fake_quantize, get_format, quantize


def test_mxfp8_scale_is_floor_log2_of_the_block_max_minus_emax_elem_and_elements_round_to_nearest_even() -> None:
    # max |v| = 7: floor(log2 7) = 2, E4M3's emax_elem = 8, so X = 2^-6 and v / X = 64, 192, 6.4, -448
    q = quantize([1.0, 3.0, 0.1, -7.0], "mxfp8")
    assert q.scale_exponents.tolist() == [-6.0]
    # 6.4 lies between the E4M3 neighbours 6.0 and 6.5: nearest is 6.5, so 0.1 -> 6.5 / 64
    assert q.values.tolist() == [1.0, 3.0, 6.5 / 64, -7.0]
    assert q.values.dtype == np.float32


def test_a_tie_goes_to_the_even_element() -> None:
    # 100 in a block whose max is 100: X = 2^(6 - 8), v / X = 400, halfway between E4M3's 384 (even) and 416
    assert quantize([100.0], "mxfp8").values.tolist() == [96.0]
    # E2M1 values 0, .5, 1, 1.5, 2, 3, 4, 6; block max 6 gives X = 1; 5 ties 4/6 -> 4, 2.5 ties 2/3 -> 2, .25 -> 0
    assert quantize([6.0, 5.0, 2.5, 0.25, 0.75], "mxfp4").values.tolist() == [6.0, 4.0, 2.0, 0.0, 1.0]


def test_elements_beyond_the_largest_normal_saturate() -> None:
    # max 7: floor(log2 7) = 2 = E2M1's emax_elem, X = 1, and 7 > 6 = E2M1's largest: saturates to 6 (never NaN)
    assert quantize([7.0, -7.0, 1.0], "mxfp4").values.tolist() == [6.0, -6.0, 1.0]
    # MXINT8: 1.99 has floor(log2) 0, X = 1, and 1.99 > 127/64: saturates; 0.3 * 64 = 19.2 -> 19; ties to even
    q = quantize([1.99, 0.3, 1 / 128, 3 / 128], "mxint8")
    assert (q.values * 64).tolist() == [127.0, 19.0, 0.0, 2.0]
    # E5M2 saturates too (ml_dtypes alone would give inf): 57344 * 1.2 in a block scaled by 2^(16 - 15)
    assert quantize([-65000.0, 1.0], "mxfp8_e5m2").values[0] == -57344.0


def test_zeros_and_an_all_zero_block() -> None:
    q = quantize(np.zeros(5), "mxfp8")
    assert q.values.tolist() == [0.0] * 5 and q.scale_exponents.tolist() == [-127.0]
    assert quantize([0.0, -0.0, 2.0], "mxfp6").values.tolist() == [0.0, 0.0, 2.0]


def test_nan_or_inf_in_a_block_makes_the_scale_nan_and_only_that_block_nan() -> None:
    x = np.ones(64, np.float32)
    x[3], x[40] = np.nan, np.inf
    q = quantize(x[:32], "mxfp8")
    assert np.isnan(q.values).all() and np.isnan(q.scale_exponents).all()
    x[40] = 1.0
    q = quantize(x, "mxfp8")
    assert np.isnan(q.values[:32]).all() and (q.values[32:] == 1.0).all()
    assert np.isnan(quantize([np.inf, 1.0], "mxfp4").values).all()
    assert np.isnan(quantize([1.0, -np.inf], "msfp9").values).all()


def test_a_block_shorter_than_32_at_the_end_has_its_own_scale() -> None:
    x = np.zeros(40, np.float32)
    x[:32] = 100.0
    x[32:35] = [0.5, 0.25, 0.1]
    q = quantize(x, "mxfp8")
    assert q.scale_exponents.tolist() == [-2.0, -9.0]  # 100: 6 - 8; 0.5: -1 - 8
    # with the first block's scale 0.1 would be 0.1 * 4 = 0.4 -> 0.40625 / 4; with its own: 51.2 -> 52 / 512
    assert q.values[32:35].tolist() == [0.5, 0.25, 52 / 512]
    assert q.bits == 40 * 8 + 2 * 8


def test_blocks_run_along_the_given_axis() -> None:
    w = np.array([[8.0, 0.1], [0.1, 0.1]], np.float32)  # column 0 has max 8, column 1 max 0.1
    along_rows = quantize(w, "mxfp4", axis=0).values
    along_cols = quantize(w, "mxfp4", axis=1).values
    assert along_rows[1, 0] == 0.0 and along_rows[1, 1] == pytest.approx(0.1, rel=0.25)
    assert along_cols[0, 1] == 0.0 and along_cols[1, 0] == pytest.approx(0.1, rel=0.25)


def test_msfp_is_block_floating_point_with_a_5_bit_shared_exponent_and_m_bit_magnitudes() -> None:
    # msfp9 (m = 3): max 7 -> E = 2, step 2^(2 - 2) = 1: magnitudes rint(v) in 0..7
    assert quantize([7.0, 1.1, 0.4, -2.5], "msfp9").values.tolist() == [7.0, 1.0, 0.0, -2.0]
    # msfp8 (m = 2): max 7 -> step 2: 7 / 2 = 3.5 -> 4 saturates at 3 -> 6
    assert quantize([7.0, 2.0], "msfp8").values.tolist() == [6.0, 2.0]
    # 0.3 alone: E = -2, step 2^-4: 4.8 -> 5
    assert quantize([0.3], "msfp9").values.tolist() == [5 / 16]
    # the exponent is clamped to half precision's range: a block of 2^20 saturates at 7 * 2^(15 - 2)
    assert quantize([2.0**20], "msfp9").values.tolist() == [7 * 2.0**13]
    assert get_format("msfp9").block_size == 16


def test_memory_counts_elements_and_one_scale_per_block() -> None:
    assert get_format("mxfp8").bits_per_element == 8.25
    assert get_format("mxfp4").bits_per_element == 4.25
    assert get_format("msfp8").bits_per_element == 3 + 5 / 16
    assert quantize(np.ones((10, 64)), "mxfp8").bits == 640 * 8 + 20 * 8
    assert quantize(np.ones((10, 64)), "fp32").bits == 640 * 32
    assert quantize(np.ones((10, 64)), "msfp9").bytes == (640 * 4 + 40 * 5) / 8


def test_fp32_rounds_nothing_and_bf16_rounds_to_nearest_even() -> None:
    x = np.random.default_rng(0).normal(size=100).astype(np.float32)
    assert np.array_equal(quantize(x, "fp32").values, x)
    assert np.array_equal(quantize(x, "bf16").values, x.astype(ml_dtypes.bfloat16).astype(np.float32))
    assert quantize([1 + 2**-8], "bf16").values.tolist() == [1.0]  # halfway to 1 + 2^-7: ties to even


@pytest.mark.parametrize("name", [n for n in FORMATS if FORMATS[n].family != "scalar"])
def test_every_block_value_is_an_element_times_its_power_of_two_scale(name: str) -> None:
    fmt = get_format(name)
    x = np.random.default_rng(1).normal(scale=3.0, size=(3, 70)).astype(np.float32)
    q = quantize(x, fmt)
    assert np.array_equal(fake_quantize(x, fmt), q.values)
    blocks = math.ceil(70 / fmt.block_size)
    assert q.scale_exponents.shape == (3, blocks)
    for row in range(3):
        for b in range(blocks):
            chunk = q.values[row, b * fmt.block_size:(b + 1) * fmt.block_size]
            elements = chunk / 2.0 ** q.scale_exponents[row, b]
            assert np.abs(elements).max() <= fmt.max_elem
            assert np.array_equal(quantize(chunk, fmt).values, chunk), "a quantized block is a fixed point"
            if fmt.family == "bfp":
                assert np.array_equal(elements, np.rint(elements))
            elif fmt.element != "int8":
                dtype = getattr(ml_dtypes, {"e4m3": "float8_e4m3fn", "e5m2": "float8_e5m2", "e2m3": "float6_e2m3fn",
                                            "e3m2": "float6_e3m2fn", "e2m1": "float4_e2m1fn"}[fmt.element])
                assert np.array_equal(elements.astype(dtype).astype(np.float32), elements)
    assert np.abs(q.values - x).max() < np.abs(x).max()


def test_unknown_format_and_bad_axis_are_refused_with_the_choices() -> None:
    with pytest.raises(InvalidInputError, match=r"Unknown number format 'mxfp3'.*mxfp8.*msfp9"):
        get_format("mxfp3")
    with pytest.raises(InvalidInputError, match="Axis 2 is out of range"):
        quantize(np.ones((2, 3)), "mxfp8", axis=2)
    assert get_format("MS-FP9").name == "msfp9" and get_format("mxfp8_e4m3").name == "mxfp8"
    assert get_format("msfp9").with_block_size(128).block_size == 128
    with pytest.raises(InvalidInputError, match="has no blocks"):
        get_format("fp32").with_block_size(32)

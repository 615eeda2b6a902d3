"""Narrow number formats by name, and fake quantization: float32 values exactly representable in a format.

Three families (every one emulated in numpy; the element types come from ``ml_dtypes``, this module writes only
the block logic):

- scalar formats: ``fp32`` (no rounding), ``bf16`` and ``fp16`` (each value rounded to nearest, ties to even).
- OCP Microscaling (MX) formats, per the *OCP Microscaling Formats (MX) Specification v1.0* (Open Compute
  Project, September 2023; reference implementation: github.com/microsoft/microxcaling, ``mx/mx_ops.py``):
  ``mxfp8`` (E4M3 elements; ``mxfp8_e5m2`` for E5M2), ``mxfp6`` (E2M3; ``mxfp6_e3m2``), ``mxfp4`` (E2M1) and
  ``mxint8`` (8-bit two's complement elements with an implicit scale of 2^-6, range +-127/64). A block is
  k = 32 consecutive values along the given axis (the reduction axis of a dot product), sharing one E8M0
  scale X = 2^(floor(log2(max |v|)) - emax_elem), emax_elem being the exponent of the element type's largest
  normal number (E4M3: 8, E5M2: 15, E2M3: 2, E3M2: 4, E2M1: 2, INT8: 0). Each element is v / X rounded to
  nearest, ties to even, normal values beyond the element's largest magnitude saturate to it (spec section 6.3).
  The scale is clamped to E8M0's range [2^-127, 2^127]. A block holding NaN or +-Inf gets the NaN scale (E8M0
  0xFF), so every element of it decodes to NaN, as the reference implementation does. An all-zero block gets
  the smallest scale and decodes to zeros. A last block shorter than 32 (an axis that is not a multiple of 32)
  is a block of its own, with its own scale.
- Microsoft floating point of Project Brainwave: ``msfp8`` and ``msfp9``, block floating point. Sources: Fowers
  et al., "A Configurable Cloud-Scale DNN Processor for Real-Time AI", ISCA 2018, and Chung et al., "Serving
  DNNs in Real Time at Datacenter Scale with Project Brainwave", IEEE Micro 38(2), 2018 (ms-fp8 and ms-fp9,
  narrow floats with a 5-bit exponent, 2 or 3 mantissa bits, the exponent shared across a block of a vector);
  WikiChip's "microsoft/msfp8" (MSFP8 is half precision with a truncated mantissa); Rouhani et al., "Pushing
  the Limits of Narrow Precision Inferencing at Cloud Scale with Microsoft Floating Point", NeurIPS 2020 (MSFP-N
  counts 1 sign bit + explicit mantissa bits + the shared exponent's bits, blocks of 16). The papers give no
  bit-level encoding, so this module models ms-fp(1 + m + 5) as: blocks of 16 values along the axis, one 5-bit
  shared exponent E = floor(log2(max |v|)) clamped to half precision's exponent range [-14, 15], and per value a
  sign and an m-bit magnitude q (no hidden bit: BFP stores it explicitly), value = +-q * 2^(E - m + 1), q
  rounded to nearest even and saturated at 2^m - 1. msfp8: m = 2, msfp9: m = 3. ``block_size`` is a setting of
  the format (:meth:`NumberFormat.with_block_size`), should the native vector be the block.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

import ml_dtypes
import numpy as np

from mlops_magics.errors import InvalidInputError

Family = Literal["scalar", "mx", "bfp"]
_finfo = cast(Callable[[Any], Any], ml_dtypes.finfo)  # untyped in ml_dtypes

#: The element types of the MX formats, by the name the format table uses.
_ELEMENTS: dict[str, Any] = {
    "e4m3": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2,
    "e2m3": ml_dtypes.float6_e2m3fn,
    "e3m2": ml_dtypes.float6_e3m2fn,
    "e2m1": ml_dtypes.float4_e2m1fn,
}
_SCALAR: dict[str, Any] = {"bf16": ml_dtypes.bfloat16, "fp16": np.float16}

E8M0_MIN_EXPONENT = -127
E8M0_MAX_EXPONENT = 127
MXINT8_MAX = 127 / 64


@dataclass(frozen=True)
class NumberFormat:
    """A number format: how many bits a value takes and how a float32 is rounded to it.

    ``element`` is the element type (``e4m3``, ``int8``, ``int2`` for a 2-bit BFP magnitude ...); ``block_size``
    values share one scale of ``scale_bits`` (1 and 0 for scalar formats); ``emax_elem`` is the exponent of the
    element's largest normal magnitude (MX) or the magnitude bits minus one (BFP).
    """

    name: str
    family: Family
    element: str
    element_bits: int
    block_size: int
    scale_bits: int
    emax_elem: int
    max_elem: float
    description: str

    @property
    def bits_per_element(self) -> float:
        """Storage per value, the shared scale amortized over a full block (MXFP8: 8 + 8/32 = 8.25)."""
        return self.element_bits + (self.scale_bits / self.block_size if self.block_size else 0.0)

    @property
    def is_exact(self) -> bool:
        """True for fp32, which rounds nothing."""
        return self.name == "fp32"

    def memory_bits(self, shape: tuple[int, ...], axis: int = -1) -> int:
        """Bits a tensor of ``shape`` takes, blocked along ``axis``: elements plus one scale per (partial) block."""
        count = math.prod(shape)
        if self.family == "scalar" or not shape:
            return count * self.element_bits
        length = shape[axis]
        blocks = (count // length if length else 0) * math.ceil(length / self.block_size)
        return count * self.element_bits + blocks * self.scale_bits

    def with_block_size(self, block_size: int) -> NumberFormat:
        """The same format with another block size (BFP with the native vector as the block, for instance)."""
        if self.family == "scalar":
            raise InvalidInputError(f"Format {self.name!r} has no blocks; block size applies to MX and msfp formats.")
        if block_size < 1:
            raise InvalidInputError(f"Block size must be >= 1, got {block_size}.")
        return replace(self, block_size=block_size)


def _mx(name: str, element: str, description: str) -> NumberFormat:
    if element == "int8":
        bits, emax, top = 8, 0, MXINT8_MAX
    else:
        info = _finfo(_ELEMENTS[element])
        bits, top = int(info.bits), float(info.max)
        emax = math.frexp(top)[1] - 1
    return NumberFormat(name, "mx", element, bits, 32, 8, emax, top, description)


def _bfp(name: str, mantissa: int, description: str) -> NumberFormat:
    return NumberFormat(name, "bfp", f"int{mantissa}", 1 + mantissa, 16, 5, mantissa - 1, float(2**mantissa - 1),
                        description)


FORMATS: dict[str, NumberFormat] = {
    "fp32": NumberFormat("fp32", "scalar", "fp32", 32, 1, 0, 127, float(np.finfo(np.float32).max),
                         "IEEE single precision: no rounding (the reference)"),
    "bf16": NumberFormat("bf16", "scalar", "bf16", 16, 1, 0, 127, float(_finfo(ml_dtypes.bfloat16).max),
                         "bfloat16: 8-bit exponent, 7-bit mantissa, round to nearest even"),
    "fp16": NumberFormat("fp16", "scalar", "fp16", 16, 1, 0, 15, float(np.finfo(np.float16).max),
                         "IEEE half precision: 5-bit exponent, 10-bit mantissa, round to nearest even"),
    "mxfp8": _mx("mxfp8", "e4m3", "OCP MXFP8: 32 E4M3 elements sharing an E8M0 scale"),
    "mxfp8_e5m2": _mx("mxfp8_e5m2", "e5m2", "OCP MXFP8: 32 E5M2 elements sharing an E8M0 scale"),
    "mxfp6": _mx("mxfp6", "e2m3", "OCP MXFP6: 32 E2M3 elements sharing an E8M0 scale"),
    "mxfp6_e3m2": _mx("mxfp6_e3m2", "e3m2", "OCP MXFP6: 32 E3M2 elements sharing an E8M0 scale"),
    "mxfp4": _mx("mxfp4", "e2m1", "OCP MXFP4: 32 E2M1 elements sharing an E8M0 scale"),
    "mxint8": _mx("mxint8", "int8", "OCP MXINT8: 32 8-bit integers (scale 2^-6 implied) sharing an E8M0 scale"),
    "msfp8": _bfp("msfp8", 2, "Brainwave ms-fp8: sign + 2-bit magnitude per value, 5-bit exponent shared by 16"),
    "msfp9": _bfp("msfp9", 3, "Brainwave ms-fp9: sign + 3-bit magnitude per value, 5-bit exponent shared by 16"),
}
#: Other spellings accepted by :func:`get_format`.
ALIASES = {"mxfp8_e4m3": "mxfp8", "mxfp6_e2m3": "mxfp6", "mxfp4_e2m1": "mxfp4", "ms-fp8": "msfp8",
           "ms-fp9": "msfp9", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}

BFP_MIN_EXPONENT = -14  # half precision's normal exponent range: the 5-bit exponent of ms-fp
BFP_MAX_EXPONENT = 15


def get_format(name: str | NumberFormat) -> NumberFormat:
    """The number format of a name (``mxfp8``, ``msfp9``, ``fp32`` ...), or the format itself.

    Raises:
        InvalidInputError: the name is not a known format; the message lists the known ones.
    """
    if isinstance(name, NumberFormat):
        return name
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in FORMATS:
        raise InvalidInputError(f"Unknown number format {name!r}. Known formats: {', '.join(FORMATS)}.")
    return FORMATS[key]


@dataclass(frozen=True)
class Quantized:
    """A tensor rounded to a format: its float32 values, and what it takes in memory in that format.

    ``scale_exponents`` holds each block's shared exponent X (value = element * 2^X; NaN for a block whose scale
    is NaN), shaped like the values with the blocked axis last and counted in blocks; empty for scalar formats.
    """

    values: np.ndarray
    format: NumberFormat
    bits: int
    scale_exponents: np.ndarray

    @property
    def bytes(self) -> float:
        """Memory in bytes (bits / 8)."""
        return self.bits / 8

    @property
    def bits_per_element(self) -> float:
        """Bits per value of this tensor, partial blocks' scales included."""
        return self.bits / self.values.size if self.values.size else 0.0


def quantize(array: Any, format: str | NumberFormat, axis: int = -1) -> Quantized:
    """Round ``array`` to ``format``, blocks along ``axis``: exactly representable float32 values and the memory.

    Args:
        array: values (any shape; converted to float32).
        format: a format name (:data:`FORMATS`) or a :class:`NumberFormat`.
        axis: the axis blocks run along (the reduction axis of the dot product the tensor enters).

    Returns:
        A :class:`Quantized` (values, bits taken in the format, each block's scale exponent).

    Raises:
        InvalidInputError: unknown format, or ``axis`` out of range.
    """
    fmt = get_format(format)
    values = np.asarray(array, dtype=np.float32)
    axis = _check_axis(values, axis)
    if fmt.family == "scalar":
        return Quantized(_round_scalar(values, fmt), fmt, fmt.memory_bits(values.shape, axis), np.empty(0))
    out, exponents = _round_blocks(values, fmt, axis)
    return Quantized(out, fmt, fmt.memory_bits(values.shape, axis), exponents)


def fake_quantize(array: Any, format: str | NumberFormat, axis: int = -1) -> np.ndarray:
    """The values of :func:`quantize` only (the emulator's per-request path)."""
    fmt = get_format(format)
    values = np.asarray(array, dtype=np.float32)
    if fmt.family == "scalar":
        return _round_scalar(values, fmt)
    return _round_blocks(values, fmt, _check_axis(values, axis))[0]


def _check_axis(values: np.ndarray, axis: int) -> int:
    if values.ndim == 0:
        return 0
    if not -values.ndim <= axis < values.ndim:
        raise InvalidInputError(f"Axis {axis} is out of range for an array of shape {values.shape}.")
    return axis % values.ndim


def _round_scalar(values: np.ndarray, fmt: NumberFormat) -> np.ndarray:
    if fmt.is_exact:
        return np.array(values, copy=True)
    rounded: np.ndarray = values.astype(_SCALAR[fmt.element]).astype(np.float32)
    return rounded


def _round_blocks(values: np.ndarray, fmt: NumberFormat, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Block rounding: values moved so the blocked axis is last, padded with zeros to whole blocks."""
    if values.ndim == 0:
        values = values.reshape(1)
        out, exps = _round_blocks(values, fmt, 0)
        return out.reshape(()), exps
    moved = np.moveaxis(values, axis, -1)
    length, k = moved.shape[-1], fmt.block_size
    blocks = -(-length // k) if length else 0
    padded = moved
    if blocks * k != length:
        padded = np.zeros((*moved.shape[:-1], blocks * k), np.float32)
        padded[..., :length] = moved
    grouped = padded.reshape(*moved.shape[:-1], blocks, k)
    with np.errstate(invalid="ignore"):
        amax = np.max(np.abs(grouped), axis=-1, keepdims=True) if k else grouped
    special = ~np.isfinite(amax)  # NaN or Inf in the block: the NaN scale
    zero = amax == 0
    # floor(log2(amax)) exactly: frexp gives amax = m * 2^e with m in [0.5, 1)
    top = np.frexp(np.where(special | zero, np.float32(1), amax))[1].astype(np.int32) - 1
    if fmt.family == "mx":
        exponent = np.clip(top - fmt.emax_elem, E8M0_MIN_EXPONENT, E8M0_MAX_EXPONENT)
        exponent = np.where(zero, E8M0_MIN_EXPONENT, exponent)
    else:
        exponent = np.clip(top, BFP_MIN_EXPONENT, BFP_MAX_EXPONENT) - fmt.emax_elem
    scaled = np.ldexp(grouped, -exponent).astype(np.float32)
    limit = np.float32(fmt.max_elem)
    np.clip(scaled, -limit, limit, out=scaled)  # saturation of normal values (NaN passes through)
    if fmt.family == "bfp":
        elements = np.rint(scaled)
    elif fmt.element == "int8":
        elements = np.rint(scaled * 64) / 64
    else:
        elements = scaled.astype(_ELEMENTS[fmt.element]).astype(np.float32)
    result = np.ldexp(elements, exponent).astype(np.float32)
    if special.any():
        result = np.where(special, np.float32(np.nan), result)
    result = result.reshape(padded.shape)[..., :length]
    exps = np.where(special, np.nan, exponent.astype(np.float32))[..., 0]
    return np.ascontiguousarray(np.moveaxis(result, -1, axis)), exps

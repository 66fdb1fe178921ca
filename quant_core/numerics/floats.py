"""Exact emulation of FP16, BF16 and FP8 (E4M3FN, E5M2) in float32: round to nearest even, saturate.

A float format with `mantissa_bits` m and smallest normal exponent `min_exponent` emin has, around
any x, the spacing (ulp) 2^(max(floor(log2|x|), emin) - m): subnormals share the spacing of the
smallest normal binade. Rounding x to the format is therefore
    y = rint(x / ulp) * ulp
where both the division and the product by a power of two are exact in float32, and np.rint rounds
half to even. A carry into the next binade (e.g. 15.5 -> 16 in E4M3FN) is still exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quant_core.config import TensorQuant
from quant_core.errors import QuantLabError
from quant_core.numerics.formats import FormatKind, Granularity, NumberFormat
from quant_core.numerics.quantize import QuantizedTensor, broadcastable, tensor_range


@dataclass(frozen=True)
class FloatSpec:
    """The shape of a binary float format: mantissa bits, smallest normal exponent, largest finite value."""

    mantissa_bits: int
    min_exponent: int
    max_finite: float
    has_inf: bool


FLOAT_SPECS: dict[FormatKind, FloatSpec] = {
    FormatKind.FP16: FloatSpec(10, -14, 65504.0, True),
    FormatKind.BF16: FloatSpec(7, -126, float((2 - 2**-7) * 2.0**127), True),
    FormatKind.FP8_E4M3FN: FloatSpec(3, -6, 448.0, False),
    FormatKind.FP8_E5M2: FloatSpec(2, -14, 57344.0, True),
}


def float_spec(fmt: NumberFormat) -> FloatSpec:
    """Return the FloatSpec of a float format (fp16, bf16, fp8_e4m3fn, fp8_e5m2)."""
    if fmt.kind not in FLOAT_SPECS:
        raise QuantLabError(f"{fmt.name} is not a float format; expected one of "
                            f"{', '.join(k.value for k in FLOAT_SPECS)}")
    return FLOAT_SPECS[fmt.kind]


def round_to_float_format(x, fmt: NumberFormat, *, saturate: bool = True, name: str = "tensor") -> np.ndarray:
    """Return x rounded to `fmt` (round half to even), as float32 holding only representable values.

    saturate=True (ONNX Cast's default for FP8): magnitudes beyond the largest finite value become
    +-max_finite. saturate=False: they overflow to +-Inf (NaN for E4M3FN, which has no Inf), as an
    IEEE cast does (numpy's float16 cast, ONNX Cast to FLOAT16/BFLOAT16).

    Notes
    -----
    NaN or Inf in x raises QuantLabError naming the tensor. The sign of zero is kept.
    """
    x = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise QuantLabError(f"tensor {name!r} contains {bad} NaN or Inf value(s) out of {x.size}; "
                            "quantization needs finite values")
    return round_to_spec(x, float_spec(fmt), saturate=saturate)


def round_to_spec(x: np.ndarray, spec: FloatSpec, *, saturate: bool = True) -> np.ndarray:
    """Return finite float32 `x` rounded to the float format `spec` describes (the module's formula);
    also the element grids of the MX block formats (quant_core/numerics/mx.py)."""
    x = np.asarray(x, dtype=np.float32)
    max_finite = np.float32(spec.max_finite)
    a = np.clip(x, -max_finite, max_finite) if saturate else x
    _, exponent = np.frexp(a)  # a = f * 2^exponent with 0.5 <= |f| < 1, so floor(log2|a|) = exponent - 1
    ulp = np.ldexp(np.float32(1.0), np.maximum(exponent - 1, spec.min_exponent) - spec.mantissa_bits)
    ulp = ulp.astype(np.float32, copy=False)
    with np.errstate(over="ignore"):
        y = np.rint(a / ulp) * ulp
    if not saturate:
        overflow = np.abs(y) > max_finite
        if overflow.any():
            y = np.where(overflow, np.copysign(np.float32(np.inf if spec.has_inf else np.nan), x), y)
    return y.astype(np.float32, copy=False)


def fp8_scale(amax, fmt: NumberFormat) -> np.ndarray:
    """Return the float32 scale amax / max_finite that maps [-amax, amax] onto fmt's finite range.

    Notes
    -----
    amax == 0 (an all-zero tensor or channel), or a scale below float32 tiny, gives scale 1.
    """
    spec = float_spec(fmt)
    scale = (np.asarray(amax, dtype=np.float64) / spec.max_finite).astype(np.float32)
    return np.where(scale < np.finfo(np.float32).tiny, np.float32(1.0), scale).astype(np.float32)


def quantize_float_tensor(x, tq: TensorQuant, *, name: str = "tensor"):
    """Quantize x to tq's float format; FP8 is scaled (x / scale -> fp8 -> * scale) at tq's granularity.

    FP16 and BF16 are plain casts (no scale). FP8 uses scale = amax / max_finite per tensor, per
    channel along tq.axis, or per block of tq.block_size along tq.axis.
    """
    fmt = tq.format
    if fmt.kind in (FormatKind.FP16, FormatKind.BF16):
        values = round_to_float_format(x, fmt, name=name)
        return QuantizedTensor(values, None, None, None, None, fmt)
    lo, hi = tensor_range(x, granularity=tq.granularity, axis=tq.axis, block_size=tq.block_size, name=name)
    scale = fp8_scale(np.maximum(np.abs(lo), np.abs(hi)), fmt)
    x = np.asarray(x, dtype=np.float32)
    axis = None if tq.granularity == Granularity.PER_TENSOR else tq.axis % x.ndim
    block_size = tq.block_size if tq.granularity == Granularity.PER_GROUP else None
    scale_b = broadcastable(scale, x.shape, axis, block_size)
    values = round_to_float_format(x / scale_b, fmt, name=name) * scale_b
    return QuantizedTensor(values.astype(np.float32, copy=False), scale, None, None, None, fmt, axis, block_size)

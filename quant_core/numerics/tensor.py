"""One entry to quantize a tensor in any of the lab's formats: `quantize_tensor` and `fake_quantize_tensor`.

The dispatch over format kinds lives here, above the modules that implement each kind, so that none of
them imports another in a circle: integer formats (`quantize.py`: range -> qparams -> quantize ->
dequantize), float formats (`floats.py`), MX / NVFP4 blocks (`mx.py`), binary / ternary / k-means
(`extreme.py`); the bare-shape axis rule comes from `axes.py`.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from quant_core.config import TensorQuant
from quant_core.numerics.axes import resolve, shape_axes
from quant_core.numerics.extreme import binarize, kmeans_codebook, ternarize
from quant_core.numerics.floats import quantize_float_tensor
from quant_core.numerics.formats import FormatKind, Granularity
from quant_core.numerics.mx import quantize_block_tensor
from quant_core.numerics.qparams import qparams_from_range
from quant_core.numerics.quantize import (QuantizedTensor, as_float32, check_layout, dequantize, fake_quantize,
                                          quantize, refuse_non_finite, scale_layout, tensor_range)


def quantize_tensor(x, tq: TensorQuant, *, name: str = "tensor", lo=None, hi=None) -> QuantizedTensor:
    """Quantize a tensor in the format, scheme and granularity of `tq`; the single entry for all formats.

    Integer formats: range (min-max at tq's granularity, or the caller's `lo`, `hi` from a range
    estimator) -> qparams_from_range -> quantize -> dequantize. Float formats (fp16, bf16, fp8) use
    floats.round_to_float_format, fp8 with a scale amax / max_finite per tensor or per channel.
    binary / ternary / kmeans use extreme.py. fp32 returns the values unchanged (as float32).

    Notes
    -----
    `lo`, `hi` (shaped like `tensor_range`'s result) apply to integer formats only; float formats take
    amax from the tensor, and binary / ternary (per output channel: one scale per index of tq.axis, or
    of axis 0 for axis=None, whatever the granularity) and kmeans (per tensor) have their own
    statistics. Per-channel on a 1-D tensor or an axis out of range raises ConfigError naming the
    tensor; NaN or Inf raises QuantLabError naming the tensor.
    """
    fmt = tq.format
    x = as_float32(x, name)
    if fmt.kind in (FormatKind.BINARY, FormatKind.TERNARY):
        # One scale per output channel whatever the granularity: along tq.axis, or for axis=None the
        # bare-shape rule of quant_core.numerics.axes (axis 0). Callers that know the layer pass its resolved
        # channel axis (a MatMul weight (K, N): axis 1).
        axis = shape_axes(x.shape).channel_axis if tq.axis is None else tq.axis
        quantizer = binarize if fmt.kind == FormatKind.BINARY else ternarize
        return quantizer(x, axis=axis, name=name)
    if tq.axis is None and tq.granularity != Granularity.PER_TENSOR:
        # "The layer's natural axis" without a layer: the bare-shape rule of quant_core.numerics.axes (output
        # channels on axis 0; groups along the rest of the weight, flattened). Callers that know the
        # layer resolve the axis themselves (axes.resolve) and pass the view to quantize.
        layout = resolve(tq, shape_axes(x.shape))
        result = quantize_tensor(x.reshape(layout.shape), layout.tq, name=name, lo=lo, hi=hi)
        codes = None if result.codes is None else result.codes.reshape(x.shape)
        return replace(result, values=result.values.reshape(x.shape), codes=codes)
    if fmt.is_identity:
        refuse_non_finite(x, name)
        return QuantizedTensor(x.copy(), None, None, None, None, fmt)
    if fmt.is_integer:
        scale, zero_point, axis, block_size = _integer_grid(x, tq, lo, hi, name)
        codes = quantize(x, scale, zero_point, fmt, axis=axis, block_size=block_size, name=name)
        values = dequantize(codes, scale, zero_point, axis=axis, block_size=block_size, name=name)
        return QuantizedTensor(values, scale, zero_point, codes, None, fmt, axis, block_size)
    if fmt.is_block:  # MX / NVFP4: blocks along the resolved axis (tq's block size is the format's)
        return quantize_block_tensor(x, tq, name=name)
    if fmt.is_float:
        return quantize_float_tensor(x, tq, name=name)
    return kmeans_codebook(x, fmt.bits, name=name)


def _integer_grid(x: np.ndarray, tq: TensorQuant, lo, hi, name: str):
    """(scale, zero_point, axis, block_size) of an integer `tq` for x: its range (min-max, or the
    caller's lo / hi) through qparams_from_range."""
    if lo is None or hi is None:
        lo, hi = tensor_range(x, granularity=tq.granularity, axis=tq.axis, block_size=tq.block_size, name=name)
    else:
        check_layout(x, tq.granularity, tq.axis, name)
    axis, block_size = scale_layout(tq, x.ndim)
    scale, zero_point = qparams_from_range(lo, hi, tq.format, symmetric=tq.symmetric)
    return scale, zero_point, axis, block_size


def fake_quantize_tensor(x, tq: TensorQuant, *, name: str = "tensor", lo=None, hi=None) -> np.ndarray:
    """Return `quantize_tensor(x, tq, ...).values` without the codes: what a simulation feeds.

    Integer formats with a concrete axis take one `fake_quantize` pass (dequantize(quantize(x)) bit
    for bit) instead of quantize, then dequantize: a third of the time on a layer's weight, which
    counts when every new config quantizes every weight (the what-if engine). Other formats, and
    axis=None, are quantize_tensor's own values.
    """
    fmt = tq.format
    if not fmt.is_integer or (tq.axis is None and tq.granularity != Granularity.PER_TENSOR):
        return quantize_tensor(x, tq, name=name, lo=lo, hi=hi).values
    x = as_float32(x, name)
    scale, zero_point, axis, block_size = _integer_grid(x, tq, lo, hi, name)
    return fake_quantize(x, scale, zero_point, fmt, axis=axis, block_size=block_size, name=name)

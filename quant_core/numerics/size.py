"""Storage size of quantized weights, counting everything a deployed model has to store.

What is counted for a weight of N parameters (N = product of the shape):

    format              per value     per scale (S scales)               per tensor
    fp32 / None         32            -                                  -
    fp16, bf16          16            -                                  -
    int<b>, uint<b>     b             32 (fp32 scale) + b (zero point)   -
    fp8 (e4m3fn, e5m2)  8             32 (fp32 scale) + 8 (zero point)   -
    binary, ternary     1, 2          32 (fp32 scale per output channel) -
    kmeans<b>           b             -                                  2^b x 32 (fp32 codebook)
    mxfp8/6/4, mxint8   8, 6, 4, 8    8 (E8M0) per block of 32           -
    nvfp4               4             8 (FP8 E4M3) per block of 16       32 (fp32 tensor scale)

S = 1 per tensor, shape[axis] per channel, and (N / shape[axis]) x ceil(shape[axis] / block_size)
per group (a block larger than its axis is one block per row); binary and ternary always have one
scale per output channel (axis 0; a tensor of fewer than 2 dimensions is one channel), as
extreme.py computes them.

Zero points are counted for every scale, symmetric or not: onnxruntime's QDQ models store a
zero-point tensor of the quantized type next to each scale even when it holds only zeros
(symmetric schemes), so that is what the exported file costs. Values are counted bit-packed
(b bits each); onnxruntime packs int4/uint4 two per byte, and widths that are no ONNX type
(int3, int5, ...) are counted as if packed too. Bytes are ceil(total bits / 8) per tensor.

`axis=None` is the layer's natural axis: callers that know the layer pass the shape and TensorQuant
of `axes.resolve` (the Evaluator does). A bare shape is read as `axes.shape_axes` does: output
channels first (per-channel axis 0), the rest flattened for per-group blocks.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from quant_core.numerics.axes import resolve, shape_axes
from quant_core.config import TensorQuant
from quant_core.errors import ConfigError, QuantLabError
from quant_core.numerics.formats import FormatKind, Granularity

FLOAT32_BITS = 32


@dataclass(frozen=True)
class TensorSize:
    """The bits a quantized tensor takes, split by what they store."""

    parameters: int
    value_bits: int
    scale_bits: int = 0
    zero_point_bits: int = 0
    codebook_bits: int = 0

    @property
    def total_bits(self) -> int:
        return self.value_bits + self.scale_bits + self.zero_point_bits + self.codebook_bits

    @property
    def bits_per_parameter(self) -> float:
        return self.total_bits / self.parameters

    @property
    def bytes(self) -> int:
        return -(-self.total_bits // 8)


def _checked_shape(shape) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise QuantLabError(f"a weight shape must be a sequence of integers, got {shape!r}") from None
    if any(d < 1 for d in dims) or any(int(d) != d for d in shape):
        raise QuantLabError(f"a weight shape needs positive integer dimensions, got {tuple(shape)}")
    return dims


def _scale_count(shape: tuple[int, ...], tq: TensorQuant) -> int:
    """Return how many scales tq's granularity gives a tensor of `shape`."""
    kind = tq.format.kind
    if kind in (FormatKind.BINARY, FormatKind.TERNARY):
        # One scale per output channel (extreme.py): along tq.axis, or axis 0 when none is resolved.
        if len(shape) < 2:
            return 1
        return shape[0 if tq.axis is None else tq.axis % len(shape)]
    if tq.granularity == Granularity.PER_TENSOR:
        return 1
    if tq.axis is None:
        layout = resolve(tq, shape_axes(shape))
        shape, tq = layout.shape, layout.tq
    if not -len(shape) <= tq.axis < len(shape) or not shape:
        raise ConfigError(f"axis {tq.axis} is out of range for a weight of shape {shape}")
    length = shape[tq.axis]
    if tq.granularity == Granularity.PER_CHANNEL:
        if len(shape) < 2:
            raise ConfigError(f"per-channel quantization needs at least 2 dimensions, got shape {shape}; "
                              "use per-tensor for it")
        return length
    return math.prod(shape) // length * -(-length // tq.block_size)


def tensor_size(shape, tq: TensorQuant | None) -> TensorSize:
    """Return the bits of a weight of `shape` stored as `tq` (None: float32), split by kind."""
    dims = _checked_shape(shape)
    parameters = math.prod(dims)
    if tq is None or tq.format.is_identity:
        return TensorSize(parameters, parameters * FLOAT32_BITS)
    fmt = tq.format
    values = parameters * fmt.bits
    if fmt.kind in (FormatKind.FP16, FormatKind.BF16):
        return TensorSize(parameters, values)
    if fmt.kind == FormatKind.KMEANS:
        return TensorSize(parameters, values, codebook_bits=2**fmt.bits * FLOAT32_BITS)
    if fmt.is_block:  # an 8-bit scale per block (E8M0, NVFP4's E4M3); NVFP4 also one FP32 per tensor
        per_tensor = FLOAT32_BITS if fmt.kind == FormatKind.NVFP4 else 0
        return TensorSize(parameters, values, _scale_count(dims, tq) * 8 + per_tensor)
    scales = _scale_count(dims, tq)
    zero_point_bits = scales * fmt.bits if (fmt.is_integer or fmt.is_float) else 0
    return TensorSize(parameters, values, scales * FLOAT32_BITS, zero_point_bits)


def bits_per_parameter(shape, tq: TensorQuant | None) -> float:
    """Return total bits / parameters for a weight of `shape` stored as `tq`, overheads included."""
    return tensor_size(shape, tq).bits_per_parameter


def tensor_bytes(shape, tq: TensorQuant | None) -> int:
    """Return the bytes of a weight of `shape` stored as `tq` (None: float32): ceil(bits / 8)."""
    return tensor_size(shape, tq).bytes


def model_bytes(weights: Iterable[tuple[tuple[int, ...], TensorQuant | None]], other_float_params: int = 0) -> int:
    """Return the bytes of a model: each (shape, tq) weight as tensor_bytes, plus 4 bytes per other float."""
    if isinstance(other_float_params, bool) or not isinstance(other_float_params, int) or other_float_params < 0:
        raise QuantLabError(f"other_float_params must be a non-negative integer, got {other_float_params!r}")
    total = 4 * other_float_params
    for entry in weights:
        try:
            shape, tq = entry
        except (TypeError, ValueError):
            raise QuantLabError(f"each weight must be a (shape, TensorQuant or None) pair, got {entry!r}") from None
        total += tensor_bytes(shape, tq)
    return total

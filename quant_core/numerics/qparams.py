"""The one place where a float range becomes integer quantization parameters."""
from __future__ import annotations

import numpy as np

from quant_core.numerics.formats import NumberFormat

_TINY = np.finfo(np.float32).tiny


def qparams_from_range(lo, hi, fmt: NumberFormat, *, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return `(scale, zero_point)` that map the float range [lo, hi] onto `fmt`'s integer grid.

    Follows onnxruntime's `compute_scale_zp` exactly, so what we simulate is what it exports:
        lo, hi  <- min(lo, 0), max(hi, 0)            (zero is always exactly representable)
        symmetric: lo, hi <- -max(|lo|, |hi|), +max(|lo|, |hi|)
        scale = (hi - lo) / (qmax - qmin)             (computed in float64, stored as float32)
        zero_point = round((qmin + qmax) / 2)         if symmetric
                   = round(qmin - lo / scale)         otherwise (round half to even)

    `lo` and `hi` may be scalars or arrays (one entry per channel or group); the results have
    their shape. scale is float32, zero_point int32.

    Notes
    -----
    Degenerate ranges (lo == hi == 0, or a range so small that scale < float32 tiny) give
    scale = 1 and zero_point = 0, as in onnxruntime and PyTorch. A constant non-zero tensor is
    not degenerate: the range is stretched to include 0, so the constant is representable.
    """
    if not fmt.is_integer:
        raise ValueError(f"qparams_from_range needs an integer format, got {fmt.name}")
    lo = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
    if not np.isfinite(hi - lo).all():  # NaN or Inf in either (hi - lo of finite values stays finite in float64)
        raise ValueError("the range [lo, hi] must be finite; got NaN or Inf")
    qmin, qmax = fmt.limits
    if symmetric:
        absmax = np.maximum(np.abs(lo), hi)
        lo, hi = -absmax, absmax
    scale = (hi - lo) / float(qmax - qmin)
    degenerate = scale < _TINY
    if symmetric:
        zero_point = np.full(scale.shape, np.round((qmin + qmax) / 2.0))
    else:
        # A degenerate scale (0) would divide by zero; its zero point is replaced by 0 below anyway.
        zero_point = np.round(qmin - lo / np.where(degenerate, 1.0, scale))
    scale = np.where(degenerate, 1.0, scale).astype(np.float32)
    # A float32 scale can still underflow to a subnormal of the float64 one: guard again.
    scale = np.where(scale < _TINY, np.float32(1.0), scale).astype(np.float32)
    zero_point = np.where(degenerate, 0.0, np.clip(zero_point, qmin, qmax)).astype(np.int32)
    return scale, zero_point

"""Group-wise weight-only quantization of MatMul / Gemm weights: RTN, HQQ, GPTQ and AWQ (pure numpy).

A weight is a MatMul operand W [K, N] (K input features, N outputs: y = x @ W). A *group* is
`block_size` consecutive input rows of one output column, the block of onnxruntime's MatMulNBits.
Integers are unsigned, q in [0, 2**bits - 1], with one scale and one integer zero point per group:

    x ≈ (q - zero_point) * scale

Every method returns a `GroupQuantized` (integers, scales, zero points; AWQ also its per-input-channel
factors), so the same numbers feed the simulation and the MatMulNBits export (`quant_core.export.nbits`).

- `rtn`: round to nearest with onnxruntime's MatMulNBits formula (`blockwise_qparams`); equal to
  onnxruntime's own quantizer (`quantize_matmul_4bits` / `_8bits`) bit for bit (tests/language_model).
- `hqq`: half-quadratic optimisation of the zero point (asymmetric) or scale (symmetric) for an
  lp-norm (p < 1) weight error, no calibration data (Badri & Shaji 2023).
- `gptq`: rounds one input row at a time and spreads its error over the rows not yet rounded,
  weighted by the inverse Hessian H = X^T X of the calibration inputs (Frantar et al. 2023).
- `awq`: scales input channel k by s_k = mean|x_k|^alpha before rounding (and the input by 1/s_k), with
  alpha searched on the calibration inputs' output error (Lin et al. 2024).

Why numpy rather than onnxruntime's quantizer for HQQ, GPTQ and AWQ: onnxruntime's HQQ imports torch,
its GPTQ and RTN-with-calibration go through Intel Neural Compressor, and it has no plain AWQ; none is a
dependency of the lab. Its C++ RTN is used as the oracle of ours.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from quant_core.errors import QuantLabError

BITS = (3, 4, 8)                  # simulated and exported: 4 and 8 (MatMulNBits); 3: simulated only
BLOCK_SIZES = (32, 64, 128)
# onnxruntime 1.31's MatMulNBits takes float zero points at 2 and 4 bits only ("Only 2b and 4b
# quantization is supported for unpacked compute"); 3 bits is simulated only, so it may keep them too.
FLOAT_ZERO_POINT_BITS = (2, 3, 4)


class WeightOnlyMethod(StrEnum):
    RTN = "rtn"
    HQQ = "hqq"
    GPTQ = "gptq"
    AWQ = "awq"


@dataclass(frozen=True, eq=False)
class GroupQuantized:
    """A weight [K, N] quantized in groups of `block_size` input rows per output column.

    q: uint8 [K, N] in [0, 2**bits - 1]; scale: float32 [groups, N]; zero_point: uint8 [groups, N], or
    float32 for HQQ's asymmetric groups (MatMulNBits takes float zero points too, unpacked).
    input_scale: AWQ's per-input-channel factors s [K] (None: 1): the integers quantize W * s[:, None],
    so the layer computes (x / s) @ dequantize(), and `effective_weight()` = dequantize() / s[:, None].
    """

    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    bits: int
    block_size: int
    symmetric: bool
    method: WeightOnlyMethod = WeightOnlyMethod.RTN
    input_scale: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape

    def dequantize(self) -> np.ndarray:
        """Return (q - zero_point) * scale as float32 [K, N] (the scaled weight for AWQ)."""
        k = self.q.shape[0]
        scale = np.repeat(self.scale, self.block_size, axis=0)[:k]
        zero_point = np.repeat(self.zero_point.astype(np.float32), self.block_size, axis=0)[:k]
        return ((self.q.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def effective_weight(self) -> np.ndarray:
        """Return the float weight the quantized layer multiplies x by: dequantize() / input_scale."""
        weight = self.dequantize()
        return weight if self.input_scale is None else (weight / self.input_scale[:, None]).astype(np.float32)

    def storage_bytes(self) -> int:
        """Bytes of the packed integers, float32 scales, packed zero points (and AWQ's float32 factors)."""
        k, n = self.q.shape
        groups = self.scale.shape[0]
        integers = n * groups * math.ceil(self.block_size * self.bits / 8)
        if self.symmetric:
            zero_points = 0
        elif self.zero_point.dtype == np.float32:
            zero_points = 4 * self.zero_point.size
        else:
            zero_points = n * math.ceil(groups * self.bits / 8)
        factors = 0 if self.input_scale is None else 4 * k
        return integers + 4 * self.scale.size + zero_points + factors


# -- shared pieces ----------------------------------------------------------------------------------

def _check(w, bits: int, block_size: int) -> np.ndarray:
    """Validate once at the public entry: a finite 2-D float weight, a supported bit width and block size."""
    w = np.asarray(w)
    if w.ndim != 2 or w.size == 0:
        raise QuantLabError(f"weight-only quantization needs a 2-D MatMul weight [K, N], got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.floating):
        raise QuantLabError(f"weight-only quantization needs a float weight, got {w.dtype}")
    if not np.isfinite(w).all():
        raise QuantLabError("the weight holds NaN or infinite values")
    if bits not in range(2, 9):
        raise QuantLabError(f"bits must be 2 to 8, got {bits}")
    if block_size < 2 or block_size & (block_size - 1):
        raise QuantLabError(f"block_size must be a power of two (16, 32, 64, 128...), got {block_size}")
    return w.astype(np.float32, copy=False)


def _groups(w: np.ndarray, block_size: int) -> np.ndarray:
    """[K, N] → [groups, block_size, N], the last group padded with zeros (as MatMulNBits pads K)."""
    k, n = w.shape
    groups = -(-k // block_size)
    padded = np.zeros((groups * block_size, n), dtype=np.float32)
    padded[:k] = w
    return padded.reshape(groups, block_size, n)


def _ungroup(x: np.ndarray, k: int) -> np.ndarray:
    return x.reshape(-1, x.shape[-1])[:k]


def _safe_reciprocal(scale: np.ndarray) -> np.ndarray:
    """1 / scale where scale != 0, else 0 (an all-zero group: every value rounds to the zero point)."""
    with np.errstate(divide="ignore"):
        return np.where(scale != 0, 1.0 / np.where(scale != 0, scale, 1.0), 0.0).astype(np.float32)


def blockwise_qparams(groups: np.ndarray, bits: int, *, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return (scale, zero_point) per group of `groups` [..., block, N] (reduced over the block axis -2).

    onnxruntime's MatMulNBits formula (MLAS `quantize_matmul_4bits`), which differs from
    `qparams_from_range` in the symmetric case:
        symmetric:  m = the group's value of largest magnitude, scale = m / -2**(bits-1),
                    zero_point = 2**(bits-1) (m lands exactly on q = 0; all 2**bits levels are used)
        asymmetric: lo = min(min x, 0), hi = max(max x, 0), scale = (hi - lo) / (2**bits - 1),
                    zero_point = clip(round(-lo / scale), 0, 2**bits - 1)

    Notes
    -----
    An all-zero group has scale 0 and zero point 2**(bits-1): it dequantizes to zeros.
    """
    qmax = 2**bits - 1
    middle = 2 ** (bits - 1)
    if symmetric:
        hi, lo = groups.max(axis=-2), groups.min(axis=-2)
        largest = np.where(np.abs(hi) > np.abs(lo), hi, lo)
        scale = (largest / -middle).astype(np.float32)
        return scale, np.full(scale.shape, middle, dtype=np.uint8)
    lo = np.minimum(groups.min(axis=-2), 0)
    hi = np.maximum(groups.max(axis=-2), 0)
    scale = ((hi - lo) / qmax).astype(np.float32)
    zero_point = np.where(scale == 0, middle, np.clip(np.round(-lo * _safe_reciprocal(scale)), 0, qmax))
    return scale, zero_point.astype(np.uint8)


def quantize_groups(groups: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, bits: int) -> np.ndarray:
    """Return q = clip(round(x / scale) + zero_point, 0, 2**bits - 1) per group (uint8; scale 0: the zero point)."""
    scale = scale[..., None, :]
    q = np.where(scale != 0, np.round(groups / np.where(scale != 0, scale, 1.0)), 0.0)
    return np.clip(q + zero_point[..., None, :].astype(np.float32), 0, 2**bits - 1).astype(np.uint8)


def _dequantize_groups(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    return (q.astype(np.float32) - zero_point[..., None, :].astype(np.float32)) * scale[..., None, :]


def _result(w, q_groups, scale, zero_point, bits, block_size, symmetric, method, input_scale=None):
    zero_point = zero_point.astype(np.uint8 if np.issubdtype(zero_point.dtype, np.integer) else np.float32)
    return GroupQuantized(_ungroup(q_groups, w.shape[0]), scale.astype(np.float32), zero_point,
                          bits, block_size, symmetric, WeightOnlyMethod(method), input_scale)


# -- RTN --------------------------------------------------------------------------------------------

def rtn(w, *, bits: int = 4, block_size: int = 32, symmetric: bool = True) -> GroupQuantized:
    """Round each group to nearest on its min-max grid (`blockwise_qparams`)."""
    w = _check(w, bits, block_size)
    groups = _groups(w, block_size)
    scale, zero_point = blockwise_qparams(groups, bits, symmetric=symmetric)
    return _result(w, quantize_groups(groups, scale, zero_point, bits), scale, zero_point, bits, block_size,
                   symmetric, WeightOnlyMethod.RTN)


# -- HQQ --------------------------------------------------------------------------------------------

def lp_error(w, quantized: GroupQuantized, *, p: float = 0.7) -> np.ndarray:
    """Return HQQ's objective per group [groups, N]: sum over the group of |w - dequantized|^p."""
    w = np.asarray(w, dtype=np.float32)
    error = np.abs(_groups(w, quantized.block_size) - _groups(quantized.effective_weight(), quantized.block_size))
    return np.sum(error ** p, axis=1)


def _shrink(x: np.ndarray, beta: float, p: float) -> np.ndarray:
    """The generalised soft-threshold of the lp norm (HQQ's proximal step for the error term)."""
    return np.sign(x) * np.maximum(np.abs(x) - (1.0 / beta) * np.power(np.abs(x) + 1e-8, p - 1), 0.0)


def hqq(w, *, bits: int = 4, block_size: int = 32, symmetric: bool = False, iterations: int = 20, p: float = 0.7,
        beta: float = 10.0, kappa: float = 1.01) -> GroupQuantized:
    """Optimise each group's zero point (asymmetric) or scale (symmetric) for sum |w - dequantized|^p.

    Half-quadratic splitting from RTN's parameters: e = shrink_p(w - dequantized) (the sparse error),
    then the parameter that best explains w - e with the integers fixed (the mean for the zero point, a
    least-squares fit for the scale), beta *= kappa. Asymmetric zero points stay real numbers, as in
    HQQ (float32), at the bit widths whose MatMulNBits kernel takes them (FLOAT_ZERO_POINT_BITS: 2, 3, 4;
    8-bit rounds them to integers), and each group keeps whichever of RTN's and HQQ's parameters
    has the lower objective, so HQQ is never worse than RTN on it (`lp_error`).
    """
    w = _check(w, bits, block_size)
    groups = _groups(w, block_size).astype(np.float64)
    start = rtn(w, bits=bits, block_size=block_size, symmetric=symmetric)
    qmax = 2**bits - 1
    scale, zero = hqq_parameters(groups, start.scale, start.zero_point, 0, qmax, symmetric=symmetric,
                                 iterations=iterations, p=p, beta=beta, kappa=kappa)
    if symmetric:
        zero = start.zero_point
    elif bits in FLOAT_ZERO_POINT_BITS:
        zero = zero.astype(np.float32)
    else:
        zero = np.clip(np.round(zero), 0, qmax).astype(np.uint8)
    scale32 = scale.astype(np.float32)
    optimised = _result(w, quantize_groups(groups.astype(np.float32), scale32, zero, bits), scale32, zero, bits,
                        block_size, symmetric, WeightOnlyMethod.HQQ)
    better = lp_error(w, optimised, p=p) < lp_error(w, start, p=p)       # [groups, N]
    scale = np.where(better, optimised.scale, start.scale)
    zero = np.where(better, optimised.zero_point, start.zero_point).astype(optimised.zero_point.dtype)
    grouped = _groups(w, block_size)
    return _result(w, quantize_groups(grouped, scale, zero, bits), scale, zero, bits, block_size, symmetric,
                   WeightOnlyMethod.HQQ)


# -- GPTQ -------------------------------------------------------------------------------------------

def hessian(x) -> np.ndarray:
    """Return GPTQ's Hessian of the layer's squared output error, H = 2 X^T X / n, from inputs x [n, K]."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
    return 2.0 * (x.T @ x) / max(len(x), 1)


def gptq(w, h, *, bits: int = 4, block_size: int = 32, symmetric: bool = True, damp: float = 0.01) -> GroupQuantized:
    """Quantize the input rows of w in order, each row's rounding error compensated on the later rows.

    h: the Hessian [K, K] of the calibration inputs (`hessian`). With U the upper Cholesky factor of
    (h + damp * mean(diag h) * I)^-1, row k is rounded on its group's grid (computed from the rows as
    updated when the group starts) and
        w[k+1:] -= U[k, k+1:, None] * (w[k] - dequantized[k]) / U[k, k]
    Inputs never seen (diag h = 0) have their rows zeroed, as in the reference implementation.
    """
    w = _check(w, bits, block_size)
    h = np.array(h, dtype=np.float64)
    k, n = w.shape
    if h.shape != (k, k):
        raise QuantLabError(f"the Hessian must be [K, K] = [{k}, {k}] for a weight {w.shape}, got {h.shape}")
    work = w.astype(np.float64).copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    work[dead] = 0.0
    h[np.diag_indices(k)] += damp * np.mean(np.diag(h))
    upper = np.linalg.cholesky(np.linalg.inv(h)).T          # U with U^T U = H^-1
    groups = -(-k // block_size)
    q = np.zeros((k, n), dtype=np.uint8)
    scale = np.zeros((groups, n), dtype=np.float32)
    zero_point = np.zeros((groups, n), dtype=np.uint8)
    qmax = 2**bits - 1
    lazy = max(GPTQ_LAZY_ROWS, block_size)                    # a multiple of every block size: groups never straddle
    for first in range(0, k, lazy):
        last = min(first + lazy, k)
        rows = work[first:last]                               # a view: updated in place
        errors = np.zeros((last - first, n))
        for row in range(first, last):
            group, i = row // block_size, row - first
            if row % block_size == 0:
                block = rows[i:i + block_size].astype(np.float32)[None]
                scale[group], zero_point[group] = (a[0] for a in blockwise_qparams(block, bits, symmetric=symmetric))
                step = np.where(scale[group] != 0, scale[group], 1.0).astype(np.float64)
            rounded = np.clip(np.where(scale[group] != 0, np.round(rows[i] / step), 0.0) + zero_point[group], 0, qmax)
            q[row] = rounded
            errors[i] = (rows[i] - (rounded - zero_point[group]) * scale[group]) / upper[row, row]
            rows[i + 1:] -= np.outer(upper[row, row + 1:last], errors[i])
        # The rows after this batch get every error of the batch at once (GPTQ's lazy batch update).
        work[last:] -= upper[first:last, last:].T @ errors
    return GroupQuantized(q, scale, zero_point, bits, block_size, symmetric, WeightOnlyMethod.GPTQ)


def _inverse_hessian_factor(h: np.ndarray, k: int, damp: float) -> tuple[np.ndarray, np.ndarray]:
    """(U, dead): U the upper Cholesky factor of (h + damp * mean(diag h) * I)^-1, dead the inputs never seen."""
    h = np.array(h, dtype=np.float64)
    if h.shape != (k, k):
        raise QuantLabError(f"the Hessian must be [K, K] = [{k}, {k}], got {h.shape}")
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h[np.diag_indices(k)] += damp * np.mean(np.diag(h))
    return np.linalg.cholesky(np.linalg.inv(h)).T, dead


def gptq_on_grid(w, h, scale, zero_point, qmin, qmax, *, fixed=None, damp: float = 0.01) -> np.ndarray:
    """Return GPTQ's integer codes [K, N] of w on a *given* grid: each element's scale and zero point.

    The grid of a config's format (the lab's min-max range per group or per channel, `qparams_from_range`),
    fixed from the original weight (GPTQ's "static groups"): row k gets
    q = clip(rint(w[k] / scale[k]) + zero_point[k], qmin[k], qmax[k]) (limits: integers or [K, N] arrays),
    except where `fixed` (a (mask, codes)
    pair, [K, N] each) gives the code, and its error goes to the later rows as in `gptq`:
        w[k+1:] -= U[k, k+1:, None] * (w[k] - (q - zero_point[k]) * scale[k]) / U[k, k]
    Inputs never seen (diag h = 0) keep their weights and pass no error on.
    """
    w = np.asarray(w, dtype=np.float64)
    k, n = w.shape
    upper, _ = _inverse_hessian_factor(h, k, damp)
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (k, n))
    zero_point = np.broadcast_to(np.asarray(zero_point, dtype=np.float64), (k, n))
    mask, fixed_codes = (np.zeros((k, n), bool), np.zeros((k, n))) if fixed is None else fixed
    work = w.copy()
    codes = np.zeros((k, n), dtype=np.int32)
    safe = np.where(scale != 0, scale, 1.0)
    qmin, qmax = np.broadcast_to(qmin, (k, n)), np.broadcast_to(qmax, (k, n))
    for first in range(0, k, GPTQ_LAZY_ROWS):
        last = min(first + GPTQ_LAZY_ROWS, k)
        rows = work[first:last]
        errors = np.zeros((last - first, n))
        for row in range(first, last):
            i = row - first
            rounded = np.clip(np.rint(rows[i] / safe[row]) + zero_point[row], qmin[row], qmax[row])
            rounded = np.where(mask[row], fixed_codes[row], rounded)
            codes[row] = rounded
            errors[i] = (rows[i] - (rounded - zero_point[row]) * scale[row]) / upper[row, row]
            rows[i + 1:] -= np.outer(upper[row, row + 1:last], errors[i])
        work[last:] -= upper[first:last, last:].T @ errors
    return codes


def hqq_parameters(groups, scale, zero_point, qmin: int, qmax: int, *, symmetric: bool, iterations: int = 20,
                   p: float = 0.7, beta: float = 10.0, kappa: float = 1.01) -> tuple[np.ndarray, np.ndarray]:
    """Return HQQ's (scale, zero_point) per group of `groups` [G, block, N] from a starting grid [G, N].

    The half-quadratic iterations of `hqq` on any integer grid [qmin, qmax]: e = shrink_p(x - dequantized),
    then the zero point (asymmetric: the mean of q - (x - e) / scale) or the scale (symmetric: the
    least-squares fit of x - e on q - zero_point) with the integers fixed; beta *= kappa. The zero point
    comes back as float64 (round it where the grid needs integers).
    """
    groups = np.asarray(groups, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64).copy()
    zero = np.asarray(zero_point, dtype=np.float64).copy()
    for _ in range(iterations):
        inverse = _safe_reciprocal(scale.astype(np.float32)).astype(np.float64)[:, None, :]
        q = np.clip(np.round(groups * inverse + zero[:, None, :]), qmin, qmax)
        error = _shrink(groups - (q - zero[:, None, :]) * scale[:, None, :], beta, p)
        target = groups - error
        if symmetric:
            centred = q - zero[:, None, :]
            norm = np.sum(centred * centred, axis=1)
            fitted = np.sum(centred * target, axis=1) / np.where(norm > 0, norm, 1.0)
            scale = np.where((norm > 0) & (fitted != 0), fitted, scale)
        else:
            zero = np.mean(q - target * inverse, axis=1)
        beta *= kappa
    return scale, zero


# -- AWQ --------------------------------------------------------------------------------------------

AWQ_GRID = 20
GPTQ_LAZY_ROWS = 128   # rows rounded one by one before the rest of the weight is updated in one product


def awq(w, x, *, bits: int = 4, block_size: int = 32, symmetric: bool = True, grid: int = AWQ_GRID,
        activation_mean=None) -> GroupQuantized:
    """Scale input channels by s = mean|x|^alpha before rounding, alpha searched on the output error.

    x: calibration inputs [n, K] of the layer (a few thousand rows are enough). For alpha in
    {0, 1/grid, ..., (grid-1)/grid}: s = a^alpha / sqrt(max(a^alpha) * min(a^alpha)) with a = mean|x|
    (`activation_mean`, default from x), W' = W * s[:, None] rounded by `rtn`, and the error
    mean((x @ W - (x / s) @ dequantized(W'))^2). The best alpha wins; alpha = 0 is RTN itself, so AWQ is
    never worse than RTN on that error. Channels with large inputs get finer steps, the others coarser.
    """
    w = _check(w, bits, block_size)
    x = np.asarray(x, dtype=np.float32).reshape(-1, w.shape[0])
    mean = np.mean(np.abs(x), axis=0) if activation_mean is None else np.asarray(activation_mean, np.float32)
    mean = np.maximum(mean, 1e-6)
    reference = x @ w
    best, best_error = None, np.inf
    for step in range(grid):
        alpha = step / grid
        s = mean ** alpha
        s = (s / np.sqrt(s.max() * s.min())).astype(np.float32)
        quantized = rtn(w * s[:, None], bits=bits, block_size=block_size, symmetric=symmetric)
        error = float(np.mean(np.square(reference - (x / s) @ quantized.dequantize())))
        if error < best_error:
            best, best_error = (quantized, s), error
    quantized, s = best
    return GroupQuantized(quantized.q, quantized.scale, quantized.zero_point, bits, block_size, symmetric,
                          WeightOnlyMethod.AWQ, None if np.all(s == 1) else s)


def quantize_weight(w, method: WeightOnlyMethod | str, *, bits: int = 4, block_size: int = 32,
                    symmetric: bool = True, inputs=None, h=None) -> GroupQuantized:
    """Quantize one weight [K, N] with `method`; GPTQ needs `h` or `inputs`, AWQ needs `inputs` [n, K]."""
    method = WeightOnlyMethod(method)
    if method == WeightOnlyMethod.RTN:
        return rtn(w, bits=bits, block_size=block_size, symmetric=symmetric)
    if method == WeightOnlyMethod.HQQ:
        return hqq(w, bits=bits, block_size=block_size, symmetric=symmetric)
    if method == WeightOnlyMethod.GPTQ:
        if h is None and inputs is None:
            raise QuantLabError("GPTQ needs calibration inputs of the layer (or their Hessian)")
        return gptq(w, hessian(inputs) if h is None else h, bits=bits, block_size=block_size, symmetric=symmetric)
    if inputs is None:
        raise QuantLabError("AWQ needs calibration inputs of the layer")
    return awq(w, inputs, bits=bits, block_size=block_size, symmetric=symmetric)


def weight_sqnr_table(w, *, methods=(WeightOnlyMethod.RTN, WeightOnlyMethod.HQQ), bits=BITS,
                      block_sizes=BLOCK_SIZES, symmetric: bool = True) -> list[tuple[str, int, int, float]]:
    """Return (method, bits, block size, SQNR dB of the effective weight) for the data-free methods.

    SQNR = 10 log10(sum w^2 / sum (w - effective)^2) (`metrics.sqnr_db`): what a group size and a bit
    width cost one weight, before any data is seen.
    """
    from quant_core.numerics.metrics import sqnr_db

    rows = []
    for method in methods:
        for width in bits:
            for block in block_sizes:
                quantized = quantize_weight(w, method, bits=width, block_size=block, symmetric=symmetric)
                rows.append((WeightOnlyMethod(method).value, width, block, sqnr_db(w, quantized.effective_weight())))
    return rows

"""Microscaling block formats (OCP MX v1.0) and NVFP4: blocks of values sharing one scale.

An MX block is 32 values along the reduction axis with one shared E8M0 scale X = 2^e (an 8-bit
exponent, e in [-127, 127]) and 32 elements P_i in a narrow format; a value is X · P_i. The spec's
conversion (OCP Microscaling Formats v1.0, section 6.3):

    e   = floor(log2(max_i |V_i|)) - emax_elem         (emax_elem: exponent of the element's largest normal)
    P_i = round_to_element(V_i / 2^e)                  round half to even, clamped to ± the element's max

`round_up=True` is the "round the shared exponent up" variant: e = ceil(log2(max_i |V_i| / max_elem)),
the smallest power of two for which no element clips (the spec's rule clips the block maximum when its
mantissa exceeds the element's largest one, e.g. 7.9 in E2M1 with max 6).

| format | element | max element | emax_elem | block | scale | bits per value |
|---|---|---|---|---|---|---|
| mxfp8_e4m3 | FP8 E4M3 | 448 | 8 | 32 | E8M0 | 8.25 |
| mxfp8_e5m2 | FP8 E5M2 | 57344 | 15 | 32 | E8M0 | 8.25 |
| mxfp6_e3m2 | FP6 E3M2 | 28 | 4 | 32 | E8M0 | 6.25 |
| mxfp6_e2m3 | FP6 E2M3 | 7.5 | 2 | 32 | E8M0 | 6.25 |
| mxfp4 | FP4 E2M1 | 6 | 2 | 32 | E8M0 | 4.25 |
| mxint8 | INT8 · 2^-6 | 127/64 | 0 | 32 | E8M0 | 8.25 |
| nvfp4 | FP4 E2M1 | 6 | - | 16 | FP8 E4M3 per block + FP32 per tensor | 4.5 (+32 per tensor) |

NVFP4 (NVIDIA): a per-tensor FP32 scale s = amax / (448 · 6), a per-block FP8 E4M3 scale
b = e4m3(amax_block / 6 / s) (round half to even), E2M1 elements P_i = e2m1(V_i / (b · s)); a value is P_i · b · s.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quant_core.numerics.floats import FloatSpec, round_to_spec
from quant_core.numerics.quantize import QuantizedTensor, as_float32

E8M0_MIN_EXPONENT, E8M0_MAX_EXPONENT = -127, 127


@dataclass(frozen=True)
class BlockFormat:
    """A block format: element grid, block size and scale storage."""

    name: str
    element: FloatSpec | None  # None: MXINT8's scaled two's complement integers
    element_bits: int
    emax: int  # exponent of the element's largest normal (MX); unused by NVFP4
    block_size: int
    scale_bits: int  # per block
    tensor_scale_bits: int = 0  # per tensor (NVFP4's FP32)

    @property
    def max_element(self) -> float:
        return 127 / 64 if self.element is None else self.element.max_finite

    @property
    def bits_per_value(self) -> float:
        """Element bits plus the block scale's share (the per-tensor scale not included)."""
        return self.element_bits + self.scale_bits / self.block_size


E4M3 = FloatSpec(3, -6, 448.0, False)
E5M2 = FloatSpec(2, -14, 57344.0, True)
E3M2 = FloatSpec(2, -2, 28.0, False)
E2M3 = FloatSpec(3, 0, 7.5, False)
E2M1 = FloatSpec(1, 0, 6.0, False)

BLOCK_FORMATS: dict[str, BlockFormat] = {
    "mxfp8_e4m3": BlockFormat("mxfp8_e4m3", E4M3, 8, 8, 32, 8),
    "mxfp8_e5m2": BlockFormat("mxfp8_e5m2", E5M2, 8, 15, 32, 8),
    "mxfp6_e3m2": BlockFormat("mxfp6_e3m2", E3M2, 6, 4, 32, 8),
    "mxfp6_e2m3": BlockFormat("mxfp6_e2m3", E2M3, 6, 2, 32, 8),
    "mxfp4": BlockFormat("mxfp4", E2M1, 4, 2, 32, 8),
    "mxint8": BlockFormat("mxint8", None, 8, 0, 32, 8),
    "nvfp4": BlockFormat("nvfp4", E2M1, 4, 2, 16, 8, 32),
}


def round_to_element(x: np.ndarray, fmt: BlockFormat) -> np.ndarray:
    """Round scaled values to the block format's element grid, half to even, clamped to ± its max."""
    x = np.asarray(x, dtype=np.float32)
    if fmt.element is None:  # MXINT8: k · 2^-6, k in [-128, 127]
        return (np.clip(np.rint(x * np.float32(64)), -128, 127) / np.float32(64)).astype(np.float32)
    return round_to_spec(x, fmt.element, saturate=True)


def shared_exponent(amax: np.ndarray, fmt: BlockFormat, *, round_up: bool = False) -> np.ndarray:
    """Return each block's E8M0 exponent e (int32, clamped to [-127, 127]); an all-zero block gets -127.

    spec:     e = floor(log2 amax) - emax_elem
    round_up: e = ceil(log2(amax / max_element))
    """
    amax = np.asarray(amax, dtype=np.float64)
    safe = np.where(amax > 0, amax, 1.0)
    if round_up:
        exponent = np.ceil(np.log2(safe / fmt.max_element))
        # log2 of a float64 can land a hair off an exact power: settle on the smallest e with amax / 2^e <= max.
        exponent = np.where(safe / np.exp2(exponent - 1) <= fmt.max_element, exponent - 1, exponent)
        exponent = np.where(safe / np.exp2(exponent) > fmt.max_element, exponent + 1, exponent)
    else:
        _, frexp_exponent = np.frexp(safe)  # safe = f · 2^k, f in [0.5, 1): floor(log2 safe) = k - 1
        exponent = frexp_exponent - 1 - fmt.emax
    exponent = np.where(amax > 0, exponent, E8M0_MIN_EXPONENT)
    return np.clip(exponent, E8M0_MIN_EXPONENT, E8M0_MAX_EXPONENT).astype(np.int32)


@dataclass(frozen=True)
class BlockQuantized:
    """A tensor in a block format, blocks along `axis`: values, per-block scales, the tensor scale."""

    values: np.ndarray  # float32, the input's shape: element · block scale (· tensor scale)
    elements: np.ndarray  # float32 element values, the input's shape
    block_scales: np.ndarray  # float32, the input's shape with shape[axis] = number of blocks
    tensor_scale: float  # NVFP4's FP32 per-tensor scale; 1.0 for MX
    exponents: np.ndarray | None  # MX: the E8M0 exponents (int32) of block_scales


def _blocks(x: np.ndarray, axis: int, block: int) -> tuple[np.ndarray, int]:
    """x moved to [..., blocks, block] along `axis` (the last block zero-padded), and the padding."""
    moved = np.moveaxis(x, axis, -1)
    pad = -moved.shape[-1] % block
    if pad:
        moved = np.concatenate([moved, np.zeros(moved.shape[:-1] + (pad,), dtype=moved.dtype)], axis=-1)
    return moved.reshape(moved.shape[:-1] + (moved.shape[-1] // block, block)), pad


def _unblocks(blocked: np.ndarray, axis: int, pad: int) -> np.ndarray:
    flat = blocked.reshape(blocked.shape[:-2] + (-1,))
    if pad:
        flat = flat[..., :-pad]
    return np.moveaxis(flat, -1, axis)


def quantize_blocks(x, fmt: BlockFormat | str, *, axis: int = -1, round_up: bool = False) -> BlockQuantized:
    """Quantize `x` in blocks of fmt.block_size along `axis` (the last block may be partial).

    MX: E8M0 shared exponents by the spec's rule (or rounded up), elements rounded half to even and
    clamped. NVFP4: FP32 tensor scale amax / (448 · 6), FP8 E4M3 block scales, E2M1 elements.
    """
    fmt = BLOCK_FORMATS[fmt] if isinstance(fmt, str) else fmt
    x = np.asarray(x, dtype=np.float32)
    axis = axis % x.ndim
    blocked, pad = _blocks(x, axis, fmt.block_size)
    amax = np.max(np.abs(blocked), axis=-1, keepdims=True)
    if fmt.name == "nvfp4":
        tensor_amax = float(np.max(np.abs(x))) if x.size else 0.0
        tensor_scale = tensor_amax / (E4M3.max_finite * E2M1.max_finite) if tensor_amax > 0 else 1.0
        tensor_scale = float(np.float32(tensor_scale))
        block_scale = round_to_spec((amax / E2M1.max_finite / tensor_scale).astype(np.float32), E4M3, saturate=True)
        divisor = block_scale * np.float32(tensor_scale)
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.where(divisor > 0, blocked / np.where(divisor > 0, divisor, 1), 0)
        elements = round_to_element(scaled, fmt)
        values = elements * divisor
        exponents = None
    else:
        tensor_scale = 1.0
        exponents = shared_exponent(amax, fmt, round_up=round_up)
        block_scale = np.ldexp(np.float32(1), exponents).astype(np.float32)
        elements = round_to_element(blocked / block_scale, fmt)
        values = elements * block_scale
    return BlockQuantized(_unblocks(values.astype(np.float32), axis, pad), _unblocks(elements, axis, pad),
                          np.moveaxis(block_scale[..., 0], -1, axis).astype(np.float32), tensor_scale,
                          None if exponents is None else np.moveaxis(exponents[..., 0], -1, axis))


def bits_per_value(fmt: BlockFormat | str, parameters: int | None = None) -> float:
    """Bits per stored value, block scales included (MXFP4: 4 + 8/32 = 4.25); NVFP4's FP32 tensor scale
    is added when `parameters` is given."""
    fmt = BLOCK_FORMATS[fmt] if isinstance(fmt, str) else fmt
    extra = fmt.tensor_scale_bits / parameters if parameters else 0.0
    return fmt.bits_per_value + extra


def quantize_block_tensor(x, tq, *, name: str = "tensor"):
    """`quantize_tensor` for a block format: blocks along tq.axis (resolved), scales = the block scales
    (NVFP4's include the tensor scale)."""

    fmt = tq.format
    x = as_float32(x, name)
    axis = (tq.axis if tq.axis is not None else -1) % max(x.ndim, 1)
    if x.ndim == 0:
        x, axis = x.reshape(1), 0
    result = quantize_blocks(x, fmt.kind.value, axis=axis, round_up=fmt.scale_round_up)
    scale = result.block_scales * np.float32(result.tensor_scale)
    return QuantizedTensor(result.values.reshape(np.shape(x)), scale.astype(np.float32), None, None, None, fmt, axis,
                           fmt.block_size)


def element_grid(fmt: BlockFormat | str) -> np.ndarray:
    """Every finite value of the element format, sorted (both signs; zero once)."""
    fmt = BLOCK_FORMATS[fmt] if isinstance(fmt, str) else fmt
    if fmt.element is None:
        return np.arange(-128, 128, dtype=np.float32) / np.float32(64)
    spec = fmt.element
    steps = np.arange(2**spec.mantissa_bits, dtype=np.float64) / 2**spec.mantissa_bits
    subnormal = steps * 2.0**spec.min_exponent
    top = int(np.floor(np.log2(spec.max_finite)))
    normal = np.concatenate([(1 + steps) * 2.0**e for e in range(spec.min_exponent, top + 1)])
    positive = np.concatenate([subnormal, normal])
    positive = positive[positive <= spec.max_finite]
    return np.unique(np.concatenate([-positive, positive])).astype(np.float32)

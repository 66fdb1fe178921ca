"""Number formats: what values a quantized tensor can take, as plain data.

A `NumberFormat` names a target format ("int8", "uint4", "fp8_e4m3fn", "ternary", "kmeans4", ...).
Integer limits come from one table-like function (`int_limits`), never from `if` chains spread
over the code base.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class FormatKind(StrEnum):
    FP32 = "fp32"
    INT = "int"
    UINT = "uint"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8_E4M3FN = "fp8_e4m3fn"
    FP8_E5M2 = "fp8_e5m2"
    BINARY = "binary"
    TERNARY = "ternary"
    KMEANS = "kmeans"
    # Block formats (OCP MX v1.0, NVFP4): simulated only, no onnxruntime CPU kernel (quant_core/numerics/mx.py).
    MXFP8_E4M3 = "mxfp8_e4m3"
    MXFP8_E5M2 = "mxfp8_e5m2"
    MXFP6_E3M2 = "mxfp6_e3m2"
    MXFP6_E2M3 = "mxfp6_e2m3"
    MXFP4 = "mxfp4"
    MXINT8 = "mxint8"
    NVFP4 = "nvfp4"


class Granularity(StrEnum):
    PER_TENSOR = "per_tensor"
    PER_CHANNEL = "per_channel"
    PER_GROUP = "per_group"


class RangeMethod(StrEnum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    MSE = "mse"
    ENTROPY = "entropy"


# Storage bits of the formats whose width is fixed by the format itself.
_FIXED_BITS = {
    FormatKind.FP32: 32,
    FormatKind.FP16: 16,
    FormatKind.BF16: 16,
    FormatKind.FP8_E4M3FN: 8,
    FormatKind.FP8_E5M2: 8,
    FormatKind.BINARY: 1,
    FormatKind.TERNARY: 2,
    FormatKind.MXFP8_E4M3: 8,
    FormatKind.MXFP8_E5M2: 8,
    FormatKind.MXFP6_E3M2: 6,
    FormatKind.MXFP6_E2M3: 6,
    FormatKind.MXFP4: 4,
    FormatKind.MXINT8: 8,
    FormatKind.NVFP4: 4,
}
# Block formats: values per shared scale (the OCP MX spec's 32; NVFP4's 16).
BLOCK_SIZES = {FormatKind.MXFP8_E4M3: 32, FormatKind.MXFP8_E5M2: 32, FormatKind.MXFP6_E3M2: 32,
               FormatKind.MXFP6_E2M3: 32, FormatKind.MXFP4: 32, FormatKind.MXINT8: 32, FormatKind.NVFP4: 16}
_INTEGER_KINDS = (FormatKind.INT, FormatKind.UINT)
_FLOAT_KINDS = (FormatKind.FP16, FormatKind.BF16, FormatKind.FP8_E4M3FN, FormatKind.FP8_E5M2)
MIN_INT_BITS, MAX_INT_BITS = 2, 16
MIN_KMEANS_BITS, MAX_KMEANS_BITS = 1, 8


def int_limits(bits: int, *, signed: bool, narrow_range: bool = False) -> tuple[int, int]:
    """Return `(qmin, qmax)` of a `bits`-wide integer.

    signed: [-2^(b-1), 2^(b-1) - 1], narrow: [-(2^(b-1) - 1), 2^(b-1) - 1]
    unsigned: [0, 2^b - 1], narrow: [0, 2^b - 2]
    """
    if signed:
        qmax = 2 ** (bits - 1) - 1
        return (-qmax if narrow_range else -qmax - 1), qmax
    qmax = 2**bits - 1
    return 0, (qmax - 1 if narrow_range else qmax)


@dataclass(frozen=True)
class NumberFormat:
    """A target number format. `bits` only varies for int/uint/kmeans formats.

    `scale_round_up` (MX formats only, name suffix "_up"): the shared exponent is rounded up so that no
    element clips, instead of the OCP MX spec's floor(log2 amax) - emax_elem.
    """

    kind: FormatKind
    bits: int = 8
    narrow_range: bool = False
    scale_round_up: bool = False

    def __post_init__(self):
        kind = FormatKind(self.kind)
        object.__setattr__(self, "kind", kind)
        if kind in _FIXED_BITS:
            object.__setattr__(self, "bits", _FIXED_BITS[kind])
        elif kind in _INTEGER_KINDS and not MIN_INT_BITS <= self.bits <= MAX_INT_BITS:
            raise ValueError(f"integer formats have {MIN_INT_BITS} to {MAX_INT_BITS} bits, got bits={self.bits}")
        elif kind == FormatKind.KMEANS and not MIN_KMEANS_BITS <= self.bits <= MAX_KMEANS_BITS:
            raise ValueError(f"k-means codebooks have {MIN_KMEANS_BITS} to {MAX_KMEANS_BITS} bits, got bits={self.bits}")
        if self.scale_round_up and (kind not in BLOCK_SIZES or kind == FormatKind.NVFP4):
            raise ValueError(f"only MX formats round their shared exponent up (_up), not {kind.value}")

    @property
    def is_integer(self) -> bool:
        return self.kind in _INTEGER_KINDS

    @property
    def is_float(self) -> bool:
        return self.kind in _FLOAT_KINDS

    @property
    def is_block(self) -> bool:
        """MX / NVFP4: blocks of `block_size` values share one scale (simulated only)."""
        return self.kind in BLOCK_SIZES

    @property
    def block_size(self) -> int | None:
        return BLOCK_SIZES.get(self.kind)

    @property
    def is_identity(self) -> bool:
        return self.kind == FormatKind.FP32

    @property
    def signed(self) -> bool:
        return self.kind != FormatKind.UINT

    @property
    def qmin(self) -> int:
        return self.limits[0]

    @property
    def qmax(self) -> int:
        return self.limits[1]

    @property
    def limits(self) -> tuple[int, int]:
        if not self.is_integer:
            raise ValueError(f"{self.name} is not an integer format and has no (qmin, qmax)")
        return int_limits(self.bits, signed=self.signed, narrow_range=self.narrow_range)

    @property
    def name(self) -> str:
        if self.kind in _INTEGER_KINDS or self.kind == FormatKind.KMEANS:
            suffix = "_narrow" if self.narrow_range else ""
            return f"{self.kind.value}{self.bits}{suffix}"
        return self.kind.value + ("_up" if self.scale_round_up else "")

    def __str__(self) -> str:
        return self.name

    def to_dict(self) -> str:
        return self.name

    @classmethod
    def from_dict(cls, value: str) -> NumberFormat:
        return parse_format(value)


_NAME = re.compile(r"^(int|uint|kmeans)(\d+)(_narrow)?$")
_BLOCK_NAME = re.compile(r"^(mx\w+?|nvfp4)(_up)?$")
_ALIASES = {"fp8_e4m3": "fp8_e4m3fn", "e4m3": "fp8_e4m3fn", "e5m2": "fp8_e5m2", "float16": "fp16",
            "bfloat16": "bf16", "float32": "fp32", "none": "fp32", "mxfp8": "mxfp8_e4m3", "mxfp8_up": "mxfp8_e4m3_up"}


def parse_format(name: str) -> NumberFormat:
    """Parse a format name such as "int8", "uint4", "int8_narrow", "kmeans3", "fp8_e4m3fn", "binary"."""
    text = str(name).strip().lower()
    text = _ALIASES.get(text, text)
    match, block = _NAME.match(text), _BLOCK_NAME.match(text)
    try:
        if match:
            return NumberFormat(FormatKind(match.group(1)), int(match.group(2)), bool(match.group(3)))
        if block:
            return NumberFormat(FormatKind(block.group(1)), scale_round_up=bool(block.group(2)))
        return NumberFormat(FormatKind(text))
    except ValueError as err:
        raise ValueError(
            f"unknown number format {name!r}: expected int2..int16, uint2..uint16 (optionally _narrow), "
            f"kmeans1..kmeans8, fp32, fp16, bf16, fp8_e4m3fn, fp8_e5m2, binary, ternary, or a block format "
            f"mxfp8_e4m3, mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4, mxint8 (optionally _up), nvfp4 ({err})"
        ) from None


INT8 = NumberFormat(FormatKind.INT, 8)
UINT8 = NumberFormat(FormatKind.UINT, 8)
INT4 = NumberFormat(FormatKind.INT, 4)
FP32 = NumberFormat(FormatKind.FP32)
FP16 = NumberFormat(FormatKind.FP16)

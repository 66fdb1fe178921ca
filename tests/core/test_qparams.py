"""Specification of qparams_from_range: a float range -> (scale, zero_point), as onnxruntime computes it."""
import numpy as np
import pytest
from onnxruntime.quantization.quant_utils import compute_scale_zp

from quant_core.numerics.formats import parse_format
from quant_core.numerics.qparams import qparams_from_range

F32 = np.float32

# lo, hi, format, symmetric -> scale, zero_point
EXACT = [
    (-1.0, 1.0, "int8", True, F32(2 / 255), 0),
    (-1.0, 1.0, "uint8", True, F32(2 / 255), 128),  # round(127.5) = 128 (half to even)
    (-1.0, 3.0, "uint8", False, F32(4 / 255), 64),  # round(0 + 1 / (4/255)) = round(63.75)
    (-128.0, 127.0, "int8", False, F32(1.0), 0),
    (0.0, 255.0, "uint8", False, F32(1.0), 0),
    (2.0, 5.0, "uint8", False, F32(5 / 255), 0),  # lo is stretched to 0
    (-5.0, -2.0, "uint8", False, F32(5 / 255), 255),  # hi is stretched to 0
    (-3.0, 1.0, "int8", True, F32(6 / 255), 0),  # symmetric takes max(|lo|, |hi|)
    (-1.0, 1.0, "int8_narrow", True, F32(1 / 127), 0),
    (-1.0, 1.0, "int4", True, F32(2 / 15), 0),
    (-1.0, 1.0, "uint4", True, F32(2 / 15), 8),  # round(7.5) = 8
    (-1.0, 1.0, "int2", True, F32(2 / 3), 0),
    (-1.0, 1.0, "int16", True, F32(2 / 65535), 0),
    (-1.0, 1.0, "uint16", True, F32(2 / 65535), 32768),
    (0.0, 0.0, "uint8", False, F32(1.0), 0),  # all zeros: degenerate
    (0.0, 0.0, "int8", True, F32(1.0), 0),
    (3.0, 3.0, "uint8", False, F32(3 / 255), 0),  # a constant is not degenerate: [0, 3]
    (-1e-40, 1e-40, "int8", True, F32(1.0), 0),  # a denormal-small range: scale would be < float32 tiny
    (-1e-40, 1e-40, "uint8", False, F32(1.0), 0),
]


@pytest.mark.parametrize("lo, hi, name, symmetric, scale, zero_point", EXACT)
def test_exact_values(lo, hi, name, symmetric, scale, zero_point):
    got_scale, got_zero_point = qparams_from_range(lo, hi, parse_format(name), symmetric=symmetric)
    assert got_scale.dtype == np.float32 and got_zero_point.dtype == np.int32
    assert got_scale == scale
    assert got_zero_point == zero_point


def _onnxruntime(lo, hi, fmt, symmetric):
    qmin, qmax = fmt.limits
    dtype = np.int32
    zero_point, scale = compute_scale_zp(np.array(lo, dtype=np.float32), np.array(hi, dtype=np.float32),
                                         np.array(qmin, dtype=dtype), np.array(qmax, dtype=dtype),
                                         symmetric=symmetric)
    return np.float32(scale), int(zero_point)


@pytest.mark.parametrize("name", ["int8", "uint8", "int4", "uint4", "int16", "uint16", "int3", "uint5"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_equals_onnxruntime_compute_scale_zp_on_random_ranges(name, symmetric):
    fmt = parse_format(name)
    rng = np.random.default_rng(7)
    magnitudes = 10.0 ** rng.uniform(-30, 30, size=(200, 1))
    ranges = np.sort(rng.standard_normal((200, 2)) * magnitudes, axis=1).astype(np.float32)
    for lo, hi in ranges:
        expected = _onnxruntime(lo, hi, fmt, symmetric)
        scale, zero_point = qparams_from_range(lo, hi, fmt, symmetric=symmetric)
        assert (scale, int(zero_point)) == expected, (lo, hi)


def test_arrays_give_one_entry_per_channel():
    lo = np.array([-1.0, 0.0, -4.0], dtype=np.float32)
    hi = np.array([1.0, 2.0, 0.0], dtype=np.float32)
    scale, zero_point = qparams_from_range(lo, hi, parse_format("uint8"), symmetric=False)
    assert scale.shape == zero_point.shape == (3,)
    for i in range(3):
        single = qparams_from_range(lo[i], hi[i], parse_format("uint8"), symmetric=False)
        assert (scale[i], zero_point[i]) == single


@pytest.mark.parametrize("name", ["int8", "uint8", "int4", "uint4", "int16", "uint16", "int8_narrow", "uint2"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_zero_point_in_range_and_scale_positive(name, symmetric):
    fmt = parse_format(name)
    rng = np.random.default_rng(3)
    lo = -np.abs(rng.standard_normal(500)) * 10.0 ** rng.uniform(-45, 30, 500)
    hi = np.abs(rng.standard_normal(500)) * 10.0 ** rng.uniform(-45, 30, 500)
    scale, zero_point = qparams_from_range(lo, hi, fmt, symmetric=symmetric)
    assert np.all(scale > 0) and np.all(np.isfinite(scale))
    assert np.all((zero_point >= fmt.qmin) & (zero_point <= fmt.qmax))


def test_non_finite_range_is_refused():
    with pytest.raises(ValueError, match="finite"):
        qparams_from_range(-np.inf, 1.0, parse_format("int8"), symmetric=True)
    with pytest.raises(ValueError, match="finite"):
        qparams_from_range(np.nan, 1.0, parse_format("int8"), symmetric=True)


def test_float_format_is_refused():
    with pytest.raises(ValueError, match="integer format"):
        qparams_from_range(-1.0, 1.0, parse_format("fp16"), symmetric=True)

"""Size accounting: exact bit counts for every format and granularity, overheads included."""
import pytest

from quant_core.config import TensorQuant
from quant_core.errors import ConfigError, QuantLabError
from quant_core.numerics.formats import Granularity, parse_format
from quant_core.numerics.size import TensorSize, bits_per_parameter, model_bytes, tensor_bytes, tensor_size

SHAPE = (64, 32, 3, 3)  # 18,432 parameters, 64 output channels


def _tq(fmt: str, granularity=Granularity.PER_TENSOR, **kw) -> TensorQuant:
    return TensorQuant(parse_format(fmt), granularity=granularity, **kw)


def test_float32_and_none_are_32_bits_per_parameter():
    assert tensor_size(SHAPE, None) == TensorSize(18_432, 18_432 * 32)
    assert tensor_bytes(SHAPE, None) == tensor_bytes(SHAPE, _tq("fp32")) == 73_728


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_half_precision_is_16_bits_with_no_scale(fmt):
    assert tensor_size(SHAPE, _tq(fmt)) == TensorSize(18_432, 18_432 * 16)


def test_int8_per_tensor_adds_one_fp32_scale_and_one_int8_zero_point():
    size = tensor_size(SHAPE, _tq("int8"))
    assert (size.value_bits, size.scale_bits, size.zero_point_bits) == (18_432 * 8, 32, 8)
    assert size.bytes == 18_432 + 4 + 1


def test_symmetric_schemes_still_pay_for_their_zero_points():
    # onnxruntime stores a zero-point tensor next to every scale, zeros included.
    assert tensor_size(SHAPE, _tq("int8", symmetric=True)) == tensor_size(SHAPE, _tq("int8", symmetric=False))


def test_int8_per_channel_has_one_scale_and_zero_point_per_channel_of_the_axis():
    assert tensor_size(SHAPE, _tq("int8", Granularity.PER_CHANNEL)).scale_bits == 64 * 32
    size = tensor_size(SHAPE, _tq("uint8", Granularity.PER_CHANNEL, axis=1))
    assert (size.scale_bits, size.zero_point_bits) == (32 * 32, 32 * 8)


def test_int4_per_group_has_one_scale_per_block_including_the_partial_one():
    # axis 1 has 32 values: blocks of 24 make 2 blocks (24 + 8) for each of the 64 x 3 x 3 rows.
    size = tensor_size(SHAPE, _tq("int4", Granularity.PER_GROUP, axis=1, block_size=24))
    blocks = 64 * 3 * 3 * 2
    assert size == TensorSize(18_432, 18_432 * 4, blocks * 32, blocks * 4)
    assert size.bits_per_parameter == pytest.approx(4 + blocks * 36 / 18_432)


def test_a_bare_shape_with_the_natural_axis_has_output_channels_first_and_blocks_along_the_rest():
    # axis=None without a layer: per-channel along axis 0; per-group along the 32 x 3 x 3 = 288 values of
    # each output channel (a conv's reduction), 288 / 32 = 9 blocks for each of the 64 channels.
    assert tensor_size(SHAPE, _tq("int8", Granularity.PER_CHANNEL)).scale_bits == 64 * 32
    assert tensor_size(SHAPE, _tq("int4", Granularity.PER_GROUP, block_size=32)).scale_bits == 64 * 9 * 32


def test_a_block_larger_than_its_axis_is_one_block_per_row():
    # (10, 20) along axis 1 with blocks of 32: one block for each of the 10 rows, as per-channel on axis 0.
    grouped = tensor_size((10, 20), _tq("int4", Granularity.PER_GROUP, axis=1, block_size=32))
    assert grouped == tensor_size((10, 20), _tq("int4", Granularity.PER_CHANNEL, axis=0))
    assert grouped.scale_bits == 10 * 32


def test_int4_per_group_of_32_is_5_125_bits_per_parameter():
    # The textbook figure: 4 bits + (32-bit scale + 4-bit zero point) / 32.
    assert bits_per_parameter((256, 1024), _tq("int4", Granularity.PER_GROUP, axis=1, block_size=32)) == 5.125


def test_fp8_has_a_scale_and_a_zero_point_per_tensor_or_channel():
    assert tensor_size(SHAPE, _tq("fp8_e4m3fn")) == TensorSize(18_432, 18_432 * 8, 32, 8)
    assert tensor_size(SHAPE, _tq("fp8_e5m2", Granularity.PER_CHANNEL)).scale_bits == 64 * 32


@pytest.mark.parametrize("fmt,bits", [("binary", 1), ("ternary", 2)])
def test_binary_and_ternary_have_an_fp32_scale_per_output_channel(fmt, bits):
    # Always per output channel (axis 0), whatever the granularity says: that is what extreme.py computes.
    size = tensor_size(SHAPE, _tq(fmt, Granularity.PER_GROUP, block_size=16))
    assert size == TensorSize(18_432, 18_432 * bits, 64 * 32)
    assert tensor_size((10,), _tq(fmt)).scale_bits == 32  # a 1-D tensor is one channel


def test_kmeans_stores_its_codebook_of_2_to_the_bits_fp32_centroids():
    size = tensor_size(SHAPE, _tq("kmeans3"))
    assert size == TensorSize(18_432, 18_432 * 3, codebook_bits=8 * 32)
    assert size.bytes == (18_432 * 3 + 256) // 8


def test_bytes_round_up_to_whole_bytes():
    assert tensor_bytes((3,), _tq("int4")) == 6  # 12 + 32 + 4 = 48 bits
    assert tensor_bytes((5,), _tq("binary")) == 5  # 5 + 32 = 37 bits -> 5 bytes


def test_model_bytes_sums_each_weight_and_counts_other_floats_at_4_bytes():
    weights = [((64, 32), _tq("int8", Granularity.PER_CHANNEL)), ((10, 64), None), ((100,), _tq("fp16"))]
    expected = (64 * 32 + 64 * 5) + 10 * 64 * 4 + 100 * 2 + 4 * 74
    assert model_bytes(weights, other_float_params=74) == expected
    assert model_bytes([], 0) == 0


def test_model_bytes_refuses_malformed_entries():
    with pytest.raises(QuantLabError, match="\\(shape, TensorQuant or None\\) pair"):
        model_bytes([(1, 2, 3)])
    with pytest.raises(QuantLabError, match="other_float_params"):
        model_bytes([], -1)


@pytest.mark.parametrize("shape", [(0, 4), (-1,), ("a",), (2.5, 3)])
def test_shapes_need_positive_integer_dimensions(shape):
    with pytest.raises(QuantLabError, match="shape"):
        tensor_size(shape, None)


def test_per_channel_on_a_1d_weight_or_a_bad_axis_is_a_config_error():
    with pytest.raises(ConfigError, match="at least 2 dimensions"):
        tensor_size((16,), _tq("int8", Granularity.PER_CHANNEL))
    with pytest.raises(ConfigError, match="axis 4 is out of range"):
        tensor_size(SHAPE, _tq("int8", Granularity.PER_CHANNEL, axis=4))


def test_binary_and_ternary_have_one_scale_per_channel_of_their_axis():
    # A MatMul weight (K, N) = (64, 10): its output channels are axis 1, so 10 scales, not 64.
    for name in ("binary", "ternary"):
        assert tensor_size((64, 10), TensorQuant(name, axis=1)).scale_bits == 10 * 32
        assert tensor_size((64, 10), TensorQuant(name)).scale_bits == 64 * 32  # no axis: axis 0

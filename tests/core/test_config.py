"""QuantConfig and TensorQuant: every value is checked once at construction, with a message naming the key."""
from __future__ import annotations

import json

import pytest

from quant_core.config import MAX_CONFIG_BYTES, PRESETS, LayerQuant, QuantConfig, TensorQuant
from quant_core.errors import ConfigError
from quant_core.numerics.formats import INT8, Granularity, RangeMethod


def test_strings_become_the_enums_and_formats_they_name():
    tq = TensorQuant("int8", granularity="per_channel", range_method="mse")
    assert tq.format == INT8 and tq.granularity is Granularity.PER_CHANNEL and tq.range_method is RangeMethod.MSE


def test_numpy_like_integers_and_numbers_are_stored_as_python_types():
    import numpy as np

    tq = TensorQuant("int8", axis=np.int64(1), block_size=np.int32(32), percentile=np.float32(99.5), range_method="percentile")
    assert (type(tq.axis), type(tq.block_size), type(tq.percentile)) == (int, int, float)
    assert tq == TensorQuant("int8", axis=1, block_size=32, percentile=99.5, range_method="percentile")
    assert hash(tq) == hash(TensorQuant("int8", axis=1, block_size=32, percentile=99.5, range_method="percentile"))


@pytest.mark.parametrize(("fields", "message"), [
    ({"format": 8}, "'format' must be a format name such as \"int8\", got 8 (a number)"),
    ({"format": None}, "'format' must be a format name such as \"int8\", got None (null)"),
    ({"symmetric": "no"}, "symmetric must be true or false, got 'no' (a string)"),
    ({"symmetric": 1}, "symmetric must be true or false, got 1 (a number)"),
    ({"block_size": "16"}, "block_size must be an integer, got '16' (a string)"),
    ({"block_size": 32.0}, "block_size must be an integer, got 32.0 (a number)"),
    ({"axis": "0"}, "axis must be an integer or null (the layer's natural axis), got '0' (a string)"),
    ({"axis": False}, "axis must be an integer or null (the layer's natural axis), got False (a boolean)"),
    ({"percentile": "99"}, "percentile must be a number in (50, 100], got '99' (a string)"),
    ({"percentile": float("nan")}, "percentile must be in (50, 100], got nan"),
    ({"granularity": "per_row"}, "unknown granularity 'per_row': expected one of per_tensor, per_channel, per_group"),
    ({"granularity": None}, "granularity must be one of per_tensor, per_channel, per_group, got None (null)"),
    ({"range_method": "magic"}, "unknown range_method 'magic': expected one of minmax, percentile, mse, entropy"),
])
def test_a_value_of_the_wrong_type_or_outside_its_set_is_named(fields, message):
    with pytest.raises(ConfigError) as caught:
        TensorQuant(**{"format": "int8", **fields})
    assert str(caught.value) == message


def test_a_long_wrong_value_is_cut_in_the_message():
    with pytest.raises(ConfigError) as caught:
        TensorQuant("int8", symmetric="x" * 1000)
    assert len(str(caught.value)) < 150 and "..." in str(caught.value)


@pytest.mark.parametrize("entry", ["int8", 8, ["int8"], True])
def test_weights_and_activations_must_be_objects_or_null(entry):
    with pytest.raises(ConfigError, match=r"^'weights' must be an object such as \{\"format\": \"int8\"\} or null"):
        LayerQuant.from_dict({"weights": entry})


def test_null_or_missing_tensor_entries_keep_fp32():
    assert LayerQuant.from_dict({"weights": None}) == LayerQuant.from_dict({}) == LayerQuant()


def test_deep_nesting_is_refused_with_one_line_not_a_recursion_error():
    with pytest.raises(ConfigError, match="nested too deeply"):
        QuantConfig.from_json("[" * 100000 + "]" * 100000)


def test_more_than_one_mebibyte_is_refused_before_parsing():
    text = json.dumps({"default": {}, "name": "x" * MAX_CONFIG_BYTES})
    with pytest.raises(ConfigError, match=rf"^the config JSON is {len(text)} bytes, over the 1 MiB limit"):
        QuantConfig.from_json(text)
    with pytest.raises(ConfigError, match="over the 1 MiB limit"):
        QuantConfig.from_json(text.encode())


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_round_trips_through_json(name):
    assert QuantConfig.from_json(PRESETS[name].to_json()) == PRESETS[name]


def test_a_tensor_choice_keeps_its_hash_and_equality_through_pickle_and_replace():
    import pickle
    from dataclasses import replace

    tq = TensorQuant("int4", granularity="per_channel", range_method="percentile", percentile=99.9)
    copy = pickle.loads(pickle.dumps(tq))
    assert copy == tq and hash(copy) == hash(tq)
    assert replace(tq, symmetric=False) != tq and hash(replace(tq, symmetric=True)) == hash(tq)
    assert "_hash" not in repr(tq) and "_hash" not in tq.to_dict()

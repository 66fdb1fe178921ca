"""validate_config: a config that cannot apply to a layer is refused with the layer's name and the fix."""
import pytest

from quant_core.config import FP32_LAYER, LayerQuant, QuantConfig, TensorQuant
from quant_core.errors import ConfigError
from quant_core.model.validate import validate_config

from .conftest import chain_model
from quant_core.model.model_io import prepare_model


@pytest.fixture(scope="module")
def prepared():
    return prepare_model(chain_model(widths=(40, 20, 3)))


def _only(layer, choice):
    return QuantConfig(FP32_LAYER, ((layer, choice),))


def test_a_valid_config_passes(prepared):
    per_channel = TensorQuant("int4", granularity="per_channel")
    validate_config(QuantConfig(LayerQuant(per_channel, TensorQuant("uint8", symmetric=False))), prepared)


@pytest.mark.parametrize("choice, expected", [
    (LayerQuant(TensorQuant("int8", granularity="per_channel", axis=2)), "axis 2 is out of range"),
    (LayerQuant(None, TensorQuant("kmeans3")), "kmeans3 cannot quantize activations"),
    (LayerQuant(None, TensorQuant("uint8", granularity="per_channel")), "activations are quantized per_tensor"),
])
def test_impossible_choices_name_the_layer_and_what_is_expected(prepared, choice, expected):
    with pytest.raises(ConfigError, match=expected) as error:
        validate_config(_only("dense0", choice), prepared)
    assert "'dense0'" in str(error.value)


def test_unknown_layer_names_are_listed(prepared):
    with pytest.raises(ConfigError, match=r"\['conv9'\].*dense0"):
        validate_config(_only("conv9", LayerQuant(TensorQuant("int8"))), prepared)


def test_per_channel_on_a_one_dimensional_weight_is_refused():
    from types import SimpleNamespace
    layer = SimpleNamespace(name="scale", weight=SimpleNamespace(name="s", shape=(8,)), activation_input="x")
    info = SimpleNamespace(layers=(layer,))
    with pytest.raises(ConfigError, match="'scale'.*2 or more dimensions.*shape \\(8,\\)"):
        validate_config(_only("scale", LayerQuant(TensorQuant("int8", granularity="per_channel"))), info)


def test_activation_quantization_needs_a_float_activation_input():
    from types import SimpleNamespace
    layer = SimpleNamespace(name="embed", weight=SimpleNamespace(name="table", shape=(10, 4)), activation_input=None)
    info = SimpleNamespace(layers=(layer,))
    with pytest.raises(ConfigError, match="'embed' has no float activation input"):
        validate_config(_only("embed", LayerQuant(None, TensorQuant("uint8", symmetric=False))), info)


def test_a_block_larger_than_its_axis_is_accepted(prepared):
    # dense0's weight is (20, 40): blocks of 64 along its 40 inputs are one block per row (quant_core.numerics.axes).
    validate_config(_only("dense0", LayerQuant(TensorQuant("int4", granularity="per_group", block_size=64))), prepared)
    validate_config(_only("dense0", LayerQuant(TensorQuant("int4", granularity="per_group", axis=1, block_size=64))),
                    prepared)


def test_an_axis_that_is_not_an_integer_is_refused_when_the_config_is_built():
    with pytest.raises(ValueError, match="axis must be an integer or null"):
        TensorQuant("int8", granularity="per_channel", axis="1")

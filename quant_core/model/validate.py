"""Check once, at the entry, that a quantization config can apply to a model's layers."""
from __future__ import annotations

from dataclasses import dataclass

from quant_core.numerics.axes import WeightAxes, layer_axes
from quant_core.config import QuantConfig, TensorQuant
from quant_core.errors import ConfigError
from quant_core.numerics.formats import FormatKind, Granularity

# Activations are quantized on a grid (int/uint) or cast (floats); codebooks and sign formats are weight-only.
_ACTIVATION_KINDS = (FormatKind.FP32, FormatKind.INT, FormatKind.UINT, FormatKind.FP16, FormatKind.BF16,
                     FormatKind.FP8_E4M3FN, FormatKind.FP8_E5M2)


def _info(info_or_prepared):
    return getattr(info_or_prepared, "info", info_or_prepared)


def _float_activation_inputs(info_or_prepared) -> dict[str, str | None]:
    """layer -> its activation input when it is float32 (known only from a PreparedModel's graph)."""
    info = _info(info_or_prepared)
    model = getattr(info_or_prepared, "model", None)
    if model is None:
        return {layer.name: getattr(layer, "activation_input", None) for layer in info.layers}
    from quant_core.model.layers import layer_specs
    return {spec.name: spec.activation_input for spec in layer_specs(info_or_prepared)}


def _check_weights(layer_name: str, tq: TensorQuant, axes: WeightAxes | None) -> None:
    if axes is None:
        raise ConfigError(f"layer {layer_name!r} has no constant weight to quantize: set its 'weights' to null")
    if tq.granularity == Granularity.PER_TENSOR or not tq.format.is_integer and not tq.format.is_float:
        return
    shape, rank = axes.shape, len(axes.shape)
    if rank < 2:
        raise ConfigError(f"layer {layer_name!r}: {tq.granularity.value} needs a weight with 2 or more dimensions, "
                          f"its weight has shape {shape}; use per_tensor")
    if tq.axis is not None and not -rank <= tq.axis < rank:
        raise ConfigError(f"layer {layer_name!r}: axis {tq.axis} is out of range for its weight of shape {shape}; "
                          f"expected an axis in [{-rank}, {rank - 1}], or null for the layer's natural axis")
    # A block_size larger than its axis is one block per row (see quant_core.numerics.axes): nothing to refuse.


def _check_activations(layer_name: str, tq: TensorQuant, activation_input: str | None) -> None:
    if tq.format.is_identity:
        return
    if not activation_input:
        raise ConfigError(f"layer {layer_name!r} has no float activation input to quantize: "
                          f"set its 'activations' to null")
    if tq.format.kind not in _ACTIVATION_KINDS:
        raise ConfigError(f"layer {layer_name!r}: {tq.format.name} cannot quantize activations; "
                          f"expected an int/uint, fp16, bf16 or fp8 format")
    if tq.granularity != Granularity.PER_TENSOR:
        raise ConfigError(f"layer {layer_name!r}: activations are quantized per_tensor, got {tq.granularity.value}")


def validate_config(config: QuantConfig, info) -> None:
    """Raise ConfigError, naming the layer and what is expected, if `config` cannot apply to the model.

    `info` is a ModelInfo, or a PreparedModel (then activation inputs must also be float32). Checked:
    overrides name existing layers; weight granularity fits the weight's shape (per-channel /
    per-group need 2-D or more, an explicit axis in range; axis=None is the layer's natural axis, see
    quant_core.numerics.axes); activation quantization only on layers with a float activation input, per
    tensor, in a format that can hold activations.

    Notes
    -----
    The default applies to every layer, but only where it can: its weight part is skipped for a
    layer without weights and its activation part for a layer without a float activation input.
    A block_size larger than its axis is one block per row, not an error.
    """
    check_config(config, model_facts(info))


@dataclass(frozen=True)
class ModelFacts:
    """What validation reads from a model, computed once (`model_facts`) for many configs."""

    layers: tuple[str, ...]
    activation_inputs: dict[str, str | None]
    weight_axes: dict[str, WeightAxes]


def model_facts(info) -> ModelFacts:
    """Return the layers, float activation inputs and weight axes of a ModelInfo or PreparedModel."""
    return ModelFacts(tuple(layer.name for layer in _info(info).layers), _float_activation_inputs(info),
                      layer_axes(info))


def check_config(config: QuantConfig, facts: ModelFacts) -> None:
    """validate_config against facts computed once (what an Evaluator does for every config)."""
    layers = dict.fromkeys(facts.layers)
    unknown = [name for name, _ in config.overrides if name not in layers]
    if unknown:
        sample = ", ".join(list(layers)[:5])
        raise ConfigError(f"the config names layer(s) {unknown} that the model does not have; "
                          f"its layers are: {sample}{', ...' if len(layers) > 5 else ''}")
    explicit = dict(config.overrides)
    activation_inputs, weight_axes = facts.activation_inputs, facts.weight_axes
    for name in layers:
        choice = config.for_layer(name)
        axes = weight_axes.get(name)
        activation_input = activation_inputs.get(name)
        if choice.weights is not None and (name in explicit or axes is not None):
            _check_weights(name, choice.weights, axes)
        if choice.activations is not None and (name in explicit or activation_input):
            _check_activations(name, choice.activations, activation_input)

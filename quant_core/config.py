"""Quantization configs as plain, hashable data that round-trips through JSON."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from .formats import FormatKind, Granularity, NumberFormat, RangeMethod, parse_format


@dataclass(frozen=True)
class TensorQuant:
    """How one tensor (a layer's weight or its input activation) is quantized.

    `axis=None` (the default) is the layer's natural axis, resolved per layer by `quant_core.axes`:
    its output channels for per-channel, its reduction (input channels) for per-group. An integer
    is a fixed axis of the weight as stored. Unused per tensor.
    """

    format: NumberFormat
    symmetric: bool = True
    granularity: Granularity = Granularity.PER_TENSOR
    axis: int | None = None
    block_size: int = 128
    range_method: RangeMethod = RangeMethod.MINMAX
    percentile: float = 99.99

    def __post_init__(self):
        if isinstance(self.format, str):
            object.__setattr__(self, "format", parse_format(self.format))
        object.__setattr__(self, "granularity", Granularity(self.granularity))
        object.__setattr__(self, "range_method", RangeMethod(self.range_method))
        if self.axis is not None and (isinstance(self.axis, bool) or not isinstance(self.axis, int)):
            raise ValueError(f"axis must be an integer or null (the layer's natural axis), got {self.axis!r}")
        if not 16 <= self.block_size <= 256:
            raise ValueError(f"block_size must be between 16 and 256, got {self.block_size}")
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}")

    def to_dict(self) -> dict:
        return {"format": self.format.name, "symmetric": self.symmetric, "granularity": self.granularity.value,
                "axis": self.axis, "block_size": self.block_size, "range_method": self.range_method.value,
                "percentile": self.percentile}

    @classmethod
    def from_dict(cls, data: dict) -> TensorQuant:
        known = {"format", "symmetric", "granularity", "axis", "block_size", "range_method", "percentile"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown tensor-quantization keys {sorted(unknown)}; expected some of {sorted(known)}")
        if "format" not in data:
            raise ValueError("a tensor-quantization entry needs a 'format', e.g. \"int8\"")
        return cls(**data)


@dataclass(frozen=True)
class LayerQuant:
    """A layer's choice: weights=None keeps FP32 weights, activations=None means weight-only."""

    weights: TensorQuant | None = None
    activations: TensorQuant | None = None

    @property
    def is_fp32(self) -> bool:
        return self.weights is None and self.activations is None

    def to_dict(self) -> dict:
        return {"weights": self.weights.to_dict() if self.weights else None,
                "activations": self.activations.to_dict() if self.activations else None}

    @classmethod
    def from_dict(cls, data: dict) -> LayerQuant:
        if not isinstance(data, dict):
            raise ValueError(f"a layer entry must be an object with 'weights' and 'activations', got {data!r}")
        unknown = set(data) - {"weights", "activations"}
        if unknown:
            raise ValueError(f"unknown layer keys {sorted(unknown)}; expected 'weights' and 'activations'")
        w, a = data.get("weights"), data.get("activations")
        return cls(TensorQuant.from_dict(w) if w else None, TensorQuant.from_dict(a) if a else None)


FP32_LAYER = LayerQuant()


@dataclass(frozen=True)
class QuantConfig:
    """A default choice for every layer plus per-layer overrides keyed by ONNX node name."""

    default: LayerQuant = FP32_LAYER
    overrides: tuple[tuple[str, LayerQuant], ...] = field(default_factory=tuple)
    name: str = "custom"

    def __post_init__(self):
        # Sorted so that equal configs hash equal whatever order they were built in.
        object.__setattr__(self, "overrides", tuple(sorted(dict(self.overrides).items())))
        object.__setattr__(self, "_by_layer", dict(self.overrides))  # not a field: no effect on eq / hash

    def for_layer(self, layer: str) -> LayerQuant:
        return self._by_layer.get(layer, self.default)

    def with_layer(self, layer: str, choice: LayerQuant) -> QuantConfig:
        items = dict(self.overrides)
        items[layer] = choice
        return replace(self, overrides=tuple(items.items()), name="custom")

    def to_dict(self) -> dict:
        return {"name": self.name, "default": self.default.to_dict(),
                "layers": {layer: choice.to_dict() for layer, choice in self.overrides}}

    @classmethod
    def from_dict(cls, data: dict) -> QuantConfig:
        if not isinstance(data, dict) or "default" not in data:
            raise ValueError("a config must be a JSON object with 'default' and optional 'layers' and 'name'")
        layers = data.get("layers") or {}
        if not isinstance(layers, dict):
            raise ValueError("'layers' must map ONNX node names to layer entries")
        return cls(LayerQuant.from_dict(data["default"]),
                   tuple((str(k), LayerQuant.from_dict(v)) for k, v in layers.items()),
                   str(data.get("name", "custom")))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> QuantConfig:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"the config is not valid JSON: {err}") from None
        return cls.from_dict(data)


def _int(bits: int, **kw) -> TensorQuant:
    return TensorQuant(NumberFormat(FormatKind.INT, bits), **kw)


def _activation(bits: int = 8) -> TensorQuant:
    # uint8 asymmetric activations: the fast static-QDQ path of onnxruntime on CPU.
    return TensorQuant(NumberFormat(FormatKind.UINT, bits), symmetric=False)


PRESETS: dict[str, QuantConfig] = {
    "FP32": QuantConfig(FP32_LAYER, name="FP32"),
    "FP16": QuantConfig(LayerQuant(TensorQuant(NumberFormat(FormatKind.FP16))), name="FP16"),
    "W8A8": QuantConfig(LayerQuant(_int(8, granularity=Granularity.PER_CHANNEL), _activation()), name="W8A8"),
    "W8 weight-only": QuantConfig(LayerQuant(_int(8, granularity=Granularity.PER_CHANNEL)), name="W8 weight-only"),
    "W4A8": QuantConfig(LayerQuant(_int(4, granularity=Granularity.PER_CHANNEL), _activation()), name="W4A8"),
    "W4 weight-only per-group": QuantConfig(
        LayerQuant(_int(4, granularity=Granularity.PER_GROUP, block_size=32)), name="W4 weight-only per-group"),
}

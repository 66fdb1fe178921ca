"""Quantization configs as plain, hashable data that round-trips through JSON."""
from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field, replace

from quant_core.numerics.cpu_target import CpuTarget
from quant_core.errors import ConfigError
from quant_core.methods.catalog import checked_options
from quant_core.numerics.formats import FormatKind, Granularity, NumberFormat, RangeMethod, parse_format

MAX_CONFIG_BYTES = 2**20  # a config is a few kilobytes; more is a wrong file, parsed in full otherwise


@dataclass(frozen=True)
class TensorQuant:
    """How one tensor (a layer's weight or its input activation) is quantized.

    `axis=None` (the default) is the layer's natural axis, resolved per layer by `quant_core.numerics.axes`:
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
        # The one public entry of every config (code, JSON, widgets): check each type here, trust it inside.
        object.__setattr__(self, "format", _format(self.format))
        object.__setattr__(self, "symmetric", _bool("symmetric", self.symmetric))
        object.__setattr__(self, "granularity", _choice("granularity", self.granularity, Granularity))
        object.__setattr__(self, "range_method", _choice("range_method", self.range_method, RangeMethod))
        if self.axis is not None:
            object.__setattr__(self, "axis", _integer("axis", self.axis, "an integer or null (the layer's natural axis)"))
        object.__setattr__(self, "block_size", _integer("block_size", self.block_size, "an integer"))
        if self.format.is_block:  # the format fixes its blocks (32 values, NVFP4 16) along the layer's reduction axis
            object.__setattr__(self, "granularity", Granularity.PER_GROUP)
            object.__setattr__(self, "block_size", self.format.block_size)
        if not 16 <= self.block_size <= 256:
            raise ConfigError(f"block_size must be between 16 and 256, got {self.block_size}")
        if type(self.percentile) is not float and (isinstance(self.percentile, bool)
                                                   or not isinstance(self.percentile, numbers.Real)):
            raise ConfigError(f"percentile must be a number in (50, 100], got {_shown(self.percentile)}")
        object.__setattr__(self, "percentile", float(self.percentile))
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {self.percentile}")
        # Hashed once: configs key every cache of the engine, and a dataclass hashes all 7 fields per lookup.
        object.__setattr__(self, "_hash", hash((self.format, self.symmetric, self.granularity, self.axis,
                                                self.block_size, self.range_method, self.percentile)))

    def __hash__(self) -> int:
        return self._hash

    def __getstate__(self) -> dict:
        # String hashes differ between processes: a pickled copy recomputes its hash where it is loaded.
        return {name: value for name, value in self.__dict__.items() if name != "_hash"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    def to_dict(self) -> dict:
        return {"format": self.format.name, "symmetric": self.symmetric, "granularity": self.granularity.value,
                "axis": self.axis, "block_size": self.block_size, "range_method": self.range_method.value,
                "percentile": self.percentile}

    @classmethod
    def from_dict(cls, data: dict) -> TensorQuant:
        if not isinstance(data, dict):
            raise ConfigError(f"a tensor-quantization entry must be an object such as {{\"format\": \"int8\"}}, "
                              f"got {_shown(data)}")
        known = {"format", "symmetric", "granularity", "axis", "block_size", "range_method", "percentile"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown tensor-quantization keys {sorted(unknown)}; expected some of {sorted(known)}")
        if "format" not in data:
            raise ConfigError("a tensor-quantization entry needs a 'format', e.g. \"int8\"")
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
            raise ConfigError(f"a layer entry must be an object with 'weights' and 'activations', got {_shown(data)}")
        unknown = set(data) - {"weights", "activations"}
        if unknown:
            raise ConfigError(f"unknown layer keys {sorted(unknown)}; expected 'weights' and 'activations'")
        return cls(_tensor_entry("weights", data.get("weights")), _tensor_entry("activations", data.get("activations")))


FP32_LAYER = LayerQuant()


@dataclass(frozen=True)
class MethodSpec:
    """One accuracy-recovery method of a config: its registered name and its options (docs/methods.md).

    Options not given take the method's defaults, so `{"name": "smoothquant"}` and
    `{"name": "smoothquant", "alpha": 0.5}` are the same spec (equal and equal hashes). Names and
    options are checked against the catalog (`quant_core.methods.catalog`).
    """

    name: str
    options: tuple[tuple[str, object], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "options", checked_options(self.name, dict(self.options)))

    def option(self, key: str):
        return dict(self.options)[key]

    def to_dict(self) -> dict:
        return {"name": self.name, **dict(self.options)}

    @classmethod
    def from_dict(cls, data) -> MethodSpec:
        if isinstance(data, str):
            return cls(data)
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ConfigError(f"a method must be an object such as {{\"name\": \"cle\"}}, got {_shown(data)}")
        return cls(data["name"], tuple((key, value) for key, value in data.items() if key != "name"))


def _methods(value) -> tuple[MethodSpec, ...]:
    if isinstance(value, (str, dict, MethodSpec)):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise ConfigError(f"methods must be a list of methods, got {_shown(value)}") from None
    return tuple(item if isinstance(item, MethodSpec) else MethodSpec.from_dict(item) for item in items)


@dataclass(frozen=True)
class QuantConfig:
    """A default choice for every layer plus per-layer overrides keyed by ONNX node name.

    `target` is the CPU class the export is made for (`cpu_target.CpuTarget`): on a saturating x86
    target the export stores the int8 weights of integer-kernel layers as uint8 (the same grid, run
    by u8 x u8 kernels that do not saturate); AUTO is this machine.

    `methods` are accuracy-recovery methods applied in order to the FP32 model before it is quantized
    (`quant_core.methods`, docs/methods.md): each a `MethodSpec`; () = none, and then the JSON has no
    "methods" key (files written before methods existed read the same).
    """

    default: LayerQuant = FP32_LAYER
    overrides: tuple[tuple[str, LayerQuant], ...] = field(default_factory=tuple)
    name: str = "custom"
    target: CpuTarget = CpuTarget.AUTO
    methods: tuple[MethodSpec, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "target", _choice("target", self.target, CpuTarget))
        object.__setattr__(self, "methods", _methods(self.methods))
        # Sorted so that equal configs hash equal whatever order they were built in.
        object.__setattr__(self, "overrides", tuple(sorted(dict(self.overrides).items())))
        object.__setattr__(self, "_by_layer", dict(self.overrides))  # not a field: no effect on eq / hash

    def for_layer(self, layer: str) -> LayerQuant:
        return self._by_layer.get(layer, self.default)

    def with_layer(self, layer: str, choice: LayerQuant) -> QuantConfig:
        items = dict(self.overrides)
        items[layer] = choice
        return replace(self, overrides=tuple(items.items()), name="custom")

    def with_methods(self, methods) -> QuantConfig:
        """Return this config with `methods` (MethodSpecs, dicts or names, in order) instead of its own."""
        return replace(self, methods=tuple(methods))

    def to_dict(self) -> dict:
        data = {"name": self.name, "target": self.target.value, "default": self.default.to_dict(),
                "layers": {layer: choice.to_dict() for layer, choice in self.overrides}}
        if self.methods:
            data["methods"] = [method.to_dict() for method in self.methods]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> QuantConfig:
        if not isinstance(data, dict) or "default" not in data:
            raise ConfigError("a config must be a JSON object with 'default' and optional 'layers', 'name', "
                              "'target' and 'methods'")
        layers = data.get("layers") or {}
        if not isinstance(layers, dict):
            raise ConfigError("'layers' must map ONNX node names to layer entries")
        methods = data.get("methods") or []
        if not isinstance(methods, list):
            raise ConfigError(f"'methods' must be a list such as [{{\"name\": \"cle\"}}], got {_shown(methods)}")
        return cls(LayerQuant.from_dict(data["default"]),
                   tuple((str(k), LayerQuant.from_dict(v)) for k, v in layers.items()),
                   str(data.get("name", "custom")), data.get("target", CpuTarget.AUTO.value),
                   tuple(MethodSpec.from_dict(entry) for entry in methods))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> QuantConfig:
        """Parse a config saved by `to_json`; refuse more than `MAX_CONFIG_BYTES` and nesting Python cannot parse."""
        size = len(text) if isinstance(text, (bytes, bytearray)) else len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"the config JSON is {size} bytes, over the {MAX_CONFIG_BYTES // 2**20} MiB "
                              "limit: a config is a few kilobytes")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"the config is not valid JSON: {err}") from None
        except RecursionError:
            raise ConfigError("the config JSON is nested too deeply to read: a config is at most 4 levels deep") from None
        return cls.from_dict(data)


def _shown(value, limit: int = 60) -> str:
    """`value` for a one-line message: its repr, cut to `limit` characters, and its JSON type."""
    text = repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    kind = {bool: "a boolean", str: "a string", dict: "an object", list: "a list", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, numbers.Number) else type(value).__name__)
    return f"{text} ({kind})"


def _format(value) -> NumberFormat:
    if isinstance(value, NumberFormat):
        return value
    if isinstance(value, str):
        return parse_format(value)
    raise ConfigError(f"'format' must be a format name such as \"int8\", got {_shown(value)}")


def _bool(key: str, value) -> bool:
    # JSON true/false only: "no" or 0 would otherwise pass as truthy or falsy without a word.
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{key} must be true or false, got {_shown(value)}")


def _integer(key: str, value, expected: str) -> int:
    if type(value) is int:
        return value  # the common case, without the slower abstract-base-class check below
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{key} must be {expected}, got {_shown(value)}")
    return int(value)


def _choice(key: str, value, enum):
    if isinstance(value, enum):
        return value  # already checked (replace() and copies pass members back in)
    allowed = ", ".join(member.value for member in enum)
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be one of {allowed}, got {_shown(value)}")
    try:
        return enum(value)
    except ValueError:
        raise ConfigError(f"unknown {key} {value!r}: expected one of {allowed}") from None


def _tensor_entry(key: str, value) -> TensorQuant | None:
    if value is None or value == {}:
        return None  # FP32 for that tensor
    if not isinstance(value, dict):
        raise ConfigError(f"'{key}' must be an object such as {{\"format\": \"int8\"}} or null, got {_shown(value)}")
    return TensorQuant.from_dict(value)


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

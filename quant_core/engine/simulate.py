"""One onnxruntime session per model that simulates any quantization config.

The session is built once: the weight of every quantizable layer becomes a graph input (fed the
fake-quantized numpy weights), and every activation a quantizable layer reads passes through a
fake-quant subgraph whose parameters are graph inputs. Changing the config changes only feeds.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from quant_core.config import TensorQuant
from quant_core.errors import DataError, ModelError, QuantLabError
from quant_core.numerics.formats import FormatKind, NumberFormat
from quant_core.numerics.qparams import qparams_from_range
from quant_core.numerics.quantize import fake_quantize
from quant_core.engine.simulation_graph import CAST_OPSET, ActivationMode, WeightFeed, build_simulation_model, cast_opset, fake_quant_in_blocked_layout, input_name, own_weight_copies, reorder_weight_inputs, simulation_session, with_weight_data, without_weight_data
from quant_core.model.layers import layer_specs
from quant_core.model.runtime import first_line, session_options
from quant_core.engine.simulation_suffix import LayerSuffix, suffix_model


_MODE_OF_KIND = {FormatKind.FP16: ActivationMode.FP16, FormatKind.BF16: ActivationMode.BF16,
                 FormatKind.FP8_E4M3FN: ActivationMode.FP8_E4M3FN, FormatKind.FP8_E5M2: ActivationMode.FP8_E5M2}
_CAST_KIND = {mode: kind for kind, mode in _MODE_OF_KIND.items()}


@dataclass(frozen=True)
class ActivationQuant:
    """Fake-quant parameters of one activation input.

    UINT8 / INT8: QuantizeLinear -> DequantizeLinear (the export's own operators).
    INTEGER (any other width, or narrow range): y = Clip(Round(x / scale), qmin - zero_point,
    qmax - zero_point) * scale, which is QuantizeLinear -> DequantizeLinear bit for bit.
    Float modes: y = Cast(Cast(x, format), float32), round to nearest even with saturation.
    """

    mode: ActivationMode = ActivationMode.OFF
    scale: float = 1.0
    zero_point: int = 0
    qmin: int = 0
    qmax: int = 255
    # The integer format the parameters were made for (its limits are qmin, qmax): what `apply` needs.
    fmt: NumberFormat | None = field(default=None, compare=False)

    @classmethod
    def from_range(cls, lo: float, hi: float, tq: TensorQuant) -> ActivationQuant:
        """Return the parameters that quantize the calibrated range [lo, hi] as `tq` says."""
        fmt = tq.format
        if fmt.is_identity:
            return OFF
        if fmt.kind in _MODE_OF_KIND:
            return cls(_MODE_OF_KIND[fmt.kind], _float_scale(fmt, lo, hi))
        if not fmt.is_integer:
            raise ValueError(f"{fmt.name} cannot quantize activations: use an int/uint, fp16, bf16 or fp8 format")
        scale, zero_point = qparams_from_range(lo, hi, fmt, symmetric=tq.symmetric)
        mode = _QDQ_MODE.get(fmt.name, ActivationMode.INTEGER)
        return cls(mode, float(scale), int(zero_point), fmt.qmin, fmt.qmax, fmt)

    def apply(self, x: np.ndarray) -> np.ndarray | None:
        """Return x fake-quantized with numpy as the session's nodes do it, or None for a float mode.

        UINT8 / INT8 (QuantizeLinear -> DequantizeLinear) and INTEGER (Div, Round, Clip, Mul) are
        `quantize.fake_quantize` bit for bit, but for the sign of an exact zero (+0.0 here). None also
        for NaN or Inf in x (the session carries them on; fake_quantize refuses them).
        """
        if self.mode == ActivationMode.OFF:
            return x
        if self.fmt is None or self.mode not in _INTEGER_MODES:
            return None
        try:
            return fake_quantize(x, np.float32(self.scale), self.zero_point, self.fmt)
        except QuantLabError:
            return None

    def feeds(self, index: int) -> dict[str, np.ndarray]:
        return {input_name(index, "mode"): np.array(int(self.mode), dtype=np.int64),
                input_name(index, "scale"): np.array(self.scale, dtype=np.float32),
                input_name(index, "lo"): np.array(self.qmin - self.zero_point, dtype=np.float32),
                input_name(index, "hi"): np.array(self.qmax - self.zero_point, dtype=np.float32),
                input_name(index, "zp_u8"): np.array(self.zero_point if self.mode == ActivationMode.UINT8 else 0, np.uint8),
                input_name(index, "zp_i8"): np.array(self.zero_point if self.mode == ActivationMode.INT8 else 0, np.int8)}


OFF = ActivationQuant()
_QDQ_MODE = {"uint8": ActivationMode.UINT8, "int8": ActivationMode.INT8}
_INTEGER_MODES = (ActivationMode.UINT8, ActivationMode.INT8, ActivationMode.INTEGER)

def _float_scale(fmt, lo: float, hi: float) -> float:
    """fp8 activations are scaled so that amax maps onto max_finite, as fp8 weights are; fp16 / bf16 are not."""
    if fmt.kind not in (FormatKind.FP8_E4M3FN, FormatKind.FP8_E5M2):
        return 1.0
    from quant_core.numerics.floats import fp8_scale
    return float(fp8_scale(max(abs(float(lo)), abs(float(hi))), fmt))


@dataclass(frozen=True)
class SimulationOutput:
    outputs: tuple[np.ndarray, ...]
    layer_outputs: Mapping[str, np.ndarray] = field(default_factory=dict)


def activation_modes_supported(model: onnx.ModelProto) -> frozenset[ActivationMode]:
    """Return the activation modes this model's opset can express with Cast."""
    opset = cast_opset(model)
    modes = {ActivationMode.OFF, ActivationMode.INTEGER, ActivationMode.UINT8, ActivationMode.INT8}
    modes.update(mode for mode, kind in _CAST_KIND.items() if opset >= CAST_OPSET[kind])
    return frozenset(modes)


def _node_seconds(profile_path: str) -> tuple[tuple[str, float], ...]:
    """(node name, seconds) of every kernel run in an onnxruntime profile, in execution order; the file goes."""
    try:
        with open(profile_path, encoding="utf-8") as file:
            events = json.load(file)
    except (OSError, ValueError):
        return ()
    finally:
        with contextlib.suppress(OSError):
            os.remove(profile_path)
    suffix = "_kernel_time"
    return tuple((event["name"][:-len(suffix)], event.get("dur", 0) / 1e6) for event in events
                 if isinstance(event, dict) and event.get("cat") == "Node" and str(event.get("name", "")).endswith(suffix))


class _Variant:
    """One built InferenceSession and how to feed its weights."""

    def __init__(self, model, specs, modes, threads: int, *, layer_outputs: bool,
                 pattern: Mapping[int, ActivationMode] | None = None, extra_outputs: tuple[str, ...] = (),
                 profile: bool = False):
        # Built without the weights' data (`without_weight_data`): they become markers, then inputs.
        base, _, self.activation_index = build_simulation_model(without_weight_data(model, specs), specs, modes,
                                                               weights_as_inputs=False, layer_outputs=layer_outputs,
                                                               pattern=pattern, extra_outputs=extra_outputs)
        traced = reorder_weight_inputs(base, specs, threads)
        del base
        if traced is not None:
            built, by_weight = traced
            fake_quant_in_blocked_layout(built)
            self.weight_feeds = {spec.name: by_weight[spec.weight] for spec in specs if spec.weight in by_weight}
            self.reordered = True
        else:
            built, inputs, _ = build_simulation_model(without_weight_data(model, specs), specs, modes,
                                                      layer_outputs=layer_outputs, pattern=pattern,
                                                      extra_outputs=extra_outputs)
            with_weight_data(built, model)  # a weight another node reads too stays a constant
            shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in built.graph.input}
            self.weight_feeds = {layer: [WeightFeed(name, shapes[name])] for layer, name in inputs.items()}
            self.reordered = False
        self.input_names = frozenset(i.name for i in built.graph.input)
        options = session_options(threads)
        if self.reordered:
            # Already optimized for this machine; optimizing again would only redo the work.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        if profile:  # its first run tells where the time goes, node by node (`SimulationSession.node_seconds`)
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"qlab_capture_{os.getpid()}")
        serialized = built.SerializeToString()
        del built  # not held while onnxruntime parses its bytes; the session keeps its own graph
        try:
            self.session = simulation_session(serialized, options)
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelError(f"onnxruntime cannot build the simulation session: {first_line(err)}") from None


# A run whose activation modes (which layer: off / uint8 / int8 / ...) were seen this many times gets a
# session specialized for them, with the fake-quant nodes inline instead of `If`s (at most MAX_SPECIALIZED).
SPECIALIZE_AFTER = 3
MAX_SPECIALIZED = 8


class SimulationSession:
    """Run a model with any mix of fake-quantized weights and activations, without rebuilding it.

    Built once per model. Model outputs come from one InferenceSession; per-layer outputs (which
    stop onnxruntime from fusing a layer with what follows) come from a second one, built on first use.
    """

    def __init__(self, prepared, *, threads: int = 1):
        model = prepared.model
        self._threads = threads
        specs = tuple(layer_specs(prepared))
        self.layers = tuple(spec.name for spec in specs)
        self.layer_outputs = {spec.name: spec.output for spec in specs if spec.output}
        self.opset = cast_opset(model)
        self.modes = activation_modes_supported(model)
        initializers = {init.name: init for init in model.graph.initializer}
        self._fp32_weights = {spec.name: numpy_helper.to_array(initializers[spec.weight]).astype(np.float32)
                              for spec in specs if spec.weight in initializers}
        # Every session is built on this model: each layer's weight read by its layer alone (a weight other
        # nodes read too is copied for the layer; they keep the FP32 constant), `own_weight_copies`.
        self._model, self._specs = own_weight_copies(model, specs, data=False)
        self._layouts: dict[tuple, tuple[WeightFeed, np.ndarray]] = {}  # `_laid_out`
        self.input_names = tuple(i.name for i in model.graph.input if i.name not in initializers)
        self.output_names = tuple(o.name for o in model.graph.output)
        self._variants: dict[bool, _Variant] = {False: self._build(layer_outputs=False)}
        self._suffixes: dict[str, LayerSuffix | None] = {}
        self._patterns: dict[tuple, _Variant | None] = {}
        self._pattern_uses: dict[tuple, int] = {}
        self._weight_captures: dict[tuple[str, ...], _Variant] = {}
        self._profiled: set[tuple[str, ...]] = set()
        # (node name as onnxruntime ran it, seconds) in execution order, from the first capture run;
        # an NCHWc node is named after its output tensor + "_nchwc". Empty until a capture ran.
        self.node_seconds: tuple[tuple[str, float], ...] = ()

    def _build(self, *, layer_outputs: bool, pattern: Mapping[int, ActivationMode] | None = None,
               extra_outputs: tuple[str, ...] = (), profile: bool = False) -> _Variant:
        variant = _Variant(self._model, self._specs, self.modes, self._threads, layer_outputs=layer_outputs,
                           pattern=pattern, extra_outputs=extra_outputs, profile=profile)
        defaults = {}
        for layer, feeds in variant.weight_feeds.items():
            shared = [self._laid_out(layer, feed) for feed in feeds]
            variant.weight_feeds[layer] = [feed for feed, _ in shared]
            defaults.update((feed.name, value) for feed, value in shared)
        for index in variant.activation_index.values():
            defaults.update(OFF.feeds(index))
        variant.default_feeds = {name: value for name, value in defaults.items() if name in variant.input_names}
        return variant

    def _laid_out(self, layer: str, feed: WeightFeed) -> tuple[WeightFeed, np.ndarray]:
        """`feed` and the layer's FP32 weight laid out by it, both shared with every session built before
        in the same layout (the general, per-layer-output, specialized and capture sessions are optimized
        alike): one gather index and one laid-out copy per layout, not per session (19 MiB each on ocr_rec)."""
        weight = self._fp32_weights[layer]
        if feed.gather is None:
            return feed, feed.value(weight)  # the weight itself, no copy
        key = (layer, feed.shape, hashlib.sha1(np.ascontiguousarray(feed.gather)).digest())
        found = self._layouts.get(key)
        if found is not None and np.array_equal(found[0].gather, feed.gather):
            return WeightFeed(feed.name, feed.shape, found[0].gather), found[1]
        value = feed.value(weight)
        self._layouts[key] = (feed, value)
        return feed, value

    def _specialized(self, activations: Mapping[str, ActivationQuant] | None) -> _Variant | None:
        """The session specialized for these activation modes (no `If`s), built on the pattern's
        SPECIALIZE_AFTER-th use and cached; None before that."""
        general = self._variants[False]
        key = tuple(sorted((general.activation_index[layer], params.mode)
                           for layer, params in (activations or {}).items() if params.mode != ActivationMode.OFF))
        if key in self._patterns:
            return self._patterns[key]
        self._pattern_uses[key] = self._pattern_uses.get(key, 0) + 1
        if self._pattern_uses[key] < SPECIALIZE_AFTER or len(self._patterns) >= MAX_SPECIALIZED:
            return None
        try:
            self._patterns[key] = self._build(layer_outputs=False, pattern=dict(key))
        except ModelError:
            self._patterns[key] = None
        return self._patterns[key]

    def _variant(self, layer_outputs: bool) -> _Variant:
        if layer_outputs not in self._variants:
            self._variants[layer_outputs] = self._build(layer_outputs=layer_outputs)
        return self._variants[layer_outputs]

    @property
    def reordered(self) -> bool:
        """True when the weights are fed in onnxruntime's optimized (NCHWc) layout."""
        return self._variants[False].reordered

    @property
    def quantizable_activations(self) -> tuple[str, ...]:
        """Layers whose activation input can be fake-quantized."""
        return tuple(self._variants[False].activation_index)

    def fp32_weight(self, layer: str) -> np.ndarray:
        return self._fp32_weights[layer]

    @property
    def fp32_weights(self) -> Mapping[str, np.ndarray]:
        """Each layer's FP32 weight (float32), by layer name; read-only by convention (shared)."""
        return self._fp32_weights

    def cut_tensors(self, layer: str) -> tuple[str, ...] | None:
        """Activations computed before `layer` that the rest of the model reads (None: cannot be cut)."""
        found = suffix_model(self._model, layer)
        return None if found is None else found[1]

    def suffix(self, layer: str) -> LayerSuffix | None:
        """The model from `layer` on with only its weight as an input (built on first use, cached); None if
        the model cannot be cut there."""
        if layer not in self._suffixes:
            spec = next((spec for spec in self._specs if spec.name == layer), None)
            try:
                later = tuple(s for s in self._specs if s.name in self._fp32_weights)
                self._suffixes[layer] = None if spec is None else LayerSuffix(self._model, spec, self._threads, later,
                                                                              self._fp32_weights)
            except ModelError:
                self._suffixes[layer] = None
        return self._suffixes[layer]

    def capture(self, feeds: Mapping[str, np.ndarray], tensors: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Return the FP32 values of the model's intermediate `tensors` for one batch, as the simulation
        computes them (weights fed as inputs, in its layout: a plain model with constant weights may sum in
        another order, and a suffix fed those values would then not reproduce a whole run bit for bit)."""
        return self.capture_quantized(feeds, {}, tensors)

    def capture_quantized(self, feeds: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray],
                          tensors: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Return the values of intermediate `tensors` for one batch with `weights` fake-quantized and
        every activation FP32 (a session with no fake-quant nodes and those outputs, built once per tuple)."""
        if tensors not in self._weight_captures:
            self._weight_captures[tensors] = self._build(layer_outputs=False, pattern={}, extra_outputs=tensors,
                                                         profile=True)
        variant = self._weight_captures[tensors]
        all_feeds = dict(variant.default_feeds)
        all_feeds.update(feeds)
        for layer, weight in weights.items():
            for feed in variant.weight_feeds[layer]:
                all_feeds[feed.name] = feed.value(np.asarray(weight, dtype=np.float32))
        try:
            values = variant.session.run(list(tensors), all_feeds)
        except Exception as err:  # onnxruntime's own exception types
            raise DataError(f"onnxruntime cannot run the model on this data: {first_line(err)}") from None
        if tensors not in self._profiled:
            self._profiled.add(tensors)
            self.node_seconds = _node_seconds(variant.session.end_profiling())  # the weights' values take no time
        return dict(zip(tensors, values))

    def run(self, feeds: Mapping[str, np.ndarray], *, weights: Mapping[str, np.ndarray] | None = None,
            activations: Mapping[str, ActivationQuant] | None = None,
            with_layer_outputs: bool = False, specialize: bool = True) -> SimulationOutput:
        """Run one batch; layers absent from `weights` / `activations` stay FP32.

        `specialize=False` keeps to the general session (the `If` chains), never one specialized for the
        activation pattern: the equal-bit-for-bit tests compare the two.
        """
        return self.runner(weights, activations, with_layer_outputs=with_layer_outputs, specialize=specialize)(feeds)

    def runner(self, weights: Mapping[str, np.ndarray] | None = None,
               activations: Mapping[str, ActivationQuant] | None = None, *,
               with_layer_outputs: bool = False, specialize: bool = True) -> Callable[[Mapping[str, np.ndarray]],
                                                                                      SimulationOutput]:
        """Return run(batch feeds) for one config: the session and the config's feeds (weights laid out
        for it) chosen once, for every batch of a pass; safe to call from several threads at once."""
        variant = None if with_layer_outputs or not specialize else self._specialized(activations)
        variant = variant or self._variant(with_layer_outputs)
        config_feeds = dict(variant.default_feeds)
        for layer, weight in (weights or {}).items():
            for feed in variant.weight_feeds[layer]:
                config_feeds[feed.name] = feed.value(np.asarray(weight, dtype=np.float32))
        for layer, params in (activations or {}).items():
            if params.mode not in self.modes:
                needed = CAST_OPSET[_CAST_KIND[params.mode]]
                raise ValueError(f"layer {layer!r}: {params.mode.name.lower()} activations need a model with "
                                 f"opset >= {needed}; this model has opset {self.opset}")
            config_feeds.update((name, value) for name, value in params.feeds(variant.activation_index[layer]).items()
                                if name in variant.input_names)
        names = list(self.output_names)
        if with_layer_outputs:
            names += [out for out in dict.fromkeys(self.layer_outputs.values()) if out not in self.output_names]
        count = len(self.output_names)

        def run(feeds: Mapping[str, np.ndarray]) -> SimulationOutput:
            all_feeds = dict(config_feeds)
            all_feeds.update(feeds)
            try:
                values = variant.session.run(names, all_feeds)
            except Exception as err:  # onnxruntime's own exception types: wrong shapes or dtypes in the data
                raise DataError(f"onnxruntime cannot run the model on this data: {first_line(err)}") from None
            outputs = tuple(values[:count])
            if not with_layer_outputs:
                return SimulationOutput(outputs)
            by_name = dict(zip(names, values))
            return SimulationOutput(outputs, {layer: by_name[out] for layer, out in self.layer_outputs.items()})

        return run

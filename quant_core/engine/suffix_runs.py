"""Configs that change one layer run only the model from that layer on.

A sweep quantizes one layer at a time, everything else FP32: what comes before that layer is the
same FP32 computation for every config. `SuffixRuns` captures those FP32 activations once and runs
each config through the layer's suffix session (`simulation_suffix.LayerSuffix`), whose outputs
equal a whole simulation run's bit for bit (checked once per layer on the first batch: a layer whose
suffix does not reproduce the whole run runs whole). When the layer's input activation is quantized too, the
captured input is fake-quantized with numpy first (`ActivationQuant.apply`, the session's own
formula), which is exact only when that layer is the tensor's one reader from there on (a residual
branch reading it must see it FP32). It decides per layer whether that pays off.

A search (suggest) tries candidates one layer away from its current config: an *anchor* captures that
config's activations (weights quantized) once, and each candidate runs its layer's suffix fed them and
its later layers' weights.
"""
from __future__ import annotations

import time
from collections.abc import Hashable, Mapping

import numpy as np

from quant_core.config import TensorQuant
from quant_core.engine.simulate import ActivationQuant
from quant_core.engine.workers import map_in_order
from quant_core.model.layers import layer_specs

# Memory kept for single-layer weight configs (sweeps) at most: captured FP32 activations and the weight
# copies fed to suffix sessions; past it, further layers' configs run the whole model.
SUFFIX_MEMORY_BYTES = 256 * 2**20
_UINT8_ASYMMETRIC = TensorQuant("uint8", symmetric=False)  # the timing probe's fake-quant


class SuffixRuns:
    """The suffix sessions and captured FP32 activations of one Evaluator (its session and split)."""

    def __init__(self, prepared, session, feeder, workers: int = 1):
        self._prepared, self._session = prepared, session
        self._workers = workers  # batches run side by side (`workers.map_in_order`)
        self._feeder, self._batch_size = feeder, feeder.batch_size
        self._sample_count = feeder.sample_count
        self._specs = {spec.name: spec for spec in layer_specs(prepared)}
        self._info_layers = {layer.name: layer for layer in prepared.info.layers}
        self._declared = {v.name: v for v in prepared.model.graph.value_info}
        self._cuts: list[dict[str, np.ndarray]] | None = None
        self._cut_layers: set[str] = set()
        self._ready: dict[tuple[str, bool], bool] = {}  # (layer, with its activation) -> runs from the layer on
        self._plain_build_seconds = 0.0
        self._run_seconds = float("inf")
        self._shares: dict[tuple[str, bool], float] = {}
        self._planned: tuple[tuple[str, ...], frozenset[str]] | None = None
        self._anchor = None  # (feeds by layer, captured values per batch, weights, exact per layer)
        self._anchors_disabled = False
        self._captured_bytes = 0  # the FP32 activations captured for sweeps
        self._suffix_bytes: dict[str, int] = {}  # layer -> weight copies its suffix session is fed
        self._exact: dict[str, bool] = {}  # layer -> its suffix reproduces whole runs (`_reproduces_whole_runs`)
        self._fp32_first_batch: tuple[np.ndarray, ...] | None = None  # whole FP32 run of the first batch

    # -- anchors: configs that differ from one config (the anchor) in one layer's weight -----------

    def anchor_pays(self) -> bool:
        """True when running every layer's candidate from that layer on, after one capture of the
        anchor (about one run), saves more than 1.5 runs: the layers' prefix shares sum above 1.5."""
        if self._anchors_disabled:
            return False
        return sum(self._prefix_share(layer) for layer in self._plan()[1]) > 1.5

    @property
    def anchored(self) -> bool:
        """True while an anchor is set (most evaluations have none: nothing to compare)."""
        return self._anchor is not None

    def clear_anchor(self) -> None:
        self._anchor = None

    def disable_anchors(self) -> None:
        """Never anchor again (the capture session cannot be built for this model)."""
        self._anchor, self._anchors_disabled = None, True

    def set_anchor(self, feeds: Mapping[str, Hashable], weights: Mapping[str, np.ndarray]) -> bool:
        """Capture, with these fake-quantized `weights` (activations FP32), what each layer's suffix reads;
        `feeds` (per layer, comparable) identify the anchor. False (no anchor) over the memory budget."""
        self._anchor = None
        tensors, layers = self._plan()
        # The anchor's activations may sit beside the FP32 ones of a sweep: half the budget each.
        if not layers or 2 * sum(self._tensor_bytes(t) for t in tensors) > SUFFIX_MEMORY_BYTES:
            return False
        captured = []
        for batch in self._feeder.batches():
            values = dict(batch)
            values.update(self._session.capture_quantized(batch, weights, tensors) if tensors else {})
            captured.append(values)
        if 2 * sum(values[t].nbytes for values in captured for t in tensors) > SUFFIX_MEMORY_BYTES:
            return False
        # The anchor's weights and, per layer, whether its suffix reproduces the anchor's whole run.
        # + whether each layer's suffix reproduces the anchor's whole run, and that run's first batch (once).
        self._anchor = (dict(feeds), captured, dict(weights), {}, [])
        return True

    def anchor_outputs(self, feeds: Mapping[str, Hashable], weights: Mapping[str, np.ndarray]
                       ) -> tuple[np.ndarray, ...] | None:
        """Outputs of a weights-only config that differs from the anchor in one layer: that layer's suffix
        fed the anchor's captured activations and the config's later weights; None otherwise."""
        anchor = self._anchor  # read once: another thread (a search's end) may drop it meanwhile
        if anchor is None:
            return None
        anchor_feeds, captured, anchor_weights, anchor_exact, anchor_whole = anchor
        differing = [layer for layer in set(feeds) | set(anchor_feeds) if feeds.get(layer) != anchor_feeds.get(layer)]
        if len(differing) != 1 or differing[0] not in self._plan()[1] or not self._prefix_share(differing[0]):
            return None
        layer = differing[0]
        suffix = self._suffix(layer)
        if suffix is None:
            return None
        exact = anchor_exact.get(layer)  # checked once per anchor and layer
        if exact is None:
            if not anchor_whole:
                anchor_whole.append(self._first_batch_outputs(anchor_weights))
            exact = anchor_exact[layer] = self._reproduces_whole_runs(layer, anchor_whole[0], captured[0],
                                                                      anchor_weights)
        if not exact:
            return None
        weight = weights.get(layer, self._session.fp32_weights[layer])
        later = {name: value for name, value in weights.items() if name in suffix.later_feeds}
        return self._feeder.join(map_in_order(lambda values: suffix.run(values, weight, later), captured,
                                              self._workers))

    @property
    def nbytes(self) -> int:
        """Memory held: captured FP32 activations + the weight copies the suffix sessions are fed
        (an anchor's activations, at most half the budget, come on top while a search runs)."""
        return self._captured_bytes + sum(self._suffix_bytes.values())

    def _suffix(self, layer: str):
        """The layer's suffix session, built while the memory held stays within SUFFIX_MEMORY_BYTES;
        None past it, or when the model cannot be cut there."""
        if layer not in self._suffix_bytes:
            if self.nbytes >= SUFFIX_MEMORY_BYTES:
                return None
            suffix = self._session.suffix(layer)
            if suffix is None:
                return None
            self._suffix_bytes[layer] = suffix.nbytes
        return self._session.suffix(layer)

    def full_run_took(self, seconds: float) -> None:
        """Record a whole run of the split: the fastest one is the cost a suffix is weighed against
        (the first pays onnxruntime's warm-up)."""
        self._run_seconds = min(self._run_seconds, seconds)

    def ready(self, layer: str, activation: bool = False) -> bool:
        """True when configs changing only `layer` (its weight, and its input activation if
        `activation`) run from that layer on."""
        return bool(self._ready.get((layer, activation)))

    def prepare(self, layer: str, configs: int, activation: bool = False) -> bool:
        """Get ready for `configs` configs that change only `layer`'s weights (and its input activation if
        `activation`); return True if they will run only the model from `layer` on (fed cached FP32
        activations; the same outputs bit for bit, up to the sign of an exact zero with an activation).

        That needs one more onnxruntime session (built here) and the FP32 activations the rest of the
        model reads (captured once for all layers, kept, at most SUFFIX_MEMORY_BYTES). It is done only
        when the time it saves, configs x ((one run of the split) x (share s of the multiply-adds
        before the layer) - (numpy fake-quant of the layer's input, timed here, with an activation)),
        is larger than one run (the capture) and than building the session, estimated as
        2 x (1 - s) x a plain session's build (timed with the capture).
        """
        key = (layer, activation)
        if key not in self._ready:
            if configs > 1 and layer in self._plan()[1]:
                self.cut_values()  # one capture run, profiled: the prefix share by time (`_time_share`)
            share = self._prefix_share(layer)
            saving = configs * self._run_seconds * share
            # The FP32 activations cost one run (and one plain session) to capture, once for all layers.
            if saving <= self._run_seconds or not self.cut_values():
                return False
            if activation:
                cost = self._activation_seconds(layer)
                if cost is None:
                    self._ready[key] = False
                    return False
                saving -= configs * cost
            # A suffix session is an optimized plain session of the rest of the model: about twice the
            # plain session's build (measured with the capture) times the share it keeps.
            if saving <= self._run_seconds or saving <= 2.0 * self._plain_build_seconds * (1.0 - share):
                return False
            if layer not in self._cut_layers:
                return False
            if layer not in self._exact and self._suffix(layer) is not None:
                self._exact[layer] = self._reproduces_whole_runs(layer)
            self._ready[key] = self._suffix(layer) is not None and self._exact[layer]
        return self._ready[key]

    def _first_batch_outputs(self, weights: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """A whole simulation run of the first batch with `weights` (by layer; the rest FP32)."""
        return self._session.run(next(iter(self._feeder.batches())), weights=weights).outputs

    def _reproduces_whole_runs(self, layer: str, whole: tuple[np.ndarray, ...] | None = None,
                               captured: dict[str, np.ndarray] | None = None,
                               weights: Mapping[str, np.ndarray] | None = None) -> bool:
        """True when the layer's suffix, fed `captured` (one batch's activations, by default the FP32 ones)
        and `weights` (by layer, default FP32), gives `whole` (the first batch's whole-run outputs with those
        weights; default FP32, run once and kept) bit for bit. onnxruntime may fuse a captured tensor's
        producer differently from the whole graph (MiniLM's LayerNorm: 1.2e-7 apart); such a layer's
        configs then run whole."""
        weights = weights or {}
        if whole is None:
            if self._fp32_first_batch is None:
                self._fp32_first_batch = self._first_batch_outputs({})
            whole = self._fp32_first_batch
        suffix = self._session.suffix(layer)
        later = {name: value for name, value in weights.items() if name in suffix.later_feeds}
        values = self.cut_values()[0] if captured is None else captured
        ran = suffix.run(values, weights.get(layer, self._session.fp32_weights[layer]), later)
        return all(np.array_equal(a, b, equal_nan=True) for a, b in zip(whole, ran))

    def outputs(self, layer: str, weight: np.ndarray, activation: ActivationQuant | None = None
                ) -> tuple[np.ndarray, ...] | None:
        """Outputs when only `layer`'s weight (and its input `activation`) differ from FP32: its suffix
        fed the cached FP32 activations, the layer's input fake-quantized with numpy; None when that
        layer is not prepared (or the activation's mode has no numpy twin: the float formats)."""
        if not self._ready.get((layer, activation is not None)):
            return None
        cuts, suffix = self.cut_values(), self._session.suffix(layer)
        if activation is None:
            return self._feeder.join(map_in_order(lambda values: suffix.run(values, weight), cuts, self._workers))
        tensor = self._specs[layer].activation_input

        def run(values):
            quantized = activation.apply(values[tensor])
            return None if quantized is None else suffix.run({**values, tensor: quantized}, weight)

        parts = []
        for part in map_in_order(run, cuts, self._workers):
            if part is None:
                return None
            parts.append(part)
        return self._feeder.join(parts)

    def _activation_seconds(self, layer: str) -> float | None:
        """Seconds to fake-quantize the layer's captured input over the split (uint8, its min-max range),
        or None when the suffix cannot take a fake-quantized input: the layer reads no float
        activation, or another node from the layer on reads the same tensor."""
        tensor = self._specs[layer].activation_input
        nodes = list(self._prepared.model.graph.node)
        names = [node.name for node in nodes]
        if not tensor or layer not in names or not self.cut_values() or tensor not in self.cut_values()[0]:
            return None
        readers = sum(name == tensor for node in nodes[names.index(layer):] for name in node.input)
        if readers != 1:
            return None
        started = time.perf_counter()
        for values in self.cut_values():
            x = values[tensor]
            params = ActivationQuant.from_range(float(x.min()), float(x.max()), _UINT8_ASYMMETRIC)
            if params.apply(x) is None:
                return None
        return time.perf_counter() - started

    def _prefix_share(self, layer: str) -> float:
        """Share of a run's cost before `layer`: by time once a capture run was profiled, else by multiply-adds."""
        key = (layer, bool(self._session.node_seconds))  # by multiply-adds until a profiled run tells the time
        if key not in self._shares:
            self._shares[key] = self._compute_prefix_share(layer)
        return self._shares[key]

    def _compute_prefix_share(self, layer: str) -> float:
        """Share of a plain run's time spent before `layer` (the profiled capture run), else of its multiply-adds."""
        timed = self._time_share(layer)
        return self._mac_share(layer) if timed is None else timed

    def _time_share(self, layer: str) -> float | None:
        """Share of the profiled FP32 capture run's kernel time spent before the layer's node ran, or None
        (no profile, or the layer's node is not found in it). Multiply-adds underrate the early,
        high-resolution layers of a detector, whose time goes to memory traffic and element-wise ops
        (the first 8 of the text detector's 64 convolutions: 0.2 % of its multiply-adds, 50 % of its time)."""
        timings = self._session.node_seconds
        total = sum(seconds for _, seconds in timings)
        if not timings or total <= 0:
            return None
        output = self._specs[layer].output
        names = {layer} | ({output, output + "_nchwc"} if output else set())
        before = 0.0
        for name, seconds in timings:
            if name in names:
                return before / total
            before += seconds
        return None

    def _mac_share(self, layer: str) -> float:
        graph = self._prepared.model.graph
        declared = {v.name: v for v in list(graph.value_info) + list(graph.output)}
        order = [node.name for node in graph.node]
        macs = {}
        for name, info in self._info_layers.items():
            weight, outputs = getattr(info, "weight", None), tuple(getattr(info, "outputs", ()) or ())
            if weight is None or not outputs or outputs[0] not in declared or name not in order:
                continue
            dims = [d.dim_value for d in declared[outputs[0]].type.tensor_type.shape.dim]
            # Conv: one weight use per output position; MatMul / Gemm: per row (token) of the output.
            positions = dims[2:] if info.op_type in ("Conv", "ConvTranspose") else dims[1:-1]
            macs[name] = float(np.prod(weight.shape)) * float(np.prod([d or 1 for d in positions] or [1]))
        total = sum(macs.values())
        if layer not in macs or not total:
            return 0.0
        position = order.index(layer)
        return sum(v for name, v in macs.items() if order.index(name) < position) / total

    def _plan(self) -> tuple[tuple[str, ...], frozenset[str]]:
        """(the tensors to capture, the layers that can be cut), from the graph and the declared shapes
        alone (computed once); nothing when their declared size is over SUFFIX_MEMORY_BYTES."""
        if self._planned is None:
            inputs = set(self._session.input_names)
            cuts = {layer: self._session.cut_tensors(layer) for layer in self._session.layers
                    if self._specs[layer].weight}
            sizes, layers = {}, set()
            for layer, cut in cuts.items():
                if cut is not None:
                    sizes.update((t, self._tensor_bytes(t)) for t in cut if t not in inputs)
                    layers.add(layer)
            over = sum(sizes.values()) > SUFFIX_MEMORY_BYTES
            self._planned = ((), frozenset()) if over else (tuple(sorted(sizes)), frozenset(layers))
        return self._planned

    def cut_values(self) -> list[dict[str, np.ndarray]]:
        """Per batch, the FP32 activations the layers' suffixes read (captured once; [] over budget).

        The budget is checked on the declared shapes first, then on what was captured (a dimension
        the shapes leave unknown, e.g. after a Reshape, is known only then).
        """
        if self._cuts is None:
            self._cuts, self._cut_layers = [], set()
            tensors, layers = self._plan()
            if not layers:
                return self._cuts
            self._cut_layers = set(layers)
            started = time.perf_counter()
            for batch in self._feeder.batches():
                values = dict(batch)
                values.update(self._session.capture(batch, tensors) if tensors else {})
                self._cuts.append(values)
            self._plain_build_seconds = max(time.perf_counter() - started - self._run_seconds, 0.0)
            self._captured_bytes = sum(values[t].nbytes for values in self._cuts for t in tensors)
            if self._captured_bytes > SUFFIX_MEMORY_BYTES:
                self._cuts, self._cut_layers = [], set()
        return self._cuts

    def _tensor_bytes(self, name: str) -> float:
        """Bytes of an intermediate tensor over the split from its declared shape (8 per value, an upper
        bound; unknown dimensions count 1: the capture checks the real size)."""
        declared = self._declared.get(name)
        dims = declared.type.tensor_type.shape.dim if declared is not None else ()
        if not dims or dims[0].dim_value and dims[0].dim_value != self._batch_size:
            return 0.0  # not per sample (a shape, a constant): a few bytes
        return 8.0 * self._sample_count * float(np.prod([d.dim_value or 1 for d in dims[1:]]))

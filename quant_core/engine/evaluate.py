"""Evaluate a quantization config: accuracy, fidelity to FP32, size, per-layer error.

One SimulationSession per model; a config changes only what it is fed. FP32 outputs are
computed once and reused as the reference.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace

import numpy as np
from onnx import helper

from quant_core.numerics.axes import WeightLayout
from quant_core.engine.calibrate import Calibration, activation_bytes
from quant_core.config import LayerQuant, QuantConfig, TensorQuant
from quant_core.model.data import record_state
from quant_core.errors import DataError, ModelError
from quant_core.numerics.formats import RangeMethod
from quant_core.engine.layer_errors import ErrorGraph, reference_layer_sqnr
from quant_core.model.layout import Feeder, feeder
from quant_core.numerics.quantize import tensor_range
from quant_core.numerics.metrics import FixedReference, ratio_db, top1_agreement
from quant_core.engine.plan import LayerFeed, Plan, Planner, fake_quantized_weight
from quant_core.numerics.size import tensor_bytes
from quant_core.engine.lru import LRUCache
from quant_core.engine.simulate import ActivationQuant, SimulationSession
from quant_core.model.layers import layer_specs
from quant_core.model.runtime import release_free_memory
from quant_core.engine.simulation_graph import ActivationMode
from quant_core.engine.suffix_runs import SuffixRuns
from quant_core.engine.workers import MAX_WORKERS, default_workers, map_in_order
from quant_core.engine.tasks import (Metric, Task, TaskScore, TaskScorer, check_task, check_tokens, infer_task,
                                     output_index)
from quant_core.model.validate import check_config, model_facts, validate_config

__all__ = ["EvaluationResult", "Evaluator", "LRUCache", "LayerError", "evaluate_config",
           "validate_config"]

# Entries kept by an Evaluator's caches (least recently used evicted first), so that a shared Evaluator's
# memory stays bounded whatever configs its users try. Weights are the big ones: a float32 copy each.
MAX_RESULTS = 256            # EvaluationResult, per-layer errors and per-layer SQNR, per config
MAX_WEIGHTS = 64             # fake-quantized weights, per (weight, resolved TensorQuant)
MAX_ISOLATED = 512           # isolated SQNR of one layer, per (layer, resolved choice)
MAX_ERROR_SESSIONS = 4       # per-layer error sessions (layer_errors.ErrorGraph), per activation pattern
MAX_TASKS = 8                # task scorers (FP32 argmax / decode / neighbours of the scored output), per task
# Per-layer errors run the split in batches of at most about LAYER_ERRORS_BATCH_BYTES of onnxruntime's
# working set, one sample weighed as the larger of LAYER_ERRORS_BYTES_PER_VALUE bytes per value of its
# largest layer output (its FP32, config and lone-node copies, their differences and other live buffers)
# and its every layer input and output (`_sample_bytes`): measured per sample on the conv conformance
# models, 18-31 MiB, 0.56-0.75x the latter; the former alone missed ocr_rec's by 2.6x. Two batches may be
# in flight within LAYER_ERRORS_IN_FLIGHT_BYTES (`Feeder.in_flight`): enough for two batches of the minimum
# two samples of each conv model, so the pass uses both cores there (with twice the batch budget, as
# before, it ran one batch at a time: 3.5-4.4 forwards for a config with its errors; now 2.1-2.7:
# docs/engine.md). Only float64 sums per layer are kept: their memory does not grow with the samples.
LAYER_ERRORS_BATCH_BYTES = 48 * 2**20
LAYER_ERRORS_IN_FLIGHT_BYTES = 192 * 2**20
LAYER_ERRORS_BYTES_PER_VALUE = 48
# Every other run of the split (evaluate, the FP32 reference, suffix-run captures, anchors) goes in batches
# of at most about this many bytes of activations: one sample's every layer input and output, FP32, as
# calibration measured them (`Calibration.sample_bytes`; a weights-only Evaluator weighs one sample itself),
# at least EVALUATION_MIN_BATCH samples (onnxruntime may run a lone sample with other kernels: the outputs
# would then depend on the budget). Outputs are joined as the batches end.
EVALUATION_BATCH_BYTES = 64 * 2**20
EVALUATION_MIN_BATCH = 2
# A split whose activations weigh at least this much comes in at least MAX_WORKERS balanced batches, so
# that every worker gets one (`workers.map_in_order`), whatever this machine's cores: the batches, hence
# the numbers, do not depend on the machine. Below it one batch: threads would cost more than they save.
PARALLEL_FROM_BYTES = 8 * 2**20

# The FP32 outputs of the evaluation split live as long as the Evaluator (every config is scored against them),
# and a config's outputs beside them while it is scored: the split is cut to its first samples whose outputs
# fit this (a text recogniser's 40 x 6,625 probabilities are 1.06 MB a sample: 126 samples; a classifier's ten
# logits: 3 M). At least EVALUATION_MIN_SAMPLES are kept. Memory (and time) then do not grow with an upload's
# samples past it; the pages say how many samples were scored (`Evaluator.sample_note`).
EVALUATION_OUTPUT_BYTES = 128 * 2**20
EVALUATION_MIN_SAMPLES = 16

# progress(fraction done, 0..1) of a pass over the split, called between batches.
Progress = Callable[[float], None]


@dataclass(frozen=True)
class EvaluationResult:
    """What one config does on the evaluation split, measured against the FP32 model.

    `score` holds the task's metrics (`quant_core.engine.tasks`); accuracy, per-class accuracy and top-1
    agreement are the same numbers for the scored output (accuracy None when the labels cannot be
    scored against it: `score.labels_note` says why); cosine and sqnr_db are those of the scored output.
    """

    config_name: str
    accuracy: float | None
    per_class_accuracy: tuple[float, ...] | None
    top1_agreement: float
    cosine: float
    sqnr_db: float
    output_sqnr_db: tuple[float, ...]
    size_bytes: int
    fp32_size_bytes: int
    simulated_only: tuple[str, ...]
    sample_count: int
    score: TaskScore | None = None

    @property
    def compression(self) -> float:
        return self.fp32_size_bytes / self.size_bytes if self.size_bytes else float("inf")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["per_class_accuracy"] = list(self.per_class_accuracy) if self.per_class_accuracy is not None else None
        data["output_sqnr_db"] = list(self.output_sqnr_db)
        data["simulated_only"] = list(self.simulated_only)
        data["score"] = None if self.score is None else self.score.to_dict()
        return data


@dataclass(frozen=True)
class LayerError:
    """SQNR at a layer's output: only this layer quantized (isolated) and the whole config (accumulated)."""

    layer: str
    isolated_sqnr_db: float
    accumulated_sqnr_db: float

    def to_dict(self) -> dict:
        return asdict(self)


def _weight_bytes(shape: tuple[int, ...], tq: TensorQuant | None) -> int:
    """Bytes of a weight stored as `tq` (resolved: a concrete axis)."""
    return int(tensor_bytes(shape, tq))


class Evaluator:
    """Evaluate configs of one model on one evaluation split, reusing one simulation session.

    Results are cached per config (configs are frozen, hashable dataclasses); per-layer SQNR per
    resolved feeds, so configs that differ only in fields that change nothing share it; a layer's
    isolated error per (layer, resolved choice). Per-layer errors cost one run per batch of one session
    (`layer_errors.ErrorGraph`). Every cache is an LRU bounded by the MAX_* constants.

    `task` (default: `tasks.infer_task` from the output shapes and names) says which output is scored
    and by what metric; `evaluate(config, task=...)` scores another task on the same runs.

    `calibration=None` builds a weights-only Evaluator (a weight sensitivity sweep needs no activation
    ranges, so it need not wait for a calibration pass); a config that quantizes an activation is then
    refused with a ConfigError.

    Data whose layout streams (state outputs paired with inputs, `layout.DataLayout`) is evaluated per
    frame here: each sample gets its recorded state. `streaming()` returns the Evaluator of the same
    split run as a stream, each config carrying its own state from sample to sample (its `evaluate`
    streams; per-layer errors and sweeps stay per frame).
    """

    def __init__(self, prepared, calibration: Calibration | None, data, *, batch_size: int = 1024, threads: int = 1,
                 task: Task | None = None, session: SimulationSession | None = None, streaming: bool = False,
                 reference_outputs: tuple[np.ndarray, ...] | None = None, workers: int | None = None):
        self.prepared = prepared
        # Batches of a pass run side by side on this many cores (`workers.map_in_order`; numbers unchanged).
        self.workers = default_workers() if workers is None else max(1, int(workers))
        self.calibration = calibration
        self.session = session or SimulationSession(prepared, threads=threads)
        self._specs = {spec.name: spec for spec in layer_specs(prepared)}
        self.layers = self.session.layers
        data = record_state(prepared, data)  # a stream's state inputs the .npz left out
        split = feeder(data, prepared.info, self.session.input_names, self.session.output_names, batch_size)
        self.available_samples = split.sample_count
        self._split, self._output_bytes = self._within_output_budget(split)
        self.feeder = self._split.within_budget(self._sample_bytes, EVALUATION_BATCH_BYTES,
                                                min_batch=EVALUATION_MIN_BATCH, parts=MAX_WORKERS,
                                                parts_from_bytes=PARALLEL_FROM_BYTES)
        self.batch_size, self.sample_count = self.feeder.batch_size, self.feeder.sample_count
        self.is_streaming = streaming and self.feeder.layout.streaming
        self._data, self._streaming = data, None
        labels = getattr(data, "labels", None)
        self.labels = None if labels is None else np.asarray(labels)[:self.sample_count]
        self.task = infer_task(prepared.info) if task is None else check_task(task, prepared.info)
        check_tokens(self.task, prepared.info, getattr(data, "inputs", data))  # before onnxruntime meets a bad id
        self._scorers = LRUCache(MAX_TASKS)          # Task -> TaskScorer
        self._results = LRUCache(MAX_RESULTS)        # (QuantConfig, Task) -> EvaluationResult
        self._layer_sqnr = LRUCache(MAX_RESULTS)     # tuple[LayerFeed, ...] -> {layer: SQNR dB}
        self._isolated = LRUCache(MAX_ISOLATED)      # LayerFeed -> SQNR dB at that layer's output
        self.planner = Planner(prepared, calibration)
        self._facts = model_facts(prepared)
        self._weights = LRUCache(MAX_WEIGHTS)        # (weight, resolved TensorQuant, shape) -> float32 array
        self._ranges = LRUCache(MAX_WEIGHTS)         # (weight, granularity, axis, block, shape) -> min-max (lo, hi)
        self._threads = threads
        self._error_graphs = LRUCache(MAX_ERROR_SESSIONS)  # activation pattern -> ErrorGraph, or False: cannot
        self._spec_index = {layer: i for i, layer in enumerate(self._specs)}
        self._errors_feeder: Feeder | None = None
        self._other_bytes = self._initializer_bytes()
        self.suffix_runs = SuffixRuns(prepared, self.session, self.feeder, min(self.workers, self.feeder.in_flight))
        # reference_outputs: the original model's outputs when a method (bias correction) changed the FP32
        # function of `prepared`, so every metric stays "against the original FP32 model".
        self.fp32_outputs = tuple(reference_outputs) if reference_outputs is not None else self._run_outputs({}, {})
        self.fp32_size_bytes = self.size_bytes(QuantConfig())
        # Every config is scored against these: their float64 copies, powers, argmax... are computed once.
        self._references = tuple(FixedReference(output) for output in self.fp32_outputs)
        self.fp32_accuracy = self.scorer(self.task).score(self.fp32_outputs[self.output_index(self.task)]).value(
            Metric.ACCURACY)

    def _within_output_budget(self, split: Feeder) -> tuple[Feeder, int | None]:
        """(`split` cut to the first samples whose FP32 outputs fit EVALUATION_OUTPUT_BYTES, one sample's output
        bytes), weighed by a run of the first sample (of the first batch where the model fixes its batch)."""
        if split.sample_count <= EVALUATION_MIN_SAMPLES:
            return split, None
        rows = split.batch_size if split.fixed_batch else 1
        outputs = self.session.run(split.layout.feed(split.inputs, 0, rows)).outputs
        per_sample = max(-(-sum(output.nbytes for output in outputs) // rows), 1)
        keep = max(EVALUATION_MIN_SAMPLES, EVALUATION_OUTPUT_BYTES // per_sample)
        if split.fixed_batch:
            keep = max(keep - keep % split.batch_size, split.batch_size)
        if keep >= split.sample_count:
            return split, per_sample
        return replace(split, sample_count=int(keep)), per_sample

    @property
    def sample_note(self) -> str | None:
        """Why fewer samples than the evaluation split holds are scored, or None when every one is."""
        if self.sample_count >= self.available_samples or self._output_bytes is None:
            return None
        return (f"scored on the first {self.sample_count} of the {self.available_samples} evaluation samples: the lab "
                f"keeps the FP32 outputs it scores against within {EVALUATION_OUTPUT_BYTES // 2**20} MiB, and one "
                f"sample's outputs are {self._output_bytes / 2**20:.2f} MiB")

    def _sample_bytes(self, feed: dict[str, np.ndarray]) -> int:
        """Bytes of one sample's activations (every layer's input and output, FP32): calibration's measure,
        else one run of `feed` (one sample) fetching them."""
        if self.calibration is not None and self.calibration.sample_bytes:
            return self.calibration.sample_bytes
        return activation_bytes(self.prepared, feed)

    # -- feeds ------------------------------------------------------------------------------------

    def plan(self, config: QuantConfig) -> Plan:
        """The plan of `config` on this model and calibration (`plan.Planner`), checked against the model."""
        check_config(config, self._facts)
        return self.planner.plan(config)

    def weight_layout(self, layer: str, tq: TensorQuant) -> WeightLayout:
        """Return `tq` resolved for the layer's weight (`plan.weight_layout`: concrete axis, shape to quantize in)."""
        return self.planner.weight_layout(layer, tq)

    def quantized_weight(self, layer: str, tq: TensorQuant) -> np.ndarray:
        """Return the layer's weight fake-quantized as `tq` says (float32; cached per weight and resolved tq)."""
        return self._layout_weight(layer, self.weight_layout(layer, tq))

    def _layout_weight(self, layer: str, layout: WeightLayout) -> np.ndarray:
        key = (self._specs[layer].weight, layout.tq, layout.shape)
        found = self._weights.get(key)
        if found is None:
            x = self.session.fp32_weight(layer)
            minmax = None
            if layout.tq.format.is_integer and layout.tq.range_method == RangeMethod.MINMAX:
                minmax = self._minmax_range(layer, x.reshape(layout.shape), layout.tq, layout.shape)
            found = self._weights.put(key, fake_quantized_weight(x, layout, name=f"{layer} weight", minmax=minmax))
        return found

    def _minmax_range(self, layer: str, view: np.ndarray, tq: TensorQuant, shape: tuple[int, ...]):
        """The weight's min-max range at tq's granularity: the same for every bit width and scheme, so
        computed once per (weight, granularity, axis, block size) for the configs that differ only there."""
        key = (self._specs[layer].weight, tq.granularity, tq.axis, tq.block_size, shape)
        found = self._ranges.get(key)
        if found is None:
            found = self._ranges.put(key, tensor_range(view, granularity=tq.granularity, axis=tq.axis,
                                                       block_size=tq.block_size, name=f"{layer} weight"))
        return found

    def layer_feed(self, layer: str, choice: LayerQuant) -> LayerFeed:
        """Return what the simulation is fed for `choice` on `layer`: (layer, resolved weight layout or
        None, activation fake-quant parameters or None). Equal feeds give equal numbers."""
        return self.planner.layer_feed(layer, choice)

    def _config_feeds(self, config: QuantConfig) -> tuple[LayerFeed, ...]:
        """Every layer's feed that differs from FP32, in model order (`Plan.feeds`)."""
        return self.planner.plan(config).feeds

    def _feed_arrays(self, feeds: tuple[LayerFeed, ...]):
        weights = {layer: self._layout_weight(layer, layout) for layer, layout, _ in feeds if layout is not None}
        activations = {layer: quant for layer, _, quant in feeds if quant is not None}
        return weights, activations

    def _feeds(self, config: QuantConfig):
        return self._feed_arrays(self._config_feeds(config))

    def activation_quant(self, tensor: str, tq: TensorQuant) -> ActivationQuant:
        """Return the fake-quant parameters of an activation from its calibrated range (`plan.activation_quant`)."""
        return self.planner.activation_quant(tensor, tq)

    # -- running ----------------------------------------------------------------------------------

    def streaming(self) -> Evaluator | None:
        """The Evaluator of this split run as a stream (built once, sharing the session); None when the
        data's layout pairs no state output with an input. Its `evaluate` scores each config's own carried
        state against FP32's own carried state: quantization error accumulates through the state."""
        if not self.feeder.layout.streaming or self.is_streaming:
            return None
        if self._streaming is None:
            self._streaming = Evaluator(self.prepared, self.calibration, self._data, batch_size=self._split.batch_size,
                                        task=self.task, session=self.session, streaming=True)
        return self._streaming

    def _run_outputs(self, weights, activations, feeds: tuple[LayerFeed, ...] | None = None
                     ) -> tuple[np.ndarray, ...]:
        if self.is_streaming:
            names = self.session.output_names
            steps = self.feeder.stream(lambda feed: dict(zip(names, self.session.run(
                feed, weights=weights, activations=activations).outputs)))
            return self.feeder.join([tuple(values[name] for name in names) for values in steps])
        if feeds is not None and not activations and self.suffix_runs.anchored:
            # A weights-only config one layer away from the anchor (a suggestion's candidate).
            outputs = self.suffix_runs.anchor_outputs({feed[0]: feed for feed in feeds}, weights)
            if outputs is not None:
                return outputs
        single = set(weights) | set(activations)
        if len(single) == 1 and (layer := next(iter(single))) in self.session.fp32_weights:
            # One layer quantized, everything else FP32 (a sweep row): maybe only the model from it on.
            weight = weights.get(layer, self.session.fp32_weights[layer])
            outputs = self.suffix_runs.outputs(layer, weight, activations.get(layer))
            if outputs is not None:
                return outputs
        started = time.perf_counter()
        run = self.session.runner(weights, activations)
        # Each batch's outputs are copied into the joined arrays as they come (not held until the end).
        joined = self.feeder.join(map_in_order(lambda batch: run(batch).outputs, self.feeder.batches(),
                                               min(self.workers, self.feeder.in_flight)))
        self.suffix_runs.full_run_took(time.perf_counter() - started)
        return joined

    def anchor(self, config: QuantConfig) -> bool:
        """Make the weights-only `config` the anchor: a config that differs from it in one layer's weight
        then runs only the model from that layer on, fed the anchor's activations captured here (one
        run); the outputs equal a whole run's bit for bit. Return False, and keep no anchor, when that
        does not pay (the layers' prefix shares sum to at most 1.5 runs), over the memory budget, or
        when `config` quantizes an activation. For searches that try one layer at a time (suggest)."""
        check_config(config, self._facts)
        feeds = self._config_feeds(config)
        if any(quant is not None for _, _, quant in feeds) or not self.suffix_runs.anchor_pays():
            self.suffix_runs.clear_anchor()
            return False
        weights, _ = self._feed_arrays(feeds)
        try:
            return self.suffix_runs.set_anchor({feed[0]: feed for feed in feeds}, weights)
        except ModelError:  # the capture session cannot be built: evaluate whole, as without an anchor
            self.suffix_runs.disable_anchors()
            return False

    def clear_anchor(self) -> None:
        """Drop the anchor and its captured activations."""
        self.suffix_runs.clear_anchor()

    def prepare_sweep(self, layer: str, configs: int, activations: bool = False) -> bool:
        """Get ready for `configs` configs that change only `layer`'s weights (and its input activation if
        `activations`); return True if they will run only the model from `layer` on (see
        `SuffixRuns.prepare`)."""
        return self.suffix_runs.prepare(layer, configs, activations)

    def _activation_pattern(self, activations: Mapping[str, ActivationQuant]) -> tuple[tuple[int, ActivationMode], ...]:
        return tuple(sorted((self._spec_index[layer], quant.mode) for layer, quant in activations.items()
                            if quant.mode != ActivationMode.OFF))

    def _errors_session(self, activations: Mapping[str, ActivationQuant]) -> ErrorGraph | None:
        """The per-layer error session for these activations' modes (built once per pattern, cached); None
        when onnxruntime cannot build it."""
        pattern = self._activation_pattern(activations)
        found = self._error_graphs.get(pattern)
        if found is None:
            try:
                found = ErrorGraph(self.prepared.model, tuple(self._specs.values()), self.session.modes,
                                   dict(pattern), self.session.fp32_weights, self._threads)
            except Exception:  # noqa: BLE001 - the session only saves time: whatever stops it, the definition serves
                found = False
            self._error_graphs.put(pattern, found)
        return found or None

    def _layer_error_feeder(self, graph: ErrorGraph, weights, activations) -> Feeder:
        """The feeder of per-layer error runs: the Evaluator's, with batches of at most about
        LAYER_ERRORS_BATCH_BYTES (one sample weighed as the constant's comment says; a model fixing its
        batch keeps it)."""
        if self._errors_feeder is None:
            def sample_bytes(feed: dict[str, np.ndarray]) -> int:
                largest = max((size for *_, size in graph.run(feed, weights, activations).values()), default=1)
                return max(LAYER_ERRORS_BYTES_PER_VALUE * largest, self._sample_bytes(feed))

            self._errors_feeder = self._split.within_budget(sample_bytes, LAYER_ERRORS_BATCH_BYTES,
                                                            min_batch=EVALUATION_MIN_BATCH, parts=MAX_WORKERS,
                                                            parts_from_bytes=PARALLEL_FROM_BYTES,
                                                            in_flight_budget=LAYER_ERRORS_IN_FLIGHT_BYTES)
        return self._errors_feeder

    def _outputs_exact(self, graph: ErrorGraph, first: dict[str, np.ndarray], weights, activations) -> bool:
        """True when the error session's model outputs equal the simulation session's bit for bit on the batch
        `first` for this config (checked once per activation pattern: the same nodes and kernels, or not)."""
        if graph.outputs_exact is None:
            _, outputs = graph.runner(weights, activations, with_outputs=True)(first)
            expected = self.session.runner(weights, activations)(first).outputs
            graph.outputs_exact = len(outputs) == len(expected) and all(
                a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
                for a, b in zip(outputs, expected))
        return graph.outputs_exact

    def _measure_layer_errors(self, feeds: tuple[LayerFeed, ...], isolated: tuple[str, ...], *,
                              with_outputs: bool = False, progress: Progress | None = None
                              ) -> tuple[dict[str, float], dict[str, float], tuple[np.ndarray, ...] | None]:
        """(accumulated SQNR per layer with `feeds`, isolated SQNR of the `isolated` layers, the config's model
        outputs or None), one pass over the split with the error session; the definition's whole-model runs
        where it cannot serve. The outputs come along (`with_outputs`) only where the error session gives
        them equal to the simulation's bit for bit (`_outputs_exact`) and not for a streamed split.
        `progress(fraction)` is called after each batch of the pass (an exception it raises stops the pass)."""
        weights, activations = self._feed_arrays(feeds)
        graph = self._errors_session(activations)
        found: dict[str, float] = {}
        accumulated, outputs = None, None
        if graph is not None:
            try:
                errors_feeder = self._layer_error_feeder(graph, weights, activations)
                with_outputs = (with_outputs and not self.is_streaming and bool(graph.output_names)
                                and self._outputs_exact(graph, next(errors_feeder.batches()), weights, activations))
                run = graph.runner(weights, activations, with_outputs=with_outputs)
                passes = map_in_order(run, errors_feeder.batches(), min(self.workers, errors_feeder.in_flight))
                sums: dict[str, np.ndarray] = {}  # layer -> float64 (signal, accumulated noise, isolated noise)
                total, done = sum(1 for _ in errors_feeder.bounds()), [0]

                def add(batch_powers: dict) -> None:  # summed in batch order: the same sums for any worker count
                    for layer, (signal, noise, alone, _) in batch_powers.items():
                        powers = np.array([signal, noise, 0.0 if alone is None else alone])
                        sums[layer] = sums[layer] + powers if layer in sums else powers
                    done[0] += 1
                    if progress is not None:
                        progress(done[0] / total)

                if with_outputs:
                    def each(parts):
                        for powers, batch_outputs in parts:
                            add(powers)
                            yield batch_outputs
                    outputs = errors_feeder.join(each(passes))
                else:
                    for powers, _ in passes:
                        add(powers)
            except DataError:  # onnxruntime cannot run the error session here: the definition decides
                self._error_graphs.put(self._activation_pattern(activations), False)
                graph, outputs = None, None
            else:
                accumulated = {layer: ratio_db(signal, noise) for layer, (signal, noise, _) in sums.items()}
                found = {layer: ratio_db(sums[layer][0], sums[layer][2]) for layer in isolated
                         if layer in graph.alone and layer in sums}
        if accumulated is None:
            accumulated = reference_layer_sqnr(self.session, self.feeder.batches(), weights, activations)
        by_layer = {feed[0]: feed for feed in feeds}
        for layer in isolated:
            if layer not in found:  # the definition: a whole-model run with only this layer's feed
                alone = self._feed_arrays((by_layer[layer],))
                sqnr = reference_layer_sqnr(self.session, self.feeder.batches(), *alone)
                found[layer] = sqnr.get(layer, float("inf"))
        return accumulated, found, outputs

    # -- scoring ----------------------------------------------------------------------------------

    def output_index(self, task: Task) -> int:
        """Index of the output `task` scores."""
        return output_index(task, self.prepared.info)

    def scorer(self, task: Task) -> TaskScorer:
        """Return the TaskScorer of `task` on the FP32 outputs (built once per task: FP32 argmax, decodes...)."""
        found = self._scorers.get(task)
        if found is None:
            index = self.output_index(task)
            name = self.prepared.info.outputs[index].name if self.prepared.info.outputs else "output"
            found = self._scorers.put(task, TaskScorer(self.fp32_outputs[index], task, self.labels, name=name,
                                                       fixed_reference=self._references[index]))
        return found

    def size_bytes(self, config: QuantConfig) -> int:
        """Bytes of every initializer: quantized weights at their format's size, the rest as stored."""
        quantized = {}
        for layer, choice in ((layer, config.for_layer(layer)) for layer in self.layers):
            spec = self._specs[layer]
            if spec.weight and spec.weight not in quantized:
                layout = None if choice.weights is None else self.weight_layout(layer, choice.weights)
                shape = self.session.fp32_weight(layer).shape if layout is None else layout.shape
                quantized[spec.weight] = _weight_bytes(shape, None if layout is None else layout.tq)  # ~7 us
        return self._other_bytes + sum(quantized.values())

    def _initializer_bytes(self) -> int:
        """Bytes of the initializers that are not quantizable weights, as stored."""
        weights = {spec.weight for spec in self._specs.values() if spec.weight}
        total = 0
        for init in self.prepared.model.graph.initializer:
            if init.name not in weights:
                itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
                total += int(np.prod(init.dims, dtype=np.int64)) * itemsize
        return total

    def evaluate(self, config: QuantConfig, *, task: Task | None = None) -> EvaluationResult:
        """Return accuracy and fidelity of `config` at `task` (default: the Evaluator's) on the evaluation
        split (cached per config and task)."""
        task = self.task if task is None else task
        key = (config, task)
        found = self._results.get(key)
        if found is not None:
            return found
        check_config(config, self._facts)
        feeds = self._config_feeds(config)
        weights, activations = self._feed_arrays(feeds)
        outputs = self._run_outputs(weights, activations, feeds) if (weights or activations) else self.fp32_outputs
        return self._results.put(key, self._scored(config, task, outputs))

    def evaluate_with_errors(self, config: QuantConfig, *, task: Task | None = None, progress: Progress | None = None
                             ) -> tuple[EvaluationResult, tuple[LayerError, ...]]:
        """`evaluate(config)` and `layer_errors(config)` in one pass where they are both new: the per-layer
        error session then also gives the config's model outputs (when it computes them bit for bit as the
        simulation does: `_outputs_exact`), so the pair costs one pass over the split instead of two.
        `progress(fraction)`: after each batch of the per-layer error pass, when there is one."""
        task = self.task if task is None else task
        check_config(config, self._facts)
        result = self._results.get((config, task))
        if result is None and not self._has_layer_errors(config):
            errors, outputs = self._layer_errors_of(config, with_outputs=True, progress=progress)
            if outputs is not None:
                result = self._results.put((config, task), self._scored(config, task, outputs))
        if result is None:
            result = self.evaluate(config, task=task)
        return result, self.layer_errors(config, progress=progress)

    def _scored(self, config: QuantConfig, task: Task, outputs: tuple[np.ndarray, ...]) -> EvaluationResult:
        """The EvaluationResult of `config` whose model outputs on the split are `outputs`."""
        scorer = self.scorer(task)
        index = self.output_index(task)
        score = scorer.score(outputs[index])
        output_sqnr = tuple(score.value(Metric.SQNR) if i == index else r.sqnr_db(o)
                            for i, (r, o) in enumerate(zip(self._references, outputs)))
        agreement = score.value(Metric.AGREEMENT)
        if agreement is None:  # kinds without a class axis: argmax along the last axis, per position
            x = self.fp32_outputs[index]
            agreement = top1_agreement(x, outputs[index]) if x.ndim >= 2 else 1.0
        result = EvaluationResult(
            config_name=config.name,
            accuracy=score.value(Metric.ACCURACY),
            per_class_accuracy=score.per_class_accuracy,
            top1_agreement=agreement,
            cosine=score.value(Metric.COSINE),
            sqnr_db=output_sqnr[index],
            output_sqnr_db=output_sqnr,
            size_bytes=self.size_bytes(config),
            fp32_size_bytes=self.fp32_size_bytes,
            simulated_only=self.planner.plan(config).simulated_only,
            sample_count=self.sample_count,
            score=score,
        )
        return result

    def outputs(self, config: QuantConfig) -> tuple[np.ndarray, ...]:
        """Return the model outputs of `config` on the whole split (not cached)."""
        check_config(config, self._facts)
        feeds = self._config_feeds(config)
        return self._run_outputs(*self._feed_arrays(feeds), feeds)

    def layer_errors(self, config: QuantConfig, *, progress: Progress | None = None) -> tuple[LayerError, ...]:
        """Return each layer's isolated and accumulated SQNR (dB) at its output (from the caches below).

        isolated: only this layer quantized as `config` says, everything else FP32.
        accumulated: the whole config; the error includes what earlier layers passed on.

        Notes
        -----
        One run per batch of one session (`layer_errors.ErrorGraph`): the FP32 model, the config and each
        layer's node alone fed the FP32 activations side by side, returning only float64 powers. A layer
        whose node cannot run alone (its output is not its node's own, or it holds a subgraph) gets the
        definition instead: whole-model runs with only its feed (`layer_errors.reference_layer_sqnr`), as
        does every layer when onnxruntime cannot build that session. Accumulated errors are cached per
        resolved feeds, a layer's isolated error per (layer, resolved choice). `progress(fraction)` is called
        after each batch of that session's pass (an exception it raises stops the pass; nothing is cached).
        """
        return self._layer_errors_of(config, progress=progress)[0]

    def _has_layer_errors(self, config: QuantConfig) -> bool:
        """True when `config`'s per-layer errors are known (no run needed)."""
        feeds = self._config_feeds(config)
        return (not feeds or self._layer_sqnr.get(feeds) is not None) and all(
            self._isolated.get(feed) is not None for feed in feeds)

    def _layer_errors_of(self, config: QuantConfig, *, with_outputs: bool = False, progress: Progress | None = None
                         ) -> tuple[tuple[LayerError, ...], tuple[np.ndarray, ...] | None]:
        """Measure (and cache) `config`'s per-layer errors; with `with_outputs`, its model outputs from the same
        pass where the error session gives them exactly (else None)."""
        check_config(config, self._facts)
        feeds = self._config_feeds(config)
        changed = {feed[0]: feed for feed in feeds}
        accumulated = self._layer_sqnr.get(feeds) if feeds else {}
        isolated = {layer: self._isolated.get(feed) for layer, feed in changed.items()}
        missing = {layer: changed[layer] for layer, value in isolated.items() if value is None}
        outputs = None
        if accumulated is None or missing:
            measured, measured_alone, outputs = self._measure_layer_errors(feeds, tuple(missing),
                                                                           with_outputs=with_outputs, progress=progress)
            release_free_memory()  # the pass's batches: freed, but glibc would keep their pages (ocr_rec: 126 MiB)
            if accumulated is None:
                accumulated = self._layer_sqnr.put(feeds, measured)
            for layer, value in measured_alone.items():
                isolated[layer] = self._isolated.put(missing[layer], value)
        elif with_outputs and not feeds:  # FP32: nothing to run
            outputs = self.fp32_outputs
        errors = [LayerError(layer, isolated[layer] if layer in changed else float("inf"),
                             accumulated.get(layer, float("inf"))) for layer in self.layers]
        return tuple(errors), outputs

    def cache_entries(self) -> dict[str, int]:
        """Return how many entries each bounded cache holds (results, layer_sqnr, isolated, weights)."""
        return {"results": len(self._results),
                "layer_sqnr": len(self._layer_sqnr), "isolated": len(self._isolated), "weights": len(self._weights)}


def evaluate_config(prepared, calibration: Calibration, data, config: QuantConfig) -> EvaluationResult:
    """Evaluate one config (builds an Evaluator: keep one when evaluating several configs)."""
    return Evaluator(prepared, calibration, data).evaluate(config)

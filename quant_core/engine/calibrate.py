"""Streaming passes over calibration data: a fixed-size histogram per activation tensor.

Every range method (min-max, percentile, MSE, entropy) is computed from these histograms, so
calibrating costs one forward pass and memory independent of the number of samples. The tensors
are every layer's input and output (`calibration_tensors`); a first pass may count only the layer
inputs, what activation quantization reads (`layer_input_tensors`), and `extend_calibration` adds
the others in a later pass: the same probe graph and the same batches, so the same histograms.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from quant_core.config import TensorQuant
from quant_core.model.data import record_state
from quant_core.errors import DataError, ModelError, QuantLabError
from quant_core.numerics import histogram_kernel
from quant_core.numerics.histogram import StreamingHistogram
from quant_core.model.layout import feeder
from quant_core.model.layers import layer_specs
from quant_core.model.runtime import first_line, release_free_memory, session_options
from quant_core.engine.workers import default_workers

# About this much of fetched activations per calibration batch: memory stays flat whatever the model's
# activation sizes and the number of samples (a 12-sample batch of a text detector held 560 MiB).
CALIBRATION_BATCH_BYTES = 64 * 2**20
# Count a batch's histograms in a second thread while onnxruntime runs the next batch, where this process
# may use a second core (`workers.default_workers`); False: count each batch before the next runs.
OVERLAP = True
# The probe session keeps onnxruntime's memory arena (not its memory pattern): it lives for one pass only, and
# the arena, freed with it, saves allocating every fetched tensor anew (ocr_cls: the probe's runs 2.8x -> 2.0x
# a forward, peak memory within 10 MiB). False: `runtime.free_after_run` as the engine's other sessions.
PROBE_ARENA = True
# The probe's large weights reach onnxruntime from memory, not serialized with the model (`_probe_parts`);
# False: the whole model serialized (`_probe_bytes`). The same session either way (tested).
PROBE_WEIGHTS_IN_MEMORY = True


class Cancelled(QuantLabError):
    """The caller asked to stop (the `cancel` callable returned True)."""


def _tensor_inputs(data) -> Mapping[str, np.ndarray]:
    """Return the model-input arrays of a Dataset, a dict of arrays or one array (for the first input)."""
    inputs = getattr(data, "inputs", data)
    if isinstance(inputs, np.ndarray):
        return {"": inputs}
    if not isinstance(inputs, Mapping) or not inputs:
        raise DataError("calibration data must be a Dataset, a dict of input arrays or one array")
    return inputs  # as it is: a split's `Rows` would gather every sample to make a dict


@dataclass(frozen=True, eq=False)
class Calibration:
    """Histograms of the activations a config may quantize, and the ranges they give.

    `tensors` holds the calibrated tensors, in model order: every activation a quantizable layer reads
    (`layer_input_tensors`), and every layer's output when those were asked for (`calibrate(tensors=...)`,
    `extend_calibration`). `batch_size` is the batch size asked for: with the model and the data it fixes
    the batches (`Feeder.within_budget` on `sample_bytes`), so a later pass over the same data counts
    further tensors in the same batches, and their histograms equal those of one pass over everything.
    """

    tensors: tuple[str, ...]
    histograms: Mapping[str, StreamingHistogram]
    sample_count: int
    bins: int
    sample_bytes: int = 0  # what one sample's calibration tensors weigh (every layer's input and output), measured
    batch_size: int = 64
    _ranges: dict = field(default_factory=dict, repr=False)

    def histogram(self, tensor_name: str) -> StreamingHistogram:
        try:
            return self.histograms[tensor_name]
        except KeyError:
            raise QuantLabError(f"no calibration histogram for tensor {tensor_name!r}; "
                                f"calibrated tensors are {list(self.tensors)}") from None

    def range_for(self, tensor_name: str, tq: TensorQuant):
        """Return the RangeResult of `tq.range_method` on this tensor's histogram (cached)."""
        key = (tensor_name, tq)
        if key not in self._ranges:
            from quant_core.numerics.ranges import estimate_range
            self._ranges[key] = estimate_range(self.histogram(tensor_name), tq)
        return self._ranges[key]

    def missing(self, tensors) -> tuple[str, ...]:
        """The tensors of `tensors` this calibration has no histogram for (in their order)."""
        return tuple(name for name in dict.fromkeys(tensors) if name not in self.histograms)

    @property
    def nbytes(self) -> int:
        """Bytes held by all histograms: fixed by `bins`, independent of `sample_count`."""
        return sum(h.nbytes for h in self.histograms.values())


def calibration_tensors(prepared) -> tuple[str, ...]:
    """Every activation a quantizable layer reads, then every layer output (no duplicates, model order)."""
    initializers = {init.name for init in prepared.model.graph.initializer}
    names = []
    for spec in layer_specs(prepared):
        names += [spec.activation_input, spec.output]
    return tuple(name for name in dict.fromkeys(names) if name and name not in initializers)


def layer_input_tensors(prepared) -> tuple[str, ...]:
    """The activations quantizable layers read (what activation quantization needs), in model order.

    The cheap first calibration of a model (the app's): layer outputs come later, when a page asks for
    them (`extend_calibration`).
    """
    initializers = {init.name for init in prepared.model.graph.initializer}
    return tuple(name for name in dict.fromkeys(spec.activation_input for spec in layer_specs(prepared))
                 if name and name not in initializers)


def _probe_model(model: onnx.ModelProto, tensors: tuple[str, ...]) -> onnx.ModelProto:
    """The model with every tensor of `tensors` also a graph output (what `_probe_bytes` serializes)."""
    probe = onnx.ModelProto()
    probe.ParseFromString(_probe_bytes(model, tensors))
    return probe


def _probe_bytes(model: onnx.ModelProto, tensors: tuple[str, ...]) -> bytes:
    """The serialized model with every tensor of `tensors` also a graph output, after the model's own.

    Protobuf merges concatenated messages (a repeated field's entries are appended), so the model's bytes
    followed by a ModelProto holding only the extra outputs parse as the model with those outputs added:
    no copy of the model (and its weights) is made to add them.
    """
    outputs = {out.name for out in model.graph.output}
    extra = onnx.ModelProto()
    extra.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                              for name in tensors if name not in outputs)
    return model.SerializeToString() + extra.SerializeToString()


# Initializers of at least this many bytes reach the probe session from memory (`_probe_parts`), not serialized.
IN_MEMORY_BYTES = 1024


def _copy_fields(source, target, *, skip: tuple[str, ...] = ()) -> None:
    """Copy every set field of protobuf message `source` into `target`, but those named in `skip`."""
    for descriptor, value in source.ListFields():
        if descriptor.name in skip:
            continue
        if descriptor.is_repeated:
            getattr(target, descriptor.name).extend(value)
        elif descriptor.message_type is not None:
            getattr(target, descriptor.name).CopyFrom(value)
        else:
            setattr(target, descriptor.name, value)


def _probe_parts(model: onnx.ModelProto, tensors: tuple[str, ...]) -> tuple[bytes, list[str], list[bytes]]:
    """(serialized probe without its large weights, the names of those weights' in-memory files, their bytes).

    The probe is `_probe_model`'s model, but each main-graph initializer of at least IN_MEMORY_BYTES raw
    bytes points at an in-memory "file" of its own (ONNX external data) instead of holding its bytes:
    serializing a 90 MB model costs 0.12 s (MiniLM), handing onnxruntime the weights' bytes nearly nothing.
    onnxruntime reads them while it loads the model, before optimizing: the same session, the same values
    (tested on the conformance set).
    """
    skeleton = onnx.ModelProto()
    _copy_fields(model, skeleton, skip=("graph",))
    _copy_fields(model.graph, skeleton.graph, skip=("initializer",))
    names, buffers = [], []
    for index, init in enumerate(model.graph.initializer):
        raw = init.raw_data if init.data_location != TensorProto.EXTERNAL else b""
        if len(raw) < IN_MEMORY_BYTES:
            skeleton.graph.initializer.add().CopyFrom(init)
            continue
        light = skeleton.graph.initializer.add()
        _copy_fields(init, light, skip=("raw_data",))
        light.data_location = TensorProto.EXTERNAL
        name = f"initializer-{index}"
        for key, value in (("location", name), ("offset", "0"), ("length", str(len(raw)))):
            entry = light.external_data.add()
            entry.key, entry.value = key, value
        names.append(name)
        buffers.append(raw)
    outputs = {out.name for out in model.graph.output}
    skeleton.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                                 for name in tensors if name not in outputs)
    return skeleton.SerializeToString(), names, buffers


def _probe_session(prepared) -> ort.InferenceSession:
    """A plain session of the model whose outputs include every calibration tensor (`calibration_tensors`).

    Always every one, whichever a pass fetches: which tensors are graph outputs changes what onnxruntime
    fuses, and so the last bits of other tensors (measured on ocr_cls); one graph for every pass keeps
    a tensor's values, and its histogram, the same in whichever pass it is counted. The weights come
    from memory (`_probe_parts`).
    """
    options = session_options(1, arena=False)
    options.enable_cpu_mem_arena = PROBE_ARENA  # allocation only: the kernels, and so the values, are the same
    tensors = calibration_tensors(prepared)
    try:
        if PROBE_WEIGHTS_IN_MEMORY:
            data, names, buffers = _probe_parts(prepared.model, tensors)
            options.add_external_initializers_from_files_in_memory(names, buffers, [len(b) for b in buffers])
        else:
            data = _probe_bytes(prepared.model, tensors)
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime cannot run the model for calibration: {first_line(err)}") from None


def activation_bytes(prepared, feed: Mapping[str, np.ndarray]) -> int:
    """Return the bytes of the calibration tensors (every layer's input and output) of one run of `feed`.

    What `calibrate` measures as `Calibration.sample_bytes`, for a caller without a calibration (a
    weights-only Evaluator); the session is built for this run alone and dropped.
    """
    tensors = calibration_tensors(prepared)
    session = _probe_session(prepared)
    names = [i.name for i in session.get_inputs()]
    try:
        values = session.run(list(tensors), {name: feed[name] for name in names})
    except Exception as err:  # onnxruntime's own exception types: wrong shapes or dtypes in the data
        raise DataError(f"onnxruntime cannot run the model on this data: {first_line(err)}") from None
    return int(sum(value.nbytes for value in values))


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise QuantLabError(f"batch_size must be a positive integer, got {batch_size!r}")


def _in_model_order(prepared, tensors, what: str) -> tuple[str, ...]:
    """`tensors` in `calibration_tensors` order; one message naming any that is not a calibration tensor."""
    known = calibration_tensors(prepared)
    asked = set(tensors)
    unknown = sorted(asked - set(known))
    if unknown:
        raise QuantLabError(f"{what}: {unknown[:5]} {'are' if len(unknown) > 1 else 'is'} not an activation a "
                            f"layer reads or produces; calibration tensors are {list(known)[:8]}...")
    return tuple(name for name in known if name in asked)


def calibrate(prepared, data, *, tensors=None, bins: int = 2048, batch_size: int = 64,
              progress: Callable[[float], None] | None = None,
              cancel: Callable[[], bool] | None = None) -> Calibration:
    """Stream `data` once through the model, updating one StreamingHistogram per tensor of `tensors`.

    `tensors`: the calibration tensors to count (default: all of them, `calibration_tensors`; the app
    first counts `layer_input_tensors` and adds the rest later with `extend_calibration`). One onnxruntime
    session whose outputs include every calibration tensor (`_probe_session`); each batch's activations
    are folded into the histograms and dropped, so memory does not grow with the number of samples; a
    batch holds at most `batch_size` samples and about CALIBRATION_BATCH_BYTES of every calibration
    tensor (`Feeder.within_budget`, one sample weighed first: large models run fewer samples at a
    time), whichever are counted, so the batches do not depend on `tensors`. A batch's histograms are
    counted in a second thread while the next batch runs (`OVERLAP`), in batch order, so the histograms
    do not depend on it. `progress(fraction)` is called after each batch is counted; `cancel()` is polled
    before each batch and raises Cancelled when it returns True. A model with a fixed batch
    dimension n is fed n samples at a time (a last partial batch is dropped). A stream (a layout with
    state pairs, `layout.DataLayout`) runs one sample at a time, each fed the state the model computed
    at the previous sample.
    """
    _check_batch_size(batch_size)
    tensors = calibration_tensors(prepared) if tensors is None else _in_model_order(prepared, tensors, "calibrate")
    return _pass(prepared, data, tensors, bins=bins, batch_size=batch_size, sample_bytes=None,
                 progress=progress, cancel=cancel)


def extend_calibration(calibration: Calibration, prepared, data, tensors, *,
                       progress: Callable[[float], None] | None = None,
                       cancel: Callable[[], bool] | None = None) -> Calibration:
    """Return `calibration` with histograms of `tensors` added: one more pass over the same `data`.

    Only the tensors it lacks are counted, in the batches the first pass ran (its `batch_size` and
    `sample_bytes` fix them) and with the same session graph, so every histogram is the one a single
    `calibrate(tensors=every tensor)` gives, bit for bit. `data` must be the data `calibration` was
    counted on (the same samples in the same order); its histograms are shared, not copied. Returns
    `calibration` itself when nothing is missing.
    """
    missing = calibration.missing(_in_model_order(prepared, tensors, "extend_calibration"))
    if not missing:
        return calibration
    added = _pass(prepared, data, missing, bins=calibration.bins, batch_size=calibration.batch_size,
                  sample_bytes=calibration.sample_bytes, progress=progress, cancel=cancel)
    if added.sample_count != calibration.sample_count:
        raise DataError(f"extend_calibration: the data holds {added.sample_count} samples, the calibration was "
                        f"counted on {calibration.sample_count}: pass the same calibration data")
    histograms = {**calibration.histograms, **added.histograms}
    ordered = tuple(name for name in calibration_tensors(prepared) if name in histograms)
    return Calibration(ordered, {name: histograms[name] for name in ordered}, calibration.sample_count,
                       calibration.bins, sample_bytes=calibration.sample_bytes, batch_size=calibration.batch_size,
                       _ranges=dict(calibration._ranges))


def _pass(prepared, data, tensors: tuple[str, ...], *, bins: int, batch_size: int, sample_bytes: int | None,
          progress, cancel) -> Calibration:
    """One pass over `data` counting `tensors`; `sample_bytes` (a first pass's) fixes the batches without a run."""
    # The first calibration of a process imports numba and loads (or compiles) the counting loop: started
    # now, it overlaps building the session and running the first batch.
    threading.Thread(target=histogram_kernel.load, name="calibrate-warm-up").start()
    session = _probe_session(prepared)
    every = calibration_tensors(prepared)
    input_names = tuple(i.name for i in session.get_inputs())
    _tensor_inputs(data)  # refuses what is neither a Dataset nor arrays
    data = record_state(prepared, data)  # a stream's state inputs the .npz left out
    feeds = feeder(data, prepared.info, input_names, (), batch_size, what="calibration")
    state = tuple(dict.fromkeys(pair.output for pair in feeds.layout.state if pair.output not in tensors))
    fetched = list(tensors) + list(state)
    # The weight of a sample is that of every calibration tensor (what `sample_bytes` says, and what fixes
    # the batches): a first pass not weighed by `within_budget` fetches them all in its first step.
    weigh_all = list(dict.fromkeys(every + tuple(fetched)))
    weighed = [] if sample_bytes is None else [sample_bytes]

    def run(feed: dict[str, np.ndarray], names=None) -> dict[str, np.ndarray]:
        if cancel is not None and cancel():
            raise Cancelled("calibration cancelled")
        names = names or (weigh_all if not weighed else fetched)
        try:
            return dict(zip(names, session.run(names, feed)))
        except Exception as err:  # onnxruntime's own exception types: wrong shapes or dtypes in the data
            raise DataError(f"onnxruntime cannot run the model on this data: {first_line(err)}") from None

    def weigh(feed: dict[str, np.ndarray]) -> int:
        if not weighed:
            weighed.append(sum(value.nbytes for name, value in run(feed, weigh_all).items() if name in every))
        return weighed[0]

    histograms = {name: StreamingHistogram(bins, name=name) for name in tensors}
    if not feeds.layout.streaming:
        # Large models run fewer samples at a time; small ones keep `batch_size`, so their histograms
        # (which depend on how samples are batched) do not change. The weighed sample is not histogrammed.
        feeds = feeds.within_budget(weigh, CALIBRATION_BATCH_BYTES)
    # A stream carries the model's own state from sample to sample; other data runs in batches.
    steps = feeds.stream(run) if feeds.layout.streaming else (run(feed) for feed in feeds.batches())
    done, total = 0, feeds.sample_count

    def fold(values: dict[str, np.ndarray]) -> None:
        for name in tensors:
            histograms[name].update(values[name])

    def counted(job) -> None:
        nonlocal done
        if job is not None:
            job.result()  # raises what the count raised (NaN or Inf in a tensor)
        done = min(done + (1 if feeds.layout.streaming else feeds.batch_size), total)
        if progress is not None:
            progress(done / total)

    # onnxruntime runs on one core: batch k's histograms are counted in a second thread while the model
    # runs batch k + 1 (both release the GIL). Batches are counted one at a time and in order, so the
    # histograms equal those counted inline; at most two batches of activations are alive.
    # Only where two batches may be in memory together (`Feeder.in_flight`: within twice the budget).
    overlap = OVERLAP and default_workers() > 1 and (feeds.layout.streaming or feeds.in_flight >= 2)
    with ThreadPoolExecutor(1, thread_name_prefix="calibrate") as counter:
        pending = None
        for values in steps:
            if not weighed:  # not weighed above: the first batch or step says it (it fetched every tensor)
                rows = 1 if feeds.layout.streaming else min(feeds.batch_size, total)
                weighed.append(-(-sum(values[name].nbytes for name in every) // rows))
                values = {name: values[name] for name in fetched}
            if not overlap:
                fold(values)
                counted(None)
                continue
            if pending is not None:
                counted(pending)
            pending = counter.submit(fold, values)
            del values  # the worker holds the batch until it is counted
        if pending is not None:
            counted(pending)
    del session, steps
    release_free_memory()  # the probe's batches: freed, but glibc would keep their pages (ocr_rec: 57 MiB)
    return Calibration(tensors, histograms, total, bins, sample_bytes=weighed[0], batch_size=batch_size)

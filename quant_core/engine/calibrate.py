"""One streaming pass over calibration data: a fixed-size histogram per activation tensor.

Every range method (min-max, percentile, MSE, entropy) is computed from these histograms, so
calibrating costs one forward pass and memory independent of the number of samples.
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
from quant_core.model.runtime import first_line, session_options
from quant_core.engine.workers import default_workers

# About this much of fetched activations per calibration batch: memory stays flat whatever the model's
# activation sizes and the number of samples (a 12-sample batch of a text detector held 560 MiB).
CALIBRATION_BATCH_BYTES = 64 * 2**20
# Count a batch's histograms in a second thread while onnxruntime runs the next batch, where this process
# may use a second core (`workers.default_workers`); False: count each batch before the next runs.
OVERLAP = True


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

    `tensors` holds every activation a quantizable layer reads and every layer's output.
    """

    tensors: tuple[str, ...]
    histograms: Mapping[str, StreamingHistogram]
    sample_count: int
    bins: int
    sample_bytes: int = 0  # what one sample's calibrated tensors weigh (every layer's input and output), measured
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


def _probe_model(model: onnx.ModelProto, tensors: tuple[str, ...]) -> onnx.ModelProto:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {out.name for out in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                              for name in tensors if name not in outputs)
    return probe


def _probe_session(prepared, tensors: tuple[str, ...]) -> ort.InferenceSession:
    """A plain session of the model whose outputs include every tensor in `tensors`."""
    try:
        return ort.InferenceSession(_probe_model(prepared.model, tensors).SerializeToString(),
                                    session_options(1, arena=False), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime cannot run the model for calibration: {first_line(err)}") from None


def activation_bytes(prepared, feed: Mapping[str, np.ndarray]) -> int:
    """Return the bytes of the calibrated tensors (every layer's input and output) of one run of `feed`.

    What `calibrate` measures as `Calibration.sample_bytes`, for a caller without a calibration (a
    weights-only Evaluator); the session is built for this run alone and dropped.
    """
    tensors = calibration_tensors(prepared)
    session = _probe_session(prepared, tensors)
    names = [i.name for i in session.get_inputs()]
    try:
        values = session.run(list(tensors), {name: feed[name] for name in names})
    except Exception as err:  # onnxruntime's own exception types: wrong shapes or dtypes in the data
        raise DataError(f"onnxruntime cannot run the model on this data: {first_line(err)}") from None
    return int(sum(value.nbytes for value in values))


def calibrate(prepared, data, *, bins: int = 2048, batch_size: int = 64,
              progress: Callable[[float], None] | None = None,
              cancel: Callable[[], bool] | None = None) -> Calibration:
    """Stream `data` once through the model, updating one StreamingHistogram per activation tensor.

    One onnxruntime session whose outputs include every calibrated tensor; each batch's
    activations are folded into the histograms and dropped, so memory does not grow with the
    number of samples; a batch holds at most `batch_size` samples and about CALIBRATION_BATCH_BYTES of
    activations (`Feeder.within_budget`, one sample weighed first: large models run fewer samples at a
    time). A batch's histograms are counted in a second thread while the next batch runs (`OVERLAP`), in
    batch order, so the histograms do not depend on it. `progress(fraction)` is called after each batch
    is counted; `cancel()` is polled
    before each batch and raises Cancelled when it returns True. A model with a fixed batch
    dimension n is fed n samples at a time (a last partial batch is dropped). A stream (a layout with
    state pairs, `layout.DataLayout`) runs one sample at a time, each fed the state the model computed
    at the previous sample.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise QuantLabError(f"batch_size must be a positive integer, got {batch_size!r}")
    tensors = calibration_tensors(prepared)
    # The first calibration of a process imports numba and loads (or compiles) the counting loop: started
    # now, it overlaps building the session and running the first batch.
    threading.Thread(target=histogram_kernel.load, name="calibrate-warm-up").start()
    session = _probe_session(prepared, tensors)
    input_names = tuple(i.name for i in session.get_inputs())
    _tensor_inputs(data)  # refuses what is neither a Dataset nor arrays
    data = record_state(prepared, data)  # a stream's state inputs the .npz left out
    feeds = feeder(data, prepared.info, input_names, (), batch_size, what="calibration")
    state = tuple(dict.fromkeys(pair.output for pair in feeds.layout.state if pair.output not in tensors))
    fetched = list(tensors) + list(state)

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if cancel is not None and cancel():
            raise Cancelled("calibration cancelled")
        try:
            return dict(zip(fetched, session.run(fetched, feed)))
        except Exception as err:  # onnxruntime's own exception types: wrong shapes or dtypes in the data
            raise DataError(f"onnxruntime cannot run the model on this data: {first_line(err)}") from None

    weighed = []  # bytes of one sample's calibrated tensors

    def sample_bytes(feed: dict[str, np.ndarray]) -> int:
        weighed.append(sum(value.nbytes for name, value in run(feed).items() if name in histograms))
        return weighed[-1]

    histograms = {name: StreamingHistogram(bins, name=name) for name in tensors}
    if not feeds.layout.streaming:
        # Large models run fewer samples at a time; small ones keep `batch_size`, so their histograms
        # (which depend on how samples are batched) do not change. The weighed sample is not histogrammed.
        feeds = feeds.within_budget(sample_bytes, CALIBRATION_BATCH_BYTES)
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
            if not weighed:  # not weighed above: the first batch or step says it
                rows = 1 if feeds.layout.streaming else min(feeds.batch_size, total)
                weighed.append(-(-sum(values[name].nbytes for name in tensors) // rows))
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
    return Calibration(tensors, histograms, total, bins, sample_bytes=weighed[0])

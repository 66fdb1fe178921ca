"""Measured onnxruntime latency: warm-up, repeats, median and spread, and the kernels that ran.

Sessions use `threads` intra-op threads, one inter-op thread, sequential execution and no spinning,
so several live sessions (the app, a benchmark) do not fight over a small machine's cores.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from quant_core.errors import DataError, ModelError
from quant_core.model.batching import Rows, input_length, sample_slice
from quant_core.model.runtime import first_line, session_options


@dataclass(frozen=True)
class LatencyResult:
    """Wall-clock time of `session.run` on one batch, in milliseconds, over `repeats` runs."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    repeats: int
    batch_size: int
    threads: int
    size_bytes: int
    providers: tuple[str, ...]
    kernels: tuple[str, ...]   # op types of the optimized graph, first-seen order (e.g. QLinearConv)

    @property
    def per_sample_ms(self) -> float:
        return self.median_ms / self.batch_size

    def to_dict(self) -> dict:
        return {"median_ms": self.median_ms, "p10_ms": self.p10_ms, "p90_ms": self.p90_ms,
                "mean_ms": self.mean_ms, "std_ms": self.std_ms, "repeats": self.repeats,
                "batch_size": self.batch_size, "threads": self.threads, "size_bytes": self.size_bytes,
                "providers": list(self.providers), "kernels": list(self.kernels)}


def model_size_bytes(model) -> int:
    """Return the size of the model on disk: a file's size, or the length of serialized bytes."""
    if isinstance(model, (bytes, bytearray)):
        return len(model)
    if isinstance(model, onnx.ModelProto):
        return model.ByteSize()
    return os.path.getsize(os.fspath(model))


def _model_bytes(model) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    raise ModelError(f"model must be ONNX bytes or a ModelProto, got {type(model).__name__}")


def _batch(array: np.ndarray, batch_size: int) -> np.ndarray:
    """First `batch_size` rows of `array`, repeating the rows if there are fewer."""
    array = np.asarray(array)
    if array.ndim == 0 or len(array) == 0:
        raise DataError(f"cannot build a batch from an array of shape {array.shape}")
    rows = np.arange(batch_size) % len(array)
    return np.ascontiguousarray(array[rows])


def _feeds(session, feeds_or_dataset, batch_size: int) -> dict[str, np.ndarray]:
    names = [value.name for value in session.get_inputs()]
    inputs = getattr(feeds_or_dataset, "inputs", feeds_or_dataset)
    if isinstance(inputs, np.ndarray):
        if len(names) != 1:
            raise DataError(f"the model has {len(names)} inputs {names}; give a mapping of input name to array")
        inputs = {names[0]: inputs}
    if not isinstance(inputs, Mapping):
        raise DataError(f"expected feeds (a mapping), a Dataset or an array, got {type(feeds_or_dataset).__name__}")
    missing = [name for name in names if name not in inputs]
    if missing:
        raise DataError(f"the data has no array for model input(s) {missing}; it has {sorted(inputs)}")
    if isinstance(inputs, Rows):  # a split: gather the batch's samples only, not the whole split
        inputs = inputs.pick(np.arange(batch_size) % inputs.count)
    layout = getattr(feeds_or_dataset, "layout", None)
    if layout is not None and not layout.batch_first:  # complete inputs or scalars per sample (docs/data.md)
        if batch_size > 1 and not layout.stackable:
            raise DataError(f"this model's samples cannot be stacked into a batch of {batch_size} (a fixed batch "
                            "dimension or a varying scalar input): time batch size 1")
        rows = {name: inputs[name][np.arange(batch_size) % len(inputs[name])] for name in names}
        return {name: np.ascontiguousarray(value) for name, value in layout.feed(rows, 0, batch_size).items()}
    return {name: _batch(inputs[name], batch_size) for name in names}


def _kernels(path: str) -> tuple[str, ...]:
    if not os.path.exists(path):  # onnxruntime writes it while building the session
        return ()
    graph = onnx.load(path, load_external_data=False).graph
    return tuple(dict.fromkeys(node.op_type for node in graph.node))


def create_session(model, *, threads: int = 1, optimized_path: str | None = None):
    """Create a CPU session with `session_options`; raise ModelError with onnxruntime's first line."""
    import onnxruntime as ort
    try:
        return ort.InferenceSession(_model_bytes(model), session_options(threads, optimized_path=optimized_path),
                                    providers=["CPUExecutionProvider"])
    except ModelError:
        raise
    except Exception as err:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime cannot load the model: {first_line(err)}") from None


def measure_latency(model, feeds_or_dataset, *, batch_size: int = 1, threads: int = 1, warmup: int = 5,
                    repeats: int = 30, time_budget_s: float | None = None) -> LatencyResult:
    """Run one batch `warmup` times untimed, then `repeats` times timed; return median and spread.

    With `time_budget_s`, stop timing once the timed runs have used that budget (at least 3 runs).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    data = _model_bytes(model)
    with tempfile.TemporaryDirectory(prefix="quantlab-latency-") as tmp:
        optimized = os.path.join(tmp, "optimized.onnx")
        session = create_session(data, threads=threads, optimized_path=optimized)
        kernels = _kernels(optimized)
    feeds = _feeds(session, feeds_or_dataset, batch_size)
    try:
        for _ in range(warmup):
            session.run(None, feeds)
        times = []
        spent = 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(None, feeds)
            elapsed = time.perf_counter() - start
            times.append(elapsed)
            spent += elapsed
            if time_budget_s is not None and spent >= time_budget_s and len(times) >= 3:
                break
    except Exception as err:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime failed to run the model: {first_line(err)}") from None
    ms = np.asarray(times) * 1000.0
    p10, median, p90 = np.percentile(ms, [10, 50, 90])
    return LatencyResult(float(median), float(p10), float(p90), float(ms.mean()), float(ms.std()), len(ms),
                         batch_size, threads, len(data), tuple(session.get_providers()), kernels)


def model_accuracy(model, dataset, *, batch_size: int = 256, threads: int = 1) -> float | None:
    """Return the top-1 accuracy of an ONNX model (bytes or ModelProto) on a Dataset, run by onnxruntime.

    accuracy = mean(argmax(first output of a sample, flattened) == label) over the samples run, in
    batches of `batch_size`, on a session with `session_options(threads)` (as `measure_latency`).

    Notes
    -----
    None when the dataset has no labels (nothing is run). A model whose inputs fix the batch
    dimension n runs n samples at a time and drops a last partial batch (as `data.iter_batches`).
    Data with a layout (docs/data.md) is fed through it, each sample with its recorded inputs (per frame).
    A model onnxruntime cannot load raises ModelError; data it cannot run (missing input, wrong shape
    or dtype) raises DataError, each with onnxruntime's first line.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    labels = getattr(dataset, "labels", None)
    inputs = getattr(dataset, "inputs", None)
    if not isinstance(inputs, Mapping):
        raise DataError(f"expected a Dataset (inputs and labels), got {type(dataset).__name__}")
    if labels is None:
        return None
    session = create_session(model, threads=threads)
    names = [value.name for value in session.get_inputs()]
    missing = [name for name in names if name not in inputs]
    if missing:
        raise DataError(f"the data has no array for model input(s) {missing}; it has {sorted(inputs)}")
    labels = np.asarray(labels).reshape(-1)
    layout = getattr(dataset, "layout", None)
    if layout is not None and not layout.batch_first:  # complete inputs or scalars per sample (docs/data.md)
        from quant_core.model.data import iter_batches
        correct = done = 0
        for feeds in iter_batches(dataset, None, batch_size):
            try:
                first = session.run(None, feeds)[0]
            except Exception as err:  # onnxruntime raises its own exception types
                raise DataError(f"onnxruntime cannot run the model on this data: {first_line(err)}") from None
            first = np.moveaxis(np.asarray(first), dict(layout.output_axes).get(session.get_outputs()[0].name) or 0, 0)
            top1 = first.reshape(len(first), -1).argmax(axis=1)
            correct += int(np.count_nonzero(top1 == labels[done:done + len(top1)]))
            done += len(top1)
        return correct / done
    samples = min(min(input_length(inputs, name) for name in names), len(labels))
    fixed = [value.shape[0] for value in session.get_inputs()
             if value.shape and isinstance(value.shape[0], int) and value.shape[0] > 0]
    size = min(fixed) if fixed else batch_size
    stop = samples - samples % size if fixed else samples
    if stop == 0:
        raise DataError(f"the data has {samples} labelled sample(s); the model runs {size} at a time")
    correct = 0
    for start in range(0, stop, size):
        feeds = {name: np.ascontiguousarray(sample_slice(inputs, name, start, start + size)) for name in names}
        try:
            first = session.run(None, feeds)[0]
        except Exception as err:  # onnxruntime raises its own exception types
            raise DataError(f"onnxruntime cannot run the model on this data: {first_line(err)}") from None
        top1 = np.asarray(first).reshape(len(first), -1).argmax(axis=1)
        correct += int(np.count_nonzero(top1 == labels[start:start + len(top1)]))
    return correct / stop


def model_outputs(model, dataset, info, *, index: int = 0, streaming: bool = False, batch_size: int = 256,
                  threads: int = 1, samples: int | None = None) -> np.ndarray:
    """Return an ONNX model's output number `index` on every sample of a Dataset (its first `samples`), run by
    onnxruntime in batches of at most `batch_size` samples.

    Samples are fed as the data's layout says (`layout.Feeder`, docs/data.md): per frame, a stream's samples
    get their recorded state; with `streaming`, they run in order, each step's state outputs fed to the
    next step, so an exported quantized model carries its own state. `info` is the original model's
    (`ModelInfo`: a fixed batch dimension). Data onnxruntime cannot run raises DataError. A caller on a
    large model sizes `batch_size` by the bytes of one sample's activations (a batch holds all of them).
    """
    from dataclasses import replace

    from quant_core.model.layout import feeder
    session = create_session(model, threads=threads)
    names = [value.name for value in session.get_outputs()]
    feeds = feeder(dataset, info, [value.name for value in session.get_inputs()], names, batch_size)
    if samples is not None and samples < feeds.sample_count:
        feeds = replace(feeds, sample_count=max(int(samples), 1))

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return dict(zip(names, session.run(names, feed)))
        except Exception as err:  # onnxruntime raises its own exception types
            raise DataError(f"onnxruntime cannot run the model on this data: {first_line(err)}") from None

    steps = feeds.stream(run) if streaming and feeds.layout.streaming else map(run, feeds.batches())
    return feeds.join([(values[names[index]],) for values in steps])[0]


# ---------------------------------------------------------------------------------------------
# Standard variants
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """One model to time. `model` is None when it cannot be built; `simulated` when part of it is not real."""

    name: str
    model: bytes | None
    simulated: bool
    note: str


def static_int8_config(prepared, *, per_channel: bool):
    """W8A8 for every layer: int8 symmetric weights, uint8 asymmetric activations, min-max ranges.

    Per-channel leaves the axis to each layer (`axis=None`, resolved by `quant_core.numerics.axes`): its
    output-channel axis, the one onnxruntime's integer kernels accept. `prepared` is unused, kept
    for the callers.
    """
    from quant_core.config import LayerQuant, QuantConfig, TensorQuant
    from quant_core.numerics.formats import Granularity, parse_format
    activations = TensorQuant(parse_format("uint8"), symmetric=False)
    granularity = Granularity.PER_CHANNEL if per_channel else Granularity.PER_TENSOR
    weights = TensorQuant(parse_format("int8"), granularity=granularity)
    name = "Static INT8 per-channel" if per_channel else "Static INT8 per-tensor"
    return QuantConfig(LayerQuant(weights, activations), name=name)


def _try(name: str, build) -> Variant:
    from quant_core.errors import QuantLabError
    try:
        result = build()
    except (QuantLabError, ValueError, RuntimeError) as err:
        return Variant(name, None, True, f"not exported: {first_line(err)}")
    simulated = bool(result.simulated_only)
    note = "; ".join(result.notes[:2])
    if simulated:
        note = f"simulated only, kept FP32: {', '.join(result.simulated_only)}"
    return Variant(name, result.model, simulated, note)


def standard_variants(prepared, calibration, config, *, calibration_data=None) -> list[Variant]:
    """FP32, FP16, dynamic INT8, static INT8 per-tensor and per-channel, 4-bit weight-only (MatMul/Gemm
    models only) and the current config, each as a model to time."""
    from quant_core.export.ort_export import export_dynamic_int8, export_fp16, export_matmul_nbits, export_model
    from quant_core.export.overrides import model_proto
    fp32 = model_proto(prepared).SerializeToString()
    variants = [Variant("FP32", fp32, False, "the model as loaded")]
    variants.append(_try("FP16", lambda: export_fp16(prepared)))
    variants.append(_try("Dynamic INT8", lambda: export_dynamic_int8(prepared)))
    for per_channel in (False, True):
        static = static_int8_config(prepared, per_channel=per_channel)
        variants.append(_try(static.name, lambda c=static: export_model(prepared, c, calibration,
                                                                          calibration_data=calibration_data)))
    if any(layer.op_type in ("MatMul", "Gemm") for layer in prepared.info.layers):
        variants.append(_try("4-bit weight-only (MatMulNBits)", lambda: export_matmul_nbits(prepared)))
    variants.append(_try(f"Current config ({config.name})",
                         lambda: export_model(prepared, config, calibration, calibration_data=calibration_data)))
    return variants

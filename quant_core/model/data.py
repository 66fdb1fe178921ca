"""Model input data from .npz files (never pickle), validated against the model, split and batched."""
from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from quant_core.errors import DataError
from quant_core.model.batching import Rows, fixed_batch_size, sample_slice
from quant_core.model.layout import DataLayout, Feeder, check_state, infer_layout, infer_state, input_layout
from quant_core.model.model_io import ModelInfo, TensorInfo

LABELS_KEY = "labels"
MAX_DATA_BYTES = 2 * 2**30  # uncompressed; refuses .npz "zip bombs" before reading them


@dataclass(frozen=True, eq=False)
class Dataset:
    """Samples for a model: one array per model input (samples on axis 0) and optional integer labels.

    `layout` says how each array holds its samples and which outputs are streaming state
    (`layout.infer_layout`); None means batch-first (every array's axis 0 is the model's batch axis).
    `inputs` of a subset or split is a `Rows` view of the original arrays (`subset`): the samples are
    held once, and reading `inputs[name]` gathers a copy of that input's samples.
    """

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None = None
    layout: DataLayout | None = None

    @property
    def num_samples(self) -> int:
        if isinstance(self.inputs, Rows):
            return self.inputs.count
        return int(next(iter(self.inputs.values())).shape[0]) if self.inputs else 0

    def subset(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        """Return the samples at `indices` (in that order), without copying them.

        Notes
        -----
        The subset's `inputs` is a `Rows` over the same arrays (a subset of a subset picks from the
        original arrays too); its labels (one small integer array) are copied. Batches of it (`iter_batches`,
        `layout.Feeder`) gather one batch at a time and equal the batches of a copy, byte for byte.
        """
        indices = np.asarray(indices, dtype=np.int64)
        rows = self.inputs.pick(indices) if isinstance(self.inputs, Rows) else Rows(self.inputs, indices)
        return Dataset(inputs=rows, labels=None if self.labels is None else self.labels[indices], layout=self.layout)

    def slice(self, start: int, stop: int | None = None) -> Dataset:
        """Return the samples [start, stop) as read-only views of the arrays (nothing is copied).

        Read-only: writing into a part would change the data it was cut from (a copy never did).
        """
        if isinstance(self.inputs, Rows):
            return self.subset(np.arange(self.num_samples)[start:stop])
        return Dataset(inputs={name: _read_only(array[start:stop]) for name, array in self.inputs.items()},
                       labels=None if self.labels is None else self.labels[start:stop], layout=self.layout)

    @property
    def streaming(self) -> bool:
        """True when consecutive samples form a stream (the layout pairs state outputs with inputs)."""
        return self.layout is not None and self.layout.streaming


def load_npz(source: bytes | str | os.PathLike, info: ModelInfo, *, max_bytes: int | None = None,
             state: dict[str, str] | None = None) -> Dataset:
    """Read an .npz with one array per model input (and optional `labels`) and check it fits the model.

    Notes
    -----
    An archive that unpacks to more than `max_bytes` (default MAX_DATA_BYTES) is refused from its
    directory alone, before any array is read.
    Read with allow_pickle=False: an .npz of Python objects is refused, never unpickled. Arrays are checked
    for names, fixed dims and dtype against `info.inputs`; NaN / infinite inputs and zero samples are
    refused. `labels` must be integers, one per sample ([N]) or per position ([N, T], -1: not scored).
    Samples sit on axis 0: along the model's batch axis, each a complete input with batch size 1, or one
    scalar per sample (`layout.infer_layout`, docs/data.md). `state` maps state outputs to the inputs they
    feed at the next sample (None: inferred from names and shapes; {}: no streaming).
    """
    arrays = _read_npz(source, MAX_DATA_BYTES if max_bytes is None else max_bytes)
    expected = [tensor.name for tensor in info.inputs]
    pairs = infer_state(info) if state is None else check_state(info, state)
    unrecorded = tuple(pair.input for pair in pairs if pair.input not in arrays)  # a stream may start from zeros
    missing = [name for name in expected if name not in arrays and name not in unrecorded]
    unknown = sorted(set(arrays) - set(expected) - {LABELS_KEY})
    if missing or unknown:
        have = ", ".join(f"'{name}'" for name in arrays) or "nothing"
        want = ", ".join(f"'{name}'" for name in expected)
        raise DataError(f"the .npz must hold one array per model input ({want}) and optionally '{LABELS_KEY}'; "
                        f"it holds {have}")
    inputs = {}
    for tensor in info.inputs:
        if tensor.name not in unrecorded:
            array = arrays[tensor.name]
            _check_input(array, tensor)
            inputs[tensor.name] = array
    counts = {name: array.shape[0] for name, array in inputs.items()}
    if len(set(counts.values())) > 1:
        raise DataError(f"inputs have different numbers of samples: {counts}")
    num_samples = next(iter(counts.values()), 0)
    if num_samples == 0:
        raise DataError("the .npz holds zero samples")
    inputs.update((tensor.name, _zero_state(tensor, num_samples)) for tensor in info.inputs
                  if tensor.name in unrecorded)
    labels = None if LABELS_KEY in expected else arrays.get(LABELS_KEY)  # an input may be named "labels"
    if labels is not None:
        labels = _check_labels(labels, num_samples, info)
    layout = infer_layout(info, inputs, state={pair.output: pair.input for pair in pairs})
    layout = replace(layout, unrecorded=unrecorded) if unrecorded else layout
    return Dataset(inputs=inputs, labels=labels, layout=None if layout.classic and not layout.streaming else layout)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False  # a view: the array it views stays writable
    return array


def _zero_state(tensor: TensorInfo, num_samples: int) -> np.ndarray:
    """Zeros for a state input the .npz leaves out: one complete input per sample, batch dimension 1."""
    shape = tuple(1 if isinstance(dim, str) or dim is None else dim for dim in tensor.shape)
    if sum(not isinstance(dim, int) for dim in tensor.shape) > 1:
        raise DataError(f"the .npz has no array for state input '{tensor.name}' {describe_input(tensor)}, and "
                        "its shape is not fixed beyond the batch dimension: record the state in the data")
    return np.zeros((num_samples, *shape), dtype=np.dtype(tensor.dtype))


def record_state(prepared, ds: Dataset) -> Dataset:
    """Fill the state inputs the .npz left out with the state the FP32 model carries over the stream.

    The first sample gets zeros; sample t gets the state outputs of sample t - 1. Per-frame evaluation then
    feeds each sample the FP32 model's own state, as if it had been recorded. Returns `ds` itself when
    nothing is missing (or `ds` is not a Dataset). Call it before splitting: each split starts where
    the stream stands, not from zeros.
    """
    layout = getattr(ds, "layout", None)
    if layout is None or not layout.unrecorded or layout.filled:
        return ds
    import onnxruntime as ort
    from quant_core.model.runtime import first_line, session_options
    session = ort.InferenceSession(prepared.model.SerializeToString(), session_options(1),
                                   providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    inputs = {name: array.copy() if name in layout.unrecorded else array for name, array in ds.inputs.items()}
    complete = replace(layout, filled=True)
    step = iter(range(ds.num_samples))

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        index = next(step)
        for name in layout.unrecorded:
            inputs[name][index] = feed[name]
        try:
            return dict(zip(names, session.run(names, feed)))
        except Exception as err:  # onnxruntime's own exception types
            raise DataError(f"onnxruntime cannot run the model on this data: {first_line(err)}") from None

    for _ in Feeder(inputs, complete, 1, ds.num_samples).stream(run):
        pass
    return Dataset(inputs=inputs, labels=ds.labels, layout=complete)


def split_dataset(ds: Dataset, *, calibration_samples: int = 256, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split into (calibration, evaluation) by a seeded permutation; each part keeps the original order.

    Notes
    -----
    The calibration part gets min(calibration_samples, num_samples // 2) samples so that evaluation always
    gets at least half; a data set of one sample cannot be split. A stream (`ds.streaming`) is cut, not
    shuffled: calibration gets the first samples, evaluation the rest, each in stream order.
    Neither part copies the samples: a stream's parts are slices of `ds`'s arrays, a shuffled split's
    parts are `Rows` of them (`Dataset.subset`), so the data is held once whatever the caller keeps.
    """
    if calibration_samples < 1:
        raise DataError(f"calibration_samples must be at least 1, got {calibration_samples}")
    if ds.num_samples < 2:
        raise DataError(f"need at least 2 samples to split into calibration and evaluation, got {ds.num_samples}")
    count = min(calibration_samples, ds.num_samples // 2)
    if ds.streaming:
        return ds.slice(0, count), ds.slice(count)
    order = np.random.default_rng(seed).permutation(ds.num_samples)
    return ds.subset(np.sort(order[:count])), ds.subset(np.sort(order[count:]))


def iter_batches(ds: Dataset, info: ModelInfo, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Yield feeds {input name: array} of up to `batch_size` samples, in order.

    Notes
    -----
    When a model input has a fixed batch dimension n (e.g. 1), batches have exactly n samples whatever
    `batch_size` says; a last partial batch is then dropped (the model could not run it). A Dataset with a
    layout (complete inputs, scalars: docs/data.md) is fed through it, one sample at a time when its samples
    cannot stack; every sample gets its recorded inputs (a stream's recorded state).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if ds.layout is not None and not ds.layout.batch_first:
        size = batch_size if ds.layout.stackable else 1
        for start in range(0, ds.num_samples, size):
            yield ds.layout.feed(ds.inputs, start, min(start + size, ds.num_samples))
        return
    fixed = fixed_batch_size(info)
    size = fixed or batch_size
    stop = ds.num_samples - ds.num_samples % size if fixed else ds.num_samples
    for start in range(0, stop, size):
        yield {name: sample_slice(ds.inputs, name, start, start + size) for name in ds.inputs}


def describe_input(tensor: TensorInfo) -> str:
    """The shape and dtype an input expects, as a user reads it: "(batch, 1, 8, 8) float32"."""
    dims = ", ".join("?" if dim is None else str(dim) for dim in tensor.shape)
    return f"({dims}{',' if len(tensor.shape) == 1 else ''}) {tensor.dtype}"


def _read_npz(source: bytes | str | os.PathLike, max_bytes: int) -> dict[str, np.ndarray]:
    file = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        loaded = np.load(file, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"data file not found: {source}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"not a readable .npz file ({_one_line(err)}): save the data with "
                        "np.savez(path, <input name>=array, labels=labels)") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError("expected an .npz archive with one array per model input (np.savez), "
                        "got a single .npy array")
    with loaded:
        total = sum(member.file_size for member in loaded.zip.infolist())
        if total > max_bytes:
            raise DataError(f"the .npz unpacks to {_size_text(total)}, over the {_size_text(max_bytes)} limit")
        arrays = {}
        for name in loaded.files:
            try:
                arrays[name] = loaded[name]
            except ValueError as err:
                if "allow_pickle" in str(err):
                    raise DataError(f"array '{name}' holds Python objects (pickled), which are never loaded: "
                                    "save plain numeric arrays, e.g. array.astype(np.float32)") from None
                raise DataError(f"array '{name}' cannot be read: {_one_line(err)}") from None
            except (OSError, EOFError, zipfile.BadZipFile) as err:
                raise DataError(f"array '{name}' cannot be read (corrupt .npz?): {_one_line(err)}") from None
    return arrays


def _check_input(array: np.ndarray, tensor: TensorInfo) -> None:
    expected = describe_input(tensor)
    got = f"({', '.join(str(dim) for dim in array.shape)}{',' if array.ndim == 1 else ''}) {array.dtype}"
    mismatch = f"input '{tensor.name}' expects shape {expected}, got {got}"
    if array.dtype.name != tensor.dtype:
        raise DataError(f"{mismatch}: convert with array.astype(np.{tensor.dtype})"
                        if hasattr(np, tensor.dtype) else mismatch)
    _check_context(array, tensor)
    input_layout(tensor, array)  # the shape: samples on axis 0, as a batch, complete inputs or scalars
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise DataError(f"input '{tensor.name}' holds {bad} NaN or infinite value(s)")


def _check_context(array: np.ndarray, tensor: TensorInfo) -> None:
    """Refuse token windows [N, T] longer than a token input's fixed context (a language model's)."""
    shape = tuple(tensor.shape)
    if (np.issubdtype(array.dtype, np.integer) and array.ndim == 2 and len(shape) == 2
            and isinstance(shape[1], int) and array.shape[1] > shape[1]):
        raise DataError(f"input '{tensor.name}' holds windows of {array.shape[1]} tokens, longer than the model's "
                        f"context of {shape[1]}: cut them to {shape[1]} tokens")


def _check_labels(labels: np.ndarray, num_samples: int, info: ModelInfo) -> np.ndarray:
    """Labels are one class per sample [N], or one per position [N, T] (next tokens, per-position classes:
    -1 marks a position that is not scored)."""
    if labels.ndim not in (1, 2) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"'{LABELS_KEY}' must be a 1-D integer array (class indices) or 2-D [samples, positions] "
                        f"(next tokens, -1 = not scored), got shape {labels.shape} {labels.dtype}")
    if labels.shape[0] != num_samples:
        raise DataError(f"'{LABELS_KEY}' has {labels.shape[0]} entries for {num_samples} samples")
    if labels.ndim == 1 and labels.size and labels.min() < 0:
        raise DataError(f"'{LABELS_KEY}' holds negative class indices (smallest {labels.min()})")
    if labels.ndim == 2 and labels.size and labels.min() < -1:
        raise DataError(f"'{LABELS_KEY}' holds {labels.min()}: per-position labels are class indices or -1 "
                        "(not scored)")
    classes = info.outputs[0].shape[-1] if info.outputs and info.outputs[0].shape else None
    if isinstance(classes, int) and classes > 0 and labels.size and labels.max() >= classes:
        raise DataError(f"'{LABELS_KEY}' holds class {labels.max()}, but the model's output "
                        f"'{info.outputs[0].name}' has {classes} classes")
    return labels.astype(np.int64, copy=False)


def _size_text(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.1f} KiB"


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]

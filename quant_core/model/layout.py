"""How a data set's arrays become model feeds: where each input's samples sit, and which outputs are state.

Every array in an .npz holds its samples on axis 0. A `DataLayout` says, per model input, what one
sample is, inferred once from the model's input shapes and the arrays' shapes (`infer_layout`):

- BATCH: the array's axis 0 is the model's batch axis 0 (`x` (N, 64) for an input (batch, 64));
  a slice of samples is a feed, as it always was.
- SAMPLE: each sample is a complete model input whose batch dimension, at the model's `axis`, has
  size 1 (`state` (N, 2, 1, 128) for an input (2, batch, 128)).
- SCALAR: each sample is one value of a rank-0 input (`sr` (N,) for an input ()).

Samples are stacked along the model's batch axis when the graph allows it (`DataLayout.stackable`: no
fixed batch dimension, every scalar input constant over the data), else fed one by one.

Streaming: `state` pairs an output with the input it feeds at the next step (`stateN` -> `state`,
`hn` -> `h`), inferred from names and shapes or given. `Feeder.stream` runs the samples in order,
each step's state outputs fed to the next step's state inputs (the first step takes the recorded state).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np

from quant_core.model.batching import fit_batch, fixed_batch_size, named_inputs, sample_count, sample_slice
from quant_core.errors import DataError

DOCS = "docs/data.md"
# Name endings that mark a state output (the input's name without them) or a state input.
_OUTPUT_SUFFIXES = ("_out", "_new", "_next", "out", "N", "n")
_OUTPUT_PREFIXES = ("new_", "next_")
_INPUT_SUFFIXES = ("_in", "_0", "_prev", "0")
_INPUT_PREFIXES = ("prev_",)


class InputKind(StrEnum):
    BATCH = "batch"      # the array's axis 0 is the model's batch axis 0
    SAMPLE = "sample"    # each sample a complete input, its batch dimension (size 1) at the model's `axis`
    SCALAR = "scalar"    # each sample one value of a rank-0 input


@dataclass(frozen=True)
class InputLayout:
    """How one model input's array holds its samples (`axis`: the model's batch axis; None for SCALAR)."""

    name: str
    kind: InputKind
    axis: int | None = 0

    def describe(self) -> str:
        if self.kind == InputKind.BATCH:
            return f"'{self.name}': samples along the model's batch axis 0"
        if self.kind == InputKind.SCALAR:
            return f"'{self.name}': one scalar per sample"
        return f"'{self.name}': each sample a complete input (batch dimension 1 at axis {self.axis})"


@dataclass(frozen=True)
class StatePair:
    """An output fed to an input at the next step of a stream."""

    output: str
    input: str

    def __str__(self) -> str:
        return f"{self.output}={self.input}"


@dataclass(frozen=True)
class DataLayout:
    """Per model input how samples sit, whether samples stack into batches, and the streaming state pairs.

    `output_axes` holds each model output's batch axis (None: the output has none; samples then get a
    new axis 0), so outputs of several runs join with samples on axis 0. `unrecorded` names the state
    inputs the data left out: zeros until `data.record_state` fills them with the state the FP32 model
    carries over the stream (`filled`).
    """

    inputs: tuple[InputLayout, ...]
    state: tuple[StatePair, ...] = ()
    stackable: bool = True
    output_axes: tuple[tuple[str, int | None], ...] = ()
    unrecorded: tuple[str, ...] = ()
    filled: bool = False

    @property
    def batch_first(self) -> bool:
        """True when every input's axis 0 is the model's batch axis 0 (a model fixing it to n runs n at a time)."""
        return all(item.kind == InputKind.BATCH for item in self.inputs)

    @property
    def classic(self) -> bool:
        """True when every input is BATCH and every output batch-first: slices are feeds, outputs concatenate."""
        return (all(item.kind == InputKind.BATCH for item in self.inputs)
                and all(axis == 0 for _, axis in self.output_axes))

    @property
    def streaming(self) -> bool:
        return bool(self.state)

    def describe(self) -> tuple[str, ...]:
        """How the data was understood, one line per fact, as the data page and the CLI show it."""
        lines = [item.describe() for item in self.inputs]
        if self.classic:
            lines = ["batch-first: every array's axis 0 is the model's batch axis"]
        elif self.stackable:
            lines.append("samples are stacked along the model's batch axis")
        else:
            lines.append("samples are fed one by one (the model fixes its batch size or a scalar input varies)")
        if self.state:
            pairs = ", ".join(f"{pair.output} → {pair.input}" for pair in self.state)
            lines.append(f"streaming: consecutive samples carry the state {pairs}")
        if self.unrecorded:
            lines.append(f"not in the data: {', '.join(self.unrecorded)}; the stream starts from zeros and each "
                         "sample's recorded state is the FP32 model's own")
        return tuple(lines)

    def feed(self, inputs: Mapping[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
        """The model feed of samples [start, stop): slices, stacks along the batch axis, or one scalar.

        `inputs` may be a `batching.Rows` (a split): only the samples [start, stop) are gathered.
        """
        feed = {}
        for item in self.inputs:
            if item.kind == InputKind.BATCH:
                feed[item.name] = sample_slice(inputs, item.name, start, stop)
            elif item.kind == InputKind.SCALAR:  # constant over the batch when stacking (stackable)
                feed[item.name] = np.asarray(sample_slice(inputs, item.name, start, start + 1)[0])
            elif stop - start == 1:
                feed[item.name] = sample_slice(inputs, item.name, start, stop)[0]
            else:
                stacked = np.moveaxis(sample_slice(inputs, item.name, start, stop).squeeze(item.axis + 1), 0, item.axis)
                feed[item.name] = np.ascontiguousarray(stacked)
        return feed

    def to_dict(self) -> dict:
        return {"inputs": [{"name": i.name, "kind": str(i.kind), "axis": i.axis} for i in self.inputs],
                "state": {pair.output: pair.input for pair in self.state}, "stackable": self.stackable,
                "description": list(self.describe())}


def classic_layout(input_names: Sequence[str], output_names: Sequence[str] = ()) -> DataLayout:
    """The batch-first layout: every array's axis 0 is the model's batch axis 0."""
    return DataLayout(tuple(InputLayout(name, InputKind.BATCH) for name in input_names),
                      output_axes=tuple((name, 0) for name in output_names))


def infer_layout(info, arrays: Mapping[str, np.ndarray], *, state: Mapping[str, str] | None = None) -> DataLayout:
    """Infer how each array holds its samples and which outputs are state; one DataError when it cannot.

    `state` maps outputs to the inputs they feed at the next step ({} turns streaming off; None infers
    the pairs from names and shapes: `stateN` -> `state`, `hn` -> `h`, `h_out` -> `h_in`).
    """
    items = tuple(input_layout(tensor, arrays[tensor.name]) for tensor in info.inputs)
    stackable = _stackable(info, items, arrays)
    pairs = infer_state(info) if state is None else check_state(info, state)
    return DataLayout(items, pairs, stackable, _output_axes(info, items))


def _shape_text(shape) -> str:
    dims = ", ".join("?" if dim is None else str(dim) for dim in shape)
    return f"({dims}{',' if len(shape) == 1 else ''})"


def _fits(dims: Sequence[int], model_dims: Sequence) -> bool:
    return len(dims) == len(model_dims) and all(
        not (isinstance(want, int) and want > 0) or got == want for got, want in zip(dims, model_dims))


def input_layout(tensor, array: np.ndarray) -> InputLayout:
    """How `array` holds the samples of model input `tensor` (a TensorInfo); one DataError when it fits no way."""
    shape = tuple(tensor.shape)
    mismatch = (f"input '{tensor.name}' expects shape {_shape_text(shape)} {tensor.dtype}, "
                f"got {_shape_text(array.shape)} {array.dtype}")
    if not shape:
        if array.ndim == 1:
            return InputLayout(tensor.name, InputKind.SCALAR, None)
        raise DataError(f"{mismatch}: a scalar input takes one value per sample, shape (samples,) ({DOCS})")
    if array.ndim == len(shape) and _fits(array.shape[1:], shape[1:]):
        return InputLayout(tensor.name, InputKind.BATCH, 0)
    if array.ndim == len(shape) + 1 and _fits(array.shape[1:], shape):
        axis = _batch_axis(shape, array.shape[1:])
        if axis is not None:
            return InputLayout(tensor.name, InputKind.SAMPLE, axis)
        raise DataError(f"{mismatch}: each sample (axis 0) must be a complete input with batch size 1 "
                        f"({DOCS})")
    raise DataError(f"{mismatch}: samples go on axis 0, either along the model's batch axis or each a complete "
                    f"input with batch size 1 ({DOCS})")


def _batch_axis(shape: Sequence, sample: Sequence[int]) -> int | None:
    """The model axis that is the batch dimension of one sample: size 1 there, the model's dim free (or 1)."""
    free = [axis for axis, dim in enumerate(shape) if sample[axis] == 1 and not isinstance(dim, int)]
    named = [axis for axis in free if "batch" in str(shape[axis]).lower()]
    fixed = [axis for axis, dim in enumerate(shape) if sample[axis] == 1 and dim == 1]
    candidates = named or free or fixed
    return candidates[0] if candidates else None


def _stackable(info, items: tuple[InputLayout, ...], arrays: Mapping[str, np.ndarray]) -> bool:
    shapes = {tensor.name: tensor.shape for tensor in info.inputs}
    batch_first = all(item.kind == InputKind.BATCH for item in items)
    for item in items:
        if item.kind != InputKind.SCALAR and isinstance(shapes[item.name][item.axis], int) and not batch_first:
            return False  # the model fixes this batch dimension (to 1); batch-first data alone keeps n per run
        if item.kind == InputKind.SCALAR and not np.all(arrays[item.name] == arrays[item.name][0]):
            return False  # one scalar per run: samples with different values cannot share a run
    return True


def _output_axes(info, items: tuple[InputLayout, ...]) -> tuple[tuple[str, int | None], ...]:
    shapes = {tensor.name: tensor.shape for tensor in info.inputs}
    symbols = {shapes[item.name][item.axis] for item in items if item.axis is not None}
    symbols = {symbol for symbol in symbols if isinstance(symbol, str)}
    classic = all(item.kind == InputKind.BATCH for item in items)
    axes = []
    for tensor in info.outputs:
        found = [axis for axis, dim in enumerate(tensor.shape) if isinstance(dim, str) and dim in symbols]
        axis = found[0] if len(found) == 1 else (0 if classic or tensor.shape else None)
        axes.append((tensor.name, axis))
    return tuple(axes)


# -- state pairs ---------------------------------------------------------------------------------------

def _stems(name: str, suffixes: tuple[str, ...], prefixes: tuple[str, ...]) -> set[str]:
    stems = {name[:-len(s)] for s in suffixes if name.endswith(s) and len(name) > len(s)}
    stems |= {name[len(p):] for p in prefixes if name.startswith(p) and len(name) > len(p)}
    return stems


def _same_tensor(output, tensor) -> bool:
    if output.dtype != tensor.dtype or len(output.shape) != len(tensor.shape):
        return False
    return all(not (isinstance(a, int) and isinstance(b, int)) or a == b for a, b in zip(output.shape, tensor.shape))


def infer_state(info) -> tuple[StatePair, ...]:
    """Pair each output with the input it feeds at the next step, by name (`stateN` -> `state`, `hn` -> `h`,
    `hn` -> `h0`, `h_out` -> `h_in`) and by shape and dtype; every input and output is paired at most once."""
    pairs, taken = [], set()
    for output in info.outputs:
        out_stems = _stems(output.name, _OUTPUT_SUFFIXES, _OUTPUT_PREFIXES)
        for tensor in info.inputs:
            names = {tensor.name} | _stems(tensor.name, _INPUT_SUFFIXES, _INPUT_PREFIXES)
            if (tensor.name not in taken and tensor.name != output.name and out_stems & names
                    and _same_tensor(output, tensor)):
                pairs.append(StatePair(output.name, tensor.name))
                taken.add(tensor.name)
                break
    return tuple(pairs)


def check_state(info, state: Mapping[str, str]) -> tuple[StatePair, ...]:
    """Return the given output -> input pairs after checking each names a real output and input of the
    same shape and dtype; one DataError naming the pair otherwise."""
    outputs = {tensor.name: tensor for tensor in info.outputs}
    inputs = {tensor.name: tensor for tensor in info.inputs}
    pairs, taken = [], set()
    for output, name in state.items():
        pair = StatePair(output, name)
        if output not in outputs:
            raise DataError(f"state mapping {pair}: the model has no output '{output}' "
                            f"(outputs: {', '.join(outputs)})")
        if name not in inputs:
            raise DataError(f"state mapping {pair}: the model has no input '{name}' (inputs: {', '.join(inputs)})")
        if name in taken:
            raise DataError(f"state mapping {pair}: input '{name}' is already fed by another output")
        if not _same_tensor(outputs[output], inputs[name]):
            raise DataError(f"state mapping {pair}: output '{output}' is {_shape_text(outputs[output].shape)} "
                            f"{outputs[output].dtype} but input '{name}' expects "
                            f"{_shape_text(inputs[name].shape)} {inputs[name].dtype}")
        taken.add(name)
        pairs.append(pair)
    return tuple(pairs)


def parse_state(text: str | Sequence[str] | None) -> dict[str, str] | None:
    """Parse "stateN=state,hn=h" (or a list of "output=input") into a mapping; "none" → {} (no streaming);
    None or "" → None (infer)."""
    if text is None:
        return None
    parts = [text] if isinstance(text, str) else list(text)
    items = [item.strip() for part in parts for item in part.split(",") if item.strip()]
    if not items:
        return None
    if [item.lower() for item in items] == ["none"]:
        return {}
    mapping = {}
    for item in items:
        output, sep, name = item.partition("=")
        if not sep or not output.strip() or not name.strip():
            raise DataError(f"state mapping '{item}': write output=input, e.g. stateN=state (or 'none')")
        mapping[output.strip()] = name.strip()
    return mapping


# -- feeding -------------------------------------------------------------------------------------------

# Batches a pass may hold at once (one per core of the 2-core machines this runs on): memory in flight is
# at most this many budgets (`Feeder.within_budget`, `Feeder.in_flight`).
IN_FLIGHT = 2


@dataclass(frozen=True, eq=False)
class Feeder:
    """Samples and their layout, fed to a model: in batches (`batches`) or as a stream (`stream`).

    `batches` feed every sample its recorded inputs (for a streaming layout, the recorded state:
    per-frame, teacher-forced); `stream` carries the model's own state from one sample to the next.
    """

    inputs: Mapping[str, np.ndarray]
    layout: DataLayout
    batch_size: int
    sample_count: int
    output_names: tuple[str, ...] = ()
    fixed_batch: bool = False  # the model fixes its batch dimension: `batch_size` is that, never changed
    min_batch: int = 1         # a last batch of fewer samples joins the batch before it
    # How many of its batches may be in memory at once within the budget it was sized for (`within_budget`);
    # 1 when it was not sized (nothing weighed). Passes run at most this many side by side.
    in_flight: int = 1

    def bounds(self) -> Iterator[tuple[int, int]]:
        """Yield (start, stop) of consecutive batches of `batch_size` samples; a last batch of fewer than
        `min_batch` samples joins the one before (so a batch of one sample never follows larger ones)."""
        start = 0
        while start < self.sample_count:
            stop = min(start + self.batch_size, self.sample_count)
            if 0 < self.sample_count - stop < self.min_batch:
                stop = self.sample_count
            yield start, stop
            start = stop

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield the feeds of consecutive batches of `batch_size` samples (1 when samples cannot stack)."""
        for start, stop in self.bounds():
            yield self.layout.feed(self.inputs, start, stop)

    def within_budget(self, sample_bytes: Callable[[dict[str, np.ndarray]], int], budget: int, *,
                      min_batch: int = 1, parts: int = 1, parts_from_bytes: int = 0,
                      in_flight_budget: int | None = None) -> Feeder:
        """Return this feeder with batches of at most about `budget` bytes; the one batching rule of the engine.

        rows = clip(budget // sample_bytes(feed of the first sample), min_batch, batch_size)

        With `parts` > 1, a split whose samples weigh at least `parts_from_bytes` in all comes in at least
        `parts` batches where it holds `min_batch` samples each (so that as many workers share it:
        `engine/workers.py`), and the batches are balanced (equal sizes, the last maybe one smaller).
        `in_flight` says how many batches may be in memory at once: at most IN_FLIGHT (2), together within
        `in_flight_budget` (default IN_FLIGHT x `budget`; 1 where `min_batch` made one batch too heavy for
        it); the passes run no more than that side by side.

        `sample_bytes` weighs one sample (e.g. its activations, measured by a run of that sample). Batches
        are kept as they are when they hold one sample, when samples do not stack along axis 0 (a stream,
        complete inputs, varying scalars) or when the model fixes its batch size. With `min_batch` > 1 a
        last batch smaller than it joins the one before: onnxruntime may run a batch of one sample with
        other kernels than larger ones (measured on MiniLM: 1 ulp), so outputs then do not depend on the
        budget.
        """
        if self.batch_size <= 1 or self.fixed_batch or not self.layout.batch_first:
            return self
        per_sample = max(int(sample_bytes(self.layout.feed(self.inputs, 0, 1))), 1)
        shared = parts > 1 and per_sample * self.sample_count >= parts_from_bytes
        rows = min(self.batch_size, max(min_batch, budget // per_sample, 1))
        if shared:  # balanced: at least `parts` batches of equal sizes
            count = max(-(-self.sample_count // rows), min(parts, self.sample_count // max(min_batch, 1)))
            rows = -(-self.sample_count // count)
        # At most two batches' worth of the budget in flight; min_batch may make one batch weigh more than
        # the budget, and then batches run one at a time.
        flight = IN_FLIGHT * budget if in_flight_budget is None else in_flight_budget
        in_flight = max(1, min(IN_FLIGHT, flight // (min(rows, self.sample_count) * per_sample)))
        if rows >= self.sample_count:
            rows = self.batch_size  # one batch, as before: nothing to split
        return replace(self, batch_size=rows, min_batch=min_batch, in_flight=in_flight)

    def stream(self, run: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]
               ) -> Iterator[Mapping[str, np.ndarray]]:
        """Yield `run(feed)` for each sample in order, its state outputs fed to the next sample's state inputs.

        The first sample takes the recorded state from the data; `run` must return the state outputs.
        """
        carried: dict[str, np.ndarray] = {}
        for index in range(self.sample_count):
            feed = self.layout.feed(self.inputs, index, index + 1)
            feed.update(carried)
            values = run(feed)
            carried = {pair.input: values[pair.output] for pair in self.layout.state}
            yield values

    def join(self, parts: Iterable[Sequence[np.ndarray]]) -> tuple[np.ndarray, ...]:
        """Each output of several runs joined with samples on axis 0 (no copy for one batch-first run).

        `parts` may be a generator: each run's outputs are copied into the joined arrays (sized for
        `sample_count` samples) as they come, so only the joined outputs and one run's are held at once.
        """
        axes = dict(self.layout.output_axes)
        parts = iter(parts)
        first = next(parts)
        names = [self.output_names[i] if i < len(self.output_names) else None for i in range(len(first))]
        axis_of = [axes.get(name, 0) if name is not None else 0 for name in names]

        def samples_first(part):
            return [np.expand_dims(value, 0) if axis is None else np.moveaxis(value, axis, 0)
                    for value, axis in zip(part, axis_of)]

        values = samples_first(first)
        second = next(parts, None)
        if second is None:
            return tuple(values)
        joined = [np.empty((max(self.sample_count, len(v)),) + v.shape[1:], dtype=v.dtype) for v in values]
        filled = [0] * len(values)
        for part in itertools.chain((first, second), parts):
            for index, value in enumerate(samples_first(part)):
                end = filled[index] + len(value)
                if end > len(joined[index]):  # more rows than samples (an output without a batch axis)
                    joined[index] = np.concatenate([joined[index][:filled[index]], value])
                else:
                    joined[index][filled[index]:end] = value
                filled[index] = end
        return tuple(array[:rows] for array, rows in zip(joined, filled))


def feeder(data, info, input_names: Sequence[str], output_names: Sequence[str], batch_size: int, *,
           what: str = "evaluation") -> Feeder:
    """Build the Feeder of a Dataset (its layout), a dict of batch-first arrays or one array (the first input).

    A batch-first layout whose model fixes its batch dimension n feeds n samples at a time and drops a last
    partial batch (the model could not run it); a layout whose samples cannot stack feeds them one by one.
    """
    raw = getattr(data, "inputs", data)
    inputs = named_inputs({"": raw} if isinstance(raw, np.ndarray) else raw, tuple(input_names))
    layout = getattr(data, "layout", None) or classic_layout(input_names, output_names)
    if layout.unrecorded and not layout.filled:
        raise DataError(f"the state input(s) {', '.join(layout.unrecorded)} are not recorded: "
                        "quant_core.model.data.record_state(prepared, data) fills them (before splitting)")
    count = sample_count(inputs)
    if count == 0:
        raise DataError(f"the {what} data has no samples")
    fixed = False
    if layout.batch_first:
        inputs, batch_size = fit_batch(inputs, batch_size, info)
        fixed = fixed_batch_size(info) is not None
        count = sample_count(inputs)
    elif not layout.stackable:
        batch_size = 1
    return Feeder(inputs, layout, batch_size, count, tuple(output_names), fixed_batch=fixed)

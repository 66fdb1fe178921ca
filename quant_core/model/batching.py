"""Samples in batches: the one place that counts samples, names the inputs of unnamed data and fits a model's fixed batch size."""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from quant_core.errors import DataError


class Rows(Mapping):
    """Some samples of shared arrays, picked by index without copying them: {input name: samples}.

    A split of a Dataset is one (`data.split_dataset`): the loaded arrays are held once and each split
    holds only its sample indices. `rows[name]` gathers that input's picked samples (a copy, for a
    consumer that wants a plain array); feeds use `take(name, start, stop)`, which gathers only the
    samples [start, stop) of the pick, so a pass over a split copies one batch at a time.
    """

    __slots__ = ("arrays", "index")

    def __init__(self, arrays: Mapping[str, np.ndarray], index: Sequence[int] | np.ndarray):
        index = np.array(index, dtype=np.int64)  # its own copy: the pick cannot change under its users
        index.flags.writeable = False
        self.arrays, self.index = dict(arrays), index

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name][self.index]

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __contains__(self, name: object) -> bool:
        return name in self.arrays  # Mapping's own would gather the samples to answer

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def count(self) -> int:
        """How many samples are picked."""
        return len(self.index)

    def take(self, name: str, start: int, stop: int) -> np.ndarray:
        """The picked samples [start, stop) of input `name`, gathered (equal to `self[name][start:stop]`)."""
        return self.arrays[name][self.index[start:stop]]

    def pick(self, indices: Sequence[int] | np.ndarray) -> Rows:
        """The samples at `indices` of this pick (in that order), from the same arrays."""
        return Rows(self.arrays, self.index[np.asarray(indices, dtype=np.int64)])

    def select(self, names: Sequence[str]) -> Rows:
        """The same samples of the inputs `names` only."""
        return Rows({name: self.arrays[name] for name in names}, self.index)


def input_length(inputs: Mapping[str, np.ndarray], name: str) -> int:
    """How many samples input `name` holds (a `Rows` answers without gathering them)."""
    return inputs.count if isinstance(inputs, Rows) else len(inputs[name])


def sample_slice(inputs: Mapping[str, np.ndarray], name: str, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) of input `name`: a slice of an array (no copy), or gathered from a `Rows`."""
    if isinstance(inputs, Rows):
        return inputs.take(name, start, stop)
    return inputs[name][start:stop]


def fixed_batch_size(info) -> int | None:
    """The batch size a model forces through a fixed first dimension of its inputs, or None when free."""
    sizes = {tensor.shape[0] for tensor in info.inputs if tensor.shape and isinstance(tensor.shape[0], int)
             and tensor.shape[0] > 0}
    return min(sizes) if sizes else None


def sample_count(inputs: Mapping[str, np.ndarray]) -> int:
    if isinstance(inputs, Rows):
        return inputs.count
    counts = {name: len(array) for name, array in inputs.items()}
    if len(set(counts.values())) != 1:
        raise DataError(f"every input must have the same number of samples, got {counts}")
    return next(iter(counts.values()))


def named_inputs(inputs: Mapping[str, np.ndarray], input_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Attach the model's input name to an unnamed single array; check every model input is present."""
    if set(inputs) == {""}:
        if len(input_names) != 1:
            raise DataError(f"the model has inputs {list(input_names)}: give one array per input name")
        inputs = {input_names[0]: inputs[""]}
    missing = [name for name in input_names if name not in inputs]
    if missing:
        raise DataError(f"the data has no array for model input(s) {missing}; it has {sorted(inputs)}")
    if isinstance(inputs, Rows):
        return inputs.select(input_names)
    return {name: np.asarray(inputs[name]) for name in input_names}


def fit_batch(inputs: dict[str, np.ndarray], batch_size: int, info) -> tuple[dict[str, np.ndarray], int]:
    """Return (inputs, batch size) for a model whose inputs may fix the batch dimension.

    A fixed batch dimension n (e.g. 1) sets the batch size to n and drops the last partial batch
    (the model could not run it), as `data.iter_batches` does.
    """
    fixed = fixed_batch_size(info)
    if not fixed:
        return inputs, batch_size
    total = sample_count(inputs)
    usable = total - total % fixed
    if usable == 0:
        raise DataError(f"the model takes batches of exactly {fixed} samples; the data has only {total}")
    if isinstance(inputs, Rows):
        return inputs.pick(np.arange(usable)), fixed
    return {name: array[:usable] for name, array in inputs.items()}, fixed

"""Samples in batches: the one place that counts samples, names the inputs of unnamed data and fits a model's fixed batch size."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from quant_core.errors import DataError


def fixed_batch_size(info) -> int | None:
    """The batch size a model forces through a fixed first dimension of its inputs, or None when free."""
    sizes = {tensor.shape[0] for tensor in info.inputs if tensor.shape and isinstance(tensor.shape[0], int)
             and tensor.shape[0] > 0}
    return min(sizes) if sizes else None


def sample_count(inputs: Mapping[str, np.ndarray]) -> int:
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
    return {name: array[:usable] for name, array in inputs.items()}, fixed

"""The data is held once: a split picks samples of the loaded arrays by index, and its batches are those of a copy.

The copies it replaces: `split_dataset` used to index every array with the sorted halves of a seeded
permutation (`array[np.sort(order[:count])]`), so the loaded arrays and the two splits were all held.
"""
import tracemalloc

import numpy as np
import pytest

from quant_core.config import PRESETS
from quant_core.engine.calibrate import calibrate
from quant_core.engine.evaluate import Evaluator
from quant_core.model.batching import Rows
from quant_core.model.data import Dataset, iter_batches, load_npz, split_dataset
from quant_core.model.demo import DEMO_DIR, load_demo
from quant_core.model.layout import feeder
from quant_core.model.model_io import load_model, prepare_model

STRUCTURES = DEMO_DIR / "structures"


def copied_split(ds: Dataset, *, calibration_samples: int = 256, seed: int = 0) -> tuple[Dataset, Dataset]:
    """The split as it was: each part a copy of its samples (fancy indexing with the sorted picks)."""
    count = min(calibration_samples, ds.num_samples // 2)
    order = np.random.default_rng(seed).permutation(ds.num_samples)

    def copy(indices):
        return Dataset({name: array[indices] for name, array in ds.inputs.items()},
                       None if ds.labels is None else ds.labels[indices], ds.layout)
    return copy(np.sort(order[:count])), copy(np.sort(order[count:]))


def held_bytes(*datasets: Dataset) -> int:
    """Bytes of sample arrays held, each buffer once (views and picks of an array add nothing)."""
    buffers = {}
    for ds in datasets:
        for array in getattr(ds.inputs, "arrays", ds.inputs).values():
            while isinstance(array.base, np.ndarray):
                array = array.base
            buffers[id(array)] = array
    return sum(array.nbytes for array in buffers.values())


def same_arrays(found: dict, expected: dict) -> None:
    assert found.keys() == expected.keys()
    for name, array in expected.items():
        assert found[name].dtype == array.dtype and found[name].shape == array.shape, name
        assert found[name].tobytes() == array.tobytes(), name


@pytest.fixture(scope="module")
def digits():
    model, data = load_demo("cnn")
    return prepare_model(load_model(model)), data


def test_a_split_holds_no_copy_of_the_samples(digits):
    _, data = digits
    calibration, evaluation = split_dataset(data)
    assert held_bytes(data, calibration, evaluation) == held_bytes(data) == data.inputs["image"].nbytes
    for part in (calibration, evaluation):
        assert isinstance(part.inputs, Rows) and part.inputs.arrays["image"] is data.inputs["image"]
    assert calibration.num_samples == 256 and evaluation.num_samples == data.num_samples - 256


def test_a_split_has_the_samples_labels_and_order_of_the_copies_it_replaces(digits):
    _, data = digits
    for found, expected in zip(split_dataset(data), copied_split(data)):
        same_arrays(dict(found.inputs), expected.inputs)  # reading a split's inputs gathers a copy
        assert np.array_equal(found.labels, expected.labels) and found.labels.dtype == expected.labels.dtype


@pytest.mark.parametrize("batch_size", [1, 7, 64, 10_000])
def test_batches_of_a_split_equal_the_batches_of_its_copy_byte_for_byte(digits, batch_size):
    prepared, data = digits
    for found, expected in zip(split_dataset(data), copied_split(data)):
        pairs = list(zip(iter_batches(found, prepared.info, batch_size), iter_batches(expected, prepared.info,
                                                                                    batch_size), strict=True))
        for ours, theirs in pairs:
            same_arrays(ours, theirs)
        names, outputs = tuple(tensor.name for tensor in prepared.info.inputs), ()
        for ours, theirs in zip(feeder(found, prepared.info, names, outputs, batch_size).batches(),
                                feeder(expected, prepared.info, names, outputs, batch_size).batches(), strict=True):
            same_arrays(ours, theirs)


def test_a_subset_of_a_split_picks_from_the_loaded_arrays(digits):
    _, data = digits
    _, evaluation = split_dataset(data)
    picked = evaluation.subset([5, 0, 3])
    assert picked.inputs.arrays["image"] is data.inputs["image"]
    same_arrays(dict(picked.inputs), {"image": dict(evaluation.inputs)["image"][[5, 0, 3]]})
    assert np.array_equal(picked.labels, evaluation.labels[[5, 0, 3]])


def test_splitting_and_a_pass_over_a_split_copy_one_batch_at_a_time():
    samples, batch = 2_000, 50
    data = Dataset({"x": np.random.default_rng(0).normal(size=(samples, 1024)).astype(np.float32)})
    one_batch = batch * 1024 * 4
    tracemalloc.start()  # numpy reports its arrays' memory to tracemalloc
    try:
        _, evaluation = split_dataset(data, calibration_samples=500)
        for feed in iter_batches(evaluation, _FreeInfo(), batch):
            del feed
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * one_batch < evaluation.num_samples * 1024 * 4 // 10  # a copy of the split: 6 MB


class _FreeInfo:
    """A model whose input x (batch, 1024) has a free batch dimension."""

    class _Tensor:
        name, shape, dtype = "x", ("batch", 1024), "float32"

    inputs = (_Tensor(),)
    outputs = ()


def test_a_stream_is_cut_into_slices_of_the_loaded_arrays():
    prepared = prepare_model(load_model(STRUCTURES / "vad_gru.onnx"))
    data = load_npz(STRUCTURES / "vad_gru.npz", prepared.info)
    assert data.streaming
    calibration, evaluation = split_dataset(data, calibration_samples=64)
    for name, array in data.inputs.items():
        assert np.shares_memory(calibration.inputs[name], array) and np.shares_memory(evaluation.inputs[name], array)
        assert np.array_equal(np.concatenate([calibration.inputs[name], evaluation.inputs[name]]), array)
    assert held_bytes(data, calibration, evaluation) == held_bytes(data)


def test_per_sample_layouts_feed_a_split_as_they_fed_its_copy():
    """Complete inputs and scalars per sample (docs/data.md), streaming off so the split is shuffled."""
    prepared = prepare_model(load_model(STRUCTURES / "vad_gru.onnx"))
    data = load_npz(STRUCTURES / "vad_gru.npz", prepared.info, state={})
    assert data.layout is not None and not data.layout.batch_first and not data.streaming
    names = tuple(tensor.name for tensor in prepared.info.inputs)
    for found, expected in zip(split_dataset(data, calibration_samples=64), copied_split(data, calibration_samples=64)):
        assert isinstance(found.inputs, Rows)
        for batch_size in (1, 5, 1024):
            for ours, theirs in zip(feeder(found, prepared.info, names, (), batch_size).batches(),
                                    feeder(expected, prepared.info, names, (), batch_size).batches(), strict=True):
                same_arrays(ours, theirs)


def test_calibration_and_evaluation_of_a_split_equal_those_of_its_copy(digits):
    prepared, data = digits
    (calibration_data, evaluation), (calibration_copy, evaluation_copy) = split_dataset(data), copied_split(data)
    calibration, from_copy = calibrate(prepared, calibration_data), calibrate(prepared, calibration_copy)
    assert calibration.tensors == from_copy.tensors
    for name in calibration.tensors:
        ours, theirs = vars(calibration.histogram(name)), vars(from_copy.histogram(name))
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            assert np.array_equal(ours[key], value), (name, key)
    found, expected = Evaluator(prepared, calibration, evaluation), Evaluator(prepared, calibration, evaluation_copy)
    for name in ("FP32", "W8A8", "W4A8"):
        for ours, theirs in zip(found.outputs(PRESETS[name]), expected.outputs(PRESETS[name]), strict=True):
            assert ours.tobytes() == theirs.tobytes(), name
        assert found.evaluate(PRESETS[name]) == expected.evaluate(PRESETS[name]), name
        assert found.layer_errors(PRESETS[name]) == expected.layer_errors(PRESETS[name]), name


def test_a_latency_batch_of_a_split_gathers_its_own_samples_only(digits):
    """The Trade-offs page times batches of the evaluation split: the batch equals one cut from its copy, and
    making it gathers the batch's samples, not the split's."""
    import onnxruntime as ort
    from quant_core.export.latency import _feeds
    prepared, data = digits
    session = ort.InferenceSession(prepared.model.SerializeToString(), providers=["CPUExecutionProvider"])
    _, evaluation = split_dataset(data)
    _, copied = copied_split(data)
    for batch_size in (1, 8, 700):  # 700: more than the split's 541 samples, which wrap around
        tracemalloc.start()
        try:
            found = _feeds(session, evaluation, batch_size)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        same_arrays(found, _feeds(session, copied, batch_size))
        assert peak <= 2 * found["image"].nbytes + 65536, (batch_size, peak)

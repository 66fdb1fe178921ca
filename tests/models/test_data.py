"""Model data from .npz: validation against the model's inputs, deterministic splits, batching."""
import io

import numpy as np
import pytest

from quant_core.model.data import Dataset, iter_batches, load_npz, split_dataset
from quant_core.errors import DataError
from quant_core.model.model_io import ModelInfo, TensorInfo, inspect_model
from tests.models import graphs

DIGITS_INFO = ModelInfo(inputs=(TensorInfo("image", ("batch", 1, 8, 8), "float32"),),
                        outputs=(TensorInfo("logits", ("batch", 10), "float32"),), opset=17, producer="",
                        ir_version=8, already_quantized=False, quantized_ops=(), layers=(), total_params=0,
                        notes=())


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def images(count: int) -> np.ndarray:
    return np.random.default_rng(0).random((count, 1, 8, 8), dtype=np.float32)


def test_valid_npz_from_bytes_or_path(tmp_path):
    labels = np.arange(12) % 10
    data = load_npz(npz_bytes(image=images(12), labels=labels), DIGITS_INFO)
    assert data.num_samples == 12
    np.testing.assert_array_equal(data.labels, labels)
    assert data.labels.dtype == np.int64
    path = tmp_path / "data.npz"
    path.write_bytes(npz_bytes(image=images(3)))
    from_path = load_npz(path, DIGITS_INFO)
    assert from_path.num_samples == 3 and from_path.labels is None


def test_pickled_object_arrays_are_refused_not_unpickled():
    objects = np.array([{"payload": 1}, None], dtype=object)
    with pytest.raises(DataError, match="'image' holds Python objects .pickled."):
        load_npz(npz_bytes(image=objects), DIGITS_INFO)


def test_wrong_shape_message_says_what_was_expected():
    wrong = np.zeros((100, 64), dtype=np.float64)
    with pytest.raises(DataError) as err:
        load_npz(npz_bytes(image=wrong), DIGITS_INFO)
    assert str(err.value).startswith(
        "input 'image' expects shape (batch, 1, 8, 8) float32, got (100, 64) float64")


def test_wrong_fixed_dim_is_refused():
    with pytest.raises(DataError, match=r"expects shape \(batch, 1, 8, 8\) float32, got \(5, 1, 8, 7\) float32"):
        load_npz(npz_bytes(image=np.zeros((5, 1, 8, 7), np.float32)), DIGITS_INFO)


def test_wrong_dtype_is_refused_with_the_fix():
    with pytest.raises(DataError, match=r"got \(4, 1, 8, 8\) float64: convert with array.astype\(np.float32\)"):
        load_npz(npz_bytes(image=images(4).astype(np.float64)), DIGITS_INFO)


def test_wrong_names_list_expected_and_found():
    with pytest.raises(DataError, match="one array per model input .'image'.* it holds 'x'"):
        load_npz(npz_bytes(x=images(4)), DIGITS_INFO)
    with pytest.raises(DataError, match="it holds 'image', 'extra'"):
        load_npz(npz_bytes(image=images(4), extra=images(4)), DIGITS_INFO)


def test_labels_must_match_sample_count_and_be_integer_classes():
    with pytest.raises(DataError, match="'labels' has 3 entries for 4 samples"):
        load_npz(npz_bytes(image=images(4), labels=np.arange(3)), DIGITS_INFO)
    with pytest.raises(DataError, match="1-D integer array"):
        load_npz(npz_bytes(image=images(4), labels=np.zeros(4, np.float32)), DIGITS_INFO)
    with pytest.raises(DataError, match="holds class 10, but the model's output 'logits' has 10 classes"):
        load_npz(npz_bytes(image=images(2), labels=np.array([1, 10])), DIGITS_INFO)


def test_nan_inputs_are_refused():
    bad = images(4)
    bad[2, 0, 3, 3] = np.nan
    with pytest.raises(DataError, match="'image' holds 1 NaN or infinite value"):
        load_npz(npz_bytes(image=bad), DIGITS_INFO)


def test_zero_samples_are_refused():
    with pytest.raises(DataError, match="zero samples"):
        load_npz(npz_bytes(image=np.zeros((0, 1, 8, 8), np.float32)), DIGITS_INFO)


def test_not_an_npz_is_refused():
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_npz(b"plain text, not a zip", DIGITS_INFO)
    single = io.BytesIO()
    np.save(single, images(2))
    with pytest.raises(DataError, match="got a single .npy array"):
        load_npz(single.getvalue(), DIGITS_INFO)


def test_multi_input_model_needs_every_input_with_equal_sample_counts():
    info = inspect_model(graphs.multi_input_model())
    tokens = np.zeros((3, 7), np.int64)
    data = load_npz(npz_bytes(tokens=tokens, features=np.zeros((3, 6), np.float32)), info)
    assert set(data.inputs) == {"tokens", "features"}
    with pytest.raises(DataError, match="different numbers of samples"):
        load_npz(npz_bytes(tokens=tokens, features=np.zeros((2, 6), np.float32)), info)
    with pytest.raises(DataError, match="expects shape \\(batch, seq\\) int64, got \\(3, 7\\) int32"):
        load_npz(npz_bytes(tokens=tokens.astype(np.int32), features=np.zeros((3, 6), np.float32)), info)


def test_split_is_deterministic_disjoint_and_complete():
    data = Dataset(inputs={"image": images(797)}, labels=np.arange(797))
    calibration, evaluation = split_dataset(data, calibration_samples=256, seed=0)
    again, _ = split_dataset(data, calibration_samples=256, seed=0)
    assert (calibration.num_samples, evaluation.num_samples) == (256, 541)
    np.testing.assert_array_equal(calibration.labels, again.labels)
    assert sorted([*calibration.labels, *evaluation.labels]) == list(range(797))
    assert list(calibration.labels) == sorted(calibration.labels)
    other, _ = split_dataset(data, calibration_samples=256, seed=1)
    assert not np.array_equal(other.labels, calibration.labels)


def test_split_of_a_small_set_keeps_half_for_evaluation():
    data = Dataset(inputs={"image": images(10)}, labels=np.arange(10))
    calibration, evaluation = split_dataset(data, calibration_samples=256)
    assert (calibration.num_samples, evaluation.num_samples) == (5, 5)
    with pytest.raises(DataError, match="at least 2 samples"):
        split_dataset(data.subset([0]))


def test_iter_batches_covers_every_sample_in_order():
    data = Dataset(inputs={"image": images(10)}, labels=None)
    batches = list(iter_batches(data, DIGITS_INFO, 4))
    assert [batch["image"].shape[0] for batch in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([batch["image"] for batch in batches]), data.inputs["image"])


def test_iter_batches_feeds_one_sample_at_a_time_for_a_fixed_batch_of_one():
    info = inspect_model(graphs.opset9_model())  # input x has shape (1, 1, 4, 4)
    data = Dataset(inputs={"x": np.zeros((3, 1, 4, 4), np.float32)}, labels=None)
    assert [batch["x"].shape for batch in iter_batches(data, info, 64)] == [(1, 1, 4, 4)] * 3


def test_a_model_input_named_labels_is_an_input_not_the_labels():
    info = ModelInfo(inputs=(TensorInfo("labels", ("batch",), "int64"),), outputs=(), opset=17, producer="",
                     ir_version=8, already_quantized=False, quantized_ops=(), layers=(), total_params=0, notes=())
    data = load_npz(npz_bytes(labels=np.arange(4)), info)
    assert data.labels is None
    np.testing.assert_array_equal(data.inputs["labels"], np.arange(4))


def test_archive_unpacking_past_the_limit_is_refused_before_reading(monkeypatch):
    monkeypatch.setattr("quant_core.model.data.MAX_DATA_BYTES", 1000)
    compressed = io.BytesIO()
    np.savez_compressed(compressed, image=np.zeros((100, 1, 8, 8), np.float32))  # 25.6 kB unpacked, tiny packed
    with pytest.raises(DataError, match="unpacks to 25.1 KiB, over the 1.0 KiB limit"):
        load_npz(compressed.getvalue(), DIGITS_INFO)

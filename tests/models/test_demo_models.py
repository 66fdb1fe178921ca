"""The shipped demo data and models: layout, splits, and the documented FP32 accuracy still reached."""
import numpy as np
import onnxruntime as ort
import pytest

from quant_core.model.data import iter_batches, split_dataset
from quant_core.model.demo import DEMO_MODELS, demo_data_path, demo_split_indices, load_demo
from quant_core.errors import ModelError
from quant_core.model.model_io import load_model, prepare_model


def test_digits_file_layout():
    with np.load(demo_data_path(), allow_pickle=False) as digits:
        assert sorted(digits.files) == ["image", "labels"]
        image, labels = digits["image"], digits["labels"]
    assert (image.shape, image.dtype) == ((1797, 1, 8, 8), np.float32)
    assert (labels.shape, labels.dtype) == ((1797,), np.int64)
    assert image.min() == 0.0 and image.max() == 1.0
    np.testing.assert_array_equal(np.unique(image * 16), np.arange(17))  # pixel counts 0..16, over 16
    assert set(labels) == set(range(10))


def test_demo_split_holds_out_797_samples_never_used_in_training():
    train, lab = demo_split_indices(1797)
    assert (len(train), len(lab)) == (1000, 797)
    assert set(train).isdisjoint(lab) and len(set(train) | set(lab)) == 1797


def test_load_demo_returns_model_bytes_and_the_held_out_digits():
    model_bytes, data = load_demo("mlp")
    assert model_bytes == DEMO_MODELS["mlp"].path.read_bytes()
    assert data.num_samples == 797 and set(data.inputs) == {"image"}
    with np.load(demo_data_path(), allow_pickle=False) as digits:
        _, lab = demo_split_indices(1797)
        np.testing.assert_array_equal(data.inputs["image"], digits["image"][lab])
        np.testing.assert_array_equal(data.labels, digits["labels"][lab])


def test_unknown_demo_name_lists_the_choices():
    with pytest.raises(ModelError, match="unknown demo model 'resnet': choose one of mlp, cnn, transformer"):
        load_demo("resnet")


@pytest.mark.parametrize("name", list(DEMO_MODELS))
def test_demo_model_interface_and_size(name):
    demo = DEMO_MODELS[name]
    assert demo.path.stat().st_size < 2 * 2**20
    info = prepare_model(load_model(demo.path)).info
    assert [(t.name, t.shape, t.dtype) for t in info.inputs] == [("image", ("batch", 1, 8, 8), "float32")]
    assert [(t.name, t.shape, t.dtype) for t in info.outputs] == [("logits", ("batch", 10), "float32")]
    assert info.opset == 17 and not info.already_quantized
    assert all(layer.weights and not layer.note for layer in info.layers)
    assert all(not layer.name.startswith(layer.op_type + "_") for layer in info.layers)  # exporter names kept


@pytest.mark.parametrize("name", list(DEMO_MODELS))
def test_demo_model_reaches_its_documented_fp32_accuracy(name):
    model_bytes, data = load_demo(name)
    prepared = prepare_model(load_model(model_bytes))
    _, evaluation = split_dataset(data, calibration_samples=256, seed=0)
    assert evaluation.num_samples == 541
    session = ort.InferenceSession(prepared.model.SerializeToString(), providers=["CPUExecutionProvider"])
    predictions = np.concatenate([session.run(None, feed)[0].argmax(axis=1)
                                  for feed in iter_batches(evaluation, prepared.info, 256)])
    accuracy = float(np.mean(predictions == evaluation.labels))
    assert accuracy >= DEMO_MODELS[name].fp32_accuracy - 0.005
    assert DEMO_MODELS[name].fp32_accuracy >= 0.95


def test_layer_inventories_of_the_three_demos():
    def layers(name):
        return [(layer.name, layer.op_type) for layer in prepare_model(load_model(DEMO_MODELS[name].path)).info.layers]

    assert layers("mlp") == [("/fc1/Gemm", "Gemm"), ("/fc2/Gemm", "Gemm"), ("/fc3/Gemm", "Gemm")]
    assert layers("cnn") == [("/conv1/Conv", "Conv"), ("/conv2/Conv", "Conv"), ("/fc/Gemm", "Gemm")]
    transformer = layers("transformer")
    assert len(transformer) == 1 + 2 * 6 + 1  # embed, 2 blocks x (q, k, v, out, fc1, fc2), head
    assert transformer[1] == ("/blocks/blocks.0/attn/q/MatMul", "MatMul")
    assert "/blocks/blocks.0/attn/MatMul" not in dict(transformer)  # q @ k^T: two activations


def test_cnn_conv1_channels_have_very_different_weight_ranges():
    from quant_core.model.model_io import weight_array

    weight = weight_array(load_model(DEMO_MODELS["cnn"].path), "conv1.weight")
    per_channel = np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)
    assert per_channel.max() / per_channel.min() > 100


def test_the_shipped_heldout_file_holds_exactly_the_digits_no_demo_model_was_trained_on():
    from quant_core.model.demo import heldout_data_path

    _, data = load_demo("cnn")
    with np.load(heldout_data_path(), allow_pickle=False) as heldout:
        assert np.array_equal(heldout["image"], data.inputs["image"])
        assert np.array_equal(heldout["labels"], data.labels)
    assert data.num_samples == 797

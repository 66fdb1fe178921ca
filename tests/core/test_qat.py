"""Quantization-aware fine-tuning of the demo MLP in numpy (quant_core.learn.qat)."""
import numpy as np
import onnxruntime as ort
import pytest

from quant_core.config import TensorQuant
from quant_core.model.data import Dataset, split_dataset
from quant_core.model.demo import DEMO_MODELS, load_demo
from quant_core.errors import ConfigError, DataError, ModelError
from quant_core.numerics.formats import Granularity, parse_format
from quant_core.learn.qat import (_loss_and_gradients, evaluate_numpy_mlp, fine_tune_qat, forward, mlp_weights,
                            quantized_weight)
from quant_core.numerics.tensor import quantize_tensor


@pytest.fixture(scope="module")
def demo():
    model_bytes, data = load_demo("mlp")
    calibration, evaluation = split_dataset(data, calibration_samples=256, seed=0)
    return model_bytes, mlp_weights(model_bytes), calibration, evaluation


def test_reads_the_three_gemm_layers_of_the_demo_mlp_as_out_by_in_matrices(demo):
    _, weights, _, _ = demo
    assert [layer.name for layer in weights] == ["/fc1/Gemm", "/fc2/Gemm", "/fc3/Gemm"]
    assert [layer.weight.shape for layer in weights] == [(128, 64), (64, 128), (10, 64)]
    assert [layer.bias.shape for layer in weights] == [(128,), (64,), (10,)]


def test_numpy_forward_matches_onnxruntime_and_the_published_fp32_accuracy(demo):
    model_bytes, weights, _, evaluation = demo
    images = evaluation.inputs["image"]
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    reference = session.run(None, {"image": images})[0]
    np.testing.assert_allclose(forward(weights, images), reference, rtol=1e-4, atol=1e-4)
    assert evaluate_numpy_mlp(weights, evaluation) == pytest.approx(DEMO_MODELS["mlp"].fp32_accuracy)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_fake_quantized_weight_is_the_labs_per_channel_symmetric_quantization(demo, bits):
    _, weights, _, _ = demo
    weight = weights[1].weight
    expected = quantize_tensor(weight, TensorQuant(parse_format(f"int{bits}"), symmetric=True,
                                                   granularity=Granularity.PER_CHANNEL, axis=0)).values
    quantized = quantized_weight(weight, bits)
    np.testing.assert_array_equal(quantized, expected)
    assert max(len(np.unique(row)) for row in quantized) <= 2**bits


def test_backward_pass_is_the_gradient_of_the_loss_by_finite_differences(demo):
    _, weights, calibration, _ = demo
    params = [p.astype(np.float64) for layer in weights for p in (layer.weight, layer.bias)]
    x = calibration.inputs["image"][:16].reshape(16, -1).astype(np.float64)
    labels = calibration.labels[:16]
    _, grads = _loss_and_gradients([p.copy() for p in params], x, labels, None)
    rng = np.random.default_rng(1)
    for index in range(len(params)):
        for _ in range(3):
            position = tuple(rng.integers(0, n) for n in params[index].shape)
            step = 1e-5
            plus, minus = [p.copy() for p in params], [p.copy() for p in params]
            plus[index][position] += step
            minus[index][position] -= step
            numeric = (_loss_and_gradients(plus, x, labels, None)[0]
                       - _loss_and_gradients(minus, x, labels, None)[0]) / (2 * step)
            assert grads[index][position] == pytest.approx(numeric, rel=1e-4, abs=1e-7)


def test_straight_through_estimator_uses_the_float_gradient_at_the_quantized_weights(demo):
    _, weights, calibration, _ = demo
    params = [p.copy() for layer in weights for p in (layer.weight, layer.bias)]
    x = calibration.inputs["image"][:32].reshape(32, -1)
    labels = calibration.labels[:32]
    loss_q, grads_q = _loss_and_gradients(params, x, labels, 3)
    snapped = [quantized_weight(p, 3) if i % 2 == 0 else p for i, p in enumerate(params)]
    loss_f, grads_f = _loss_and_gradients(snapped, x, labels, None)
    assert loss_q == pytest.approx(loss_f)
    for g_q, g_f in zip(grads_q, grads_f):
        np.testing.assert_allclose(g_q, g_f, rtol=1e-5, atol=1e-7)


def test_loss_goes_down_during_fine_tuning_and_progress_reaches_one(demo):
    _, weights, calibration, _ = demo
    calls = []
    result = fine_tune_qat(weights, calibration, bits=3, epochs=10, lr=1e-3, seed=0,
                           progress=lambda fraction, text: calls.append(fraction))
    assert len(result.losses) == 10
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert calls == pytest.approx([(i + 1) / 10 for i in range(10)])


def test_qat_at_3_bits_beats_ptq_at_3_bits_on_held_out_digits(demo):
    _, weights, calibration, evaluation = demo
    ptq_accuracy = evaluate_numpy_mlp(weights, evaluation, bits=3)
    result = fine_tune_qat(weights, calibration, bits=3, epochs=30, lr=1e-3, seed=0)
    qat_accuracy = evaluate_numpy_mlp(result.weights, evaluation, bits=3)
    assert qat_accuracy > ptq_accuracy


def test_the_gain_comes_from_quantization_awareness_not_from_the_extra_training_data(demo):
    _, weights, calibration, evaluation = demo
    float_tuned = fine_tune_qat(weights, calibration, bits=None, epochs=30, lr=1e-3, seed=0)
    quantization_aware = fine_tune_qat(weights, calibration, bits=3, epochs=30, lr=1e-3, seed=0)
    assert (evaluate_numpy_mlp(quantization_aware.weights, evaluation, bits=3)
            > evaluate_numpy_mlp(float_tuned.weights, evaluation, bits=3))


def test_qat_recovers_most_of_what_ptq_loses_at_2_bits(demo):
    _, weights, calibration, evaluation = demo
    fp32_accuracy = evaluate_numpy_mlp(weights, evaluation)
    ptq_accuracy = evaluate_numpy_mlp(weights, evaluation, bits=2)
    result = fine_tune_qat(weights, calibration, bits=2, epochs=30, lr=1e-3, seed=0)
    qat_accuracy = evaluate_numpy_mlp(result.weights, evaluation, bits=2)
    assert qat_accuracy - ptq_accuracy > 0.5 * (fp32_accuracy - ptq_accuracy)


def test_same_seed_gives_the_same_weights_and_the_input_weights_are_not_changed(demo):
    _, weights, calibration, _ = demo
    before = [layer.weight.copy() for layer in weights]
    first = fine_tune_qat(weights, calibration, bits=4, epochs=2, seed=7)
    second = fine_tune_qat(weights, calibration, bits=4, epochs=2, seed=7)
    for a, b, original, layer in zip(first.weights, second.weights, before, weights):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(layer.weight, original)
    assert first.losses == second.losses


@pytest.mark.parametrize("kwargs, message", [
    ({"bits": 1}, "bits must be between 2 and 8"),
    ({"bits": 4, "epochs": 0}, "epochs=0"),
    ({"bits": 4, "lr": 0.0}, "lr=0.0"),
])
def test_bad_training_options_are_refused_with_the_argument_named(demo, kwargs, message):
    _, weights, calibration, _ = demo
    with pytest.raises(ConfigError, match=message):
        fine_tune_qat(weights, calibration, **kwargs)


def test_data_without_labels_or_with_the_wrong_width_is_refused(demo):
    _, weights, calibration, _ = demo
    with pytest.raises(DataError, match="labelled data"):
        fine_tune_qat(weights, Dataset(inputs=calibration.inputs), bits=4)
    narrow = Dataset(inputs={"image": np.zeros((4, 1, 4, 4), np.float32)}, labels=np.zeros(4, np.int64))
    with pytest.raises(DataError, match="16 features per example, the model expects 64"):
        fine_tune_qat(weights, narrow, bits=4)
    with pytest.raises(DataError, match="16 features per example, the model expects 64"):
        evaluate_numpy_mlp(weights, narrow)
    eleven_classes = Dataset(inputs=calibration.inputs, labels=np.full(calibration.num_samples, 10))
    with pytest.raises(DataError, match=r"class index in \[0, 9\]"):
        fine_tune_qat(weights, eleven_classes, bits=4)


def test_a_model_that_is_not_a_gemm_relu_mlp_is_refused_with_the_offending_node():
    model_bytes, _ = load_demo("cnn")
    with pytest.raises(ModelError, match="'/conv1/Conv' is a Conv"):
        mlp_weights(model_bytes)


def test_gemm_weights_stored_either_way_round_give_the_onnxruntime_output():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w1 = rng.normal(size=(6, 5)).astype(np.float32)  # transB=0: stored (in, out)
    w2 = rng.normal(size=(3, 5)).astype(np.float32)  # transB=1: stored (out, in)
    tensors = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (rng.normal(size=5).astype(np.float32), "b1"),
                                                          (w2, "w2"), (rng.normal(size=3).astype(np.float32), "b2"))]
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
         helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], name="first"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="second", transB=1)],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], initializer=tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    x = rng.normal(size=(4, 2, 3)).astype(np.float32)
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    weights = mlp_weights(model)
    assert [layer.weight.shape for layer in weights] == [(5, 6), (3, 5)]
    np.testing.assert_allclose(forward(weights, x), reference, rtol=1e-5, atol=1e-5)

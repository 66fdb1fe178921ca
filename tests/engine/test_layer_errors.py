"""Per-layer errors: the fast path (one error-session run per batch) equals the definition (whole-model runs).

The definition (`layer_errors.reference_layer_sqnr`): a layer's isolated SQNR is measured by a whole-model
run of the simulation session with only that layer's feed; its accumulated SQNR by a run with every feed.
The fast path runs the layer's node alone, fed the FP32 activations, and the FP32 model and the config
side by side in one session. Equal up to float rounding, not bit for bit: onnxruntime may run the same
node with other kernels in another graph (e.g. the simulation session runs convolutions in the blocked
NCHWc layout with reordered weights, a lone node plain), and the fast path sums squares in float32 along
the last axis before float64. Hence a tight tolerance (relative 1e-4, or 1e-3 dB) instead of equality;
infinities (a layer the config leaves untouched, with nothing quantized before it) must match exactly.
"""
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest

from quant_core.engine import evaluate
from quant_core.engine.calibrate import calibrate
from quant_core.config import FP32_LAYER, PRESETS, LayerQuant, QuantConfig, TensorQuant
from quant_core.model.data import Dataset, load_npz, split_dataset
from quant_core.model.demo import load_demo
from quant_core.engine.evaluate import Evaluator
from quant_core.engine.layer_errors import ErrorGraph, reference_layer_sqnr
from quant_core.model.model_io import load_model, prepare_model
from tests.engine.run_counting import counting_runs

STRUCTURES = Path(__file__).resolve().parents[2] / "demo_models" / "structures"
UINT8 = TensorQuant("uint8", symmetric=False)
CNN_LARGEST_OUTPUT = 1152  # values per sample of the demo CNN's largest layer output (conv2)


def _rows_budget(rows: int) -> int:
    """LAYER_ERRORS_BATCH_BYTES that makes the demo CNN's per-layer error batches `rows` samples long."""
    return rows * evaluate.LAYER_ERRORS_BYTES_PER_VALUE * CNN_LARGEST_OUTPUT


def _demo(name: str, evaluation_samples: int = 96):
    model_bytes, data = load_demo(name)
    prepared = prepare_model(onnx.load_from_string(model_bytes))
    calibration = calibrate(prepared, data.subset(np.arange(0, 128)))
    return prepared, calibration, data.subset(np.arange(128, 128 + evaluation_samples))


@pytest.fixture(scope="module", params=["mlp", "cnn", "transformer"])
def demo_evaluator(request):
    prepared, calibration, evaluation = _demo(request.param)
    return Evaluator(prepared, calibration, evaluation)


@pytest.fixture(scope="module", params=["vad_gru", "lstm_hc"])
def structure_evaluator(request):
    prepared = prepare_model(load_model(str(STRUCTURES / f"{request.param}.onnx")))
    calibration_data, evaluation_data = split_dataset(load_npz(STRUCTURES / f"{request.param}.npz", prepared.info),
                                                      calibration_samples=128)
    return Evaluator(prepared, calibrate(prepared, calibration_data), evaluation_data.subset(np.arange(40)))


def _configs(layers: tuple[str, ...]) -> dict[str, QuantConfig]:
    """W8A8, a mixed config (int4 weights, one layer FP32, one int8 weight-only), activations only, weights only."""
    mixed = QuantConfig(LayerQuant(TensorQuant("int4", granularity="per_channel"), UINT8),
                        ((layers[0], FP32_LAYER), (layers[-1], LayerQuant(TensorQuant("int8")))), name="mixed")
    return {"W8A8": PRESETS["W8A8"], "mixed": mixed,
            "activations only": QuantConfig(LayerQuant(None, UINT8), name="activations only"),
            "weights only": QuantConfig(LayerQuant(TensorQuant("int3", granularity="per_channel")), name="int3")}


def _definition(evaluator: Evaluator, config: QuantConfig) -> dict[str, tuple[float, float]]:
    """Per layer (isolated, accumulated) SQNR by whole-model runs: one per layer (isolated) and one for all."""
    feeds = evaluator._config_feeds(config)
    accumulated = reference_layer_sqnr(evaluator.session, evaluator.feeder.batches(), *evaluator._feed_arrays(feeds))
    changed = {feed[0]: feed for feed in feeds}
    isolated = {layer: reference_layer_sqnr(evaluator.session, evaluator.feeder.batches(),
                                            *evaluator._feed_arrays((changed[layer],))).get(layer, float("inf"))
                for layer in changed}
    return {layer: (isolated.get(layer, float("inf")), accumulated.get(layer, float("inf")))
            for layer in evaluator.layers}


def _assert_equal_to_the_definition(evaluator: Evaluator, config: QuantConfig) -> None:
    expected = _definition(evaluator, config)
    for error in evaluator.layer_errors(config):
        for got, want in zip((error.isolated_sqnr_db, error.accumulated_sqnr_db), expected[error.layer]):
            if np.isinf(want):
                assert got == want, (config.name, error.layer, got, want)
            else:
                assert got == pytest.approx(want, rel=1e-4, abs=1e-3), (config.name, error.layer, got, want)


@pytest.mark.parametrize("config_name", ["W8A8", "mixed", "activations only", "weights only"])
def test_layer_errors_equal_the_definition_on_the_demo_models(demo_evaluator, config_name):
    config = _configs(demo_evaluator.layers)[config_name]
    _assert_equal_to_the_definition(demo_evaluator, config)


@pytest.mark.parametrize("config_name", ["W8A8", "weights only"])
def test_layer_errors_equal_the_definition_on_the_stateful_structure_models(structure_evaluator, config_name):
    """GRU / LSTM layers (several outputs, state inputs) run alone too; their data is fed one frame at a time."""
    _assert_equal_to_the_definition(structure_evaluator, _configs(structure_evaluator.layers)[config_name])


def test_every_quantized_layer_of_the_demos_runs_alone(demo_evaluator):
    demo_evaluator.layer_errors(PRESETS["W8A8"])
    graph = next(iter(demo_evaluator._error_graphs._data.values()))
    assert graph.alone == frozenset(demo_evaluator.layers)


def test_a_new_config_costs_one_error_session_run_per_batch_and_no_whole_model_run_per_layer(monkeypatch):
    prepared, calibration, evaluation = _demo("cnn", evaluation_samples=200)
    monkeypatch.setattr(evaluate, "LAYER_ERRORS_BATCH_BYTES", _rows_budget(64))
    evaluator = Evaluator(prepared, calibration, evaluation)
    evaluator.layer_errors(PRESETS["W8A8"])  # builds the session of this activation pattern
    batches = len(list(evaluator._errors_feeder.batches()))
    assert batches == 4  # 200 samples, 64 a batch
    calls = counting_runs(evaluator, monkeypatch)
    config = QuantConfig(LayerQuant(TensorQuant("int5", granularity="per_channel"), UINT8))
    evaluator.layer_errors(config)
    # One run per batch of one session holding the FP32 model, the config and every layer alone.
    assert calls == ["errors"] * batches


def _layer_errors_peak_bytes(prepared, calibration, images: np.ndarray) -> tuple[int, int]:
    """(peak numpy/Python bytes allocated by layer_errors of a new config, rows per batch); data excluded."""
    evaluator = Evaluator(prepared, calibration, Dataset(inputs={"image": images}))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        evaluator.layer_errors(PRESETS["W8A8"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before, evaluator._errors_feeder.batch_size


def test_layer_errors_memory_does_not_grow_with_the_number_of_samples(monkeypatch):
    """Nothing is kept per sample (before: every layer's FP32 output for the whole split), and batches hold a
    bounded number of samples, so onnxruntime's working set does not grow with the split either."""
    model_bytes, data = load_demo("cnn")
    prepared = prepare_model(onnx.load_from_string(model_bytes))
    calibration = calibrate(prepared, data.subset(np.arange(0, 128)))
    monkeypatch.setattr(evaluate, "LAYER_ERRORS_BATCH_BYTES", _rows_budget(64))
    small = data.inputs["image"][:128]
    large = np.concatenate([data.inputs["image"]] * 6)  # 4,782 samples: 37x more
    small_peak, small_rows = _layer_errors_peak_bytes(prepared, calibration, small)
    large_peak, large_rows = _layer_errors_peak_bytes(prepared, calibration, large)
    assert small_rows == large_rows == 64
    assert large_peak < 1.25 * small_peak + 2**19, (small_peak, large_peak)


def test_a_layer_whose_node_cannot_run_alone_gets_the_definition(monkeypatch):
    """E.g. a layer whose output is not its node's own: whole-model runs with only its feed (one per batch)."""
    from quant_core.engine import layer_errors
    prepared, calibration, evaluation = _demo("transformer")
    evaluator = Evaluator(prepared, calibration, evaluation)
    lonely = evaluator.layers[3]
    can_run_alone = layer_errors.can_run_alone
    monkeypatch.setattr(layer_errors, "can_run_alone",
                        lambda node, spec: spec.name != lonely and can_run_alone(node, spec))
    _assert_equal_to_the_definition(evaluator, PRESETS["W8A8"])
    graph = next(iter(evaluator._error_graphs._data.values()))
    assert graph.alone == frozenset(evaluator.layers) - {lonely}


def test_without_an_error_session_every_layer_gets_the_definition(monkeypatch):
    from quant_core.errors import ModelError

    def cannot(*args, **kwargs):
        raise ModelError("onnxruntime cannot build the per-layer error session")

    monkeypatch.setattr(ErrorGraph, "__init__", cannot)
    prepared, calibration, evaluation = _demo("cnn")
    _assert_equal_to_the_definition(Evaluator(prepared, calibration, evaluation), PRESETS["W8A8"])

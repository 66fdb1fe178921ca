"""The Evaluator's fast paths compute exactly what the reference simulator computes, bit for bit.

The reference (`quant_core.engine.reference`) is the simplest run of a plan: one model, weights fed in
their own layout, the whole model per batch. The Evaluator adds reordered weights, specialized
sessions, suffix runs and anchors (tests/fast_vs_reference.py drives each); none may change a bit.
"""
import numpy as np
import onnx
import pytest

from quant_core.engine.calibrate import calibrate
from quant_core.engine.evaluate import Evaluator
from quant_core.model.demo import load_demo
from quant_core.model.model_io import prepare_model
from tests.engine.conftest import chain_model
from tests.fast_vs_reference import mismatches, paths, reference
from quant_core.model.data import Dataset


def _demo_evaluator(name: str) -> Evaluator:
    model_bytes, data = load_demo(name)
    prepared = prepare_model(onnx.load_from_string(model_bytes))
    return Evaluator(prepared, calibrate(prepared, data.subset(np.arange(0, 128))), data.subset(np.arange(128, 320)))


@pytest.mark.parametrize("demo", ["mlp", "cnn", "transformer"])
def test_every_run_path_of_a_demo_equals_the_reference_bit_for_bit(demo):
    assert mismatches(_demo_evaluator(demo)) == []


def test_a_generated_chain_equals_the_reference_bit_for_bit():
    prepared = prepare_model(chain_model())
    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    data = Dataset({"x": x}, None)
    assert mismatches(Evaluator(prepared, calibrate(prepared, data), data)) == []


def test_a_weights_only_evaluator_equals_the_reference_without_activation_paths(demo_cnn):
    prepared, _, evaluation = demo_cnn
    evaluator = Evaluator(prepared, None, evaluation)
    assert all("activation" not in path for path, _, _ in paths(evaluator))
    assert mismatches(evaluator) == []


def test_the_reference_of_fp32_is_the_prepared_model_and_of_a_quantized_config_is_not(cnn_evaluator):
    from quant_core.config import PRESETS
    from quant_core.engine.reference import reference_session
    plain = reference_session(cnn_evaluator.prepared.model.SerializeToString())
    fp32 = np.concatenate([plain.run(None, batch)[0] for batch in cnn_evaluator.feeder.batches()])
    assert np.array_equal(reference(cnn_evaluator, PRESETS["FP32"])[0], fp32)
    assert not np.array_equal(reference(cnn_evaluator, PRESETS["W4A8"])[0], fp32)

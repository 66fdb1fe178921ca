"""The weight-only config methods on the shipped language model: GPTQ lowers int4 g32's perplexity loss
against round to nearest on the config's grid, and the exported MatMulNBits model's perplexity equals
the simulation's within 1 % (the embedding kept FP32: Gather has no MatMulNBits)."""
import numpy as np
import onnx
import pytest

from quant_core.config import FP32_LAYER, PRESETS
from quant_core.engine.evaluate import Evaluator
from quant_core.engine.language_model import model_perplexity
from quant_core.export.ort_export import export_model
from quant_core.methods import apply_methods, changes_fp32, parse_methods
from quant_core.model.data import split_dataset
from quant_core.model.demo import load_demo
from quant_core.model.model_io import load_model, prepare_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lm():
    model_bytes, data = load_demo("shakespeare_lm")
    calibration, evaluation = split_dataset(data)
    prepared = prepare_model(load_model(model_bytes))
    return prepared, calibration, evaluation, Evaluator(prepared, None, evaluation)


def _perplexities(lm, methods):
    prepared, calibration, evaluation, original = lm
    config = PRESETS["W4 weight-only per-group"].with_layer("/embed/Gather", FP32_LAYER)
    config = config.with_methods(parse_methods(methods))
    transformed, _ = apply_methods(prepared, config, calibration)
    evaluator = Evaluator(transformed, None, evaluation,
                          reference_outputs=original.fp32_outputs if changes_fp32(config) else None)
    simulated = dict(evaluator.evaluate(config).score.metrics)["perplexity"]
    result = export_model(transformed, config, None)
    assert result.simulated_only == ()
    exported = model_perplexity(onnx.load_from_string(result.model), evaluation.inputs["tokens"], evaluation.labels)
    return simulated, exported


def test_gptq_beats_rtn_and_the_export_equals_the_simulation(lm):
    rtn, rtn_exported = _perplexities(lm, "rtn")
    gptq, gptq_exported = _perplexities(lm, "gptq")
    assert gptq < rtn, (gptq, rtn)
    assert gptq_exported == pytest.approx(gptq, rel=0.01) and rtn_exported == pytest.approx(rtn, rel=0.01)
    assert np.isfinite([rtn, gptq]).all()

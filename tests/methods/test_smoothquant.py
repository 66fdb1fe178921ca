"""SmoothQuant: the FP32 function is unchanged before quantization; the inverse scale goes into the
LayerNorm when it can hold it, else a Mul is inserted; activation outliers shrink."""
import numpy as np
import pytest

from quant_core.config import PRESETS
from quant_core.model.data import split_dataset
from quant_core.model.demo import load_demo
from quant_core.methods import MethodContext
from quant_core.methods.smoothquant import apply_smoothquant, smoothing_scales

from .graphs import data_for, layernorm_mlp, run


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.85, 1.0])
def test_smoothquant_keeps_the_fp32_function(alpha):
    prepared = layernorm_mlp()
    data = data_for(prepared)
    new, _ = apply_smoothquant(prepared, MethodContext(PRESETS["W8A8"], data), alpha=alpha)
    before, after = run(prepared, data), run(new, data)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-4, atol=1e-4 * np.abs(before[0]).max())
    assert np.array_equal(after[1], before[1])  # the Shape reader of the LayerNorm output is unchanged


def test_smoothquant_folds_into_layernorm_or_inserts_a_mul_and_says_which():
    prepared = layernorm_mlp()
    data = data_for(prepared)
    new, report = apply_smoothquant(prepared, MethodContext(PRESETS["W8A8"], data), alpha=0.5)
    where = {row[0]: row[1] for row in report.rows}
    assert where == {"q, k": "folded into LayerNormalization ln", "out": "inserted Mul out/smoothquant/Mul"}
    assert [node.op_type for node in new.model.graph.node].count("Mul") == 1
    spreads = {row[0]: (row[3], row[4]) for row in report.rows}
    assert spreads["q, k"][0] > 20 and spreads["q, k"][1] < spreads["q, k"][0] / 3


def test_smoothing_scales_formula_and_degenerate_channels():
    act, weight = np.array([4.0, 0.0, 9.0]), np.array([1.0, 2.0, 0.0])
    np.testing.assert_allclose(smoothing_scales(act, weight, 0.5), [2.0, 1.0, 1.0])
    np.testing.assert_allclose(smoothing_scales(act, weight, 1.0), [4.0, 1.0, 1.0])


def test_smoothquant_keeps_the_demo_transformer_function():
    from quant_core.model.model_io import load_model, prepare_model
    model, held = load_demo("transformer")
    prepared = prepare_model(load_model(model))
    calibration, evaluation = split_dataset(held)
    new, report = apply_smoothquant(prepared, MethodContext(PRESETS["W8A8"], calibration), alpha=0.5)
    sample = evaluation.subset(np.arange(64))
    np.testing.assert_allclose(run(new, sample)[0], run(prepared, sample)[0], rtol=1e-3, atol=1e-4)
    assert sum("folded into LayerNormalization" in row[1] for row in report.rows) == 4


def test_smoothquant_on_gemm_layers_keeps_the_demo_mlp_function():
    from quant_core.model.model_io import load_model, prepare_model
    model, held = load_demo("mlp")
    prepared = prepare_model(load_model(model))
    calibration, evaluation = split_dataset(held)
    new, report = apply_smoothquant(prepared, MethodContext(PRESETS["W8A8"], calibration), alpha=0.8)
    sample = evaluation.subset(np.arange(64))
    np.testing.assert_allclose(run(new, sample)[0], run(prepared, sample)[0], rtol=1e-3, atol=1e-4)
    # the Gemm after a Gemm + Relu cannot fold into it (Relu in between): a Mul each, the first one too
    assert [row[1].split()[0] for row in report.rows] == ["inserted"] * 3

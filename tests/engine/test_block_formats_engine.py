"""Block formats (MX, NVFP4) through the engine: evaluated, sized and swept like any weight format, and
simulated only in the export."""
import numpy as np
import pytest

from quant_core.config import LayerQuant, QuantConfig, TensorQuant
from quant_core.engine.evaluate import Evaluator
from quant_core.model.data import split_dataset
from quant_core.model.demo import load_demo
from quant_core.model.model_io import load_model, prepare_model
from quant_core.numerics.formats import parse_format
from quant_core.numerics.mx import quantize_blocks
from quant_core.numerics.size import tensor_bytes
from quant_core.search.sensitivity import run_sweep


@pytest.fixture(scope="module")
def mlp():
    raw, data = load_demo("mlp")
    prepared = prepare_model(load_model(raw))
    return Evaluator(prepared, None, split_dataset(data)[1])


def _config(name: str) -> QuantConfig:
    return QuantConfig(LayerQuant(TensorQuant(parse_format(name))), name=name)


def test_the_simulated_weight_is_the_block_quantized_weight(mlp):
    layer = "/fc1/Gemm"  # Gemm with transB: weight (128, 64), blocks along its reduction axis 1
    weight = mlp.session.fp32_weight(layer)
    expected = quantize_blocks(weight, "mxfp4", axis=1).values
    assert np.array_equal(mlp.quantized_weight(layer, TensorQuant(parse_format("mxfp4"))), expected)


def test_block_formats_evaluate_and_are_sized_with_their_scales(mlp):
    results = {name: mlp.evaluate(_config(name)) for name in ("mxint8", "mxfp8_e4m3", "mxfp4", "nvfp4")}
    assert results["mxint8"].sqnr_db > results["mxfp8_e4m3"].sqnr_db > results["mxfp4"].sqnr_db
    assert abs(results["mxint8"].accuracy - mlp.fp32_accuracy) < 0.01
    assert all(set(result.simulated_only) == set(mlp.layers) for result in results.values())
    weights = sum(tensor_bytes(mlp.session.fp32_weight(layer).shape, mlp.weight_layout(layer, TensorQuant(
        parse_format("mxfp4"))).tq) for layer in mlp.layers)
    assert results["mxfp4"].size_bytes == mlp.evaluate(_config("fp32")).size_bytes - sum(
        4 * mlp.session.fp32_weight(layer).size for layer in mlp.layers) + weights


def test_a_sweep_takes_block_formats(mlp):
    rows = run_sweep(mlp, ["mxfp4", "mxfp4_up", "nvfp4"], layers=["/fc2/Gemm"])
    assert [row.format for row in rows] == ["mxfp4", "mxfp4_up", "nvfp4"]
    assert all(np.isfinite(row.sqnr_db) for row in rows)


def test_a_suggestion_takes_block_formats_as_candidates(mlp):
    from quant_core.search.suggest import suggest_config

    suggestion = suggest_config(mlp, max_size_bytes=12_000, candidate_formats=("mxint8", "mxfp6_e2m3", "mxfp4"))
    result = mlp.evaluate(suggestion.config)
    assert result.size_bytes <= 12_000
    used = {suggestion.config.for_layer(layer).weights.format.name for layer in mlp.layers}
    assert used <= {"mxint8", "mxfp6_e2m3", "mxfp4"} and used

"""Bias correction: the weights the Evaluator quantizes, the mean output shift removed layer by layer."""
import numpy as np
import pytest

from quant_core.engine.calibrate import calibrate
from quant_core.config import LayerQuant, QuantConfig, TensorQuant
from quant_core.model.data import split_dataset
from quant_core.model.demo import load_demo
from quant_core.engine.evaluate import Evaluator
from quant_core.numerics.formats import Granularity, RangeMethod, parse_format
from quant_core.methods import MethodContext, apply_methods
from quant_core.methods.bias_correction import apply_bias_correction
from quant_core.methods.graph import Graph
from quant_core.methods.weights import quantized_weight
from quant_core.model.model_io import load_model, prepare_model, weight_array

from .graphs import conv_chain, data_for, run


def _weight_only(bits, granularity=Granularity.PER_CHANNEL, **kw):
    return QuantConfig(LayerQuant(TensorQuant(parse_format(f"int{bits}"), granularity=granularity, **kw)))


@pytest.mark.parametrize("tq", [
    TensorQuant(parse_format("int4"), granularity=Granularity.PER_CHANNEL),
    TensorQuant(parse_format("int3")),
    TensorQuant(parse_format("int4"), granularity=Granularity.PER_GROUP, block_size=16),
    TensorQuant(parse_format("int4"), granularity=Granularity.PER_CHANNEL, range_method=RangeMethod.MSE),
    TensorQuant(parse_format("ternary")),
])
def test_method_weights_are_the_evaluators(tq, demo_prepared):
    for name in ("cnn", "transformer"):
        prepared = demo_prepared(name)
        _, held = load_demo(name)
        evaluator = Evaluator(prepared, None, held.subset(np.arange(8)))
        graph = Graph(prepared)
        for layer in graph.linear_layers().values():
            assert np.array_equal(quantized_weight(graph, layer.name, layer.weight, tq),
                                  evaluator.quantized_weight(layer.name, tq)), (name, layer.name)


def test_bias_correction_removes_the_mean_output_shift_of_a_layer():
    prepared = conv_chain()
    data = data_for(prepared, count=128)
    config = _weight_only(3, Granularity.PER_TENSOR)
    new, report = apply_bias_correction(prepared, MethodContext(config, data))
    assert [row[0] for row in report.rows] == ["conv1", "conv2", "fc"]
    # the corrected model with quantized weights has (close to) the FP32 model's mean output
    graph = Graph(new)
    quantized = Graph(new)
    for layer in graph.linear_layers().values():
        quantized.set_array(layer.weight, quantized_weight(graph, layer.name, layer.weight, config.default.weights))
    fp32 = run(prepared, data)[0].mean(axis=0)
    corrected = run(quantized.prepared(), data)[0].mean(axis=0)
    uncorrected_graph = Graph(prepared)
    for layer in uncorrected_graph.linear_layers().values():
        uncorrected_graph.set_array(layer.weight, quantized_weight(uncorrected_graph, layer.name, layer.weight,
                                                                   config.default.weights))
    uncorrected = run(uncorrected_graph.prepared(), data)[0].mean(axis=0)
    assert np.abs(corrected - fp32).max() < 1e-3 * np.abs(fp32).max() + 1e-4
    assert np.abs(uncorrected - fp32).max() > 10 * np.abs(corrected - fp32).max()


def test_bias_correction_keeps_fp32_weights_and_gives_a_bias_where_none_was():
    prepared = conv_chain()
    graph = Graph(prepared)
    node = graph.nodes["conv2"]
    del node.input[2]
    prepared = graph.prepared()
    new, report = apply_bias_correction(prepared, MethodContext(_weight_only(4), data_for(prepared)))
    assert np.array_equal(weight_array(new.model, "w2"), weight_array(prepared.model, "w2"))
    conv2 = next(node for node in new.model.graph.node if node.name == "conv2")
    assert len(conv2.input) == 3 and weight_array(new.model, conv2.input[2]).shape == (4,)
    assert not report.skipped


def test_bias_correction_skips_layers_the_config_keeps_fp32():
    prepared = conv_chain()
    config = _weight_only(4).with_layer("conv1", LayerQuant())
    _, report = apply_bias_correction(prepared, MethodContext(config, data_for(prepared)))
    assert [row[0] for row in report.rows] == ["conv2", "fc"]


def test_bias_correction_helps_int3_weights_on_the_demo_mlp():
    model, held = load_demo("mlp")
    prepared = prepare_model(load_model(model))
    calibration, evaluation = split_dataset(held)
    config = _weight_only(3).with_methods(["bias_correction"])
    new, _ = apply_methods(prepared, config, calibration)
    before = Evaluator(prepared, None, evaluation).evaluate(config)
    after = Evaluator(new, None, evaluation, reference_outputs=Evaluator(prepared, None, evaluation).fp32_outputs
                      ).evaluate(config)
    assert after.cosine > before.cosine

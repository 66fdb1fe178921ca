"""AdaRound: learned rounding on the config's grid that the simulation's re-quantization reproduces exactly."""
import numpy as np
import pytest

from quant_core.config import LayerQuant, MethodSpec, QuantConfig, TensorQuant
from quant_core.engine.evaluate import Evaluator
from quant_core.numerics.formats import Granularity, parse_format
from quant_core.methods import MethodContext
from quant_core.methods.adaround import _im2col, apply_adaround
from quant_core.methods.graph import Graph, Probe
from quant_core.model.model_io import weight_array
from quant_core.numerics.tensor import quantize_tensor

from .graphs import conv_chain, data_for


def _config(bits=4, granularity=Granularity.PER_CHANNEL, symmetric=True):
    return QuantConfig(LayerQuant(TensorQuant(parse_format(f"int{bits}"), granularity=granularity,
                                              symmetric=symmetric)))


@pytest.mark.parametrize("granularity, symmetric", [(Granularity.PER_CHANNEL, True), (Granularity.PER_TENSOR, True),
                                                    (Granularity.PER_CHANNEL, False)])
def test_the_simulation_requantizes_the_learned_integers_exactly(granularity, symmetric):
    prepared = conv_chain()
    data = data_for(prepared, count=96)
    config = _config(4, granularity, symmetric)
    new, report = apply_adaround(prepared, MethodContext(config, data), iterations=600)
    evaluator = Evaluator(new, None, data)
    taken = [row for row in report.rows if row[-1] == "yes"]
    assert taken, report.rows
    for row in taken:
        layer = row[0]
        weight = next(node for node in new.model.graph.node if node.name == layer).input[1]
        tq = config.for_layer(layer).weights
        resolved = evaluator.weight_layout(layer, tq).tq
        original = quantize_tensor(weight_array(prepared.model, weight), resolved)
        stored = weight_array(new.model, weight)
        learned = quantize_tensor(stored, resolved)
        # same grid: the range (hence scale and zero point) is the original weight's
        assert np.array_equal(learned.scale, original.scale) and np.array_equal(learned.zero_point, original.zero_point)
        # what the simulation feeds is exactly the learned integers on that grid
        np.testing.assert_array_equal(evaluator.quantized_weight(layer, tq), learned.values)
        # and they are not round-to-nearest everywhere: some weights were rounded the other way
        assert np.mean(learned.codes != original.codes) == pytest.approx(row[6])
        assert row[5] < row[4]  # output error below round-to-nearest


def test_adaround_lowers_each_taken_layers_output_error_and_reports_the_others():
    prepared = conv_chain()
    _, report = apply_adaround(prepared, MethodContext(_config(3), data_for(prepared)), iterations=150)
    assert [row[0] for row in report.rows] == ["conv1", "conv2", "fc"]
    for row in report.rows:
        assert row[5] <= row[4]


def test_adaround_stops_at_its_time_budget_and_keeps_round_to_nearest_for_the_rest():
    prepared = conv_chain()
    new, report = apply_adaround(prepared, MethodContext(_config(4), data_for(prepared)), time_budget_s=1e-9)
    assert report.stopped and len(report.rows) == 0
    assert {where for where, _ in report.skipped} == {"conv1", "conv2", "fc"}
    assert all("time budget" in why for _, why in report.skipped)
    assert np.array_equal(weight_array(new.model, "w2"), weight_array(prepared.model, "w2"))


def test_adaround_skips_formats_without_a_fixed_grid():
    prepared = conv_chain()
    config = QuantConfig(LayerQuant(TensorQuant(parse_format("int4"), range_method="mse")))
    _, report = apply_adaround(prepared, MethodContext(config, data_for(prepared)))
    assert ("conv1", "mse ranges depend on the weights' values (min-max only)") in report.skipped


def test_im2col_rows_times_the_weight_are_the_convolution():
    prepared = conv_chain()
    data = data_for(prepared, count=4)
    graph = Graph(prepared)
    x = next(Probe(graph.model, ("x", "c1")).run(data))
    w = weight_array(prepared.model, "w1")
    rows = _im2col(x["x"], graph.nodes["conv1"], w.shape[2:])
    y = rows @ w.reshape(8, -1).T + weight_array(prepared.model, "b1")
    expected = x["c1"].transpose(0, 2, 3, 1).reshape(-1, 8)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_adaround_options_are_checked():
    from quant_core.errors import ConfigError
    with pytest.raises(ConfigError, match="time_budget_s must be a positive number"):
        MethodSpec("adaround", (("time_budget_s", 0),))

"""Single-layer weight configs may run only the model from that layer on, with the same outputs bit for bit."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quant_core.engine.calibrate import calibrate
from quant_core.config import FP32_LAYER, LayerQuant, QuantConfig
from quant_core.model.data import split_dataset
from quant_core.model.demo import load_demo
from quant_core.engine.evaluate import Evaluator
from quant_core.numerics.formats import parse_format
from quant_core.model.model_io import load_model, prepare_model
from quant_core.search.sensitivity import run_sweep, sweep_config
from quant_core.engine.simulation_suffix import suffix_model

ALWAYS = 10**9  # configs: makes any saving worth a session


@pytest.fixture(scope="module", params=["mlp", "cnn", "transformer"])
def two_evaluators(request):
    model, held_out = load_demo(request.param)
    prepared = prepare_model(load_model(model))
    calibration_data, evaluation = split_dataset(held_out)
    calibration = calibrate(prepared, calibration_data)
    return Evaluator(prepared, calibration, evaluation), Evaluator(prepared, calibration, evaluation)


def test_the_suffix_gives_the_full_sessions_outputs_bit_for_bit(two_evaluators):
    whole, cut = two_evaluators
    ready = [layer for layer in cut.layers if cut.prepare_sweep(layer, ALWAYS)]
    # Every layer but the first; the first too when some op (a Reshape of the input) runs before it.
    assert set(cut.layers[1:]) <= set(ready)
    for layer in cut.layers:
        for fmt in ("int8", "int3"):
            config = sweep_config(cut, layer, parse_format(fmt), activations=False)
            for expected, found in zip(whole.outputs(config), cut.outputs(config)):
                assert np.array_equal(expected, found), (layer, fmt)


def test_a_sweep_with_suffixes_gives_the_same_rows(two_evaluators):
    whole, cut = two_evaluators
    for layer in cut.layers:
        cut.prepare_sweep(layer, ALWAYS)
    expected = [whole.evaluate(sweep_config(whole, layer, parse_format("int4"), activations=False))
                for layer in whole.layers]
    rows = run_sweep(cut, ["int4"])
    assert [(r.sqnr_db, r.accuracy, r.size_bytes) for r in rows] == \
        [(e.sqnr_db, e.accuracy, e.size_bytes) for e in expected]


@pytest.mark.parametrize("fmt", ["uint8", "int8", "int4", "uint3"])
def test_with_the_input_activation_quantized_too_the_suffix_gives_the_full_sessions_outputs(two_evaluators, fmt,
                                                                                             monkeypatch):
    from quant_core.engine.suffix_runs import SuffixRuns

    # Whether the numpy fake-quant pays is timed: make it free, so every layer that can is prepared.
    timed = SuffixRuns._activation_seconds
    monkeypatch.setattr(SuffixRuns, "_activation_seconds", lambda self, layer: timed(self, layer) and 0.0)
    whole, cut = two_evaluators
    ready = [layer for layer in cut.layers if cut.prepare_sweep(layer, ALWAYS, activations=True)]
    assert ready  # at least one layer reads its input alone
    for layer in cut.layers:
        config = sweep_config(cut, layer, parse_format(fmt), activations=True)
        for expected, found in zip(whole.outputs(config), cut.outputs(config)):
            assert np.array_equal(expected, found), (layer, fmt)  # -0.0 == +0.0: exact otherwise


def test_a_layer_whose_input_another_node_also_reads_runs_the_whole_model_with_its_activation():
    """dense1 reads h, and so does the residual Add: fake-quantizing the captured h would change the Add."""
    prepared = prepare_model(_residual_model())
    x = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
    evaluator = Evaluator(prepared, calibrate(prepared, {"x": x}), {"x": x})
    assert evaluator.prepare_sweep("dense1", ALWAYS) is True
    assert evaluator.prepare_sweep("dense1", ALWAYS, activations=True) is False
    config = sweep_config(evaluator, "dense1", parse_format("int4"), activations=True)
    reference = Evaluator(prepared, evaluator.calibration, {"x": x}).outputs(config)
    assert np.array_equal(evaluator.outputs(config)[0], reference[0])


def test_float_activation_formats_run_the_whole_model(two_evaluators):
    whole, cut = two_evaluators
    last = cut.layers[-1]
    cut.prepare_sweep(last, ALWAYS, activations=True)
    config = sweep_config(cut, last, parse_format("fp16"), activations=True)
    for expected, found in zip(whole.outputs(config), cut.outputs(config)):
        assert np.array_equal(expected, found)


def test_a_single_config_never_builds_a_session_for_the_first_layer(cnn_evaluator):
    # Nothing runs before the first layer: no time to save.
    assert cnn_evaluator.prepare_sweep(cnn_evaluator.layers[0], 5) is False


def test_a_config_of_two_layers_runs_the_whole_model(two_evaluators):
    whole, cut = two_evaluators
    last = cut.layers[-1]
    cut.prepare_sweep(last, ALWAYS)
    int8 = LayerQuant(sweep_config(cut, last, parse_format("int8"), activations=False).for_layer(last).weights)
    two = QuantConfig(FP32_LAYER, ((last, int8), (cut.layers[0], int8)))
    for expected, found in zip(whole.outputs(two), cut.outputs(two)):
        assert np.array_equal(expected, found)


def _residual_model() -> onnx.ModelProto:
    """x -> dense0 -> h; y = dense1(h) + h: the cut before dense1 must keep h for the Add."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 4)).astype(np.float32), f"w{i}") for i in range(2)]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w0"], ["h"], name="dense0"),
         helper.make_node("MatMul", ["h", "w1"], ["g"], name="dense1"),
         helper.make_node("Add", ["g", "h"], ["y"], name="residual")],
        "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits,
        value_info=[helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in ("h", "g")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_the_cut_lists_every_tensor_the_rest_of_the_model_reads():
    suffix, cut = suffix_model(_residual_model(), "dense1")
    assert cut == ("h",)
    assert [node.name for node in suffix.graph.node] == ["dense1", "residual"]
    assert [value.name for value in suffix.graph.input] == ["h"]
    _, first = suffix_model(_residual_model(), "dense0")
    assert first == ("x",)


def test_over_the_memory_budget_every_config_runs_the_whole_model(demo_cnn, monkeypatch):
    import quant_core.engine.suffix_runs as suffix_runs

    prepared, calibration_data, evaluation = demo_cnn
    monkeypatch.setattr(suffix_runs, "SUFFIX_MEMORY_BYTES", 1024)  # the CNN's captured activations: ~4 MiB
    evaluator = Evaluator(prepared, calibrate(prepared, calibration_data), evaluation)
    assert not any(evaluator.prepare_sweep(layer, ALWAYS) for layer in evaluator.layers)
    assert len(run_sweep(evaluator, ["int4"])) == len(evaluator.layers)


def _int(bits: int, evaluator, layer: str) -> LayerQuant:
    from quant_core.search.sensitivity import weight_quant
    return LayerQuant(weight_quant(parse_format(f"int{bits}"), tuple(evaluator.session.fp32_weight(layer).shape)))


def test_a_config_one_layer_away_from_the_anchor_gives_the_whole_runs_outputs_bit_for_bit(two_evaluators,
                                                                                           monkeypatch):
    from quant_core.engine.suffix_runs import SuffixRuns

    whole, cut = two_evaluators
    monkeypatch.setattr(SuffixRuns, "anchor_pays", lambda self: True)  # exercise it on every demo
    anchor = QuantConfig(FP32_LAYER, tuple((layer, _int(8 - 2 * (i % 2), cut, layer))
                                           for i, layer in enumerate(cut.layers)), name="anchor")
    assert cut.anchor(anchor)
    try:
        for layer in cut.layers:
            for choice in (_int(4, cut, layer), _int(2, cut, layer), FP32_LAYER):
                config = anchor.with_layer(layer, choice)
                for expected, found in zip(whole.outputs(config), cut.outputs(config)):
                    assert np.array_equal(expected, found), layer
        two_away = anchor.with_layer(cut.layers[0], _int(3, cut, cut.layers[0])).with_layer(
            cut.layers[-1], _int(3, cut, cut.layers[-1]))
        assert np.array_equal(whole.outputs(two_away)[0], cut.outputs(two_away)[0])
    finally:
        cut.clear_anchor()


def test_an_anchor_is_refused_when_it_quantizes_an_activation_or_does_not_pay(cnn_evaluator):
    from quant_core.config import PRESETS
    assert cnn_evaluator.anchor(PRESETS["W8A8"]) is False
    # The demo CNN: conv2 holds most of the work and only fc comes after it; an anchor saves no run.
    assert cnn_evaluator.anchor(PRESETS["W8 weight-only"]) is False


def test_a_suggestion_anchors_its_steps_and_drops_the_anchor_at_the_end():
    from quant_core.search.suggest import suggest_config

    model, held_out = load_demo("transformer")
    prepared = prepare_model(load_model(model))
    _, evaluation = split_dataset(held_out)
    evaluator = Evaluator(prepared, None, evaluation)
    anchored = []
    original = evaluator.anchor
    evaluator.anchor = lambda config: anchored.append(original(config)) or anchored[-1]
    suggestion = suggest_config(evaluator, min_accuracy=0.9, candidate_formats=["int8", "int4"])
    assert anchored and all(anchored)  # it pays on the 14-layer transformer
    assert evaluator.suffix_runs._anchor is None
    plain = Evaluator(prepared, None, evaluation)
    plain.anchor = lambda config: False
    assert suggest_config(plain, min_accuracy=0.9, candidate_formats=["int8", "int4"]) == suggestion

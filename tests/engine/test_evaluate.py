"""Evaluator, run_sweep and suggest_config on the demo CNN and a tiny chain."""
import threading

import numpy as np
import pytest

from quant_core.engine.calibrate import calibrate
from quant_core.config import FP32_LAYER, PRESETS, LayerQuant, QuantConfig, TensorQuant
from quant_core.errors import ConfigError
from quant_core.engine.evaluate import Evaluator
from quant_core.search.sensitivity import run_sweep
from quant_core.search.suggest import suggest_config
from tests.engine.run_counting import counting_runs

INT2 = QuantConfig(LayerQuant(TensorQuant("int2", granularity="per_channel")), name="int2")


def test_fp32_config_reproduces_fp32_outputs_exactly(cnn_evaluator):
    result = cnn_evaluator.evaluate(PRESETS["FP32"])
    assert np.array_equal(cnn_evaluator.outputs(PRESETS["FP32"])[0], cnn_evaluator.fp32_outputs[0])
    assert result.sqnr_db == float("inf") and result.top1_agreement == 1.0
    assert result.cosine == pytest.approx(1.0, abs=1e-12)
    assert result.accuracy == cnn_evaluator.fp32_accuracy
    assert result.size_bytes == result.fp32_size_bytes


def test_w8a8_stays_close_to_fp32_while_int2_everywhere_collapses(cnn_evaluator):
    fp32 = cnn_evaluator.evaluate(PRESETS["FP32"]).accuracy
    w8a8 = cnn_evaluator.evaluate(PRESETS["W8A8"])
    int2 = cnn_evaluator.evaluate(INT2)
    assert fp32 - w8a8.accuracy < (fp32 - int2.accuracy) / 4
    assert w8a8.sqnr_db > int2.sqnr_db + 10
    assert int2.size_bytes < w8a8.size_bytes < w8a8.fp32_size_bytes
    assert int2.simulated_only == cnn_evaluator.layers and w8a8.simulated_only == ()


def test_results_are_cached_per_config(cnn_evaluator):
    assert cnn_evaluator.evaluate(PRESETS["W8A8"]) is cnn_evaluator.evaluate(PRESETS["W8A8"])


def test_per_class_accuracy_averages_to_the_accuracy(cnn_evaluator):
    result = cnn_evaluator.evaluate(PRESETS["W8A8"])
    counts = np.bincount(cnn_evaluator.labels, minlength=len(result.per_class_accuracy))
    assert np.isclose(np.dot(result.per_class_accuracy, counts) / counts.sum(), result.accuracy)


def test_isolated_error_is_never_worse_than_accumulated_along_a_chain(chain):
    prepared, data = chain
    evaluator = Evaluator(prepared, calibrate(prepared, data), data)
    config = QuantConfig(LayerQuant(TensorQuant("int4"), TensorQuant("uint4", symmetric=False)))
    errors = evaluator.layer_errors(config)
    assert [e.layer for e in errors] == ["dense0", "dense1", "dense2"]
    assert errors[0].isolated_sqnr_db == errors[0].accumulated_sqnr_db  # nothing comes before the first layer
    for error in errors[1:]:
        assert error.accumulated_sqnr_db < error.isolated_sqnr_db
    assert errors[-1].accumulated_sqnr_db == pytest.approx(evaluator.evaluate(config).sqnr_db)


def test_unlabelled_data_gives_no_accuracy(chain):
    prepared, data = chain
    result = Evaluator(prepared, calibrate(prepared, data), data).evaluate(PRESETS["W8A8"])
    assert result.accuracy is None and result.per_class_accuracy is None and 0 <= result.top1_agreement <= 1


def test_evaluate_refuses_a_config_for_unknown_layers(cnn_evaluator):
    with pytest.raises(ConfigError, match="does not have"):
        cnn_evaluator.evaluate(QuantConfig(FP32_LAYER, (("nope", LayerQuant(TensorQuant("int8"))),)))


def test_sweep_covers_every_layer_and_format_once(cnn_evaluator):
    formats = ["int8", "int4", "int2"]
    rows = run_sweep(cnn_evaluator, formats, activations=True)
    assert [(r.layer, r.format) for r in rows] == [(l, f) for l in cnn_evaluator.layers for f in formats]
    by_key = {(r.layer, r.format): r for r in rows}
    for layer in cnn_evaluator.layers:
        assert by_key[layer, "int8"].sqnr_db > by_key[layer, "int2"].sqnr_db
    assert set(rows[0].to_dict()) == {"layer", "format", "sqnr_db", "cosine", "accuracy", "agreement", "size_bytes",
                                   "metric", "score"}


def test_sweep_stops_when_cancelled(cnn_evaluator):
    stop = threading.Event()
    done = []

    def progress(fraction):
        done.append(fraction)
        if len(done) == 2:
            stop.set()

    rows = run_sweep(cnn_evaluator, ["int8", "int6", "int4"], progress=progress, cancel=stop.is_set)
    assert len(rows) == 2 < 3 * len(cnn_evaluator.layers)


def test_suggestion_meets_the_size_budget_and_records_each_step(cnn_evaluator):
    start = cnn_evaluator.evaluate(QuantConfig(LayerQuant(TensorQuant("int8", granularity="per_channel"))))
    budget = int(start.size_bytes * 0.8)
    suggestion = suggest_config(cnn_evaluator, max_size_bytes=budget)
    assert suggestion.met and suggestion.result.size_bytes <= budget
    assert suggestion.steps and [s.step for s in suggestion.steps] == list(range(1, len(suggestion.steps) + 1))
    for step in suggestion.steps:
        assert step.action in ("lower", "raise") and step.from_format != step.to_format and step.reason
    assert suggestion.steps[-1].size_bytes == suggestion.result.size_bytes
    sizes = [p.size_bytes for p in suggestion.pareto]
    accuracies = [p.accuracy for p in suggestion.pareto]
    assert sizes == sorted(sizes) and accuracies == sorted(accuracies)


def test_suggestion_under_an_accuracy_floor_keeps_it(cnn_evaluator):
    floor = cnn_evaluator.fp32_accuracy - 0.02
    suggestion = suggest_config(cnn_evaluator, min_accuracy=floor)
    assert suggestion.met and suggestion.result.accuracy >= floor
    assert all(step.accuracy >= floor for step in suggestion.steps)


def test_suggestion_needs_exactly_one_budget(cnn_evaluator):
    with pytest.raises(ConfigError, match="exactly one budget"):
        suggest_config(cnn_evaluator)


def test_a_fixed_batch_dimension_is_respected(chain):
    from quant_core.model.model_io import prepare_model
    from .conftest import chain_model
    model = chain_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 7  # the model takes exactly 7 samples
    prepared = prepare_model(model)
    _, data = chain
    evaluator = Evaluator(prepared, calibrate(prepared, data), data)
    assert evaluator.sample_count == 294  # 42 batches of 7; the last 6 samples cannot run
    assert evaluator.evaluate(PRESETS["W8A8"]).sample_count == 294


def _matmul_model(k=6, n=4, seed=0):
    """x (N, k) @ W (k, n) -> y: one MatMul layer whose output channels are W's columns (axis 1)."""
    from onnx import TensorProto, helper, numpy_helper
    weight = np.random.default_rng(seed).normal(size=(k, n)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "matmul",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, weight


@pytest.mark.parametrize("name", ["binary", "ternary"])
def test_binary_and_ternary_scale_a_matmul_weight_per_output_channel(name):
    from quant_core.numerics.extreme import binarize, ternarize
    from quant_core.model.model_io import prepare_model
    model, weight = _matmul_model(k=6, n=4)
    prepared = prepare_model(model)
    from quant_core.model.data import Dataset
    data = Dataset(inputs={"x": np.random.default_rng(1).normal(size=(50, 6)).astype(np.float32)})
    evaluator = Evaluator(prepared, calibrate(prepared, data), data)
    quantizer = {"binary": binarize, "ternary": ternarize}[name]
    for granularity in ("per_tensor", "per_channel"):
        config = QuantConfig(LayerQuant(TensorQuant(name, granularity=granularity)))
        assert np.array_equal(evaluator.quantized_weight("fc", config.default.weights),
                              quantizer(weight, axis=1).values)  # one scale per column (output), not per row
        bits = {"binary": 1, "ternary": 2}[name]
        assert evaluator.evaluate(config).size_bytes == -(-(24 * bits + 4 * 32) // 8)  # 24 values, 4 fp32 scales


def _mixed_config(prepared) -> QuantConfig:
    """A different choice on each layer in turn: int4 weight-only, W8A8, int4 with 8-bit activations, fp16, binary."""
    activation = TensorQuant("uint8", symmetric=False)
    choices = [LayerQuant(TensorQuant("int4", granularity="per_channel")),
               LayerQuant(TensorQuant("int8", granularity="per_channel"), activation),
               LayerQuant(TensorQuant("int4", granularity="per_channel"), activation),
               LayerQuant(TensorQuant("fp16")),
               LayerQuant(TensorQuant("binary"))]
    layers = [layer.name for layer in prepared.info.layers]
    return QuantConfig(FP32_LAYER, tuple((name, choices[i % len(choices)]) for i, name in enumerate(layers)),
                       name="mixed")


@pytest.mark.parametrize("model_name", ["mlp", "cnn", "transformer"])
def test_simulated_only_is_exactly_what_the_export_keeps_fp32_for_lack_of_a_kernel(model_name):
    import onnx
    from quant_core.model.data import Dataset
    from quant_core.model.demo import load_demo
    from quant_core.model.model_io import prepare_model
    from quant_core.engine.plan import ExportKind, plan_export
    model_bytes, data = load_demo(model_name)
    prepared = prepare_model(onnx.load_from_string(model_bytes))
    split = Dataset(inputs={"image": data.inputs["image"][:32]}, labels=data.labels[:32])
    evaluator = Evaluator(prepared, calibrate(prepared, split), split)
    for config in [*PRESETS.values(), _mixed_config(prepared)]:
        kept_fp32 = tuple(entry.layer for entry in plan_export(prepared, config)
                          if entry.kind == ExportKind.SIMULATED_ONLY)
        assert evaluator.evaluate(config).simulated_only == kept_fp32, config.name
    # int4 has no integer kernel in the export (only 8-bit): W4A8 is simulated on every layer.
    assert evaluator.evaluate(PRESETS["W4A8"]).simulated_only == evaluator.layers
    assert evaluator.evaluate(PRESETS["W8A8"]).simulated_only == ()


def test_an_lru_cache_keeps_the_most_recently_used_entries():
    from quant_core.engine.evaluate import LRUCache
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3 and len(cache) == 2
    assert cache.get("b", "missing") == "missing"


def test_a_config_that_changes_one_layer_costs_one_error_session_run_and_gives_the_fresh_numbers(chain, monkeypatch):
    prepared, data = chain
    evaluator = Evaluator(prepared, calibrate(prepared, data), data)
    int4 = LayerQuant(TensorQuant("int4"), TensorQuant("uint8", symmetric=False))
    first = QuantConfig(int4)
    evaluator.layer_errors(first)
    calls = counting_runs(evaluator, monkeypatch)
    edited = QuantConfig(int4, (("dense1", LayerQuant(TensorQuant("int2"), int4.activations)),))
    errors = evaluator.layer_errors(edited)
    assert calls == ["errors"]  # one run of the error session: the FP32 model, the config, each layer alone
    fresh = Evaluator(prepared, calibrate(prepared, data), data).layer_errors(edited)
    assert errors == fresh  # the cache changes the cost, not the numbers
    calls.clear()
    renamed = QuantConfig(int4, edited.overrides, name="same feeds, other name")
    assert evaluator.layer_errors(renamed) == errors and calls == []


def test_the_evaluator_caches_stay_bounded_when_many_configs_are_tried(chain, monkeypatch):
    from quant_core.engine import evaluate
    monkeypatch.setattr(evaluate, "MAX_RESULTS", 3)
    monkeypatch.setattr(evaluate, "MAX_WEIGHTS", 4)
    monkeypatch.setattr(evaluate, "MAX_ISOLATED", 5)
    prepared, data = chain
    evaluator = Evaluator(prepared, calibrate(prepared, data), data)
    for bits in range(2, 9):
        for symmetric in (True, False):
            config = QuantConfig(LayerQuant(TensorQuant(f"int{bits}", symmetric=symmetric)))
            evaluator.evaluate(config)
            evaluator.layer_errors(config)
    assert evaluator.cache_entries() == {"results": 3, "layer_sqnr": 3, "isolated": 5, "weights": 4}
    # An evicted result is recomputed, equal to the first time.
    first = QuantConfig(LayerQuant(TensorQuant("int2")))
    assert evaluator.evaluate(first) == Evaluator(prepared, calibrate(prepared, data), data).evaluate(first)


def test_a_weights_only_evaluator_needs_no_calibration_and_gives_the_same_sweep(demo_cnn, cnn_evaluator):
    prepared, _, evaluation_data = demo_cnn
    weights_only = Evaluator(prepared, None, evaluation_data)
    rows = run_sweep(weights_only, ["int4", "int2"])
    assert rows == run_sweep(cnn_evaluator, ["int4", "int2"])
    assert weights_only.evaluate(PRESETS["W8 weight-only"]) == cnn_evaluator.evaluate(PRESETS["W8 weight-only"])


def test_a_weights_only_evaluator_refuses_activation_quantization_with_a_message(demo_cnn):
    prepared, _, evaluation_data = demo_cnn
    with pytest.raises(ConfigError, match="quantizing activations needs calibration data"):
        Evaluator(prepared, None, evaluation_data).evaluate(PRESETS["W8A8"])

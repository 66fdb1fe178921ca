"""Per-layer activation range search: each layer gets the candidate with the best isolated SQNR."""
import numpy as np
import pytest

from quant_core.engine.calibrate import calibrate
from quant_core.model.data import split_dataset
from quant_core.model.demo import load_demo
from quant_core.engine.evaluate import Evaluator
from quant_core.numerics.formats import RangeMethod
from quant_core.export.latency import static_int8_config
from quant_core.methods.range_search import CANDIDATES, search_activation_ranges
from quant_core.model.model_io import load_model, prepare_model


@pytest.fixture(scope="module")
def cnn():
    model, held = load_demo("cnn")
    prepared = prepare_model(load_model(model))
    calibration, evaluation = split_dataset(held)
    return prepared, Evaluator(prepared, calibrate(prepared, calibration), evaluation)


def test_each_layer_gets_its_best_candidate_and_the_config_says_so(cnn):
    prepared, evaluator = cnn
    config = static_int8_config(prepared, per_channel=True)
    search = search_activation_ranges(evaluator, config)
    assert len(search.candidates) == len(CANDIDATES) and [row[0] for row in search.rows] == list(evaluator.layers)
    for layer, chosen, scores in search.rows:
        assert scores[search.candidates.index(chosen)] == max(scores)
        tq = search.config.for_layer(layer).activations
        assert chosen.startswith(tq.range_method.value)
        assert search.config.for_layer(layer).weights == config.for_layer(layer).weights
    # no layer's isolated error got worse than with min-max (the first candidate)
    before = {e.layer: e.isolated_sqnr_db for e in evaluator.layer_errors(config)}
    after = {e.layer: e.isolated_sqnr_db for e in evaluator.layer_errors(search.config)}
    assert all(after[layer] >= before[layer] - 1e-9 for layer in before)
    assert evaluator.evaluate(search.config).accuracy > evaluator.evaluate(config).accuracy


def test_a_weight_only_config_is_returned_unchanged(cnn):
    prepared, evaluator = cnn
    from quant_core.config import PRESETS
    search = search_activation_ranges(evaluator, PRESETS["W8 weight-only"])
    assert search.config == PRESETS["W8 weight-only"] and search.rows == ()

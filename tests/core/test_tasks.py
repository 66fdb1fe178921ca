"""Task kinds and their metrics: what a quantized model is judged by (quant_core/tasks.py, docs/tasks.md)."""
from types import SimpleNamespace

import numpy as np
import pytest

from quant_core.config import PRESETS
from quant_core.errors import ConfigError
from quant_core.numerics.metrics import edit_distance, recall_at_k, token_error_rate, top1_agreement
from quant_core.model.model_io import TensorInfo
from quant_core.engine.tasks import (Metric, Task, TaskKind, TaskScorer, check_task, config_json, ctc_greedy_decode,
                              infer_task, read_config_json, score)


def one_hot(indices, classes: int) -> np.ndarray:
    """Logits whose argmax along the last axis is `indices`."""
    return np.eye(classes, dtype=np.float32)[np.asarray(indices)]


def model_with_outputs(*outputs: tuple[str, tuple]) -> SimpleNamespace:
    return SimpleNamespace(outputs=tuple(TensorInfo(name, shape, "float32") for name, shape in outputs))


# -- per-position agreement -----------------------------------------------------------------------

def test_agreement_on_a_sequence_output_counts_positions_not_flattened_samples():
    # Two samples of three time steps over four classes; one step of six differs.
    fp32 = one_hot([[0, 1, 2], [3, 3, 1]], 4)
    quantized = one_hot([[0, 1, 2], [3, 2, 1]], 4)
    assert top1_agreement(fp32, quantized) == 5 / 6
    # The old argmax over the whole flattened sample: both samples' first maximum is the same
    # position, so it said 1.0 here (and 0.22 for a text recognizer whose steps agree 94 %).
    flat = fp32.reshape(2, -1).argmax(axis=1) == quantized.reshape(2, -1).argmax(axis=1)
    assert flat.mean() == 1.0


def test_sequence_task_scores_per_position_agreement_and_per_position_labels():
    fp32 = one_hot([[0, 1, 2], [3, 3, 1]], 4)
    quantized = one_hot([[0, 1, 2], [3, 2, 1]], 4)
    labels = np.array([[0, 1, 1], [3, 2, 1]])
    result = score(fp32, quantized, labels, Task(TaskKind.SEQUENCE))
    assert result.value(Metric.AGREEMENT) == 5 / 6
    assert result.value(Metric.ACCURACY) == 5 / 6 and result.headline == Metric.ACCURACY


def test_classification_class_axis_is_selectable():
    fp32 = one_hot([0, 1, 2, 2], 3).T[None].repeat(2, axis=0)          # [2, 3, 4]: classes on axis 1
    quantized = fp32.copy()
    quantized[1, :, 3] = [1, 0, 0]                                      # one of 8 positions changes class
    assert score(fp32, quantized, None, Task(TaskKind.DETECTION, axis=1)).value(Metric.AGREEMENT) == 7 / 8


def test_classification_accuracy_and_per_class_against_labels():
    fp32 = one_hot([0, 1, 2, 1], 3)
    quantized = one_hot([0, 1, 1, 1], 3)
    result = score(fp32, quantized, np.array([0, 1, 2, 2]), Task(TaskKind.CLASSIFICATION))
    assert result.headline == Metric.ACCURACY and result.headline_value == 2 / 4
    assert result.value(Metric.AGREEMENT) == 3 / 4
    assert result.per_class_accuracy == (1.0, 1.0, 0.0)
    assert result.labels_note is None


# -- CTC ---------------------------------------------------------------------------------------------

def test_greedy_ctc_decode_merges_repeats_then_drops_blanks():
    logits = one_hot([[0, 1, 1, 0, 1, 2, 2, 0]], 3)
    assert ctc_greedy_decode(logits, blank=0) == [(1, 1, 2)]
    # The blank may be the last class (counted from the end): then 0 is a token.
    assert ctc_greedy_decode(logits, blank=-1) == [(0, 1, 0, 1, 0)]


def test_edit_distance_and_character_error_rate_by_hand():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance((), (1, 2)) == 2
    assert token_error_rate([(1, 2, 3), (4, 5)], [(1, 3), (4, 5, 6)]) == 2 / 5
    assert token_error_rate([()], [()]) == 0.0


def test_ctc_task_reports_sequence_match_and_cer_against_fp32():
    fp32 = one_hot([[1, 1, 0, 2, 0], [3, 0, 3, 3, 0]], 4)           # decodes (1, 2) and (3, 3)
    quantized = one_hot([[1, 1, 0, 2, 2], [3, 3, 3, 3, 0]], 4)      # decodes (1, 2) and (3,)
    result = score(fp32, quantized, None, Task(TaskKind.CTC, blank=0))
    assert result.value(Metric.AGREEMENT) == 8 / 10
    assert result.value(Metric.SEQUENCE_MATCH) == 1 / 2
    assert result.value(Metric.CER) == 1 / 4
    assert result.headline == Metric.CHARACTER_ACCURACY and result.headline_value == 3 / 4


def test_ctc_labels_are_token_sequences_padded_with_minus_one():
    fp32 = one_hot([[1, 1, 0, 2, 0], [3, 0, 3, 3, 0]], 4)
    labels = np.array([[1, 2, -1], [3, 3, 2]])
    result = score(fp32, fp32, labels, Task(TaskKind.CTC))
    assert result.value(Metric.LABEL_SEQUENCE_MATCH) == 1 / 2
    assert result.value(Metric.LABEL_CER) == 1 / 5 and result.headline == Metric.LABEL_CHARACTER_ACCURACY
    per_sample = score(fp32, fp32, np.array([1, 3]), Task(TaskKind.CTC))
    assert per_sample.value(Metric.LABEL_CER) is None and "one token sequence per sample" in per_sample.labels_note


# -- embedding ------------------------------------------------------------------------------------

def test_recall_at_k_is_one_when_quantized_embeddings_retrieve_the_same_neighbours():
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]])
    assert recall_at_k(x, x, 2) == 1.0
    # Sample 0 drifts towards the second pair: its 2 nearest become {2, 3} instead of {0, 1}.
    drifted = x.copy()
    drifted[0] = [0.05, 1]
    assert recall_at_k(x, drifted, 2) == 3 / 4
    result = score(x, drifted, None, Task(TaskKind.EMBEDDING, k=2))
    assert result.headline == Metric.RECALL and result.headline_value == 3 / 4
    assert result.value(Metric.WORST_COSINE) == pytest.approx(0.05 / np.hypot(0.05, 1))


# -- detection / dense, regression ------------------------------------------------------------------

def test_detection_agreement_along_the_channel_axis_of_a_channels_first_head():
    fp32 = np.zeros((1, 2, 2, 2), np.float32)                        # face / non-face on axis 1, 2 x 2 cells
    fp32[0, 0] = [[0.9, 0.2], [0.8, 0.1]]
    fp32[0, 1] = 1 - fp32[0, 0]
    quantized = fp32.copy()
    quantized[0, 0, 0, 1] = 0.85                                      # one cell flips to class 0 (0.85 > 0.8)
    result = score(fp32, quantized, None, Task(TaskKind.DETECTION))
    assert result.value(Metric.AGREEMENT) == 3 / 4
    assert result.value(Metric.MAX_SCORE_CHANGE) == pytest.approx(0.0)  # the highest score is still 0.9


def test_regression_scores_closeness_only():
    fp32 = np.array([[1.0, 2.0], [3.0, 4.0]])
    result = score(fp32, fp32 + [[0, 0.5], [0, 0]], None, Task(TaskKind.REGRESSION))
    assert result.value(Metric.MAX_ABS_ERROR) == 0.5 and result.headline == Metric.COSINE
    assert result.value(Metric.SQNR) == pytest.approx(10 * np.log10(30 / 0.25))


# -- labels that do not fit -------------------------------------------------------------------------

def test_class_labels_on_a_detector_are_not_a_measurement_but_a_stated_reason():
    fp32 = np.random.default_rng(0).normal(size=(4, 2, 3, 3)).astype(np.float32)
    result = score(fp32, fp32, np.array([0, 1, 1, 0]), Task(TaskKind.DETECTION))
    assert result.value(Metric.ACCURACY) is None and result.per_class_accuracy is None
    assert "cannot be scored against a detection" in result.labels_note
    assert result.headline == Metric.AGREEMENT and result.headline_value == 1.0


def test_class_labels_on_a_sequence_classification_output_say_why_not():
    fp32 = one_hot([[0, 1, 2], [3, 3, 1]], 4)
    result = score(fp32, fp32, np.array([1, 2]), Task(TaskKind.CLASSIFICATION))
    assert result.value(Metric.ACCURACY) is None and "3 positions per sample" in result.labels_note


def test_labels_beyond_the_class_count_are_not_scored():
    result = score(one_hot([0, 1], 2), one_hot([0, 1], 2), np.array([0, 5]), Task(TaskKind.CLASSIFICATION))
    assert result.value(Metric.ACCURACY) is None and "class 5" in result.labels_note


# -- inference --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "shape", "expected"), [
    ("logits", ("batch", 10), Task(TaskKind.CLASSIFICATION)),
    ("sentence_embedding", ("batch", 384), Task(TaskKind.EMBEDDING)),
    ("pooler_output", (None, 768), Task(TaskKind.EMBEDDING)),
    ("value", ("batch", 1), Task(TaskKind.REGRESSION)),
    ("ctc_logits", ("batch", 26, 37), Task(TaskKind.CTC)),
    ("logits", ("batch", 128, 9), Task(TaskKind.SEQUENCE)),
    ("last_hidden_state", ("batch", 128, 768), Task(TaskKind.REGRESSION)),
    ("scores", (1, 4420, 2), Task(TaskKind.DETECTION, axis=2)),
    ("output0", (1, 84, 8400), Task(TaskKind.SEQUENCE)),
    ("output0", ("batch", 22, "anchors"), Task(TaskKind.DETECTION, axis=1)),   # YOLOv8 exported with free anchors
    ("softmax_11.tmp_0", ("batch", "time", 6625), Task(TaskKind.SEQUENCE)),
    ("boxes", (1, 84, 8400), Task(TaskKind.DETECTION, axis=1)),
    ("heatmap", ("batch", 2, 60, 80), Task(TaskKind.DETECTION)),
    ("y", ("batch",), Task(TaskKind.REGRESSION)),
])
def test_the_task_is_inferred_from_the_first_outputs_shape_and_name(name, shape, expected):
    assert infer_task(model_with_outputs((name, shape))) == expected


# -- bad input: one clear line ------------------------------------------------------------------------

@pytest.mark.parametrize(("task", "message"), [
    (Task(TaskKind.EMBEDDING), "embedding needs one vector per sample"),
    (Task(TaskKind.CTC, blank=37), "CTC blank index 37 is out of range"),
    (Task(TaskKind.CLASSIFICATION, axis=3), "class axis 3 is out of range"),
    (Task(TaskKind.CLASSIFICATION, axis=0), "axis 0 holds the samples"),
    (Task(TaskKind.CTC, output="boxes"), "the model's outputs are logits"),
])
def test_a_task_that_does_not_fit_the_output_is_refused_in_one_line(task, message):
    with pytest.raises(ConfigError, match=message) as caught:
        check_task(task, model_with_outputs(("logits", ("batch", 26, 37))))
    assert "\n" not in str(caught.value)


def test_a_task_kind_that_does_not_exist_names_the_kinds():
    with pytest.raises(ConfigError, match="unknown task 'ocr': expected one of classification, sequence, ctc"):
        Task("ocr")


# -- JSON ------------------------------------------------------------------------------------------------

def test_config_json_round_trips_with_a_task_and_without_one():
    task = Task(TaskKind.CTC, output="logits", blank=-1)
    config, read = read_config_json(config_json(PRESETS["W8A8"], task))
    assert config == PRESETS["W8A8"] and read == task
    assert read_config_json(PRESETS["W8A8"].to_json()) == (PRESETS["W8A8"], None)  # absent: inferred
    assert read_config_json('{"default": {}, "task": "embedding"}')[1] == Task(TaskKind.EMBEDDING)


def test_a_scorer_reuses_its_fp32_work_and_matches_the_pure_function():
    rng = np.random.default_rng(1)
    fp32 = rng.normal(size=(6, 5, 4))
    candidates = [fp32 + rng.normal(scale=s, size=fp32.shape) for s in (0.1, 0.5, 2.0)]
    scorer = TaskScorer(fp32, Task(TaskKind.CTC))
    for candidate in candidates:
        assert scorer.score(candidate) == score(fp32, candidate, None, Task(TaskKind.CTC))


@pytest.mark.parametrize(("task", "message"), [
    ('{"kind": "ctc", "blank": "x"}', "task blank must be an integer, got 'x'"),
    ('{"kind": "ctc", "colour": 1}', "unknown task keys ['colour']"),
    ('5', "'task' must be a task kind such as \"classification\" or an object with 'kind'"),
    ('{"kind": "embedding", "k": 0}', "task k (recall@k) must be at least 1"),
])
def test_a_bad_task_in_a_config_json_is_one_line(task, message):
    with pytest.raises(ConfigError) as caught:
        read_config_json('{"default": {}, "task": ' + task + "}")
    assert message in str(caught.value) and "\n" not in str(caught.value)

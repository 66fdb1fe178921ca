"""The language-model task: perplexity and next-token agreement against FP32, inferred for next-token
logits over integer tokens, and bad input refused in one line (quant_core/tasks.py, docs/tasks.md)."""
from types import SimpleNamespace

import numpy as np
import pytest

from quant_core.model.data import load_npz
from quant_core.errors import ConfigError, DataError
from quant_core.numerics.metrics import mean_cross_entropy, next_token_labels, perplexity
from quant_core.model.model_io import TensorInfo
from quant_core.engine.tasks import Metric, Task, TaskKind, check_task, check_tokens, infer_task, score

LM = Task(TaskKind.LANGUAGE_MODEL)


def info(inputs, outputs):
    return SimpleNamespace(inputs=tuple(TensorInfo(n, s, d) for n, s, d in inputs),
                           outputs=tuple(TensorInfo(n, s, "float32") for n, s in outputs))


def lm_info(context=8, vocab=128):
    return info([("tokens", ("batch", context), "int64")], [("logits", ("batch", context, vocab))])


def test_perplexity_of_uniform_logits_is_the_vocabulary_size():
    logits = np.zeros((2, 5, 128), dtype=np.float32)
    assert perplexity(logits, np.zeros((2, 5), dtype=np.int64)) == pytest.approx(128.0)


def test_perplexity_is_exp_of_the_mean_cross_entropy_of_the_labels():
    logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    labels = np.array([[0, 1]])
    expected = -(np.log(0.5) + np.log(0.8)) / 2
    assert mean_cross_entropy(logits, labels) == pytest.approx(expected)
    assert perplexity(logits, labels) == pytest.approx(np.exp(expected))


def test_negative_labels_are_not_scored_and_next_token_labels_shift_the_window():
    tokens = np.array([[5, 6, 7, 8]])
    labels = next_token_labels(tokens)
    np.testing.assert_array_equal(labels, [[6, 7, 8, -1]])
    logits = np.zeros((1, 4, 10))
    logits[0, 3, 0] = 50.0                                  # the unscored last position: no effect
    assert perplexity(logits, labels) == pytest.approx(10.0)


def test_lm_task_scores_perplexity_against_labels_and_agreement_against_fp32():
    rng = np.random.default_rng(0)
    fp32 = rng.normal(size=(4, 8, 128)).astype(np.float32)
    labels = fp32.argmax(-1)                                # FP32 predicts every label: low perplexity
    quantized = fp32 + rng.normal(scale=0.5, size=fp32.shape).astype(np.float32)
    result = score(fp32, quantized, labels, LM)
    fp32_ppl, ppl = perplexity(fp32, labels), perplexity(quantized, labels)
    assert result.headline == Metric.PERPLEXITY_RATIO
    assert result.value(Metric.PERPLEXITY) == pytest.approx(ppl)
    assert result.value(Metric.PERPLEXITY_INCREASE) == pytest.approx(ppl - fp32_ppl)
    assert result.headline_value == pytest.approx(fp32_ppl / ppl) and result.headline_value < 1
    assert result.value(Metric.AGREEMENT) == np.mean(quantized.argmax(-1) == fp32.argmax(-1))
    itself = score(fp32, fp32, labels, LM)
    assert itself.headline_value == 1.0 and itself.value(Metric.PERPLEXITY_INCREASE) == 0.0


def test_without_labels_the_headline_is_next_token_agreement():
    fp32 = np.random.default_rng(1).normal(size=(2, 8, 128))
    result = score(fp32, fp32, None, LM)
    assert result.headline == Metric.AGREEMENT and result.value(Metric.PERPLEXITY) is None


def test_labels_of_the_wrong_shape_give_a_note_not_a_number():
    fp32 = np.zeros((2, 8, 128))
    result = score(fp32, fp32, np.zeros(2, dtype=np.int64), LM)
    assert result.value(Metric.PERPLEXITY) is None and "perplexity cannot be measured" in result.labels_note


def test_inferred_for_next_token_logits_over_integer_tokens():
    assert infer_task(lm_info()).kind == TaskKind.LANGUAGE_MODEL
    # A token tagger (few classes per position) stays a sequence task; float inputs are not tokens.
    assert infer_task(lm_info(vocab=9)).kind == TaskKind.SEQUENCE
    floats = info([("x", ("batch", 8), "float32")], [("logits", ("batch", 8, 128))])
    assert infer_task(floats).kind == TaskKind.SEQUENCE


def test_a_model_without_a_vocabulary_sized_output_is_refused_in_one_line():
    classifier = info([("tokens", ("batch", 8), "int64")], [("logits", ("batch", 10))])
    with pytest.raises(ConfigError, match=r"^task language_model needs next-token logits \[N, T, vocab\].*rank 2"):
        check_task(LM, classifier)
    with pytest.raises(ConfigError, match="vocabulary-sized last axis"):
        check_task(LM, info([("tokens", ("batch", 8), "int64")], [("logits", ("batch", 8, 1))]))


def test_token_ids_out_of_range_are_refused_in_one_line():
    with pytest.raises(DataError, match=r"input 'tokens' holds token id 300, outside the vocabulary of output "
                                        r"'logits' \(128 tokens: 0 to 127\)"):
        check_tokens(LM, lm_info(), {"tokens": np.array([[1, 300]])})
    with pytest.raises(DataError, match="token id -1"):
        check_tokens(LM, lm_info(), {"tokens": np.array([[-1, 3]])})
    check_tokens(LM, lm_info(), {"tokens": np.array([[0, 127]])})   # the whole vocabulary is fine


def test_labels_beyond_the_vocabulary_are_refused():
    with pytest.raises(DataError, match="the labels hold token 200, but output 'output' has a vocabulary of 128"):
        score(np.zeros((1, 2, 128)), np.zeros((1, 2, 128)), np.array([[1, 200]]), LM)


def test_data_with_a_context_longer_than_the_models_is_refused_in_one_line(tmp_path):
    path = tmp_path / "long.npz"
    np.savez(path, tokens=np.zeros((3, 16), dtype=np.int64))
    with pytest.raises(DataError, match=r"^input 'tokens' holds windows of 16 tokens, longer than the model's "
                                        r"context of 8: cut them to 8 tokens$"):
        load_npz(path, lm_info(context=8))


def test_the_npz_takes_per_position_next_token_labels(tmp_path):
    path = tmp_path / "lm.npz"
    tokens = np.arange(24, dtype=np.int64).reshape(3, 8)
    np.savez(path, tokens=tokens, labels=next_token_labels(tokens))
    data = load_npz(path, lm_info())
    assert data.labels.shape == (3, 8) and data.labels[0, -1] == -1

"""Error metrics: exact values on tiny vectors, and the degenerate cases named."""
import math

import numpy as np
import pytest

from quant_core.errors import QuantLabError
from quant_core.numerics.metrics import (
    FixedReference,
    _cosine_of_norms,
    clipped_fraction,
    cosine_similarity,
    kl_divergence,
    max_abs_error,
    mse,
    ratio_db,
    sqnr_db,
    top1_agreement,
)

REFERENCE = [1.0, -2.0, 3.0, 0.0]
QUANTIZED = [1.0, -1.5, 2.0, 0.5]  # errors 0, -0.5, 1, -0.5


def test_mse_is_the_mean_squared_error():
    assert mse(REFERENCE, QUANTIZED) == (0 + 0.25 + 1 + 0.25) / 4


def test_max_abs_error_is_the_largest_deviation():
    assert max_abs_error(REFERENCE, QUANTIZED) == 1.0


def test_sqnr_is_signal_power_over_noise_power_in_db():
    # signal 1 + 4 + 9 + 0 = 14, noise 1.5: 10 log10(14 / 1.5)
    assert sqnr_db(REFERENCE, QUANTIZED) == pytest.approx(10 * math.log10(14 / 1.5), abs=1e-12)
    assert sqnr_db([10.0], [9.0]) == pytest.approx(20.0)  # 100 / 1


def test_sqnr_of_an_exact_copy_is_plus_infinity():
    assert sqnr_db(REFERENCE, REFERENCE) == math.inf


def test_ratio_db_degenerate_cases():
    assert ratio_db(0.0, 0.0) == math.inf      # zero reproduced exactly
    assert ratio_db(0.0, 2.0) == -math.inf     # nothing but noise
    assert ratio_db(100.0, 1.0) == 20.0


def test_cosine_similarity_of_tiny_vectors():
    assert cosine_similarity([1.0, 0.0], [0.0, 1.0]) == 0.0
    assert cosine_similarity([1.0, 2.0], [2.0, 4.0]) == pytest.approx(1.0)
    assert cosine_similarity([1.0, 2.0], [-1.0, -2.0]) == pytest.approx(-1.0)
    assert cosine_similarity([[3.0, 0.0]], [[3.0, 4.0]]) == pytest.approx(3 / 5)  # flattened


def test_cosine_of_zero_vectors():
    assert cosine_similarity([0.0, 0.0], [0.0, 0.0]) == 1.0  # identical
    assert cosine_similarity([0.0, 0.0], [1.0, 0.0]) == 0.0  # no common direction
    assert _cosine_of_norms(0.0, 0.0, 0.0) == 1.0
    assert _cosine_of_norms(0.0, 1.0, 0.0) == 0.0


def test_clipped_fraction_counts_values_strictly_outside_the_range():
    assert clipped_fraction([-2.0, -1.0, 0.0, 1.0, 2.0], -1.0, 1.0) == 2 / 5
    assert clipped_fraction([[-2.0, 0.5], [3.0, 0.5]], np.array([[-3.0], [0.0]]), np.array([[1.0], [1.0]])) == 1 / 4


def test_clipped_fraction_refuses_an_inverted_range():
    with pytest.raises(QuantLabError, match="lo must be <= hi"):
        clipped_fraction([1.0], 2.0, 1.0)


def test_top1_agreement_compares_argmax_per_sample():
    a = [[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]
    b = [[0.0, 5.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 9.0], [2.0, 1.0, 0.0]]
    assert top1_agreement(a, b) == 3 / 4


def test_kl_of_identical_distributions_is_zero():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert kl_divergence(logits, logits) == pytest.approx(0.0, abs=1e-15)
    assert kl_divergence(logits, logits + 7.0) == pytest.approx(0.0, abs=1e-12)  # softmax is shift-invariant


def test_kl_of_probabilities_exact_value():
    # KL([1/2, 1/2] || [1/4, 3/4]) = 1/2 ln 2 + 1/2 ln(2/3)
    expected = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert kl_divergence([[0.5, 0.5]], [[0.25, 0.75]], from_logits=False) == pytest.approx(expected, abs=1e-15)
    # Rows are normalised first, and the mean is over samples.
    assert kl_divergence([[1, 1], [2, 2]], [[1, 3], [1, 3]], from_logits=False) == pytest.approx(expected)


def test_kl_from_logits_applies_softmax_over_the_last_axis():
    p, q = np.log([[0.5, 0.5]]), np.log([[0.25, 0.75]])
    assert kl_divergence(p, q) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-12)


def test_kl_zero_probabilities():
    assert kl_divergence([[1.0, 0.0]], [[0.5, 0.5]], from_logits=False) == pytest.approx(math.log(2))
    assert kl_divergence([[0.5, 0.5]], [[1.0, 0.0]], from_logits=False) == math.inf


def test_kl_refuses_negative_or_all_zero_probabilities():
    with pytest.raises(QuantLabError, match="negative entries; pass from_logits=True"):
        kl_divergence([[-1.0, 2.0]], [[0.5, 0.5]], from_logits=False)
    with pytest.raises(QuantLabError, match="row of all zeros"):
        kl_divergence([[0.5, 0.5]], [[0.0, 0.0]], from_logits=False)


@pytest.mark.parametrize("metric", [mse, max_abs_error, sqnr_db, cosine_similarity, top1_agreement, kl_divergence])
def test_metrics_refuse_arrays_of_different_shapes(metric):
    with pytest.raises(QuantLabError, match=r"shape \(2, 2\) but .* shape \(2, 3\)"):
        metric(np.zeros((2, 2)), np.zeros((2, 3)))


@pytest.mark.parametrize("metric", [mse, max_abs_error, sqnr_db, cosine_similarity])
def test_metrics_refuse_empty_arrays(metric):
    with pytest.raises(QuantLabError, match="empty"):
        metric([], [])


def test_metrics_refuse_non_numeric_input():
    with pytest.raises(QuantLabError, match="numeric"):
        mse(["a"], ["b"])


def test_a_fixed_reference_scores_candidates_exactly_as_the_functions_do():
    rng = np.random.default_rng(3)
    reference = rng.standard_normal((97, 10)).astype(np.float32)
    fixed = FixedReference(reference)
    for noise in (0.0, 1e-4, 0.3):
        candidate = (reference + noise * rng.standard_normal(reference.shape)).astype(np.float32)
        assert fixed.sqnr_db(candidate) == sqnr_db(reference, candidate)
        assert fixed.cosine(candidate) == cosine_similarity(reference, candidate)
        assert fixed.sqnr_db_and_cosine(candidate) == (sqnr_db(reference, candidate),
                                                       cosine_similarity(reference, candidate))


def test_a_float64_fixed_reference_scores_exactly_and_is_left_as_it_was():
    rng = np.random.default_rng(4)
    reference = rng.standard_normal((31, 7))
    kept = reference.copy()
    fixed = FixedReference(reference)
    candidate = reference + 1e-3 * rng.standard_normal(reference.shape)
    for _ in range(2):
        assert fixed.sqnr_db(candidate) == sqnr_db(kept, candidate)
        assert fixed.cosine(candidate) == cosine_similarity(kept, candidate)
        assert fixed.sqnr_db_and_cosine(candidate) == (sqnr_db(kept, candidate), cosine_similarity(kept, candidate))
    assert np.array_equal(reference, kept)


def test_a_fixed_reference_refuses_a_candidate_of_another_shape():
    with pytest.raises(QuantLabError, match="shape"):
        FixedReference(np.ones((4, 10))).sqnr_db(np.ones((4, 9)))


def test_sums_over_many_blocks_equal_the_whole_array_float64_sums(monkeypatch):
    """Reductions run block by block (metrics.SUM_BLOCK values at a time); on arrays of many blocks they give
    the whole-array float64 formulas to rounding, and FixedReference still equals the functions bit for bit."""
    import quant_core.numerics.metrics as metrics
    monkeypatch.setattr(metrics, "SUM_BLOCK", 1000)
    rng = np.random.default_rng(5)
    reference = rng.standard_normal((37, 11, 29)).astype(np.float32)        # 11,803 values: 12 blocks
    candidate = (reference + 0.05 * rng.standard_normal(reference.shape)).astype(np.float32)
    a, b = reference.astype(np.float64), candidate.astype(np.float64)
    assert sqnr_db(reference, candidate) == pytest.approx(
        10 * np.log10(np.sum(a * a) / np.sum((a - b) ** 2)), rel=1e-12)
    assert cosine_similarity(reference, candidate) == pytest.approx(
        np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)), rel=1e-12)
    assert mse(reference, candidate) == pytest.approx(np.mean((a - b) ** 2), rel=1e-12)
    fixed = FixedReference(reference)
    assert fixed.sqnr_db_and_cosine(candidate) == (sqnr_db(reference, candidate),
                                                   cosine_similarity(reference, candidate))


def test_scoring_a_large_output_holds_no_float64_copy_of_it():
    """Comparing two 64 MB float32 outputs allocates at most a few blocks of float64, not 128 MB copies."""
    import tracemalloc
    reference = np.ones(16 * 2**20, dtype=np.float32)
    candidate = reference * np.float32(1.001)
    fixed = FixedReference(reference)
    tracemalloc.start()
    try:
        fixed.sqnr_db_and_cosine(candidate)
        sqnr_db(reference, candidate)
        cosine_similarity(reference, candidate)
        top1_agreement(reference.reshape(-1, 64), candidate.reshape(-1, 64))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * 2**20  # argmax's int64 positions (16 MiB) and two float64 blocks (16 MiB)

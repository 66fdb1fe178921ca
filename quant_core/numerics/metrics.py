"""Error metrics between a reference and its quantized version (nouns, numpy in, float out).

All metrics compute in float64 and validate once: the two arrays must have the same shape and
at least one element, else QuantLabError naming the arguments. Degenerate inputs (all-zero
signals, zero noise) have named helpers that say what they return and why.
"""
from __future__ import annotations

import numpy as np

from quant_core.errors import QuantLabError


def _pair(reference, other, names: tuple[str, str] = ("reference", "quantized")) -> tuple[np.ndarray, np.ndarray]:
    """Return both arrays as float64 after checking they have one shape and are not empty."""
    try:
        a, b = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise QuantLabError(f"metrics need numeric arrays: {err}") from None
    return _checked(a, b, names)


def _numeric_pair(reference, other, names: tuple[str, str] = ("reference", "quantized")
                  ) -> tuple[np.ndarray, np.ndarray]:
    """`_pair` without the float64 copies: numeric arrays are returned as they are (the blocked sums below
    convert one block at a time)."""
    a, b = np.asarray(reference), np.asarray(other)
    if not all(np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_ for x in (a, b)):
        return _pair(a, b, names)  # converts what it can, or says why it cannot
    return _checked(a, b, names)


def _checked(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise QuantLabError(f"{names[0]} has shape {a.shape} but {names[1]} has shape {b.shape}; "
                            "metrics compare arrays of the same shape")
    if a.size == 0:
        raise QuantLabError(f"{names[0]} and {names[1]} are empty; metrics need at least one value")
    return a, b


# Sums over whole outputs run block by block, each block's values converted to float64 and summed, the
# blocks' sums added in order: the float64 temporaries stay one block's (8 MiB) whatever the arrays' size.
# A text recogniser's logits over 256 samples are 270 MB of float32; whole float64 copies of the reference
# and a candidate made 1 GB at once. Every sum below (and FixedReference's) is computed this one way, so
# they equal each other bit for bit.
SUM_BLOCK = 1 << 20


def _blocks(*arrays: np.ndarray):
    """Yield aligned float64 blocks of the flattened arrays (all of one size)."""
    flat = [np.asarray(array).reshape(-1) for array in arrays]
    for start in range(0, flat[0].size, SUM_BLOCK):
        yield tuple(part[start:start + SUM_BLOCK].astype(np.float64) for part in flat)


def _power(a: np.ndarray) -> float:
    """sum(a^2), block by block."""
    return sum((float(np.sum(np.square(x, out=x))) for (x,) in _blocks(a)), 0.0)


def _noise_dot_power(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(sum (a - b)^2, sum a b, sum b^2), block by block."""
    noise = dot = power = 0.0
    with np.errstate(invalid="ignore"):  # inf - inf (outputs that overflowed in both): NaN, as numpy gives it
        for x, y in _blocks(a, b):
            dot += float(x @ y)
            power += float(y @ y)
            difference = np.subtract(x, y, out=x)
            noise += float(np.sum(np.square(difference, out=difference)))
    return noise, dot, power


def _sum_of_squares(a: np.ndarray) -> float:
    """sum a a as the dot product `_noise_dot_power` uses (a norm: numpy's own is sqrt(a . a) too)."""
    return sum((float(x @ x) for (x,) in _blocks(a)), 0.0)


def mse(reference, quantized) -> float:
    """Return the mean squared error mean((reference - quantized)^2)."""
    a, b = _numeric_pair(reference, quantized)
    return _noise_dot_power(a, b)[0] / a.size


def max_abs_error(reference, quantized) -> float:
    """Return max |reference - quantized|."""
    a, b = _numeric_pair(reference, quantized)
    return max(float(np.max(np.abs(np.subtract(x, y, out=x)))) for x, y in _blocks(a, b))


def ratio_db(signal_power: float, noise_power: float) -> float:
    """Return 10 log10(signal / noise) in dB.

    Notes
    -----
    noise == 0: +inf (an exact reconstruction, even of an all-zero signal).
    signal == 0 < noise: -inf (all of what comes out is noise).
    """
    if noise_power == 0.0:
        return float("inf")
    if signal_power == 0.0:
        return float("-inf")
    return float(10.0 * np.log10(signal_power / noise_power))


def sqnr_db(reference, quantized) -> float:
    """Return the signal-to-quantization-noise ratio 10 log10(sum x^2 / sum (x - x')^2) in dB.

    Notes
    -----
    +inf when quantized == reference exactly; -inf when the reference is all zeros but the
    quantized values are not (see `ratio_db`).
    """
    a, b = _numeric_pair(reference, quantized)
    return ratio_db(_power(a), _noise_dot_power(a, b)[0])


class FixedReference:
    """One reference compared with many candidates (every config against the FP32 outputs).

    Its power and norm are computed once; `sqnr_db` and `cosine` then equal the functions of the same
    names bit for bit (the same blocked sums), at the cost of the candidate alone. The reference is kept
    as given (no float64 copy: the Evaluator's FP32 outputs themselves).
    """

    def __init__(self, reference):
        x = np.asarray(reference)
        if x.size == 0:
            raise QuantLabError("the reference is empty; metrics need at least one value")
        self.shape, self._x = x.shape, x
        self.power = _power(x)
        self.norm = float(np.sqrt(_sum_of_squares(x)))

    def _candidate(self, other) -> np.ndarray:
        return _numeric_pair(self._x, other)[1]

    def sqnr_db(self, other) -> float:
        return self.sqnr_db_and_cosine(other)[0]

    def cosine(self, other) -> float:
        return self.sqnr_db_and_cosine(other)[1]

    def sqnr_db_and_cosine(self, other) -> tuple[float, float]:
        """(`sqnr_db(other)`, `cosine(other)`) from one blocked pass over both arrays."""
        noise, dot, power = _noise_dot_power(self._x, self._candidate(other))
        return ratio_db(self.power, noise), _cosine_of_norms(dot, self.norm, float(np.sqrt(power)))


def _cosine_of_norms(dot: float, norm_a: float, norm_b: float) -> float:
    """Return dot / (|a| |b|), clipped to [-1, 1].

    Notes
    -----
    Both vectors zero: 1.0 (they are identical). Exactly one zero: 0.0 (no direction in common).
    """
    if norm_a == 0.0 and norm_b == 0.0:
        return 1.0
    if norm_a == 0.0 or norm_b == 0.0:
        return 0.0
    return float(np.clip(dot / (norm_a * norm_b), -1.0, 1.0))


def cosine_similarity(reference, quantized) -> float:
    """Return sum(a b) / (|a| |b|) over all elements (flattened); see `_cosine_of_norms` for zeros."""
    a, b = _numeric_pair(reference, quantized)
    _, dot, power = _noise_dot_power(a, b)
    return _cosine_of_norms(dot, float(np.sqrt(_sum_of_squares(a))), float(np.sqrt(power)))


def clipped_fraction(x, lo, hi) -> float:
    """Return the fraction of x outside [lo, hi] (lo, hi scalars or arrays broadcasting against x)."""
    try:
        x = np.asarray(x, dtype=np.float64)
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise QuantLabError(f"clipped_fraction needs numeric x, lo and hi: {err}") from None
    if x.size == 0:
        raise QuantLabError("x is empty; clipped_fraction needs at least one value")
    if np.any(lo > hi):
        raise QuantLabError("lo must be <= hi for every entry of the range")
    try:
        outside = (x < lo) | (x > hi)
    except ValueError:
        raise QuantLabError(f"lo/hi of shape {lo.shape}/{hi.shape} do not broadcast against x of shape "
                            f"{x.shape}") from None
    if outside.shape != x.shape:
        raise QuantLabError(f"lo/hi of shape {lo.shape}/{hi.shape} do not broadcast against x of shape {x.shape}")
    return float(np.mean(outside))


def _rows(logits_a, logits_b, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = _pair(logits_a, logits_b, names)
    if a.ndim == 0:
        raise QuantLabError(f"{names[0]} and {names[1]} must have a class axis (last axis), got scalars")
    return a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])


def top1_agreement(logits_a, logits_b, *, axis: int = -1) -> float:
    """Return the fraction of positions whose argmax along the class `axis` is the same in both.

    A position is one index of every other axis: a [N, C] output has N positions (one per sample),
    a [N, T, C] output N * T (one per sample and time step), a channels-first [N, C, H, W] head
    with axis=1 has N * H * W. Works on logits or probabilities alike (argmax is the same); ties go
    to the first class.
    """
    # argmax of the values as given: float64 would order float32 values the same (exact, monotonic)
    a, b = _numeric_pair(logits_a, logits_b, ("logits_a", "logits_b"))
    if a.ndim == 0:
        raise QuantLabError("logits_a and logits_b must have a class axis, got scalars")
    if not -a.ndim <= axis < a.ndim:
        raise QuantLabError(f"class axis {axis} is out of range for arrays of shape {a.shape}")
    return float(np.mean(np.argmax(a, axis=axis) == np.argmax(b, axis=axis)))


def edit_distance(reference, hypothesis) -> int:
    """Return the Levenshtein distance: the fewest insertions, deletions and substitutions from one
    token sequence to the other."""
    previous = list(range(len(hypothesis) + 1))
    for i, token in enumerate(reference, start=1):
        current = [i]
        for j, other in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (token != other)))
        previous = current
    return previous[-1]


def token_error_rate(references, hypotheses) -> float:
    """Return sum(edit_distance(r, h)) / sum(len(r)) over paired sequences: the character (or token)
    error rate, CER.

    Notes
    -----
    Can exceed 1 (insertions). References all empty: 0.0 when every hypothesis is empty too, else +inf.
    """
    references, hypotheses = list(references), list(hypotheses)
    if len(references) != len(hypotheses):
        raise QuantLabError(f"{len(references)} reference sequences but {len(hypotheses)} hypotheses")
    # Most decodes of a good quantization equal FP32's: those skip the O(len^2) distance.
    errors = sum(0 if tuple(r) == tuple(h) else edit_distance(r, h) for r, h in zip(references, hypotheses))
    length = sum(len(r) for r in references)
    if length == 0:
        return 0.0 if errors == 0 else float("inf")
    return errors / length


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0.0, 1.0, norms)


def nearest_neighbours(queries, gallery, k: int, *, chunk: int = 1024) -> np.ndarray:
    """Return, per query row, the indices of its `k` nearest gallery rows by cosine similarity
    (an [n_queries, k] array, nearest first).

    Notes
    -----
    Among the chosen k, equal similarities go to the lower index; which of several rows tied at the
    k-th place is chosen is left to numpy's argpartition (deterministic for equal inputs).
    """
    q, g = _unit_rows(np.asarray(queries, dtype=np.float64)), _unit_rows(np.asarray(gallery, dtype=np.float64))
    if not 1 <= k <= len(g):
        raise QuantLabError(f"k must be between 1 and the gallery size {len(g)}, got {k}")
    found = []
    for start in range(0, len(q), chunk):  # bounded memory: chunk x gallery similarities at a time
        similarity = q[start:start + chunk] @ g.T
        # The k largest in O(gallery) per row, then only those k sorted (a full sort is O(gallery log gallery)).
        chosen = (np.argpartition(-similarity, k - 1, axis=1)[:, :k] if k < len(g)
                  else np.broadcast_to(np.arange(len(g)), similarity.shape))
        values = np.take_along_axis(similarity, chosen, axis=1)
        order = np.lexsort((chosen, -values), axis=1)
        found.append(np.take_along_axis(chosen, order, axis=1))
    return np.concatenate(found)


def recall_at_k(reference, quantized, k: int, *, reference_neighbours: np.ndarray | None = None) -> float:
    """Return the nearest-neighbour recall@k of quantized embeddings against the FP32 ones.

    Both are [N, D]. The gallery is the reference set; for sample i, A = the k nearest gallery rows
    of reference[i] (itself included) and B = those of quantized[i]:
        recall@k = mean over i of |A ∩ B| / k
    1.0 when every quantized embedding retrieves the same k neighbours as its FP32 embedding.
    `reference_neighbours` (from `nearest_neighbours(reference, reference, k)`) saves recomputing A.
    """
    a, b = _pair(reference, quantized)
    if a.ndim != 2:
        raise QuantLabError(f"recall@k needs one embedding per row ([N, D]), got shape {a.shape}")
    expected = nearest_neighbours(a, a, k) if reference_neighbours is None else reference_neighbours
    retrieved = nearest_neighbours(b, a, k)
    hits = (expected[:, :, None] == retrieved[:, None, :]).any(axis=2).sum()
    return float(hits / (k * len(a)))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))


def _log_probabilities(probabilities: np.ndarray, name: str) -> np.ndarray:
    """Return log(p / sum p) per row; zeros give -inf. Rows must be non-negative with a positive sum."""
    if np.any(probabilities < 0):
        raise QuantLabError(f"{name} has negative entries; pass from_logits=True for logits")
    totals = probabilities.sum(axis=1, keepdims=True)
    if np.any(totals == 0):
        raise QuantLabError(f"{name} has a row of all zeros, which is no probability distribution")
    with np.errstate(divide="ignore"):
        return np.log(probabilities / totals)


def kl_divergence(p, q, *, from_logits: bool = True) -> float:
    """Return KL(P || Q) in nats between output distributions, averaged over samples.

    P = softmax(p) and Q = softmax(q) over the last axis when from_logits (the default: model
    outputs are logits); otherwise p and q are probabilities (each row normalised to sum 1).
        KL = mean over rows of sum_c P_c (log P_c - log Q_c)

    Notes
    -----
    Terms with P_c = 0 contribute 0; P_c > 0 with Q_c = 0 gives +inf (probabilities only:
    a softmax is never exactly 0 in log space).
    """
    a, b = _rows(p, q, ("p", "q"))
    if from_logits:
        log_p, log_q = _log_softmax(a), _log_softmax(b)
    else:
        log_p, log_q = _log_probabilities(a, "p"), _log_probabilities(b, "q")
    prob_p = np.exp(log_p)
    with np.errstate(invalid="ignore"):
        terms = np.where(prob_p > 0, prob_p * (log_p - log_q), 0.0)
    return float(np.mean(np.sum(terms, axis=1)))


def next_token_labels(tokens) -> np.ndarray:
    """Return the labels of next-token logits over `tokens` [N, T]: tokens shifted left by one, the last
    position -1 (its next token is not in the window, so it is not scored)."""
    tokens = np.asarray(tokens)
    labels = np.full(tokens.shape, -1, dtype=np.int64)
    labels[:, :-1] = tokens[:, 1:]
    return labels


def mean_cross_entropy(logits, labels) -> float:
    """Return the mean over scored positions of -log softmax(logits)[label], in nats.

    logits [..., V] (vocabulary last) and integer labels [...] (the other axes); a negative label is
    not scored (`next_token_labels` marks the last position so).
        CE = mean over positions with label >= 0 of (logsumexp(logits) - logits[label])
    """
    x = np.asarray(logits)
    labels = np.asarray(labels).reshape(-1)
    rows = x.reshape(-1, x.shape[-1])
    if rows.shape[0] != labels.shape[0]:
        raise QuantLabError(f"labels of shape {np.shape(labels)} do not give one label per position of "
                            f"logits of shape {x.shape}")
    scored = labels >= 0
    if not scored.any():
        raise QuantLabError("no position has a label (all are negative): cross-entropy needs at least one")
    positions, labels = np.flatnonzero(scored), labels[scored]
    if labels.max() >= rows.shape[1]:
        raise QuantLabError(f"label {int(labels.max())} is out of range for a vocabulary of {rows.shape[1]}")
    # Rows in blocks of about SUM_BLOCK values: float64 temporaries of one block, not of every position.
    step = max(1, SUM_BLOCK // rows.shape[1])
    total = 0.0
    for start in range(0, len(positions), step):
        block = rows[positions[start:start + step]].astype(np.float64)
        top = block.max(axis=1)
        log_sum = top + np.log(np.exp(block - top[:, None]).sum(axis=1))
        total += float(np.sum(log_sum - block[np.arange(len(block)), labels[start:start + step]]))
    return total / len(positions)


def perplexity(logits, labels) -> float:
    """Return exp(mean cross-entropy) of next-token `logits` [..., V] against `labels` (negative: not scored)."""
    return float(np.exp(mean_cross_entropy(logits, labels)))

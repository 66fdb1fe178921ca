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
    if a.shape != b.shape:
        raise QuantLabError(f"{names[0]} has shape {a.shape} but {names[1]} has shape {b.shape}; "
                            "metrics compare arrays of the same shape")
    if a.size == 0:
        raise QuantLabError(f"{names[0]} and {names[1]} are empty; metrics need at least one value")
    return a, b


def mse(reference, quantized) -> float:
    """Return the mean squared error mean((reference - quantized)^2)."""
    a, b = _pair(reference, quantized)
    return float(np.mean(np.square(a - b)))


def max_abs_error(reference, quantized) -> float:
    """Return max |reference - quantized|."""
    a, b = _pair(reference, quantized)
    return float(np.max(np.abs(a - b)))


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
    a, b = _pair(reference, quantized)
    return ratio_db(float(np.sum(np.square(a))), float(np.sum(np.square(a - b))))


class FixedReference:
    """One reference compared with many candidates (every config against the FP32 outputs).

    Its float64 copy, power and norm are computed once; `sqnr_db` and `cosine` then equal the
    functions of the same names bit for bit, at the cost of the candidate alone.
    """

    def __init__(self, reference):
        x = np.asarray(reference)
        if x.size == 0:
            raise QuantLabError("the reference is empty; metrics need at least one value")
        # The reference is kept as given (float32 outputs: half the bytes of its float64 copy, which each
        # comparison makes again): the numbers are the same, the memory held is the reference's own.
        self.shape, self._x = x.shape, x
        a = self._reference()
        self.norm = float(np.linalg.norm(a))
        self.power = float(np.sum(np.square(a, out=None if np.shares_memory(a, self._x) else a)))

    def _reference(self) -> np.ndarray:
        return np.asarray(self._x, dtype=np.float64).reshape(-1)

    def _candidate(self, other) -> np.ndarray:
        b = np.asarray(other, dtype=np.float64)
        if b.shape != self.shape:
            raise QuantLabError(f"reference has shape {self.shape} but quantized has shape {b.shape}; "
                                "metrics compare arrays of the same shape")
        return b.reshape(-1)

    def sqnr_db(self, other) -> float:
        b = self._candidate(other)
        a = self._reference()
        # sum((a - b)^2) in place in a's float64 copy when it is one: the same operations, fewer temporaries.
        noise = np.subtract(a, b, out=None if np.shares_memory(a, self._x) else a)
        return ratio_db(self.power, float(np.sum(np.square(noise, out=noise))))

    def cosine(self, other) -> float:
        b = self._candidate(other)
        return _cosine_of_norms(float(self._reference() @ b), self.norm, float(np.linalg.norm(b)))

    def sqnr_db_and_cosine(self, other) -> tuple[float, float]:
        """(`sqnr_db(other)`, `cosine(other)`), the same numbers, with one float64 copy of each array."""
        b = self._candidate(other)
        a = self._reference()
        owned = not np.shares_memory(a, self._x)
        cosine = _cosine_of_norms(float(a @ b), self.norm, float(np.linalg.norm(b)))
        noise = np.subtract(a, b, out=a if owned else None)
        return ratio_db(self.power, float(np.sum(np.square(noise, out=noise)))), cosine


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
    a, b = _pair(reference, quantized)
    a, b = a.reshape(-1), b.reshape(-1)
    return _cosine_of_norms(float(a @ b), float(np.linalg.norm(a)), float(np.linalg.norm(b)))


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
    a, b = _pair(logits_a, logits_b, ("logits_a", "logits_b"))
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
    rows, labels = rows[scored].astype(np.float64), labels[scored]
    if labels.max() >= rows.shape[1]:
        raise QuantLabError(f"label {int(labels.max())} is out of range for a vocabulary of {rows.shape[1]}")
    top = rows.max(axis=1)
    log_sum = top + np.log(np.exp(rows - top[:, None]).sum(axis=1))
    return float(np.mean(log_sum - rows[np.arange(len(labels)), labels]))


def perplexity(logits, labels) -> float:
    """Return exp(mean cross-entropy) of next-token `logits` [..., V] against `labels` (negative: not scored)."""
    return float(np.exp(mean_cross_entropy(logits, labels)))

"""Quantized embedding vectors for nearest-neighbour search: how much recall for how much memory.

A vector index stores one code per corpus vector and searches it with a float query (asymmetric
distance, as vector databases do). Formats (`parse_vector_format`):

| name | code per vector | search score |
|---|---|---|
| `fp32` | D float32 | q · x (the reference) |
| `int8`, `int4` (`intN`, N = 2..8) | D N-bit codes, per-dimension range | q · x', x' = lo + scale · code |
| `int8_global`, `int4_global` | same, one range for every dimension | q · x' |
| `binary` | D sign bits | −Hamming(sign q, sign x) |
| `binary_centered` | D sign bits of x − corpus mean | −Hamming, the query centred alike (for features that are all ≥ 0, e.g. after a ReLU) |
| `pqM` (product quantization) | M bytes: the vector cut into M sub-vectors, each the index of one of 256 k-means centroids | Σ_m q_m · c_m[code_m] |

Vectors are compared by cosine similarity: corpus and queries are L2-normalised once, then scored
by inner product. Recall@k = mean over queries of |exact top-k ∩ retrieved top-k| / k, where the
exact top-k comes from brute-force FP32 search. Rescoring re-ranks the `rescore × k` best candidates
of the quantized search with the FP32 vectors (kept on disk, read only for those candidates).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

import numpy as np

from quant_core.errors import DataError

DEFAULT_KS = (1, 10, 100)
DEFAULT_RESCORE = 4
PQ_CENTROIDS = 256  # 8-bit codes per sub-vector
KMEANS_ITERATIONS = 25
_CHUNK = 256  # queries scored at a time: bounded memory (chunk x corpus scores)


class VectorKind(StrEnum):
    FP32 = "fp32"
    SCALAR = "scalar"
    BINARY = "binary"
    PQ = "pq"


@dataclass(frozen=True)
class VectorFormat:
    """How a vector index stores each vector: `bits` per scalar code, `subspaces` for PQ."""

    kind: VectorKind
    bits: int = 32
    per_dimension: bool = True
    subspaces: int = 0
    centered: bool = False  # binary: signs of x - corpus mean

    @property
    def name(self) -> str:
        if self.kind == VectorKind.SCALAR:
            return f"int{self.bits}" + ("" if self.per_dimension else "_global")
        if self.kind == VectorKind.PQ:
            return f"pq{self.subspaces}"
        return self.kind.value + ("_centered" if self.centered else "")

    def __str__(self) -> str:
        return self.name

    def bytes_per_vector(self, dim: int) -> float:
        """Bytes of one stored code: D·bits/8 for scalar and binary codes, M for PQ, 4·D for FP32."""
        if self.kind == VectorKind.PQ:
            return float(self.subspaces)
        if self.kind == VectorKind.BINARY:
            return dim / 8
        return dim * self.bits / 8


_SCALAR = re.compile(r"^int([2-8])(_global)?$")
_PQ = re.compile(r"^pq(\d+)$")


def parse_vector_format(name: str) -> VectorFormat:
    """Parse "fp32", "int8", "int4_global", "binary" or "pq16" (16 sub-vectors of 8-bit codes)."""
    text = str(name).strip().lower()
    if text in ("fp32", "float32"):
        return VectorFormat(VectorKind.FP32)
    if text in ("binary", "binary_centered"):
        return VectorFormat(VectorKind.BINARY, bits=1, centered=text.endswith("_centered"))
    match = _SCALAR.match(text)
    if match:
        return VectorFormat(VectorKind.SCALAR, bits=int(match.group(1)), per_dimension=not match.group(2))
    match = _PQ.match(text)
    if match and int(match.group(1)) >= 1:
        return VectorFormat(VectorKind.PQ, bits=8, subspaces=int(match.group(1)))
    raise ValueError(f"unknown vector format {name!r}: expected fp32, int2..int8 (optionally _global), "
                     "binary, binary_centered or pqM (M sub-vectors, e.g. pq16)")


def parse_vector_formats(text: str | Iterable[str]) -> tuple[VectorFormat, ...]:
    """Parse a comma-separated list ("int8,int4,binary,pq16") or a sequence of names."""
    names = text.split(",") if isinstance(text, str) else list(text)
    formats = tuple(parse_vector_format(name) for name in names if str(name).strip())
    if not formats:
        raise ValueError("no vector format given: e.g. --formats int8,int4,binary,pq16")
    return formats


# -- encoded indices --------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class VectorIndex:
    """A corpus encoded in one format: the codes and what decoding them needs."""

    format: VectorFormat
    dim: int
    codes: np.ndarray  # [N, D] uint8 (scalar), [N, ceil(D/8)] uint8 (binary), [N, M] uint8 (PQ), [N, D] float32
    lo: np.ndarray | None = None  # scalar: [D] or [1] range start
    scale: np.ndarray | None = None  # scalar: [D] or [1] step
    codebooks: tuple[np.ndarray, ...] = ()  # PQ: M arrays [256, d_m]
    splits: tuple[int, ...] = ()  # PQ: sub-vector boundaries
    center: np.ndarray | None = None  # binary_centered: the corpus mean subtracted before the sign

    @property
    def overhead_bytes(self) -> int:
        """Bytes shared by the whole index: scalar ranges (float32 lo and scale) or PQ codebooks."""
        if self.lo is not None:
            return 4 * (self.lo.size + self.scale.size)
        if self.center is not None:
            return 4 * self.center.size
        return 4 * sum(book.size for book in self.codebooks)

    def decoded(self) -> np.ndarray:
        """The vectors the index stands for ([N, D] float32): x' = lo + scale · code, or the PQ centroids."""
        if self.format.kind == VectorKind.SCALAR:
            return (self.lo + self.scale * self.codes.astype(np.float32)).astype(np.float32)
        if self.format.kind == VectorKind.PQ:
            return np.concatenate([book[self.codes[:, m]] for m, book in enumerate(self.codebooks)], axis=1)
        if self.format.kind == VectorKind.BINARY:
            return np.where(np.unpackbits(self.codes, axis=1, count=self.dim).astype(bool), 1.0, -1.0).astype(np.float32)
        return self.codes

    @cached_property
    def _search_matrix(self) -> np.ndarray:
        """What a query is multiplied with, unpacked once per index: ±1 sign bits, or the decoded vectors."""
        if self.format.kind == VectorKind.BINARY:
            return np.unpackbits(self.codes, axis=1, count=self.dim).astype(np.float32) * 2 - 1
        return self.decoded()

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Similarity of each query to every stored vector ([n_queries, N], larger is nearer)."""
        q = np.asarray(queries, dtype=np.float32)
        if self.format.kind == VectorKind.BINARY:
            signs = np.where(q - (0 if self.center is None else self.center) >= 0, 1.0, -1.0).astype(np.float32)
            return signs @ self._search_matrix.T  # = D - 2 · Hamming: the same order as −Hamming
        if self.format.kind == VectorKind.PQ:
            # Asymmetric distance: one table per sub-vector of q · centroid, summed over the codes.
            total = np.zeros((len(q), len(self.codes)), dtype=np.float32)
            for m, book in enumerate(self.codebooks):
                table = q[:, self.splits[m]:self.splits[m + 1]] @ book.T  # [n_queries, 256]
                total += table[:, self.codes[:, m]]
            return total
        return q @ self._search_matrix.T


def encode(corpus: np.ndarray, fmt: VectorFormat, *, seed: int = 0) -> VectorIndex:
    """Encode unit-length `corpus` vectors [N, D] in `fmt` (ranges and codebooks fitted on the corpus)."""
    x = np.asarray(corpus, dtype=np.float32)
    n, dim = x.shape
    if fmt.kind == VectorKind.FP32:
        return VectorIndex(fmt, dim, x)
    if fmt.kind == VectorKind.BINARY:
        center = x.mean(axis=0).astype(np.float32) if fmt.centered else None
        return VectorIndex(fmt, dim, np.packbits(x - (0 if center is None else center) >= 0, axis=1), center=center)
    if fmt.kind == VectorKind.SCALAR:
        lo, scale = scalar_ranges(x, fmt.bits, per_dimension=fmt.per_dimension)
        qmax = 2**fmt.bits - 1
        codes = np.clip(np.rint((x - lo) / scale), 0, qmax).astype(np.uint8)
        return VectorIndex(fmt, dim, codes, lo=lo, scale=scale)
    if fmt.subspaces > dim:
        raise ValueError(f"pq{fmt.subspaces} needs at most {dim} sub-vectors for {dim}-dimensional vectors")
    splits = tuple(int(s) for s in np.linspace(0, dim, fmt.subspaces + 1).round().astype(int))
    rng = np.random.default_rng(seed)
    books, codes = [], np.empty((n, fmt.subspaces), dtype=np.uint8)
    for m in range(fmt.subspaces):
        part = x[:, splits[m]:splits[m + 1]]
        book, codes[:, m] = kmeans(part, min(PQ_CENTROIDS, n), rng=rng)
        books.append(book)
    return VectorIndex(fmt, dim, codes, codebooks=tuple(books), splits=splits)


def scalar_ranges(x: np.ndarray, bits: int, *, per_dimension: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return `(lo, scale)` of unsigned `bits`-bit codes over min..max, per dimension or global.

    scale = (max - min) / (2^bits - 1); a constant dimension gets scale 1 (its code is 0, exact).
    """
    axis = 0 if per_dimension else None
    lo = np.min(x, axis=axis, keepdims=True).reshape(-1).astype(np.float32)
    hi = np.max(x, axis=axis, keepdims=True).reshape(-1).astype(np.float32)
    scale = (hi - lo) / np.float32(2**bits - 1)
    return lo, np.where(scale > 0, scale, np.float32(1)).astype(np.float32)


def kmeans(x: np.ndarray, k: int, *, rng: np.random.Generator, iterations: int = KMEANS_ITERATIONS
           ) -> tuple[np.ndarray, np.ndarray]:
    """Return `(centroids [k, d], assignment [N])` by Lloyd's algorithm from k distinct random rows.

    Deterministic for a given `rng` state. An emptied cluster keeps its previous centroid.
    """
    centroids = x[rng.choice(len(x), size=k, replace=False)].astype(np.float32)
    assignment = np.zeros(len(x), dtype=np.int64)
    for step in range(iterations):
        # |x - c|² = |x|² - 2 x·c + |c|²; |x|² is the same for every c.
        distance = (centroids**2).sum(axis=1)[None, :] - 2 * x @ centroids.T
        new = np.argmin(distance, axis=1)
        if step and np.array_equal(new, assignment):
            break
        assignment = new
        counts = np.bincount(assignment, minlength=k)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assignment, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids, assignment.astype(np.uint8 if k <= 256 else np.int64)


# -- search and recall --------------------------------------------------------------------------------

def unit_rows(x: np.ndarray, *, name: str = "embeddings") -> np.ndarray:
    """Return float32 rows scaled to unit L2 norm (a zero row stays zero); NaN or Inf is refused."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{name}: need one vector per row ([N, D]), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{name}: contains NaN or Inf")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` largest scores per row, best first; equal scores go to the lower index."""
    k = min(k, scores.shape[1])
    chosen = (np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1]
              else np.broadcast_to(np.arange(scores.shape[1]), scores.shape))
    values = np.take_along_axis(scores, chosen, axis=1)
    order = np.lexsort((chosen, -values), axis=1)
    return np.take_along_axis(chosen, order, axis=1)


def exact_neighbours(corpus: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute-force FP32 search: the `k` corpus rows of largest inner product per query (float64 scores)."""
    c = np.asarray(corpus, dtype=np.float64)
    return np.concatenate([top_k(np.asarray(queries[s:s + _CHUNK], dtype=np.float64) @ c.T, k)
                           for s in range(0, len(queries), _CHUNK)])


def recall(truth: np.ndarray, retrieved: np.ndarray, k: int) -> float:
    """Recall@k = mean over queries of |truth[:, :k] ∩ retrieved[:, :k]| / k."""
    a, b = truth[:, :k], retrieved[:, :k]
    return float((a[:, :, None] == b[:, None, :]).any(axis=2).sum() / (k * len(a)))


@dataclass(frozen=True)
class VectorResult:
    """One vector format's recall and memory."""

    format: str
    dim: int
    bytes_per_vector: float
    overhead_bytes: int
    recall: tuple[tuple[int, float], ...]  # (k, recall@k)
    rescored_recall: tuple[tuple[int, float], ...]  # (k, recall@k after FP32 rescoring)
    rescore: int

    @property
    def compression(self) -> float:
        return 4 * self.dim / self.bytes_per_vector

    def recall_at(self, k: int, *, rescored: bool = False) -> float | None:
        return dict(self.rescored_recall if rescored else self.recall).get(k)

    def to_dict(self) -> dict:
        return {"format": self.format, "bytes_per_vector": self.bytes_per_vector,
                "overhead_bytes": self.overhead_bytes, "compression": self.compression,
                "recall": {str(k): v for k, v in self.recall},
                "rescored_recall": {str(k): v for k, v in self.rescored_recall}, "rescore": self.rescore}


@dataclass(frozen=True)
class VectorSearchReport:
    """Every format on one corpus and query set."""

    corpus_size: int
    query_count: int
    dim: int
    ks: tuple[int, ...]
    results: tuple[VectorResult, ...]

    def to_dict(self) -> dict:
        return {"corpus_size": self.corpus_size, "queries": self.query_count, "dim": self.dim,
                "ks": list(self.ks), "results": [r.to_dict() for r in self.results]}


def usable_ks(ks: Sequence[int], corpus_size: int) -> tuple[int, ...]:
    """The recall depths that fit the corpus (k ≤ N), sorted; refuses k < 1."""
    if any(k < 1 for k in ks):
        raise ValueError(f"recall depths must be at least 1, got {list(ks)}")
    return tuple(sorted({k for k in ks if k <= corpus_size}))


def search_formats(corpus, queries, formats: Sequence[VectorFormat | str], *, ks: Sequence[int] = DEFAULT_KS,
                   rescore: int = DEFAULT_RESCORE, truth: np.ndarray | None = None, seed: int = 0
                   ) -> VectorSearchReport:
    """Encode `corpus` in each format, search it with `queries`, and score recall@k against exact search.

    Both are normalised to unit rows first (cosine similarity). `truth` ([n_queries, ≥ max k]) replaces
    the exact neighbours of these vectors: the end-to-end table passes the FP32 model's neighbours, so a
    quantized model's embeddings are judged against what the FP32 model would retrieve.
    """
    corpus, queries = unit_rows(corpus, name="corpus"), unit_rows(queries, name="queries")
    if corpus.shape[1] != queries.shape[1]:
        raise DataError(f"queries have {queries.shape[1]} dimensions, the corpus {corpus.shape[1]}")
    if rescore < 1:
        raise ValueError(f"rescore must be at least 1 (1 = no extra candidates), got {rescore}")
    ks = usable_ks(ks, len(corpus))
    if not ks:
        raise DataError(f"the corpus has {len(corpus)} vectors: too few for recall@{min(DEFAULT_KS)}")
    deepest = ks[-1]
    if truth is None:
        truth = exact_neighbours(corpus, queries, deepest)
    results = []
    for fmt in formats:
        fmt = parse_vector_format(fmt) if isinstance(fmt, str) else fmt
        index = encode(corpus, fmt, seed=seed)
        candidates = np.concatenate([top_k(index.scores(queries[s:s + _CHUNK]), rescore * deepest)
                                     for s in range(0, len(queries), _CHUNK)])
        plain = tuple((k, recall(truth, candidates, k)) for k in ks)
        rescored = tuple((k, recall(truth, rerank(corpus, queries, candidates[:, :rescore * k]), k)) for k in ks)
        results.append(VectorResult(fmt.name, corpus.shape[1], fmt.bytes_per_vector(corpus.shape[1]),
                                    index.overhead_bytes, plain, rescored, rescore))
    return VectorSearchReport(len(corpus), len(queries), corpus.shape[1], ks, tuple(results))


def rerank(corpus: np.ndarray, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Re-order each query's candidate rows by their exact FP32 score (ties: lower corpus index)."""
    exact = np.einsum("qd,qcd->qc", queries.astype(np.float64), corpus[candidates].astype(np.float64))
    order = np.lexsort((candidates, -exact), axis=1)
    return np.take_along_axis(candidates, order, axis=1)


def split_queries(embeddings, *, queries: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hold out `queries` rows (seeded, at most a fifth of the rows) as queries: `(corpus, queries)`."""
    x = np.asarray(embeddings)
    count = query_count(len(x), queries)
    order = np.random.default_rng(seed).permutation(len(x))
    return x[np.sort(order[count:])], x[np.sort(order[:count])]


def query_count(rows: int, wanted: int) -> int:
    """How many of `rows` vectors become queries: `wanted`, at most a fifth, at least 1."""
    if rows < 2:
        raise DataError(f"need at least 2 vectors to hold out queries, got {rows}")
    return max(1, min(wanted, rows // 5))


def load_embeddings(source, *, key: str | None = None, name: str = "embeddings") -> np.ndarray:
    """Read one [N, D] float array from an .npz (no pickle): `key`, else "embeddings", else the only 2-D array."""
    with np.load(source, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    if key is not None:
        if key not in arrays:
            raise DataError(f"{name}: no array named {key!r} (has {', '.join(arrays) or 'none'})")
        return unit_rows(arrays[key], name=f"{name}[{key}]")
    if "embeddings" in arrays:
        return unit_rows(arrays["embeddings"], name=f"{name}[embeddings]")
    matrices = [k for k, v in arrays.items() if v.ndim == 2 and np.issubdtype(v.dtype, np.floating)]
    if len(matrices) != 1:
        raise DataError(f"{name}: expected an array named 'embeddings' or exactly one 2-D float array, found "
                        f"{', '.join(matrices) or 'none'}: pass --key")
    return unit_rows(arrays[matrices[0]], name=f"{name}[{matrices[0]}]")


# -- end to end: a quantized model's embeddings, then quantized vectors ---------------------------------

@dataclass(frozen=True)
class EndToEndRow:
    """Recall of (model config, vector format) against the FP32 model searched in FP32."""

    config: str
    result: VectorResult

    def to_dict(self) -> dict:
        return {"config": self.config, **self.result.to_dict()}


def end_to_end(embeddings_by_config: dict[str, np.ndarray], formats: Sequence[VectorFormat | str], *,
               reference: str = "FP32", ks: Sequence[int] = DEFAULT_KS, rescore: int = DEFAULT_RESCORE,
               queries: int = 100, seed: int = 0) -> tuple[EndToEndRow, ...]:
    """Both errors in one table: each config's embeddings ([N, D], the same N samples) indexed in each format.

    The same rows are queries for every config; truth = the `reference` config's exact neighbours, so
    the FP32-model / fp32-vector row is 1.0 and every other row shows what the model's quantization,
    the vectors' quantization, or both cost.
    """
    if reference not in embeddings_by_config:
        raise ValueError(f"the reference config {reference!r} is not among {', '.join(embeddings_by_config)}")
    ref_corpus, ref_queries = (unit_rows(a) for a in split_queries(embeddings_by_config[reference], queries=queries,
                                                                      seed=seed))
    ks = usable_ks(ks, len(ref_corpus))
    truth = exact_neighbours(ref_corpus, ref_queries, ks[-1])
    rows = []
    for config, embeddings in embeddings_by_config.items():
        corpus, held = split_queries(embeddings, queries=queries, seed=seed)
        report = search_formats(corpus, held, formats, ks=ks, rescore=rescore, truth=truth, seed=seed)
        rows += [EndToEndRow(config, result) for result in report.results]
    return tuple(rows)


def config_embeddings(evaluator, configs, *, output: int | None = None) -> dict[str, np.ndarray]:
    """Each config's embeddings on the Evaluator's split ({config name: [N, D]}): output `output`
    (default: the one the Evaluator's task scores)."""
    index = evaluator.output_index(evaluator.task) if output is None else output
    found = {}
    for config in configs:
        found[config.name] = np.asarray(evaluator.outputs(config)[index], dtype=np.float32).reshape(evaluator.sample_count, -1)
    return found


def features_model(model, tensor: str):
    """Return `model` cut at `tensor`: the nodes `tensor` needs, with `tensor` as the one output.

    For the pooled features of a classifier (e.g. the demo transformer's "/ReduceMean_output_0", its
    head's input), so its embeddings can be searched.
    """
    import onnx
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    known = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    if tensor not in known:
        raise ValueError(f"no tensor named {tensor!r} in the model")
    producers = {out: node for node in model.graph.node for out in node.output}
    needed, stack = set(), [tensor]
    while stack:
        name = stack.pop()
        node = producers.get(name)
        if node is None or id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(node.input)
    kept = [node for node in model.graph.node if id(node) in needed]
    used = {name for node in kept for name in node.input}
    graph = onnx.helper.make_graph(
        kept, model.graph.name + "_features",
        [value for value in model.graph.input if value.name in used],
        [known[tensor]],
        [init for init in model.graph.initializer if init.name in used])
    cut = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    onnx.checker.check_model(cut)
    return cut

"""Quantized embedding vectors: recall@k against a brute-force FP32 reference, bytes per vector, rescoring."""
import json

import numpy as np
import pytest

from quant_core.cli.main import main
from quant_core.errors import DataError
from quant_core.numerics.vectors import (encode, end_to_end, exact_neighbours, kmeans, parse_vector_format,
                                recall, search_formats, split_queries, top_k, unit_rows)


def _gaussian(n=600, dim=32, seed=0):
    return unit_rows(np.random.default_rng(seed).normal(size=(n, dim)))


@pytest.mark.parametrize("name, bytes_per_vector", [
    ("fp32", 1536), ("int8", 384), ("int8_global", 384), ("int4", 192), ("int2", 96), ("binary", 48),
    ("binary_centered", 48), ("pq16", 16), ("pq48", 48),
])
def test_bytes_per_vector_of_384_dimensions(name, bytes_per_vector):
    assert parse_vector_format(name).bytes_per_vector(384) == bytes_per_vector


@pytest.mark.parametrize("name", ["int9", "int1", "pq0", "float8", "binary2", ""])
def test_unknown_format_names_are_refused_with_the_list(name):
    with pytest.raises(ValueError, match="expected fp32, int2..int8"):
        parse_vector_format(name)


def test_exact_search_is_brute_force_sorting():
    corpus, queries = _gaussian(50, 8, 1), _gaussian(7, 8, 2)
    found = exact_neighbours(corpus, queries, 10)
    for q, row in zip(queries, found):
        similarity = corpus.astype(np.float64) @ q.astype(np.float64)
        assert list(row) == list(np.argsort(-similarity, kind="stable")[:10])


def test_top_k_breaks_ties_by_lower_index():
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]])
    assert top_k(scores, 3).tolist() == [[1, 2, 4]]
    assert top_k(scores, 9).tolist() == [[1, 2, 4, 3, 0]]  # k beyond the corpus: all rows


def test_recall_is_the_mean_overlap_of_the_top_k():
    truth = np.array([[0, 1, 2], [3, 4, 5]])
    retrieved = np.array([[0, 2, 9], [5, 3, 4]])
    assert recall(truth, retrieved, 1) == 0.5  # query 0 finds 0; query 1 finds 5, not 3
    assert recall(truth, retrieved, 3) == (2 + 3) / 6


def test_fp32_index_has_recall_one():
    corpus, queries = split_queries(_gaussian(), queries=50)
    report = search_formats(corpus, queries, ["fp32"], ks=(1, 10, 100))
    assert report.results[0].recall == ((1, 1.0), (10, 1.0), (100, 1.0))


def test_int8_per_dimension_codes_hit_each_dimension_min_and_max_and_err_at_most_half_a_step():
    x = _gaussian()
    index = encode(x, parse_vector_format("int8"))
    decoded = index.decoded()
    assert index.codes.min(axis=0).tolist() == [0] * 32 and index.codes.max(axis=0).tolist() == [255] * 32
    assert np.allclose(decoded.min(axis=0), x.min(axis=0), atol=1e-6)
    assert np.all(np.abs(decoded - x) <= index.scale / 2 + 1e-6)
    assert index.overhead_bytes == 4 * (32 + 32)  # lo and scale per dimension


def test_global_range_has_one_scale_and_a_coarser_grid():
    x = _gaussian()
    per_dim, glob = encode(x, parse_vector_format("int4")), encode(x, parse_vector_format("int4_global"))
    assert glob.scale.shape == (1,) and glob.overhead_bytes == 8
    assert np.all(glob.scale >= per_dim.scale.max() - 1e-7)


def test_binary_score_is_dimension_minus_twice_the_hamming_distance():
    corpus, queries = _gaussian(40, 16, 3), _gaussian(5, 16, 4)
    index = encode(corpus, parse_vector_format("binary"))
    assert index.codes.shape == (40, 2)  # 16 bits = 2 bytes per vector
    hamming = ((queries[:, None, :] >= 0) != (corpus[None, :, :] >= 0)).sum(axis=2)
    assert np.array_equal(index.scores(queries), 16 - 2 * hamming)


def test_binary_centered_helps_features_that_are_all_positive():
    x = np.abs(_gaussian(600, 32, 13))  # ReLU-like features: every sign bit of x is 1
    corpus, queries = split_queries(x, queries=100)
    report = search_formats(corpus, queries, ["binary", "binary_centered"], ks=(10,))
    plain, centered = (r.recall_at(10) for r in report.results)
    assert plain < 0.05 and centered > 0.2  # all-equal codes retrieve by index order only
    assert report.results[1].overhead_bytes == 4 * 32  # the corpus mean


def test_pq_asymmetric_scores_equal_the_inner_product_with_decoded_centroids():
    corpus, queries = _gaussian(400, 24, 5), _gaussian(6, 24, 6)
    index = encode(corpus, parse_vector_format("pq6"))
    assert index.codes.shape == (400, 6) and len(index.codebooks) == 6 and index.codebooks[0].shape == (256, 4)
    assert np.allclose(index.scores(queries), queries @ index.decoded().T, atol=1e-5)
    assert index.overhead_bytes == 4 * 256 * 24


def test_pq_with_as_many_centroids_as_vectors_is_exact():
    corpus, queries = _gaussian(200, 16, 7), _gaussian(20, 16, 8)  # 200 <= 256 centroids per sub-vector
    index = encode(corpus, parse_vector_format("pq4"))
    assert np.allclose(index.decoded(), corpus, atol=1e-6)
    assert search_formats(corpus, queries, ["pq4"], ks=(1, 10)).results[0].recall == ((1, 1.0), (10, 1.0))


def test_kmeans_is_deterministic_for_a_seed_and_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=np.float32)
    x = np.concatenate([c + rng.normal(scale=0.1, size=(50, 2)) for c in centres]).astype(np.float32)
    a = kmeans(x, 3, rng=np.random.default_rng(1))
    b = kmeans(x, 3, rng=np.random.default_rng(1))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    found = sorted(map(tuple, np.round(a[0]).astype(int).tolist()))
    assert found == [(0, 0), (0, 10), (10, 0)]


def test_recall_falls_with_bits_and_rescoring_recovers_it():
    corpus, queries = split_queries(_gaussian(1000, 32, 9), queries=100)
    report = search_formats(corpus, queries, ["int8", "int4", "int2", "binary"], ks=(1, 10), rescore=4)
    r10 = [r.recall_at(10) for r in report.results]
    assert r10 == sorted(r10, reverse=True) and r10[0] > 0.95 and r10[-1] < 0.6
    for result in report.results:
        assert result.recall_at(10, rescored=True) >= result.recall_at(10)
    full = search_formats(corpus, queries, ["binary"], ks=(1,), rescore=len(corpus))  # rescoring everything
    assert full.results[0].recall_at(1, rescored=True) == 1.0


def test_depths_beyond_the_corpus_are_left_out():
    corpus, queries = split_queries(_gaussian(60, 8), queries=10)
    assert search_formats(corpus, queries, ["int8"], ks=(1, 10, 100)).ks == (1, 10)


def test_split_holds_out_at_most_a_fifth_and_is_seeded():
    x = np.arange(50, dtype=np.float32)[:, None] * np.ones((1, 4), dtype=np.float32)
    corpus, queries = split_queries(x, queries=100)
    assert len(queries) == 10 and len(corpus) == 40
    assert not set(corpus[:, 0]) & set(queries[:, 0])
    assert np.array_equal(split_queries(x, queries=100)[1], queries)


def test_bad_embeddings_are_refused_by_name():
    with pytest.raises(DataError, match="corpus: need one vector per row"):
        search_formats(np.zeros(5), np.zeros((1, 5)), ["int8"])
    with pytest.raises(DataError, match="queries: contains NaN"):
        search_formats(np.ones((5, 2)), np.array([[np.nan, 1.0]]), ["int8"])


def test_end_to_end_reference_row_is_exact_and_a_noisy_model_loses_recall():
    x = _gaussian(500, 16, 10)
    noisy = x + np.random.default_rng(11).normal(scale=0.2, size=x.shape)
    rows = end_to_end({"FP32": x, "noisy": noisy}, ["fp32", "int4"], ks=(1, 10), queries=50)
    table = {(row.config, row.result.format): row.result.recall_at(10) for row in rows}
    assert table[("FP32", "fp32")] == 1.0
    assert table[("noisy", "fp32")] < 1.0
    assert table[("FP32", "int4")] < 1.0 and table[("noisy", "int4")] <= table[("noisy", "fp32")] + 0.02


def test_cli_json_and_text(tmp_path, capsys):
    path = tmp_path / "e.npz"
    np.savez(path, embeddings=_gaussian(300, 16, 12))
    assert main(["vectors", str(path), "--formats", "int8,binary,pq4", "--k", "1,10", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["corpus_size"] == 240 and document["queries"] == 60 and document["ks"] == [1, 10]
    assert [r["format"] for r in document["results"]] == ["int8", "binary", "pq4"]
    assert set(document["results"][0]) == {"format", "bytes_per_vector", "overhead_bytes", "compression", "recall",
                                           "rescored_recall", "rescore"}
    assert main(["vectors", str(path), "--formats", "int8"]) == 0
    assert "R@10 rescored" in capsys.readouterr().out
    assert main(["vectors", str(path), "--formats", "int9"]) == 2
    assert "unknown vector format 'int9'" in capsys.readouterr().err

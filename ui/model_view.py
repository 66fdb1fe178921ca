"""The Model page's content: what the model is, its layers, FP32 accuracy and size per format."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from quant_core.config import PRESETS, TensorQuant
from quant_core.model.demo import DEMO_MODELS
from quant_core.numerics.formats import FP16, INT4, INT8, Granularity
from quant_core.numerics.size import model_bytes
from ui.cache import get_evaluator
from ui import target_view
from ui.setup import LabContext

# What each page answers, for the guide; a page missing here is still linked, by its name.
PAGE_QUESTIONS = {
    "1_Weights.py": "What does a layer's weight distribution look like, and what does each range method and "
                    "bit-width do to it?",
    "2_Activations.py": "What ranges do the activations take on real data, and which tensors have outliers?",
    "3_Mixed_precision.py": "Choose a format per layer and see accuracy and size move.",
    "4_Sensitivity.py": "Which layers hurt most when quantized? Get a suggestion under a budget.",
    "5_Trade-offs.py": "Accuracy against measured latency and size, with real onnxruntime models.",
    "6_Learn.py": "Interactive lessons: scale and zero point, clipping, formats, QAT.",
}
APP_DIR = Path(__file__).resolve().parent.parent

# The formats of the size table: every quantizable weight in that format, everything else FP32.
SIZE_FORMATS = (
    ("FP32", None),
    ("FP16", TensorQuant(FP16)),
    ("INT8 per-channel", TensorQuant(INT8, granularity=Granularity.PER_CHANNEL)),
    ("INT4 per-channel", TensorQuant(INT4, granularity=Granularity.PER_CHANNEL)),
)


@dataclass(frozen=True)
class ModelSummary:
    """What the Model page shows, computed once per model (see `model_summary`)."""

    description: str
    producer: str
    facts: dict[str, str]
    notes: tuple[str, ...]
    inputs: pd.DataFrame
    outputs: pd.DataFrame
    layers: pd.DataFrame
    sizes: pd.DataFrame


def available_pages() -> list[tuple[str, str, str]]:
    """(path, label, question) of every page in the pages/ folder, in Streamlit's order."""
    pages = []
    for path in sorted((APP_DIR / "pages").glob("*.py"), key=lambda p: (_page_number(p.stem), p.stem)):
        label = re.sub(r"^\d+_", "", path.stem).replace("_", " ")
        pages.append((f"pages/{path.name}", label, PAGE_QUESTIONS.get(path.name, "")))
    return pages


def _page_number(stem: str) -> int:
    match = re.match(r"^(\d+)_", stem)
    return int(match[1]) if match else 10**6


def model_summary(ctx: LabContext) -> ModelSummary:
    """Describe the model: facts, notes, inputs/outputs, layer table and size per format."""
    return _summary(ctx.model_key, ctx)


@st.cache_data(max_entries=8, show_spinner=False)
def _summary(model_key: str, _ctx: LabContext) -> ModelSummary:
    info = _ctx.info
    facts = {"Opset": str(info.opset), "IR version": str(info.ir_version), "Parameters": f"{info.total_params:,}",
             "Quantizable layers": str(_quantizable_count(info)), "int8 kernels here": target_view.kernel_fact()}
    notes = tuple(dict.fromkeys((*_ctx.prepared.notes, *info.notes)))  # model_io's notes say "already quantized"
    return ModelSummary(description=_description(_ctx), producer=info.producer or "unknown", facts=facts,
                        notes=notes, inputs=_tensor_table(info.inputs),
                        outputs=_tensor_table(info.outputs), layers=_layer_table(info), sizes=_size_table(info))


def fp32_accuracy(ctx: LabContext) -> float | None:
    """FP32 accuracy on the evaluation split at the context's task, measured by running the model (None
    without labels, or with labels that cannot be scored against the scored output: `labels_note`)."""
    return _fp32_score(ctx).value("accuracy")


def labels_note(ctx: LabContext) -> str | None:
    """Why the data's labels cannot be scored against the task's output (None: they can, or there are none)."""
    return _fp32_score(ctx).labels_note


def _fp32_score(ctx: LabContext):
    from quant_core.config import PRESETS

    return get_evaluator(ctx).evaluate(PRESETS["FP32"], task=ctx.task).score


def data_layout(ctx: LabContext) -> tuple[str, ...]:
    """How the data was understood (per input, stacking, streaming pairs); () for batch-first data."""
    layout = None if ctx.data is None else ctx.data.layout
    return () if layout is None else layout.describe()


def streaming_table(ctx: LabContext) -> pd.DataFrame | None:
    """The current config per frame (each sample fed its recorded state) beside streaming (each config
    carries its own state from sample to sample), with FP32 alike; None when the data does not stream."""
    evaluator = get_evaluator(ctx)
    stream = evaluator.streaming()
    if stream is None:
        return None
    rows = []
    for label, runner in (("per frame (recorded state)", evaluator), ("streaming (own state carried)", stream)):
        fp32 = runner.evaluate(PRESETS["FP32"], task=ctx.task)
        result = runner.evaluate(ctx.config, task=ctx.task)
        metric = result.score.headline
        row = {"run": label}
        if result.accuracy is not None:  # labels that can be scored; otherwise no accuracy column at all
            row.update({"FP32 accuracy": fp32.accuracy, f"{ctx.config.name} accuracy": result.accuracy})
        row.update({f"{ctx.config.name} {metric}": result.score.headline_value, "SQNR (dB)": round(result.sqnr_db, 2)})
        rows.append(row)
    return pd.DataFrame(rows)


def size_bars(sizes: pd.DataFrame) -> str:
    """The size table as a horizontal bar chart in plain HTML (for `st.html`).

    Why not Plotly here: its browser bundle is the last thing the landing page waits for (0.6–1.4 s
    of bench/bench_first_page.py); the pages that need Plotly's interaction load it themselves.
    """
    largest = max(float(sizes["size (KiB)"].max()), 1e-9)
    rows = []
    for label, kib, ratio in zip(sizes["format"], sizes["size (KiB)"], sizes["vs FP32"]):
        width = max(100.0 * float(kib) / largest, 0.5)
        rows.append(f'<span>{html.escape(str(label))}</span>'
                    f'<div style="background:#eef2f7;border-radius:2px">'
                    f'<div style="width:{width:.1f}%;height:1.2rem;background:{_BAR_COLOR};border-radius:2px"></div>'
                    f'</div><span style="white-space:nowrap">{float(kib):.1f} KiB ({float(ratio):.1f}×)</span>')
    return ('<div class="lab-size-bars" role="img" aria-label="Model size by weight format">'
            '<div style="font-weight:600;margin:0.2rem 0 0.6rem">Model size by weight format</div>'
            '<div style="display:grid;grid-template-columns:auto 1fr auto;gap:0.45rem 0.7rem;align-items:center">'
            + "".join(rows) + "</div></div>")


_BAR_COLOR = "#2E6FD8"


def _description(ctx: LabContext) -> str:
    if not ctx.is_demo:
        return f"Uploaded model {ctx.model_name}."
    demo = DEMO_MODELS[ctx.model_name]
    return f"**{demo.title}** — {demo.description}"


def _quantizable_count(info) -> int:
    return sum(1 for layer in info.layers if layer.weight is not None)


def _shape_text(shape) -> str:
    return "(" + ", ".join("?" if dim is None else str(dim) for dim in shape) + ")"


def _tensor_table(tensors) -> pd.DataFrame:
    return pd.DataFrame([{"name": t.name, "shape": _shape_text(t.shape), "dtype": t.dtype} for t in tensors])


def _layer_table(info) -> pd.DataFrame:
    total = max(info.total_params, 1)
    rows = [{"layer": layer.name, "op type": layer.op_type,
             "weight shape": _shape_text(layer.weight.shape) if layer.weight is not None else "—",
             "parameters": layer.params, "share of model size (%)": round(100.0 * layer.params / total, 2),
             "note": layer.note} for layer in info.layers]
    return pd.DataFrame(rows, columns=["layer", "op type", "weight shape", "parameters", "share of model size (%)",
                                       "note"])


def _size_table(info) -> pd.DataFrame:
    weights = [layer.weight.shape for layer in info.layers if layer.weight is not None]
    other = info.total_params - sum(int(_numel(shape)) for shape in weights)
    rows = []
    for label, tq in SIZE_FORMATS:
        size = model_bytes([(shape, _fit(tq, shape)) for shape in weights], other)
        rows.append({"format": label, "size (KiB)": round(size / 1024, 1), "bytes": int(size)})
    table = pd.DataFrame(rows)
    table["vs FP32"] = (table["bytes"].iloc[0] / table["bytes"]).round(2)
    return table


def _numel(shape) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def _fit(tq: TensorQuant | None, shape) -> TensorQuant | None:
    """Per-channel needs two dimensions: a 1-D weight is counted per-tensor."""
    if tq is not None and tq.granularity == Granularity.PER_CHANNEL and len(shape) < 2:
        return TensorQuant(tq.format)
    return tq



STATIC_TABLE_MAX_ROWS = 40


def show_table(frame: pd.DataFrame, container=st) -> None:
    """Show a small table as static HTML, a long one in the scrollable data grid.

    Why: the data grid's frontend code is the largest part of the landing page's load in the browser
    (bench/bench_first_page.py: usable in ~4.9 s with static tables against ~7 s with grids).
    """
    if len(frame) <= STATIC_TABLE_MAX_ROWS:
        # Static tables print floats with pandas' fixed 4 decimals: show them as the rounded values they are.
        shown = frame.copy()
        for column in shown.select_dtypes("float").columns:
            shown[column] = shown[column].map(lambda value: f"{value:g}")
        container.table(shown.set_index(shown.columns[0]))
    else:
        container.dataframe(frame, hide_index=True, width="stretch")

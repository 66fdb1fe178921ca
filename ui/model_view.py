"""The Model page's content: what the model is, its layers, FP32 accuracy and size per format."""
from __future__ import annotations

import html
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from quant_core.config import PRESETS, TensorQuant
from quant_core.model.demo import SHIPPED_MODELS
from quant_core.numerics.formats import FP16, INT4, INT8, Granularity
from quant_core.numerics.size import model_bytes
from ui.cache import get_calibration, get_evaluator, has_evaluator
from ui import target_view
from ui.jobs import job_stopped, resume_job, stoppable_progress
from ui.navigation import PAGES
from ui.setup import LabContext


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
    """(path, label, question) of every page after this one, in the sidebar's order (`ui.navigation`)."""
    return [(page.path, page.title, page.question) for page in PAGES[1:]]


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


MODEL_FP32_STOP = "model_fp32_stop"
MODEL_FP32_RESUME = "model_fp32_resume"


def fp32_run_with_progress(ctx: LabContext) -> bool:
    """Make sure the model's FP32 reference run on the evaluation split is done (the calibration first: the
    Evaluator holds both), behind a progress bar with a Stop. False after a Stop: the page then says so and
    offers to start again. Once done (here or on another page), returns True at once."""
    if has_evaluator(ctx):
        return True
    job = ("model_fp32_run", ctx.model_key, ctx.data_key)
    if job_stopped(job):
        st.info("The FP32 run was stopped. It calibrates the model (every other page needs it) and runs it once "
                "in FP32 on the evaluation split.")
        st.button("Measure the FP32 accuracy", key=MODEL_FP32_RESUME, on_click=resume_job, args=(job,),
                  type="primary")
        return False
    with stoppable_progress(job, stop_key=MODEL_FP32_STOP) as progress:
        progress(0.0, "Calibrating: running the calibration split through the model…")
        get_calibration(ctx, progress=lambda fraction: progress(0.6 * fraction, f"Calibrating… {100 * fraction:.0f}%"))
        progress(0.6, f"Running {ctx.model_name} in FP32 on the evaluation samples…")
        get_evaluator(ctx)
        progress(1.0, "Done")
    return True


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
    demo = SHIPPED_MODELS[ctx.model_name]
    return f"**{demo.title}** — {demo.description}"


def _quantizable_count(info) -> int:
    return sum(1 for layer in info.layers if layer.weight is not None)


# A note longer than this shows its first clause and puts its list of names in an expander.
NOTE_SHORT_CHARS = 160


@dataclass(frozen=True)
class Note:
    """One note on how the model was prepared: a sentence, and the names it lists when there are many."""

    summary: str
    names: tuple[str, ...] = ()


def split_note(note: str) -> Note:
    """Split a long "did X to N thing(s): a, b, c, ..." note into its sentence and its names."""
    head, colon, tail = note.partition(": ")
    if len(note) <= NOTE_SHORT_CHARS or not colon:
        return Note(note)
    return Note(head, tuple(name.strip() for name in tail.split(", ") if name.strip()))


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


def show_table(frame: pd.DataFrame, container=st, *, code_columns: tuple[str, ...] = ()) -> None:
    """Show a small table as static HTML, a long one in the scrollable data grid.

    `code_columns` are shown as code in the static table, whose cells are Markdown: a symbolic shape such
    as `(floor(height/2)*2 + 1)` would otherwise lose its `*` signs to italics.

    Why: the data grid's frontend code is the largest part of the landing page's load in the browser
    (bench/bench_first_page.py: usable in ~4.9 s with static tables against ~7 s with grids).
    """
    if len(frame) <= STATIC_TABLE_MAX_ROWS:
        # Static tables print floats with pandas' fixed 4 decimals: show them as the rounded values they are.
        shown = frame.copy()
        for column in shown.select_dtypes("float").columns:
            shown[column] = shown[column].map(lambda value: f"{value:g}")
        for column in code_columns:
            shown[column] = shown[column].map(lambda value: f"`{value}`")
        container.table(shown.set_index(shown.columns[0]))
    else:
        container.dataframe(frame, hide_index=True, width="stretch")


def show_notes(notes: tuple[str, ...]) -> None:
    """How the model was prepared: each note as an st.info; a long list of names (every moved Constant, every
    renamed node) collapsed to its count with the names in an expander, as code (node names are not Markdown)."""
    for part in map(split_note, notes):
        if not part.names:
            st.info(part.summary)
            continue
        st.info(f"{part.summary} ({len(part.names)} listed below).")
        with st.expander(f"The {len(part.names)} names"):
            st.code("\n".join(part.names), language=None)

"""Lesson 5: static against dynamic quantization, and why calibration data must look like the real data."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from quant_core.engine.calibrate import calibrate
from quant_core.config import LayerQuant, QuantConfig, TensorQuant
from quant_core.model.data import Dataset
from quant_core.engine.evaluate import Evaluator
from quant_core.export.ort_export import export_dynamic_int8
from quant_core.numerics.formats import FormatKind, NumberFormat
from quant_core.model.model_io import load_model, prepare_model
from ui.cache import evaluate_cached, get_evaluator
from ui.jobs import heavy_job
from ui.lessons._common import COLORS, cached_spec, demo_context, question, show_figure, try_on_page

TITLE = "5 · Static or dynamic, and calibration data"
MODEL, SCENARIO, CLASSES, BRIGHTNESS, BITS = "l5_model", "l5_scenario", "l5_classes", "l5_brightness", "l5_bits"
DEMOS = ("mlp", "cnn", "transformer")
SCENARIOS = ("only some digit classes", "fainter images than in use (another scanner)")
CLASS_NAMES = tuple(range(10))


def activation_config(bits: int) -> QuantConfig:
    """Static activation quantization only (uint`bits`, asymmetric, min-max), weights kept FP32."""
    return QuantConfig(LayerQuant(activations=TensorQuant(NumberFormat(FormatKind.UINT, bits), symmetric=False)),
                       name=f"A{bits} static")


def skewed_calibration_set(calibration: Dataset, scenario: str, classes: tuple[int, ...], brightness: float) -> Dataset:
    """The calibration split restricted to some classes, or with every image dimmed by `brightness`."""
    if scenario == SCENARIOS[0]:
        return calibration.subset(np.flatnonzero(np.isin(calibration.labels, classes)))
    return Dataset(inputs={name: (x * np.float32(brightness)).astype(x.dtype) for name, x in calibration.inputs.items()},
                   labels=calibration.labels)


@st.cache_resource(max_entries=8, show_spinner=False)
def _skewed_evaluator(model_key: str, scenario: str, classes: tuple[int, ...], brightness: float, _ctx):
    """An Evaluator whose activation ranges come from the skewed calibration set (evaluation split unchanged)."""


    data = skewed_calibration_set(_ctx.calibration_data, scenario, classes, brightness)
    with heavy_job("the calibration on the skewed set"):
        calibration = calibrate(_ctx.prepared, data)
        return Evaluator(_ctx.prepared, calibration, _ctx.evaluation_data)


@st.cache_data(max_entries=8, show_spinner=False)
def dynamic_int8(model_key: str, _ctx) -> tuple[float, tuple[float, ...]]:
    """Accuracy and per-class accuracy of onnxruntime's dynamic INT8 model, run one digit at a time."""


    with heavy_job("the dynamic INT8 export"):
        prepared = prepare_model(load_model(export_dynamic_int8(_ctx.prepared).model))
        # The exported model is evaluated as is (FP32 config): its own DynamicQuantizeLinear nodes pick each
        # input's range at run time. The Evaluator needs a calibration; a few samples suffice, it is unused.
        calibration = calibrate(prepared, _ctx.calibration_data.subset(np.arange(8)))
        result = Evaluator(prepared, calibration, _ctx.evaluation_data, batch_size=1).evaluate(QuantConfig())
    return result.accuracy, tuple(result.per_class_accuracy)


def figure(per_class: dict[str, tuple[float, ...]]) -> go.Figure:
    colors = {"FP32": COLORS["fp32"], "static, representative calibration": COLORS["qat"],
              "static, skewed calibration": COLORS["ptq"], "dynamic INT8 (onnxruntime)": "#2E6FD8"}
    fig = go.Figure()
    for label, values in per_class.items():
        fig.add_trace(go.Bar(x=[str(k) for k in CLASS_NAMES], y=values, name=label, marker_color=colors[label],
                             hovertemplate=f"digit %{{x}}: %{{y:.1%}} ({label})<extra></extra>"))
    fig.update_layout(barmode="group", height=400, title="accuracy per digit class on the evaluation split",
                      xaxis_title="digit", yaxis=dict(tickformat=".0%", range=[0, 1.05]))
    return fig


def render(ctx) -> None:
    st.markdown(
        "**Static** quantization fixes every activation's range in advance, from a *calibration set*; at run time "
        "values outside that range are clipped. **Dynamic** quantization measures each input's range while it runs: "
        "no calibration, nothing to get wrong, but extra work on every inference (and in onnxruntime only for "
        "MatMul/Gemm/Conv-like ops, with int8 weights per tensor). The catch of static quantization: the "
        "calibration set must cover what the model will see. Skew it below and look which digits pay.")
    controls, chart = st.columns([1, 3])
    with controls:
        model = st.selectbox("Demo model", DEMOS, key=MODEL)
        bits = st.slider("Activation bits (static)", 4, 8, 8, key=BITS)
        scenario = st.radio("Skewed calibration set", SCENARIOS, index=1, key=SCENARIO)
        if scenario == SCENARIOS[0]:
            classes = tuple(sorted(st.multiselect("Calibrate only on digits", CLASS_NAMES, default=[0, 1],
                                                  key=CLASSES)))
            brightness = 1.0
        else:
            classes = ()
            brightness = st.slider("Brightness of the calibration images", 0.2, 1.0, 0.5, step=0.1, key=BRIGHTNESS)
    if scenario == SCENARIOS[0] and not classes:
        st.info("Pick at least one digit to calibrate on.")
        return
    demo = demo_context(model, ctx)

    config = activation_config(bits)
    with st.spinner("Calibrating and evaluating…"):
        representative = evaluate_cached(demo, config)
        skewed = _skewed_evaluator(demo.model_key, scenario, classes, brightness, demo).evaluate(config)
        dynamic_accuracy, dynamic_per_class = dynamic_int8(demo.model_key, demo)
    fp32_per_class = evaluate_cached(demo, QuantConfig()).per_class_accuracy
    per_class = {"FP32": fp32_per_class, "static, representative calibration": representative.per_class_accuracy,
                 "static, skewed calibration": skewed.per_class_accuracy,
                 "dynamic INT8 (onnxruntime)": dynamic_per_class}
    with chart:
        spec = cached_spec("l5", (demo.model_key, bits, scenario, classes, brightness), lambda: figure(per_class))
        show_figure(spec, key="l5_chart")

    fp32 = get_evaluator(demo).fp32_accuracy
    a, b, c, d = st.columns(4)
    a.metric("FP32", f"{fp32:.1%}")
    b.metric("static, representative", f"{representative.accuracy:.1%}", _points(representative.accuracy - fp32))
    c.metric("static, skewed", f"{skewed.accuracy:.1%}", _points(skewed.accuracy - fp32))
    d.metric("dynamic INT8", f"{dynamic_accuracy:.1%}", _points(dynamic_accuracy - fp32))
    drops = np.array(representative.per_class_accuracy) - np.array(skewed.per_class_accuracy)
    worst = int(np.nanargmax(drops))
    skew_text = (f"calibrating only on digits {', '.join(map(str, classes))}" if scenario == SCENARIOS[0]
                 else f"calibrating on images at {brightness:.0%} brightness")
    question(
        "Which digits suffer most from the skewed calibration set, and which skew hurts more: missing classes or "
        "fainter images?",
        f"On the {model} demo with {bits}-bit activations, {skew_text} gives {skewed.accuracy:.1%} against "
        f"{representative.accuracy:.1%} with the representative set. The digit that loses most is **{worst}** "
        f"({representative.per_class_accuracy[worst]:.0%} → {skewed.per_class_accuracy[worst]:.0%}). Min-max ranges "
        "only need the *extremes* to be covered, so a few classes often suffice when all digits produce similar "
        "activations; fainter images shrink every range, and the real, brighter inputs get clipped. Dynamic "
        "quantization cannot be mis-calibrated: whatever it loses comes from rounding (and its per-tensor weights).")
    try_on_page("pages/2_Activations.py", "See each activation's calibration range: the Activations page")


def _points(difference: float) -> str | None:
    """A metric's delta in percentage points; None (no arrow) when it rounds to zero."""
    return f"{100 * difference:+.1f} points" if round(100 * difference, 1) != 0 else None

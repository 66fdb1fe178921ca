"""The Activations page's content: calibrated activation ranges, search curves and outliers."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from quant_core.config import TensorQuant
from quant_core.engine.calibrate import calibration_tensors
from quant_core.errors import QuantLabError
from quant_core.numerics.formats import FormatKind, NumberFormat, RangeMethod
from ui import figures
from ui.cache import get_calibration
from ui.jobs import Notify, job_stopped, resume_job, stoppable_progress
from ui.setup import LabContext

METHODS = tuple(RangeMethod)
OUTLIER_PERCENTILE = 99.99
CALIBRATING = "Calibrating: running the calibration split through the model…"
CALIBRATING_OUTPUTS = "Calibrating the layer outputs: one more pass over the calibration split…"
OUTPUTS_STOP, OUTPUTS_RESUME = "activations_outputs_stop", "activations_outputs_resume"
OUTLIER_RATIO = 4.0  # max |x| this many times beyond the 99.99th percentile of |x| flags an outlier tensor


@dataclass(frozen=True)
class ActivationChoice:
    tensor: str
    method: RangeMethod = RangeMethod.ENTROPY
    bits: int = 8
    log_y: bool = True


@dataclass(frozen=True)
class ActivationsView:
    tensor: str
    readers: str
    sample_count: int
    histogram: go.Figure
    curve: go.Figure | None
    curve_note: str
    ranges: pd.DataFrame


def bar_notice(bar) -> Notify:
    """A `ui.jobs` notify callback that writes the waiting message on the (0 %) progress bar itself,
    then puts the bar's own text back once the calibration starts."""

    def notify(text: str | None) -> None:
        bar.progress(0.0, text=text if text is not None else CALIBRATING)

    return notify


def calibrate_with_progress(ctx: LabContext):
    """Return the model's Calibration; the first time, run it with a progress bar (then cached).

    While the calibration waits for the server's heavy-job slot, the bar says so (`bar_notice`).
    On failure, show why (one line) and stop the page.
    """
    bar = st.progress(0.0, text=CALIBRATING)
    try:
        return get_calibration(ctx, progress=lambda fraction: bar.progress(
            min(max(float(fraction), 0.0), 1.0), text=f"Calibrating… {100 * fraction:.0f}%"),
                               notify=bar_notice(bar))
    except QuantLabError as err:
        st.error(f"Calibration failed: {err}")
    except Exception as err:  # noqa: BLE001 - the page boundary: never show a raw traceback
        st.error(f"Calibration failed ({type(err).__name__}: {err}). Check that the data fits the model.")
    finally:
        bar.empty()
    st.stop()


def calibrate_outputs_with_progress(ctx: LabContext):
    """Return the Calibration with every layer output too; the first time, one more pass behind a bar and a Stop.

    The first calibration counts the layer inputs only (what quantization reads): the outputs cost a
    second pass over the calibration split, run when the user picks one. Returns None when the user
    stopped it (the page then offers to start it again) or it failed (the reason is shown).
    """
    job = ("activations-outputs", ctx.model_key, ctx.data_key)
    if job_stopped(job):
        st.info("Stopped: the layer outputs are not calibrated. The layer inputs (what quantization reads) are.")
        st.button("Calibrate the layer outputs", key=OUTPUTS_RESUME, on_click=resume_job, args=(job,))
        return None
    with stoppable_progress(job, stop_key=OUTPUTS_STOP) as progress:
        try:
            return get_calibration(ctx, progress=lambda fraction: progress(
                fraction, f"Calibrating the layer outputs… {100 * fraction:.0f}%"),
                                   notify=lambda text: progress(0.0, text or CALIBRATING_OUTPUTS), layer_outputs=True)
        except QuantLabError as err:
            st.error(f"Calibrating the layer outputs failed: {err}")
        except Exception as err:  # noqa: BLE001 - the page boundary: never show a raw traceback
            st.error(f"Calibrating the layer outputs failed ({type(err).__name__}: {err}).")
    return None


def activation_tensors(ctx: LabContext) -> dict[str, str]:
    """Every calibration tensor (calibrated yet or not) → what reads or produces it, e.g. 'input of /conv1/Conv'."""
    readers: dict[str, list[str]] = {}
    for layer in ctx.info.layers:
        if layer.activation_input:
            readers.setdefault(layer.activation_input, []).append(f"input of {layer.name}")
        for output in layer.outputs[:1]:
            readers.setdefault(output, []).append(f"output of {layer.name}")
    return {tensor: ", ".join(readers.get(tensor, ["activation"])) for tensor in calibration_tensors(ctx.prepared)}


def pending_note(ctx: LabContext, calibration) -> str | None:
    """What picking a tensor that is not calibrated yet costs, while some are not; else None."""
    missing = calibration.missing(calibration_tensors(ctx.prepared))
    if not missing:
        return None
    return (f"{len(missing)} layer outputs are not calibrated yet: picking one runs one more pass over the "
            f"calibration split ({calibration.sample_count} samples) for all of them, with a Stop button.")


def first_inner_tensor(ctx: LabContext, tensors: list[str], calibration=None) -> int:
    """Index of the first tensor that is not a model input (the raw input is rarely the interesting one) and,
    given `calibration`, is calibrated already (a first view runs no second pass)."""
    inputs = {tensor.name for tensor in ctx.info.inputs}
    missing = set(calibration.missing(tensors)) if calibration is not None else set()
    return next((index for index, name in enumerate(tensors) if name not in inputs and name not in missing), 0)


def activations_view(ctx: LabContext, calibration, choice: ActivationChoice) -> ActivationsView:
    """Histogram with every method's range, the chosen method's search curve, and a ranges table."""
    readers = activation_tensors(ctx)
    histogram = calibration.histogram(choice.tensor)
    edges, counts = _edges_counts(histogram)
    results = {method: calibration.range_for(choice.tensor, _tq(choice.bits, method)) for method in METHODS}
    lines = [figures.RangeLine(method.value, float(r.lo), float(r.hi), figures.METHOD_COLORS[method.value])
             for method, r in results.items()]
    figure = figures.histogram_with_ranges(edges, counts, lines, log_y=choice.log_y, x_title="activation value",
                                           title=f"{choice.tensor} over {calibration.sample_count} calibration samples")
    chosen = results[choice.method]
    curve, note = None, (f"{choice.method.value} computes its range directly (no search), so there is no curve: "
                         "pick mse or entropy to see the search.")
    if chosen.thresholds is not None and chosen.curve is not None and len(chosen.thresholds):
        best = int(np.nanargmin(chosen.curve))
        curve = figures.curve(chosen.thresholds, chosen.curve,
                              marks=[(f"chosen threshold {chosen.thresholds[best]:.4g}", float(chosen.thresholds[best]),
                                      float(chosen.curve[best]))],
                              title=f"{choice.method.value}: {chosen.curve_label or 'error'} over candidate thresholds",
                              x_title="clipping threshold", y_title=chosen.curve_label or "error",
                              log_y=bool(np.nanmin(chosen.curve) > 0))
        note = (f"The {choice.method.value} search tried {len(chosen.thresholds)} thresholds and kept the one with "
                f"the lowest {chosen.curve_label or 'error'}.")
    table = pd.DataFrame([{"method": method.value, "lo": float(r.lo), "hi": float(r.hi),
                           "clipped (%)": round(100.0 * float(r.clipped_fraction), 4)}
                          for method, r in results.items()])
    return ActivationsView(tensor=choice.tensor, readers=readers.get(choice.tensor, ""),
                           sample_count=calibration.sample_count, histogram=figure, curve=curve, curve_note=note,
                           ranges=table)


def outlier_table(ctx: LabContext, calibration) -> pd.DataFrame:
    """Every calibrated tensor's max |x| against its 99.99th percentile of |x|, largest ratio first."""
    return _outliers(ctx.model_key, ctx.data_key, calibration.tensors, calibration, activation_tensors(ctx))


@st.cache_data(max_entries=8, show_spinner=False)
def _outliers(model_key: str, data_key: str, tensors: tuple[str, ...], _calibration,
              _readers: dict[str, str]) -> pd.DataFrame:
    tq = TensorQuant(NumberFormat(FormatKind.INT, 8), symmetric=True, range_method=RangeMethod.PERCENTILE,
                     percentile=OUTLIER_PERCENTILE)
    rows = []
    for tensor in tensors:
        histogram = _calibration.histogram(tensor)
        absmax = max(abs(float(histogram.min)), abs(float(histogram.max)))
        result = _calibration.range_for(tensor, tq)
        percentile = max(abs(float(result.lo)), abs(float(result.hi)))
        ratio = absmax / percentile if percentile > 0 else (np.inf if absmax > 0 else 1.0)
        rows.append({"tensor": tensor, "role": _readers.get(tensor, ""), "max |x|": absmax,
                     f"p{OUTLIER_PERCENTILE:g} |x|": percentile, "ratio": round(ratio, 2),
                     "outlier": bool(ratio >= OUTLIER_RATIO)})
    return pd.DataFrame(rows).sort_values("ratio", ascending=False, ignore_index=True)


def _tq(bits: int, method: RangeMethod) -> TensorQuant:
    # Activations as the presets quantize them: unsigned, asymmetric (onnxruntime's fast CPU path).
    return TensorQuant(NumberFormat(FormatKind.UINT, bits), symmetric=False, range_method=method)


def _edges_counts(histogram) -> tuple[np.ndarray, np.ndarray]:
    """The signed histogram, without the empty bins at its ends (e.g. the negative half after a ReLU)."""
    edges, counts = np.asarray(histogram.edges), np.asarray(histogram.counts)
    filled = np.flatnonzero(counts)
    if len(filled) == 0:
        return edges, counts
    first, last = filled[0], filled[-1] + 1
    return edges[first:last + 1], counts[first:last]

"""Activations: calibrated ranges of every activation tensor, the range searches, and outliers."""
import streamlit as st

from quant_core.numerics.formats import RangeMethod
from ui import activations_view
from ui.setup import page_errors, setup_page

ctx = setup_page("Activations")
st.title("Activations")
st.caption("Activation ranges come from running calibration data through the model (then cached): each range "
           "method picks its clipping range from the same histograms. The layer inputs (what quantization reads) "
           "are calibrated first; a layer output is calibrated when you pick one (one more pass).")

if ctx.calibration_data is None:
    st.warning("Activations need data: upload a .npz with the model's inputs in the sidebar.")
    st.stop()

calibration = activations_view.calibrate_with_progress(ctx)  # on failure: shows why and stops the page

tensors = activations_view.activation_tensors(ctx)
pick, method_column, options = st.columns([4, 3, 2])
tensor = pick.selectbox("Activation tensor", list(tensors), key="activations_tensor",
                        index=activations_view.first_inner_tensor(ctx, list(tensors), calibration),
                        format_func=lambda name: f"{name} ({tensors[name]})")
method = method_column.radio("Range method (for the search curve)", [m.value for m in RangeMethod], index=3,
                             horizontal=True, key="activations_method")
bits = options.slider("Bits (uint, asymmetric)", 2, 8, 8, key="activations_bits")
log_y = options.toggle("Log count axis", value=True, key="activations_log")

if calibration.missing([tensor]):  # a layer output: its pass runs now, behind a bar with a Stop
    calibration = activations_view.calibrate_outputs_with_progress(ctx) or calibration
if (note := activations_view.pending_note(ctx, calibration)) is not None:
    st.caption(note)

if not calibration.missing([tensor]):  # else stopped or failed (said above): the outliers still show
    with page_errors(f"the ranges of {tensor}"):
        choice = activations_view.ActivationChoice(tensor=tensor, method=RangeMethod(method), bits=bits, log_y=log_y)
        view = activations_view.activations_view(ctx, calibration, choice)
        st.subheader(f"{view.tensor}: {view.readers}")
        st.plotly_chart(view.histogram, width="stretch", key="activations_histogram")
        st.dataframe(view.ranges, hide_index=True, width="stretch")

        st.subheader(f"How {method} chooses its range")
        st.write(view.curve_note)
        if view.curve is not None:
            st.plotly_chart(view.curve, width="stretch", key="activations_curve")

with page_errors("the outlier summary"):
    st.subheader("Outliers")
    st.caption(f"max |x| against the {activations_view.OUTLIER_PERCENTILE}th percentile of |x| over the calibration "
               f"data; a ratio ≥ {activations_view.OUTLIER_RATIO:g} marks an outlier tensor, whose min-max range "
               "wastes most integer levels on a few values. Layer outputs join once calibrated.")
    st.dataframe(activations_view.outlier_table(ctx, calibration), hide_index=True, width="stretch")

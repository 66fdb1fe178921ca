"""The Model page (landing): what the model is, its layers, FP32 accuracy and size per format."""
import streamlit as st

from ui import cache, model_view, target_view
from ui.setup import page_errors, setup_page

ctx = setup_page("Model")
st.title("Quantization Lab")
st.caption("See what quantization does to a neural network: per-layer ranges, errors, accuracy, size and speed.")

summary = model_view.model_summary(ctx)

st.header(f"Model: {ctx.model_name}")
st.markdown(summary.description)
st.caption(f"Produced by {summary.producer}.")
for column, (label, value) in zip(st.columns(len(summary.facts)), summary.facts.items()):
    column.metric(label, value)
target_view.kernel_caption()
model_view.show_notes(summary.notes)

inputs_column, outputs_column = st.columns(2)
with inputs_column:
    st.subheader("Inputs")
    model_view.show_table(summary.inputs, code_columns=("shape",))
with outputs_column:
    st.subheader("Outputs")
    model_view.show_table(summary.outputs, code_columns=("shape",))

st.subheader("Accuracy in FP32")
# Filled last: the structure below is drawn at once, the FP32 run (and the calibration) behind a progress bar.
accuracy_section = st.container()

st.subheader("Layers")
st.caption("Quantizable layers are named by their ONNX node names; share = the layer's parameters over all "
           "parameters (FP32).")
model_view.show_table(summary.layers)

st.subheader("Size by format")
st.caption("Quantizable weights in the format (scales and zero points included), all other parameters FP32.")
size_column, chart_column = st.columns([2, 3])
model_view.show_table(summary.sizes, size_column)
chart_column.html(model_view.size_bars(summary.sizes))

st.header("How to use this lab")
st.markdown("1. Pick a demo model or upload your own `.onnx` (and a `.npz` of inputs) in the sidebar.\n"
            "2. Choose a quantization preset in the sidebar, or load a saved config; it follows you on every page.\n"
            "3. Walk through the pages:")
for path, label, question in model_view.available_pages():
    st.page_link(path, label=f"**{label}** — {question}" if question else f"**{label}**")

with accuracy_section:
    if ctx.evaluation_data is None:
        st.warning("No data for this model: upload a .npz with its inputs (and integer 'labels') in the sidebar "
                   "to measure its accuracy.")
    else:
        with page_errors("the FP32 accuracy"):
            if not model_view.fp32_run_with_progress(ctx):
                st.stop()  # stopped by the user: the rest of the page is drawn already
            accuracy = model_view.fp32_accuracy(ctx)
            if accuracy is None and (note := model_view.labels_note(ctx)):
                st.write(f"Accuracy cannot be measured here: {note}. The other pages score the task chosen in the "
                         "sidebar (Task).")
            elif accuracy is None:
                st.write("The data has no labels, so accuracy cannot be measured; the other pages compare "
                         "quantized outputs with FP32 outputs instead.")
            else:
                st.metric(f"FP32 top-1 accuracy ({cache.scored_samples(ctx)} evaluation samples of "
                          f"{ctx.data_name})", f"{100 * accuracy:.2f} %")
        layout = model_view.data_layout(ctx)
        if layout:
            st.markdown("**How the data was read** (docs/data.md):\n" + "\n".join(f"- {line}" for line in layout))
            with page_errors("the streaming comparison"):
                streaming = model_view.streaming_table(ctx)
                if streaming is not None:
                    st.caption("Per frame, each sample gets the state recorded in the data; streaming, each config "
                               "carries its own state to the next sample, so quantization error accumulates through it.")
                    model_view.show_table(streaming)

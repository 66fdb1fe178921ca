"""Trade-offs: accuracy against measured onnxruntime latency and against size, variant by variant."""
import streamlit as st

from ui import language_model_view, target_view, tradeoffs_view
from ui.setup import page_errors, setup_page

ctx = setup_page("Trade-offs")
st.title("Trade-offs")
st.caption("FP32, FP16, dynamic INT8, static INT8 (per-tensor and per-channel), 4-bit weight-only and your "
           "current config, each exported with onnxruntime.quantization, then timed and run on the evaluation "
           "data. Latency is measured on this machine, now: it depends on the batch size and the threads.")
target_view.kernel_caption()
if language_model_view.is_language_model(ctx):
    st.info("A language model: its headline below is FP32 perplexity / perplexity. Perplexity against size and "
            "measured latency of FP32, int8, int4 (MatMulNBits with our integers) and the current weight-only "
            "choice, at the context length, batch 1 and 8, is on the Language model page.")
    st.page_link("pages/8_Language_model.py", label="Perplexity vs size vs latency", icon=":material/arrow_forward:")

if ctx.evaluation_data is None:
    st.info("Accuracy and timing need data: upload a .npz with the model's inputs in the sidebar.")
    st.stop()

settings = tradeoffs_view.measurement_controls()
with page_errors("the measurement"):
    tradeoffs_view.measure_button(ctx, ctx.config, settings)  # a click times every variant again
    # The default settings on a small model are measured once by themselves (cached, shared).
    measured = tradeoffs_view.current_results(ctx, ctx.config, settings)
    if measured is None:
        tradeoffs_view.stopped_note(ctx, ctx.config, settings)
        tradeoffs_view.show_preview(ctx, ctx.config, settings)
    else:
        frame, notes = measured
        tradeoffs_view.show_results(ctx, ctx.config, settings, frame, notes)

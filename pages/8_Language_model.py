"""Language model: group-wise weight-only quantization (RTN, HQQ, GPTQ, AWQ), perplexity, and greedy
generation by the FP32 and the quantized model side by side."""
import streamlit as st

from ui import language_model_view
from ui.setup import page_errors, setup_page

ctx = setup_page("Language model")
st.title("Language model")
st.caption("Every MatMul weight quantized in groups along its inputs (one scale, and a zero point when "
           "asymmetric, per group), by the method chosen; activations stay FP32. Perplexity is measured on "
           "the held-out windows; the generations are greedy, so they differ only through the weights.")

if not language_model_view.is_language_model(ctx):
    st.info("Perplexity and generation need a language model (next-token logits [batch, tokens, vocabulary] "
            "over integer tokens): choose “Language model (Shakespeare, bytes)” in the sidebar, or set the task "
            "to language_model. Meanwhile, what group-wise weight-only quantization does to this model's "
            "largest weight:")
    with page_errors("the weight chart"):
        language_model_view.weight_chart(ctx)
    st.stop()
if ctx.evaluation_data is None or ctx.evaluation_data.labels is None:
    st.info("Perplexity needs token windows with next-token labels: upload a .npz with the model's token input "
            "and 'labels' [windows, tokens] in the sidebar (docs/language_models.md).")
    st.stop()

spec, prompt, steps = language_model_view.controls()
with page_errors("the language model"):
    language_model_view.show(ctx, spec, prompt, steps)
with page_errors("the latency measurement"):
    language_model_view.tradeoffs(ctx, spec)
with page_errors("the weight chart"):
    language_model_view.weight_chart(ctx)

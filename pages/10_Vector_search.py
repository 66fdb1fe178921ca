"""Vector search: the model's embeddings indexed in quantized vector formats, recall@k against bytes per vector."""
import streamlit as st

from ui import vectors_view
from ui.setup import page_errors, setup_page

ctx = setup_page("Vector search")
st.title("Vector search")
st.caption("Quantization is also how vector indices fit in memory. The model's embeddings of the evaluation "
           "samples (FP32 and the current config) are stored as int8 / int4 codes, sign bits or product-"
           "quantization codes, then searched by cosine similarity: how much recall is lost for how much memory, "
           "and how much rescoring the best candidates with the FP32 vectors gives back.")

if ctx.evaluation_data is None:
    st.info("Embeddings need data: upload a .npz with the model's inputs in the sidebar.")
    st.stop()

choices = vectors_view.sources(ctx.info, ctx.prepared.model)
if not choices:
    st.info("This model has no output with one vector per sample [N, D], and its last layer's input is not one "
            "either (a map or a sequence): there are no embeddings to search.")
    st.stop()

with page_errors("the vector search"):
    vectors_view.show(ctx, choices)

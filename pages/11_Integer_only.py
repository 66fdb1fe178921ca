"""Integer-only: which nodes of the exported model still compute in float, and its fixed-point integer form."""
import streamlit as st

from ui import integer_view
from ui.setup import page_errors, setup_page

ctx = setup_page("Integer-only")
st.title("Integer-only inference")
st.caption("Proving a model's inference in a zero-knowledge proof (zkML) needs every operation in integers. "
           "The current config is exported as the app exports it; onnxruntime then optimizes the graph, and "
           "every node left is sorted into integer, data movement, boundary (input quantization, output "
           "dequantization) or float. Where only integer layers are left, the model is rewritten in standard "
           "ONNX integer ops with fixed-point requantization and scored against the export.")

if ctx.evaluation_data is None:
    st.info("The export needs calibration data: upload a .npz with the model's inputs in the sidebar.")
    st.stop()

bits, run = integer_view.controls(ctx)
if not run:
    st.info("A large model: press Check to export the config and check it.")
    st.stop()
with page_errors("the integer-only check"), st.spinner("Exporting and checking…"):
    document = integer_view.comparison(ctx, bits)
    integer_view.show(ctx, document, bits)

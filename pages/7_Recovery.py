"""Recovery: accuracy-recovery methods (CLE, SmoothQuant, bias correction) and each one's before / after."""
import streamlit as st

from ui import methods_view
from ui.setup import page_errors, setup_page

ctx = setup_page("Recovery")
st.title("Accuracy recovery")
st.caption("Methods rewrite the FP32 model before it is quantized; they become part of the current config, so "
           "every page (simulation, sweeps, suggestion, export) then works on the rewritten model. "
           "See docs/methods.md.")

methods_view.choose_methods(ctx)

if ctx.evaluation_data is None:
    st.info("The methods and their before / after need data: upload a .npz with the model's inputs in the sidebar.")
    st.stop()

with page_errors("the methods' before / after"):
    methods_view.show_before_after(ctx)
    methods_view.show_reports(ctx)

with page_errors("the activation range search"):
    methods_view.range_search_section(ctx)

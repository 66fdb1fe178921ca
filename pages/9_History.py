"""Run history: every config evaluated in this session; compare two, restore one."""
import streamlit as st

from ui import history_view
from ui.setup import page_errors, setup_page

ctx = setup_page("Run history")
st.title("Run history")
st.caption("Every config evaluated in this session (Mixed precision, Graph, Sensitivity's applied cells, "
           "Trade-offs), once each. Latency appears once Trade-offs has measured the config.")

runs = history_view.show_history(ctx)
if runs:
    st.subheader("Compare two runs")
    with page_errors("the comparison"):
        history_view.show_comparison(ctx, runs)

"""Quantization Lab. Run with `streamlit run app.py`: the sidebar lists the pages of `ui.navigation`."""
import streamlit as st

from ui.navigation import streamlit_pages

st.navigation(streamlit_pages()).run()

"""Quantization Lab. Run with `streamlit run app.py`: the sidebar lists the pages of `ui.navigation`."""
import streamlit as st

from ui.navigation import streamlit_pages

# expanded: all 13 pages listed (by default Streamlit hides those past the tenth behind "View 3 more").
st.navigation(streamlit_pages(), expanded=True).run()

"""Run history: every config evaluated in this session; compare two, restore one."""
import streamlit as st

from ui.setup import setup_page

ctx = setup_page("Run history")
st.title("Run history")

"""Graph: the model drawn as its quantizable layers, coloured by their error; click one to inspect and fix it."""
import streamlit as st

from ui.setup import setup_page

ctx = setup_page("Graph")
st.title("Graph")

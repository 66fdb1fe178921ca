"""Quantization Lab: landing page (the Model page). Run with `streamlit run app.py`."""
import streamlit as st

st.set_page_config(page_title="Quantization Lab", layout="wide")
st.title("Quantization Lab")
st.write("See what quantization does to a neural network.")

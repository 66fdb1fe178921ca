"""Learn: short interactive lessons on quantization. Move the numbers, watch the chart, answer the question."""
import streamlit as st

from ui.lessons import choose_lesson, render_lesson
from ui.setup import setup_page

ctx = setup_page("Learn")
st.title("Learn quantization")
st.caption("Nine short lessons. Each one has a few sentences, a live chart and one question you can answer "
           "by playing with it. Every number is computed while you watch, on the demo models and their data (lesson 9: the shipped language model).")

title = choose_lesson()
render_lesson(title, ctx)

"""The app's pages, in the sidebar's order, with the labels users see.

`app.py` hands this list to `st.navigation`: the landing page is listed as "Model" (with the
auto-discovered `pages/` folder Streamlit names it after its file, "app"). The files stay in
`pages/`; when `st.navigation` is called Streamlit does not also discover that folder.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st


@dataclass(frozen=True)
class LabPage:
    """One page: its file (relative to the repository root), its label and what it answers."""

    path: str
    title: str
    question: str = ""
    icon: str | None = None


PAGES = (
    LabPage("pages/0_Model.py", "Model", "What is the model, how accurate is it in FP32, and how big per format?",
            ":material/description:"),
    LabPage("pages/1_Weights.py", "Weights", "What does a layer's weight distribution look like, and what does each "
            "range method and bit-width do to it?", ":material/bar_chart:"),
    LabPage("pages/2_Activations.py", "Activations", "What ranges do the activations take on real data, and which "
            "tensors have outliers?", ":material/ssid_chart:"),
    LabPage("pages/3_Mixed_precision.py", "Mixed precision", "Choose a format per layer and see accuracy and size "
            "move.", ":material/tune:"),
    LabPage("pages/7_Graph.py", "Graph", "Where in the model does the error come from? Click a layer to inspect "
            "and fix it.", ":material/account_tree:"),
    LabPage("pages/4_Sensitivity.py", "Sensitivity", "Which layers hurt most when quantized? Get a suggestion under "
            "a budget.", ":material/grid_on:"),
    LabPage("pages/5_Trade-offs.py", "Trade-offs", "Accuracy against measured latency and size, with real "
            "onnxruntime models.", ":material/speed:"),
    LabPage("pages/8_History.py", "Run history", "Every config evaluated in this session: compare two, restore one.",
            ":material/history:"),
    LabPage("pages/6_Learn.py", "Learn", "Interactive lessons: scale and zero point, clipping, formats, QAT.",
            ":material/school:"),
)


def streamlit_pages() -> list:
    """The pages as `st.Page` objects for `st.navigation` (the first is the default)."""
    return [st.Page(page.path, title=page.title, icon=page.icon, default=index == 0)
            for index, page in enumerate(PAGES)]

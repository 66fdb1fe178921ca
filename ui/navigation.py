"""The app's pages, in the sidebar's order, with the labels users see.

`app.py` hands this list to `st.navigation`: the landing page is listed as "Model" (with the
auto-discovered `pages/` folder Streamlit names it after its file, "app"). The files stay in
`pages/`; when `st.navigation` is called Streamlit does not also discover that folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

APP_ENTRY_POINT = Path(__file__).resolve().parent.parent / "app.py"
_STARTED = "_lab_started"  # session state: this session has run a script before


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
    LabPage("pages/4_Graph.py", "Graph", "Where in the model does the error come from? Click a layer to inspect "
            "and fix it.", ":material/account_tree:"),
    LabPage("pages/5_Sensitivity.py", "Sensitivity", "Which layers hurt most when quantized? Get a suggestion under "
            "a budget.", ":material/grid_on:"),
    LabPage("pages/6_Trade-offs.py", "Trade-offs", "Accuracy against measured latency and size, with real "
            "onnxruntime models.", ":material/speed:"),
    LabPage("pages/7_Recovery.py", "Recovery", "What fixes the error? Equalization, SmoothQuant, bias correction, "
            "AdaRound: each one's before and after.", ":material/healing:"),
    LabPage("pages/8_Language_model.py", "Language model", "Weight-only 3/4/8-bit methods on a language model: "
            "perplexity, size, and generation side by side.", ":material/text_fields:"),
    LabPage("pages/9_History.py", "Run history", "Every config evaluated in this session: compare two, restore one.",
            ":material/history:"),
    LabPage("pages/10_Vector_search.py", "Vector search", "How much nearest-neighbour recall do quantized embedding "
            "vectors lose for how much memory?", ":material/search:"),
    LabPage("pages/11_Integer_only.py", "Integer-only", "Does the exported model still compute in float anywhere? "
            "Its integer-only form for proof systems.", ":material/calculate:"),
    LabPage("pages/12_Learn.py", "Learn", "Interactive lessons: scale and zero point, clipping, formats, QAT.",
            ":material/school:"),
)


def streamlit_pages() -> list:
    """The pages as `st.Page` objects for `st.navigation` (the first is the default)."""
    return [st.Page(page.path, title=page.title, icon=page.icon, default=index == 0)
            for index, page in enumerate(PAGES)]


def leave_pages_folder_mode() -> None:
    """Rerun through `app.py` when Streamlit ran a page file by itself (its `pages/` folder mode).

    Why: with a `pages/` folder next to `app.py`, a server's first script run follows Streamlit's older
    folder mode until some run calls `st.navigation`. A first visitor who opens a page's address directly
    (a bookmark, a reload) would get that page run alone, with the folder's navigation ("app" first, files
    in name order). The flag below is the one `st.navigation` itself clears; clearing it and rerunning
    makes this and every later run go through `app.py`, which runs the same page by its address.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if get_script_run_ctx() is None:
        return
    first_run = not st.session_state.get(_STARTED)
    st.session_state[_STARTED] = True
    if PagesManager.uses_pages_directory and _entry_point_has_navigation():
        PagesManager.uses_pages_directory = False
        # Only a session's first run is rerun: it holds no click yet, which a rerun would drop.
        if first_run:
            st.rerun()


def _entry_point_has_navigation() -> bool:
    # Only when this app's entry point is app.py (not a page file run as its own app, as AppTest may do).
    ctx = get_script_run_ctx()
    main = Path(ctx.main_script_path).resolve() if ctx is not None else None
    return main == APP_ENTRY_POINT

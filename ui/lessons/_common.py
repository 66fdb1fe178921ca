"""What every lesson shares: the question box, links to the tool's pages, the chart style."""
from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from quant_core.config import PRESETS
from ui import cache
from ui.setup import LabContext

_ROOT = Path(__file__).resolve().parents[2]
LAYOUT = dict(margin=dict(l=50, r=20, t=50, b=45), hovermode="closest",
              legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0))
COLORS = {"x": "#2E6FD8", "reconstruction": "#D8572A", "grid": "rgba(120, 60, 160, 0.45)",
          "rounding": "#2E6FD8", "clipping": "#D8572A", "total": "#222222", "qat": "#2A9D55", "ptq": "#D8572A",
          "fp32": "#888888"}


def question(text: str, answer: str) -> None:
    """The lesson's question, and an answer computed from what the learner set, behind an expander."""
    st.markdown(f"**Question.** {text}")
    with st.expander("Check your answer (computed from your settings)"):
        st.markdown(answer)


def try_on_page(page: str, label: str) -> None:
    """Link to one of the tool's pages (e.g. "pages/1_Weights.py") when that page exists."""
    if (_ROOT / page).is_file():
        st.page_link(page, label=label, icon=":material/arrow_forward:")


def show_figure(fig: go.Figure, key: str) -> None:
    """Draw a lesson's chart. Figures with subplot titles get their legend on the right, clear of the titles."""
    fig.update_layout(**LAYOUT)
    if fig.layout.annotations:
        fig.update_layout(legend=dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.02))
    elif fig.layout.title.text:  # title on top, the horizontal legend between it and the plot
        fig.update_layout(margin=dict(t=100), title=dict(yref="container", y=0.97, yanchor="top"),
                          legend=dict(y=1.02))
    st.plotly_chart(fig, key=key, width="stretch")


def demo_context(name: str, ctx=None):
    """Return a LabContext for the demo model `name` with its held-out digits data.

    Reuses the page's own context when it already is that demo, so the caches (calibration,
    evaluator) are shared with the other pages.
    """
    model_bytes, key, data = cache.demo_source(name)
    if ctx is not None and ctx.model_key == key and ctx.data_key == DEMO_DATA_KEY:
        return ctx
    prepared = cache.load_prepared(model_bytes, key)
    calibration_data, evaluation_data = cache.split_data(key, DEMO_DATA_KEY, data)
    return LabContext(model_key=key, model_name=name, prepared=prepared, info=prepared.info, data=data,
                      calibration_data=calibration_data, evaluation_data=evaluation_data,
                      config=ctx.config if ctx is not None else _default_config(), data_key=DEMO_DATA_KEY,
                      data_name="digits (held-out demo data)", is_demo=True)


DEMO_DATA_KEY = "digits"  # the data key ui.setup gives the demos' own data


def _default_config():
    return PRESETS["FP32"]

"""What every lesson shares: the question box, links to the tool's pages, the chart style."""
from __future__ import annotations

from collections.abc import Callable
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


def figure_spec(fig: go.Figure) -> dict:
    """The figure with the lessons' common layout, as a plain dict (what st.plotly_chart sends).

    Figures with subplot titles get their legend on the right, clear of the titles; figures with a title
    get a top margin that holds the title above the horizontal legend.
    """
    fig.update_layout(**LAYOUT)
    if fig.layout.annotations:
        fig.update_layout(legend=dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.02))
    elif fig.layout.title.text:
        fig.update_layout(margin=dict(t=100), title=dict(yref="container", y=0.97, yanchor="top"),
                          legend=dict(y=1.02))
    return fig.to_dict()


@st.cache_data(max_entries=128, show_spinner=False)
def cached_spec(name: str, key: tuple, _build: Callable[[], go.Figure]) -> dict:
    """The spec of the figure `_build()` draws, cached by (name, key): `key` must determine the figure.

    Building a Plotly figure validates every property (tens of milliseconds for a few traces); a cached
    spec costs one unpickling.
    """
    return figure_spec(_build())


def show_figure(figure: go.Figure | dict, key: str) -> None:
    """Draw a lesson's chart (a Figure, or a spec from `figure_spec` / `cached_spec`)."""
    st.plotly_chart(figure_spec(figure) if isinstance(figure, go.Figure) else figure, key=key, width="stretch")


def demo_context(name: str, ctx=None):
    """Return a LabContext for the demo model `name` with its held-out digits data.

    Reuses the page's own context when it already is that demo, so the caches (calibration,
    evaluator) are shared with the other pages.
    """
    model_bytes, key, data = cache.demo_source(name)
    if ctx is not None and ctx.model_key == key and ctx.data_key == DEMO_DATA_KEY:
        return ctx
    # Pinned apart from the user's own model, which a visit to a lesson must not unpin (see ui.cache).
    prepared = cache.load_prepared(model_bytes, key, pin="lesson_prepared")
    calibration_data, evaluation_data = cache.split_data(key, DEMO_DATA_KEY, data, pin="lesson_split")
    return LabContext(model_key=key, model_name=name, prepared=prepared, info=prepared.info, data=data,
                      calibration_data=calibration_data, evaluation_data=evaluation_data,
                      config=ctx.config if ctx is not None else _default_config(), data_key=DEMO_DATA_KEY,
                      data_name="digits (held-out demo data)", is_demo=True)


DEMO_DATA_KEY = "digits"  # the data key ui.setup gives the demos' own data


def _default_config():
    return PRESETS["FP32"]

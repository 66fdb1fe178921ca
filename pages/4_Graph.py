"""Graph: the model drawn as its quantizable layers, coloured by their error; click one to inspect and fix it."""
import streamlit as st

from ui import graph_view
from ui.setup import page_errors, setup_page

ctx = setup_page("Graph")
st.title("Graph")
st.caption("The model top to bottom: quantizable layers as squares (the ops between two layers collapsed into the "
           "edge; hover its dot, or turn on Every op), model inputs and outputs as triangles. Scroll to zoom, drag to pan. Click a layer "
           "(or search it below) to see its histograms and errors and to change its format.")

if not ctx.info.layers:
    st.warning("This model has no quantizable layer to draw.")
    st.stop()

mode_column, good_column, bad_column, focus_column = st.columns([3, 1, 1, 1], vertical_alignment="bottom")
mode = mode_column.radio("Colour by", graph_view.modes(ctx), horizontal=True, key=graph_view.GRAPH_COLOR)
unit = graph_view.mode_unit(mode)
default_good, default_bad = graph_view.DEFAULT_THRESHOLDS[unit]
good = good_column.number_input(f"good ({unit})", value=default_good, key=f"{graph_view.GRAPH_GOOD}_{unit}")
bad = bad_column.number_input(f"bad ({unit})", value=default_bad, key=f"{graph_view.GRAPH_BAD}_{unit}")
focus = focus_column.toggle("Zoom to layer", key=graph_view.GRAPH_FOCUS,
                            help=f"show {graph_view.FOCUS_LEVELS} levels around the selected layer")
expanded = focus_column.toggle("Every op", key=graph_view.GRAPH_EXPAND,
                               help="draw every op instead of collapsing the ops between two layers into the edge")
with page_errors("the graph layout"):
    layout = graph_view.graph(ctx, expanded=expanded)
sweep_format = None
if mode == graph_view.SENSITIVITY:
    formats = graph_view.swept_formats(ctx)
    if not formats:
        st.info("No sensitivity sweep in this session yet: run one on the Sensitivity page, then colour by it here.")
    else:
        sweep_format = st.selectbox("Swept format", formats, key=graph_view.GRAPH_SWEEP_FORMAT)

graph_column, panel_column = st.columns([3, 2])
with panel_column:
    layer = graph_view.pick_layer(ctx)
config = ctx.config
with graph_column, page_errors("the graph colouring"):
    shown, values = graph_view.overlay(ctx, config, mode, good=good, bad=bad, sweep_format=sweep_format)
    graph_view.show_graph(ctx, layout, shown, layer, focus=focus)
    graph_view.model_explorer_download(ctx, mode, shown, values, good=good, bad=bad)

with panel_column:
    st.subheader(layer)
    with page_errors(f"the panel of {layer}"):
        graph_view.format_selectors(ctx, layer, config)
        st.table(graph_view.layer_facts(ctx, layer, config, layout).set_index(""))
        graph_view.histograms(ctx, layer, config)

"""Weights: one layer's weight distribution, every range method, the integer grid and the error per bit-width."""
import streamlit as st

from quant_core.numerics.formats import Granularity
from ui import block_view, state, weights_view
from ui.setup import page_errors, setup_page

ctx = setup_page("Weights")
st.title("Weights")
st.caption("Pick a layer: see its weight histogram with the clipping range each method chooses, the integer "
           "grid of the chosen format, why per-channel helps, and the error of every bit-width × method.")

layers = weights_view.weight_layers(ctx)
if not layers:
    st.warning("This model has no layer with static weights to quantize.")
    st.stop()

pick, fmt, view = st.columns([3, 3, 2])
layer = pick.selectbox("Layer (ONNX node name)", layers, key=state.WEIGHTS_LAYER)
bits = fmt.slider("Bits", 2, 8, 8, key=state.WEIGHTS_BITS)
scheme = view.radio("Scheme", ["symmetric", "asymmetric"], horizontal=True, key="weights_scheme")
granularity = view.radio("Granularity", ["per-tensor", "per-channel"], horizontal=True, key="weights_granularity")
log_y = pick.toggle("Log count axis", key="weights_log")
clip = fmt.slider("Clip range (% of the min-max range kept)", 1, 100, 100, key=state.WEIGHTS_CLIP)

choice = weights_view.WeightChoice(
    layer=layer, bits=bits, symmetric=scheme == "symmetric", clip_percent=clip, log_y=log_y,
    granularity=Granularity.PER_CHANNEL if granularity == "per-channel" else Granularity.PER_TENSOR)

with page_errors(f"the weight views of {layer}"):
    result = weights_view.weights_view(ctx, choice)

    st.subheader(f"{result.weight_name} {result.shape}")
    st.plotly_chart(result.histogram, width="stretch", key="weights_histogram")

    st.subheader("Clipping: rounding error against clipping error")
    mse_column, sqnr_column, best_column = st.columns(3)
    mse_column.metric("MSE at your clip", f"{result.clip.mse:.3e}")
    sqnr_column.metric("SQNR at your clip", f"{result.clip.sqnr_db:.2f} dB",
                       delta=f"{result.clip.sqnr_db - result.best_clip.sqnr_db:.2f} dB vs best")
    best_column.metric("Best clip", f"{result.best_clip.percent} %", help="Highest SQNR (lowest MSE) over 1–100 %.")
    st.plotly_chart(result.clip_figure, width="stretch", key="weights_clip_curve")

    st.subheader("Per-channel ranges")
    st.write(result.channel_note)
    if result.channels is not None:
        st.plotly_chart(result.channels, width="stretch", key="weights_channels")

    block_view.section(ctx, layer)

    st.subheader(f"Error by bit-width and range method ({scheme}, {granularity})")
    chart_column, table_column = st.columns([2, 3])
    chart_column.plotly_chart(result.table_figure, width="stretch", key="weights_sqnr_by_bits")
    table_column.dataframe(result.table, hide_index=True, width="stretch", height=36 * (len(result.table) + 1),
                           column_config={"MSE": st.column_config.NumberColumn(format="%.3e")})

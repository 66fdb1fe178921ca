"""Mixed precision: pick a format per layer and watch accuracy, fidelity and size change live."""
import streamlit as st

from ui import mixed_view, target_view
from ui.setup import page_errors, setup_page

ctx = setup_page("Mixed precision")
st.title("Mixed precision")
st.caption("Choose a number format per layer. Every edit re-evaluates the model on the evaluation split "
           "(simulated with onnxruntime) and becomes the current config on every page.")

mixed_view.preset_controls()
config = mixed_view.edit_config(ctx)

if ctx.evaluation_data is None:
    st.info("Accuracy and fidelity need data: upload a .npz with the model's inputs in the sidebar.")
    st.stop()

with page_errors("the evaluation of this config"):
    result, baseline = mixed_view.evaluate_with_baseline(ctx, config)
    mixed_view.show_metrics(result, baseline, ctx.task)
    mixed_view.show_evaluation_note(ctx)
    mixed_view.show_simulated(result)

    errors_column, classes_column = st.columns([3, 2])
    with errors_column:
        mixed_view.show_layer_errors(ctx, config, result)
    with classes_column:
        mixed_view.show_per_class(ctx, config, result, baseline)

st.subheader("Downloads")
with page_errors("the downloads"):
    config = target_view.target_selector(config)
    mixed_view.show_downloads(ctx, config)

"""Per-layer charts stay readable with many layers; the Trade-offs table's numbers fit a 1400-px window."""
import pandas as pd

from ui.engine_figures import HORIZONTAL_FROM_LAYERS, ROW_HEIGHT_PX, layer_error_figure
from ui.tradeoffs_view import compact_columns


def _errors(count: int) -> pd.DataFrame:
    return pd.DataFrame({"layer": [f"/model.{i}/conv/Conv" for i in range(count)],
                         "isolated_sqnr_db": [30.0] * count, "accumulated_sqnr_db": [20.0] * count})


def test_a_few_layers_are_vertical_bars_at_the_default_height():
    fig = layer_error_figure(_errors(3))
    assert all(bar.orientation in (None, "v") for bar in fig.data) and fig.layout.height is None


def test_forty_layers_are_horizontal_bars_one_row_each_first_layer_on_top():
    fig = layer_error_figure(_errors(40))
    assert 40 >= HORIZONTAL_FROM_LAYERS
    assert all(bar.orientation == "h" for bar in fig.data)
    assert fig.layout.height >= 40 * ROW_HEIGHT_PX
    assert fig.layout.yaxis.autorange == "reversed" and list(fig.data[0].y)[0] == "/model.0/conv/Conv"


def test_the_tradeoffs_numbers_get_small_columns_with_short_headings():
    table = pd.DataFrame(columns=["variant", "latency median (ms)", "latency p10 (ms)", "speed-up vs FP32",
                                  "kernels"])
    columns = compact_columns(table)
    assert columns["latency p10 (ms)"]["label"] == "p10 (ms)" and columns["latency p10 (ms)"]["width"] == "small"
    assert columns["variant"]["width"] == "medium"


def test_a_language_models_pareto_chart_shows_perplexity_not_the_ratio_the_search_ranks_by():
    from quant_core.search.budget import BudgetUnit
    from ui.engine_figures import pareto_figure

    unit = BudgetUnit("perplexity_ratio", fp32_perplexity=6.0)
    # headline = FP32 perplexity / perplexity: 1.0 is FP32, 0.75 is perplexity 8.
    frame = pd.DataFrame({"size_kb": [100.0, 50.0, 30.0], "accuracy": [1.0, 0.96, 0.75], "label": ["a", "b", "c"]})
    figure = pareto_figure(frame, chosen=(50.0, 0.96), metric="perplexity_ratio", unit=unit)
    assert list(figure.data[0].y) == [6.0, 6.25, 8.0]
    assert list(figure.data[2].y) == [6.25]
    assert "perplexity" in figure.layout.yaxis.title.text and "%" not in figure.layout.yaxis.title.text


def test_a_classifiers_pareto_chart_shows_accuracy_in_percent():
    from ui.engine_figures import pareto_figure

    frame = pd.DataFrame({"size_kb": [100.0, 50.0], "accuracy": [0.98, 0.9], "label": ["a", "b"]})
    figure = pareto_figure(frame, metric="accuracy")
    assert list(figure.data[0].y) == [98.0, 90.0] and figure.layout.yaxis.title.text == "accuracy (%)"

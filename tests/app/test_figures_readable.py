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

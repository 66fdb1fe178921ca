"""The Weights page: one layer's histogram with every method's range, the grid, channels and errors."""
import base64
import json

import numpy as np
import pytest

from quant_core.config import TensorQuant
from quant_core.model.demo import load_demo
from quant_core.numerics.formats import FormatKind, NumberFormat
from quant_core.numerics.metrics import mse, sqnr_db
from quant_core.model.model_io import load_model, weight_array
from quant_core.numerics.tensor import quantize_tensor
from tests.app.conftest import run_page, tiny_model_bytes

PAGE = "pages/1_Weights.py"


def _charts(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def _values(data) -> np.ndarray:
    """A Plotly JSON array: a plain list, or numpy data sent as {"dtype": ..., "bdata": base64}."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"])
    return np.asarray(data)


def _trace_names(figure: dict) -> list[str]:
    return [trace.get("name", "") for trace in figure["data"]]


def _table(at):
    return at.dataframe[0].value


def _metric(at, label_start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label_start))


@pytest.fixture(scope="module")
def cnn_model():
    return load_model(load_demo("cnn")[0])


def test_the_page_shows_a_histogram_with_each_range_method_and_the_grid():
    at = run_page(PAGE)
    assert at.selectbox(key="weights_layer").value == "/conv1/Conv"
    histogram = _charts(at)[0]
    names = _trace_names(histogram)
    assert names[0] == "count"
    assert any(name.startswith("int8 grid") for name in names)
    for method in ("minmax", "percentile", "mse", "entropy"):
        assert any(name.startswith(f"{method} [") for name in names), names
    table = _table(at)
    assert sorted(set(table["bits"])) == [2, 3, 4, 6, 8]
    assert sorted(set(table["method"])) == ["entropy", "minmax", "mse", "percentile"]
    assert len(table) == 20


def test_the_table_reports_the_measured_error_of_quantizing_the_weight(cnn_model):
    at = run_page(PAGE)
    x = weight_array(cnn_model, "conv1.weight")
    values = quantize_tensor(x, TensorQuant(NumberFormat(FormatKind.INT, 4)), name="conv1.weight").values
    row = _table(at).query("bits == 4 and method == 'minmax'").iloc[0]
    assert row["MSE"] == pytest.approx(mse(x, values), rel=1e-9)
    assert row["SQNR (dB)"] == pytest.approx(sqnr_db(x, values), abs=0.01)
    assert row["clipped (%)"] == 0


def test_the_sqnr_by_bits_chart_draws_the_table():
    at = run_page(PAGE)
    chart = _charts(at)[-1]
    table = _table(at)
    for trace in chart["data"]:
        expected = table.loc[table["method"] == trace["name"], "SQNR (dB)"].to_numpy()
        assert list(_values(trace["x"])) == [2, 3, 4, 6, 8]
        assert np.allclose(_values(trace["y"]).astype(float), expected)


def test_choosing_another_layer_shows_its_weight_and_its_errors():
    at = run_page(PAGE)
    before = _table(at)
    at.selectbox(key="weights_layer").set_value("/conv2/Conv").run()
    assert not at.exception
    assert any(h.value == "conv2.weight (32, 16, 3, 3)" for h in at.subheader)
    assert not np.allclose(before["MSE"].to_numpy(), _table(at)["MSE"].to_numpy())


def test_fewer_bits_give_a_coarser_grid_and_a_larger_error():
    at = run_page(PAGE)
    mse_8 = float(_metric(at, "MSE at your clip"))
    at.slider(key="weights_bits").set_value(4).run()
    assert not at.exception
    assert any(name.startswith("int4 grid") and "(16 levels)" in name for name in _trace_names(_charts(at)[0]))
    assert float(_metric(at, "MSE at your clip")) > mse_8


def test_per_channel_beats_per_tensor_on_conv1_whose_channels_differ_in_range():
    at = run_page(PAGE)
    per_tensor = _table(at).set_index(["bits", "method"])["SQNR (dB)"]
    at.radio(key="weights_granularity").set_value("per-channel").run()
    per_channel = _table(at).set_index(["bits", "method"])["SQNR (dB)"]
    assert (per_channel.loc[(4, "minmax")] > per_tensor.loc[(4, "minmax")])
    # histogram, clip curve, per-channel ranges, block grid (spec, round-up), shared exponents, SQNR by bits
    assert len(_charts(at)) == 7


def test_the_clip_slider_moves_the_error_and_the_best_clip_is_the_highest_sqnr(cnn_model):
    at = run_page(PAGE)
    at.slider(key="weights_bits").set_value(3).run()
    full = _metric(at, "SQNR at your clip")
    at.slider(key="weights_clip").set_value(40).run()
    assert not at.exception
    clipped = _metric(at, "SQNR at your clip")
    assert clipped != full
    curve = _charts(at)[1]
    sqnr = _values(curve["data"][0]["y"]).astype(float)
    best = next(trace for trace in curve["data"] if trace["name"].startswith("best"))
    assert best["y"][0] == pytest.approx(sqnr.max())
    yours = next(trace for trace in curve["data"] if trace["name"].startswith("yours"))
    assert yours["x"][0] == 40 and float(clipped.split()[0]) == pytest.approx(yours["y"][0], abs=0.005)
    x = weight_array(cnn_model, "conv1.weight")
    lo, hi = float(x.min()), float(x.max())
    values = quantize_tensor(x, TensorQuant(NumberFormat(FormatKind.INT, 3)), name="conv1.weight",
                             lo=np.float32(lo) * 0.4, hi=np.float32(hi) * 0.4).values
    assert float(clipped.split()[0]) == pytest.approx(sqnr_db(x, values), abs=0.005)


def test_every_chart_is_a_valid_plotly_figure():
    """ui.figures skips Plotly's validation for speed; a full validation of what the pages draw must pass."""
    import plotly.graph_objects as go

    # (The landing page draws its one chart in HTML: tests/app/test_model_page.py.)
    for page, change in ((PAGE, ("weights_granularity", "per-channel")),
                         ("pages/2_Activations.py", ("activations_method", "mse"))):
        at = run_page(page)
        if change:
            at.radio(key=change[0]).set_value(change[1]).run()
        specs = _charts(at)
        assert specs, page
        for spec in specs:
            go.Figure(spec)  # raises ValueError on any invalid property


def test_an_uploaded_matmul_model_shows_one_range_per_output_column():
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("tiny.onnx", tiny_model_bytes(), "application/octet-stream"))
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception and not at.error
    assert at.selectbox(key="weights_layer").options == ["/first/MatMul", "/second/MatMul"]
    at.radio(key="weights_granularity").set_value("per-channel").run()
    channels = _charts(at)[2]
    assert len(_values(channels["data"][0]["x"])) == 6  # w1 is (4, 6): MatMul's output channels are its columns
    assert "(axis 1)" in channels["layout"]["title"]["text"]
    assert len(_table(at)) == 20


def _lstm_model_bytes(hidden: int = 2, inputs: int = 3) -> bytes:
    """x (seq, batch, 3) -> LSTM: W (1, 4*hidden, 3), R (1, 4*hidden, hidden); gate rows are axis 1."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(1, 4 * hidden, inputs)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.normal(size=(1, 4 * hidden, hidden)).astype(np.float32), "R")
    graph = helper.make_graph(
        [helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="/rnn/LSTM", hidden_size=hidden)],
        "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, "batch", inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 1, "batch", hidden])], initializer=[w, r])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests").SerializeToString()


def test_an_lstm_weight_shows_one_range_per_gate_row_as_the_export_quantizes_it():
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("lstm.onnx", _lstm_model_bytes(), "application/octet-stream"))
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception and not at.error
    assert at.selectbox(key="weights_layer").options == ["/rnn/LSTM"]
    at.radio(key="weights_granularity").set_value("per-channel").run()
    channels = _charts(at)[2]
    assert len(_values(channels["data"][0]["x"])) == 8  # W is (1, 8, 3): 4 gates x 2 hidden rows on axis 1
    assert "(axis 1)" in channels["layout"]["title"]["text"]


# --- large weights: views on a seeded sample, exact min / max ------------------------------------

def _matmul_model_bytes(rows: int, columns: int) -> bytes:
    """x (batch, rows) -> /big/MatMul with a (rows, columns) weight whose column j is scaled by j + 1."""
    from onnx import TensorProto, helper, numpy_helper
    w = np.random.default_rng(3).normal(size=(rows, columns)).astype(np.float32) * np.arange(1, columns + 1,
                                                                                             dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="/big/MatMul")], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", columns])],
        initializer=[numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_sample_keeps_every_channel_with_the_same_random_positions_and_is_seeded():
    from ui.weights_view import weight_sample

    x = np.arange(6 * 100, dtype=np.float32).reshape(100, 6)  # 6 channels on axis 1
    sample, axis = weight_sample(x, 1, limit=60)
    assert axis == 0 and sample.shape == (6, 10)
    positions = sample[0] / 6  # row indices of channel 0's values
    assert np.array_equal(sample, x[positions.astype(int)].T), "the same rows in every channel"
    assert len(set(positions)) == 10 and np.all(np.diff(positions) > 0), "no repeats, in storage order"
    assert np.array_equal(weight_sample(x, 1, limit=60)[0], sample), "seeded: the same sample every time"
    small, small_axis = weight_sample(x, 1, limit=600)
    assert small is x and small_axis == 1, "at or under the limit: the weight itself"
    flat, _ = weight_sample(np.arange(1000, dtype=np.float32), 0, limit=100)
    assert flat.shape == (100,) and len(set(flat)) == 100


def test_a_weight_above_the_limit_is_shown_on_a_sample_and_the_page_says_so(monkeypatch):
    monkeypatch.setattr("ui.weights_view.MAX_HISTOGRAM_ELEMENTS", 1024)  # a (256, 16) weight has 4096 values
    model_bytes = _matmul_model_bytes(256, 16)
    w = weight_array(load_model(model_bytes), "w")
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("big.onnx", model_bytes, "application/octet-stream")).run()
    at.switch_page(PAGE).run()
    assert not at.exception and not at.error
    note = next(c.value for c in at.caption if c.value.startswith("Large weight"))
    assert note.startswith("Large weight: 4,096 values. The histogram, the range methods, the clip curve and the "
                           "error table use a seeded random sample of 1,024 of them (the same positions in each "
                           "of its 16 output channels); the min / max ranges (per tensor and per channel) are exact.")
    histogram = _charts(at)[0]
    assert histogram["layout"]["title"]["text"] == "w: 4,096 weights (histogram of a random sample of 1,024)"
    assert _values(histogram["data"][0]["y"]).sum() == 1024, "the histogram counts the sample"
    minmax = next(t for t in histogram["data"] if t.get("name", "").startswith("minmax ["))
    ends = [value for value in minmax["x"] if value is not None]
    assert min(ends) == pytest.approx(float(w.min())) and max(ends) == pytest.approx(float(w.max())), \
        "the exact range of the full weight"
    at.radio(key="weights_granularity").set_value("per-channel").run()
    bars = _charts(at)[2]["data"][0]
    assert np.allclose(_values(bars["base"]).astype(float), w.min(axis=0)), "each channel's exact minimum"
    assert np.allclose(_values(bars["base"]).astype(float) + _values(bars["y"]).astype(float), w.max(axis=0))
    assert len(_table(at)) == 20 and _table(at)["SQNR (dB)"].notna().all()
    at.slider(key="weights_bits").set_value(4).run()
    assert not at.exception and not at.error
    assert any(c.value.startswith("Large weight") for c in at.caption)

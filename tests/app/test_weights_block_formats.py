"""The Weights page's block-format section: one block's grid (spec rule and round-up), the shared exponents,
and every MX / NVFP4 format's error and bits per value, labelled simulated."""
from quant_core.config import TensorQuant
from quant_core.numerics.formats import parse_format
from quant_core.numerics.size import bits_per_parameter
from tests.app.conftest import run_page, texts

PAGE = "pages/1_Weights.py"


def _table(at):
    return at.table[0].value.reset_index()


def test_block_section_shows_every_format_with_its_bits_and_error():
    at = run_page(PAGE)
    assert "Simulated only" in texts(at) and "export keeps these layers FP32" in texts(at)
    table = _table(at)
    assert list(table["format"]) == ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxint8", "nvfp4"]
    bits = dict(zip(table["format"], table["bits / value"]))
    # The demo CNN's /conv1/Conv (16, 1, 3, 3) has a reduction of 9 < a block: each row pays a whole scale.
    assert at.selectbox(key="weights_layer").value == "/conv1/Conv"
    for name, value in bits.items():
        assert value == round(bits_per_parameter((16, 1, 3, 3), TensorQuant(parse_format(name))), 3)
    at.selectbox(key="weights_layer").set_value("/fc/Gemm").run()  # (10, 288): 9 full blocks of 32 per row
    bits = dict(zip(_table(at)["format"], _table(at)["bits / value"]))
    assert bits["mxfp4"] == 4.25 and bits["mxint8"] == 8.25 and bits["nvfp4"] == round(4.5 + 32 / 2880, 3)
    sqnr = dict(zip(table["format"], table["SQNR spec (dB)"]))
    assert sqnr["mxint8"] > sqnr["mxfp6_e2m3"] > sqnr["mxfp4"]


def test_the_block_grids_and_the_exponents_are_drawn_and_follow_the_format():
    at = run_page(PAGE)
    titles = [chart.proto.spec for chart in at.get("plotly_chart")]
    assert any("Shared E8M0 exponents" in spec for spec in titles)
    assert any("round-up: scale" in spec for spec in titles) and any("spec: scale" in spec for spec in titles)
    at.selectbox(key="weights_block_format").set_value("nvfp4").run()
    assert not at.exception, [e.message for e in at.exception]
    assert "no round-up variant" in texts(at)
    at.number_input(key="weights_block_index").set_value(0).run()
    assert not at.exception

"""Methods in the config: JSON round trip, old files, one-line refusals, equality and hash."""
import pytest

from quant_core.config import PRESETS, MethodSpec, QuantConfig
from quant_core.errors import ConfigError
from quant_core.methods import method, methods, parse_methods


def test_methods_round_trip_through_json_in_order():
    config = PRESETS["W8A8"].with_methods([{"name": "smoothquant", "alpha": 0.8}, "cle", "bias_correction"])
    copy = QuantConfig.from_json(config.to_json())
    assert copy == config and hash(copy) == hash(config)
    assert [spec.name for spec in copy.methods] == ["smoothquant", "cle", "bias_correction"]
    assert copy.methods[0].option("alpha") == 0.8


def test_a_config_without_methods_writes_no_methods_key_and_old_files_load():
    assert "methods" not in PRESETS["W8A8"].to_dict()
    old = PRESETS["W8A8"].to_dict()
    assert QuantConfig.from_dict(old).methods == ()


def test_methods_are_part_of_equality_and_hash():
    plain, with_cle = PRESETS["W8A8"], PRESETS["W8A8"].with_methods(["cle"])
    assert plain != with_cle
    assert with_cle.with_methods(["cle", "smoothquant"]) != with_cle.with_methods(["smoothquant", "cle"])  # order
    assert {with_cle: 1}[PRESETS["W8A8"].with_methods([MethodSpec("cle")])] == 1


def test_default_options_are_filled_so_equal_specs_are_equal():
    assert MethodSpec("smoothquant") == MethodSpec.from_dict({"name": "smoothquant", "alpha": 0.5})
    assert MethodSpec("smoothquant").to_dict() == {"name": "smoothquant", "alpha": 0.5}


@pytest.mark.parametrize("entry, message", [
    ({"name": "magic"}, "unknown method 'magic': expected one of cle, smoothquant, bias_correction, adaround, rtn, hqq, gptq, awq"),
    ({"name": "smoothquant", "beta": 1}, "method 'smoothquant' has no option(s) ['beta']; its options: alpha"),
    ({"name": "smoothquant", "alpha": 1.5}, "method 'smoothquant': alpha must be in [0, 1], got 1.5"),
    ({"name": "smoothquant", "alpha": "high"}, "method 'smoothquant' option 'alpha' must be like 0.5, got 'high'"),
    ({"alpha": 0.5}, "a method must be an object such as {\"name\": \"cle\"}, got {'alpha': 0.5} (an object)"),
])
def test_bad_methods_are_refused_with_one_line(entry, message):
    data = {**PRESETS["W8A8"].to_dict(), "methods": [entry]}
    with pytest.raises(ConfigError) as caught:
        QuantConfig.from_dict(data)
    assert str(caught.value) == message


def test_methods_must_be_a_list():
    with pytest.raises(ConfigError, match="'methods' must be a list"):
        QuantConfig.from_dict({**PRESETS["W8A8"].to_dict(), "methods": "cle"})


def test_registry_names_kinds_and_parse():
    assert set(methods()) >= {"cle", "smoothquant", "bias_correction"}
    assert method("cle").kind == "function-preserving" and method("bias_correction").kind == "config-dependent"
    assert parse_methods("cle, smoothquant") == (MethodSpec("cle"), MethodSpec("smoothquant"))
    assert parse_methods("") == ()

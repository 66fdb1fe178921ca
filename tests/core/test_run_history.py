"""Run history records: one per model, data, config and task; named in order; CSV with the config JSON."""
import csv
import io
from datetime import datetime

from quant_core.config import PRESETS, QuantConfig
from quant_core.search.run_history import (MAX_RECORDS, add_record, history_csv, layer_format, make_record, range_methods,
                                    with_latency)

WHEN = datetime(2026, 1, 2, 3, 4, 5)


def _record(history, config, model_key="m", value=0.9):
    return make_record(history, model_key=model_key, data_key="d", task_key="", config=config, metric="accuracy",
                       metric_value=value, size_bytes=2048, fp32_size_bytes=8192, when=WHEN)


def test_runs_are_named_in_order_per_model_and_the_same_config_is_kept_once():
    history = ()
    for config in (PRESETS["W8A8"], PRESETS["FP32"], PRESETS["W8A8"]):
        history = add_record(history, _record(history, config))
    assert [run.name for run in history] == ["#1 W8A8", "#2 FP32"]
    other = _record(history, PRESETS["W8A8"], model_key="other")
    assert other.name == "#1 W8A8", "numbering counts the runs of the same model"


def test_a_record_restores_the_exact_config_it_was_made_from():
    config = PRESETS["W8A8"].with_layer("/fc1/Gemm", PRESETS["FP32"].default)
    run = _record((), config)
    assert run.config == config and isinstance(run.config, QuantConfig)


def test_the_table_row_shows_the_metric_in_percent_and_the_size_ratio():
    row = _record((), PRESETS["W8A8"]).to_row()
    assert row["run"] == "#1 W8A8" and row["when"] == "2026-01-02 03:04:05"
    assert row["accuracy (%)"] == 90.0 and row["size (KiB)"] == 2.0 and row["size vs FP32"] == 0.25
    assert row["latency (ms)"] is None


def test_a_measured_latency_is_attached_to_its_run_only():
    history = ()
    for config in (PRESETS["W8A8"], PRESETS["FP32"]):
        history = add_record(history, _record(history, config))
    history = with_latency(history, history[1].key, 1.5)
    assert [run.latency_ms for run in history] == [None, 1.5]


def test_the_history_is_bounded_dropping_the_oldest_runs():
    history = ()
    for index in range(MAX_RECORDS + 5):
        config = PRESETS["W8A8"].with_layer(f"layer{index}", PRESETS["FP32"].default)
        history = add_record(history, _record(history, config))
    assert len(history) == MAX_RECORDS
    assert history[0].name == "#6 custom"


def test_the_csv_has_a_row_per_run_with_its_config_json():
    history = add_record((), _record((), PRESETS["W8A8"]))
    rows = list(csv.DictReader(io.StringIO(history_csv(history).decode("utf-8"))))
    assert len(rows) == 1 and rows[0]["run"] == "#1 W8A8"
    assert QuantConfig.from_json(rows[0]["config JSON"]) == PRESETS["W8A8"]


def test_methods_and_layer_formats_read_in_a_few_words():
    assert range_methods(PRESETS["FP32"]) == "FP32"
    assert range_methods(PRESETS["W8A8"]).startswith("weights minmax per_channel; activations minmax")
    assert layer_format(PRESETS["FP32"].default) == "FP32"
    assert layer_format(PRESETS["W8A8"].default) == "W int8 per_channel / A uint8"

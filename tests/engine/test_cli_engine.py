"""The evaluate / sensitivity / suggest commands: --json keys, time budgets, and one line for bad input."""
import json
import subprocess
import sys

import pytest

from quant_core.model.demo import DEMO_MODELS, demo_data_path

MLP = str(DEMO_MODELS["mlp"].path)
DATA = str(demo_data_path())
CNN = str(DEMO_MODELS["cnn"].path)
HELDOUT = str(DEMO_MODELS["cnn"].path.parent / "digits_heldout.npz")


def _run(*args):
    return subprocess.run([sys.executable, "-m", "quant_core", *args], capture_output=True, text=True, timeout=120)


def test_evaluate_json_keys():
    done = _run("evaluate", MLP, "--data", DATA, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {"config", "accuracy", "fp32_accuracy", "per_class_accuracy", "top1_agreement", "cosine", "sqnr_db",
            "output_sqnr_db", "size_bytes", "fp32_size_bytes", "simulated_only", "sample_count",
            "layers"} <= set(report)
    assert report["config"]["name"] == "W8A8"
    assert set(report["layers"][0]) == {"layer", "isolated_sqnr_db", "accumulated_sqnr_db"}


def test_sensitivity_json_rows():
    done = _run("sensitivity", MLP, "--data", DATA, "--formats", "int8,int2", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 3 * 2
    assert set(rows[0]) == {"layer", "format", "sqnr_db", "cosine", "accuracy", "size_bytes", "metric", "score"}
    assert rows[0]["metric"] == "accuracy" and rows[0]["score"] == rows[0]["accuracy"]


def test_suggest_json_meets_budget():
    done = _run("suggest", MLP, "--data", DATA, "--max-size-mb", "0.012", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["met"] and report["size_bytes"] <= 12_000
    assert set(report["steps"][0]) == {"step", "action", "layer", "from_format", "to_format", "size_bytes",
                                       "accuracy", "reason"}


def test_sensitivity_time_budget_prints_the_finished_rows_and_says_where_it_stopped():
    done = _run("sensitivity", MLP, "--data", DATA, "--time-budget", "0.000001", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) <= 1, "at most the config running when the budget ends is finished, no other starts"
    expected = f"{len(rows)} of 15 rows" if rows else "0 rows"
    assert done.stderr == f"stopped after 0 s (time budget 1e-06 s): {expected}\n"


def test_suggest_time_budget_returns_what_it_found_and_the_stopped_key():
    done = _run("suggest", MLP, "--data", DATA, "--max-size-mb", "0.012", "--time-budget", "0.000001", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert not report["met"] and report["steps"] == []
    assert report["stopped"].startswith("stopped after 0 s (time budget 1e-06 s), 0 steps taken: no measured config")
    text = _run("suggest", MLP, "--data", DATA, "--max-size-mb", "0.012", "--time-budget", "0.000001")
    assert "budget size <= 12000 bytes: NOT met" in text.stdout and "\nstopped after 0 s" in text.stdout


def test_suggest_without_a_time_budget_is_not_stopped():
    report = json.loads(_run("suggest", MLP, "--data", DATA, "--max-size-mb", "0.02", "--json").stdout)
    assert report["met"] and report["stopped"] is None


@pytest.mark.parametrize("args, message", [
    (("evaluate", MLP, "--data", "missing.npz"), "missing.npz"),
    (("sensitivity", MLP, "--data", DATA, "--formats", "int99"), "unknown number format"),
    (("sensitivity", MLP, "--data", DATA, "--time-budget", "0"), "--time-budget must be a positive number of seconds"),
    (("suggest", MLP, "--data", DATA, "--min-accuracy", "0.9", "--time-budget", "-5"),
     "--time-budget must be a positive number of seconds, got -5"),
])
def test_bad_input_gives_one_line_and_exit_status_2(args, message):
    done = _run(*args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr and "Traceback" not in done.stderr


def test_evaluate_with_methods_reports_them_and_recovers_the_per_tensor_cnn(tmp_path):
    from quant_core.config import PRESETS
    from quant_core.export.latency import static_int8_config
    from quant_core.model.model_io import load_model, prepare_model
    config = static_int8_config(prepare_model(load_model(CNN)), per_channel=False)
    path = tmp_path / "per_tensor.json"
    path.write_text(config.to_json())
    done = _run("evaluate", CNN, "--data", HELDOUT, "--config", str(path),
                "--methods", "cle", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert [m["name"] for m in document["methods"]["methods"]] == ["cle"]
    assert document["config"]["methods"] == [{"name": "cle", "high_bias_absorption": False}]
    assert document["accuracy"] > document["fp32_accuracy"] - 0.01
    assert PRESETS["W8A8"].methods == ()


def test_export_with_methods_writes_the_transformed_model(tmp_path):
    out = tmp_path / "cnn.onnx"
    done = _run("export", CNN, "--data", HELDOUT, "--methods",
                "cle,bias_correction", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "method cle (high_bias_absorption=False):" in done.stdout and "method bias_correction:" in done.stdout
    assert out.is_file()


def test_an_unknown_method_is_one_line_and_exit_status_2():
    done = _run("evaluate", CNN, "--data", HELDOUT, "--methods", "magic")
    assert done.returncode == 2
    assert done.stderr == "error: unknown method 'magic': expected one of cle, smoothquant, bias_correction, adaround, rtn, hqq, gptq, awq\n"


def test_range_search_in_methods_rewrites_the_configs_activation_ranges():
    done = _run("evaluate", CNN, "--data", HELDOUT, "--methods", "cle,range_search", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    chosen = {row["layer"]: row["chosen"] for row in document["range_search"]["layers"]}
    assert set(chosen) == {"/conv1/Conv", "/conv2/Conv", "/fc/Gemm"}
    assert document["config"]["methods"] == [{"name": "cle", "high_bias_absorption": False}]
    assert document["config"]["layers"]  # the chosen ranges are explicit per-layer overrides


def test_range_search_is_refused_where_no_single_config_is_evaluated():
    done = _run("sensitivity", CNN, "--data", HELDOUT, "--methods", "cle,range_search")
    assert done.returncode == 2
    assert done.stderr == ("error: --methods range_search rewrites one config's activation ranges: use it with "
                           "evaluate or export, not sensitivity\n")

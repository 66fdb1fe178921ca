"""The sidebar's Task: the inferred kind is shown, an override changes the metric every page shows, and the
task travels with the config JSON (docs/tasks.md)."""
import json

import pytest

from quant_core.config import PRESETS
from quant_core.engine.tasks import Task, TaskKind, config_json
from tests.app.conftest import app_test, texts

MIXED = "pages/3_Mixed_precision.py"


def _metric_labels(at) -> list[str]:
    return [m.label for m in at.metric]


@pytest.fixture
def mixed():
    at = app_test(MIXED).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_the_sidebar_shows_the_inferred_task_and_its_headline_metric(mixed):
    assert mixed.selectbox(key="task_kind").value == "inferred"
    captions = [c.value for c in mixed.sidebar.caption]
    assert any(("Scored: classification on output (first), axis -1. Headline metric: accuracy with labels, "
                        "else top-1 agreement with FP32.") in c for c in captions)
    assert _metric_labels(mixed)[0] == "Accuracy"  # the headline first: the demo data has labels


def test_an_override_changes_the_metric_shown_and_says_why_the_labels_no_longer_count(mixed):
    mixed.selectbox(key="task_kind").set_value("embedding").run()
    assert not mixed.exception and not mixed.error, [e.value for e in mixed.error]
    labels = _metric_labels(mixed)
    assert labels[0] == "Recall@5" and "Mean per-sample cosine" in labels
    assert "Accuracy" not in labels and "Top-1 agreement" not in labels  # no argmax over a hidden state
    assert "Labels not scored: class labels cannot be scored against an embedding" in texts(mixed)
    mixed.number_input(key="task_option").set_value(3).run()
    assert _metric_labels(mixed)[0] == "Recall@3"
    mixed.selectbox(key="task_kind").set_value("inferred").run()
    assert _metric_labels(mixed)[0] == "Accuracy"


def test_a_task_that_does_not_fit_the_output_is_one_line_and_the_task_is_kept(mixed):
    mixed.selectbox(key="task_kind").set_value("ctc").run()
    assert not mixed.exception
    (error,) = [e.value for e in mixed.error]
    assert error.startswith("That task cannot apply: task ctc needs [N, T, C], but output 'logits'")
    assert error.endswith("The previous task is kept.")
    assert mixed.selectbox(key="task_kind").value == "inferred" and _metric_labels(mixed)[0] == "Accuracy"


def test_the_task_changes_what_the_sensitivity_sweep_ranks_by(monkeypatch):
    monkeypatch.setattr("ui.sensitivity_view.AUTO_SWEEP_MAX_CONFIGS", 100)
    at = app_test("pages/5_Sensitivity.py").run()
    at.selectbox(key="model_choice").set_value("mlp").run()
    at.selectbox(key="task_kind").set_value("regression").run()
    at.multiselect(key="sens_formats").set_value(["int8", "int2"]).run()
    at.button(key="sens_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    ranked = at.dataframe[0].value
    assert "cosine drop (pp)" in ranked.columns
    assert any("Drop = cosine lost vs FP32" in c.value for c in at.caption)


def test_a_config_json_with_a_task_sets_the_task_and_the_download_writes_it_back(mixed, downloads):
    document = config_json(PRESETS["W8 weight-only"], Task(TaskKind.EMBEDDING, k=2)).encode()
    at = mixed
    at.file_uploader(key="config_upload").set_value(("embed.json", document, "application/json")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="task_kind").value == "embedding" and _metric_labels(at)[0] == "Recall@2"
    written = json.loads(downloads["quant_config_W8_weight-only.json"])
    assert written["task"] == Task(TaskKind.EMBEDDING, k=2).to_dict() and written["name"] == "W8 weight-only"


def test_a_model_with_several_outputs_picks_the_scored_output_in_the_sidebar():
    import io

    import numpy as np

    from tests.models.task_graphs import two_output_model

    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buffer, x=rng.normal(size=(200, 16)).astype(np.float32), labels=rng.integers(0, 4, size=200))
    at = app_test(MIXED).run()
    at.file_uploader(key="model_upload").set_value(("two.onnx", two_output_model().SerializeToString(),
                                                     "application/octet-stream")).run()
    at.file_uploader(key="data_upload").set_value(("two.npz", buffer.getvalue(), "application/octet-stream")).run()
    assert at.selectbox(key="task_output").options == ["logits", "pooled_embedding"]
    assert _metric_labels(at)[0] == "Accuracy"
    at.selectbox(key="task_output").set_value("pooled_embedding").run()
    at.selectbox(key="task_kind").set_value("embedding").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert _metric_labels(at)[0] == "Recall@5"
    assert any("Scored: embedding on output pooled_embedding" in c.value for c in at.sidebar.caption)


def test_a_detector_with_face_labels_shows_no_accuracy_anywhere_but_says_why():
    import io

    import numpy as np

    from tests.models.task_graphs import detector_model

    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buffer, x=rng.normal(size=(200, 3, 8, 8)).astype(np.float32), labels=rng.integers(0, 2, size=200))
    at = app_test("app.py").run()
    at.file_uploader(key="model_upload").set_value(("faces.onnx", detector_model().SerializeToString(),
                                                     "application/octet-stream")).run()
    at.file_uploader(key="data_upload").set_value(("faces.npz", buffer.getvalue(), "application/octet-stream")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert not any("accuracy" in m.label.lower() for m in at.metric)  # never "FP32 top-1 accuracy 0.00 %"
    assert "Accuracy cannot be measured here: class labels cannot be scored against a detection" in texts(at)
    at.switch_page("pages/3_Mixed_precision.py").run()
    assert [m.label for m in at.metric][:2] == ["Top-1 agreement", "Max-score change"]
    assert "Labels not scored: class labels cannot be scored against a detection" in texts(at)

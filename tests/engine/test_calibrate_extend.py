"""Calibrating in two passes: the layer inputs first, the other tensors when a page asks for them.

A tensor's histogram is the same, bit for bit, whether it was counted in one pass over everything
or added later by `extend_calibration`: same session graph, same batches, same batch order.
"""
from pathlib import Path

import numpy as np
import pytest

from quant_core.engine import calibrate as calibrate_module
from quant_core.engine.calibrate import (Cancelled, _probe_bytes, _probe_parts, calibrate, calibration_tensors,
                                         extend_calibration, layer_input_tensors)
from quant_core.errors import DataError, QuantLabError
from quant_core.model.data import load_npz, split_dataset
from quant_core.model.model_io import load_model, prepare_model

STRUCTURES = Path(__file__).resolve().parents[2] / "demo_models" / "structures"


def _assert_same(mine, reference) -> None:
    assert mine.tensors == reference.tensors and mine.sample_count == reference.sample_count
    assert (mine.sample_bytes, mine.batch_size, mine.bins) == (reference.sample_bytes, reference.batch_size,
                                                               reference.bins)
    for name in reference.tensors:
        a, b = mine.histogram(name), reference.histogram(name)
        for field in ("counts", "edges", "abs_counts", "abs_edges"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (name, field)
        assert (a.count, a.min, a.max, a.threshold) == (b.count, b.min, b.max, b.threshold), name


def _in_two_passes(prepared, data, **options):
    first = calibrate(prepared, data, tensors=layer_input_tensors(prepared), **options)
    return first, extend_calibration(first, prepared, data, calibration_tensors(prepared))


def test_the_first_pass_counts_only_what_layers_read(chain):
    prepared, data = chain
    first = calibrate(prepared, data, bins=64, tensors=layer_input_tensors(prepared))
    assert first.tensors == ("x", "r0", "r1")
    assert first.missing(calibration_tensors(prepared)) == ("h0", "h1", "y")
    with pytest.raises(QuantLabError, match="no calibration histogram for tensor 'h0'"):
        first.histogram("h0")


def test_a_first_pass_weighs_and_batches_as_a_pass_over_everything(chain, monkeypatch):
    prepared, data = chain
    monkeypatch.setattr(calibrate_module, "CALIBRATION_BATCH_BYTES", 40 * 4 * 20)  # ~40 samples a batch
    everything = calibrate(prepared, data, bins=64)
    first = calibrate(prepared, data, bins=64, tensors=layer_input_tensors(prepared))
    assert first.sample_bytes == everything.sample_bytes == 4 * (6 + 5 + 5 + 4 + 4 + 3)


@pytest.mark.parametrize("budget", [None, 3000])  # None: one batch of 64; 3000 bytes: batches of 27 samples
def test_extending_gives_the_histograms_of_one_pass_over_everything(chain, monkeypatch, budget):
    prepared, data = chain
    if budget:
        monkeypatch.setattr(calibrate_module, "CALIBRATION_BATCH_BYTES", budget)
    first, extended = _in_two_passes(prepared, data, bins=64)
    _assert_same(extended, calibrate(prepared, data, bins=64))
    assert extended.histogram("x") is first.histogram("x")  # the first pass's histograms are kept, not recounted


def test_the_demo_cnn_in_two_passes_equals_one_pass(demo_cnn, monkeypatch):
    prepared, calibration_data, _ = demo_cnn
    monkeypatch.setattr(calibrate_module, "CALIBRATION_BATCH_BYTES", 2**20)  # several batches
    _, extended = _in_two_passes(prepared, calibration_data, batch_size=64)
    _assert_same(extended, calibrate(prepared, calibration_data, batch_size=64))


@pytest.mark.parametrize("name", ["vad_gru", "lstm_hc"])
def test_a_stream_in_two_passes_equals_one_pass(name):
    prepared = prepare_model(load_model(str(STRUCTURES / f"{name}.onnx")))
    calibration_data, _ = split_dataset(load_npz(STRUCTURES / f"{name}.npz", prepared.info), calibration_samples=32)
    _, extended = _in_two_passes(prepared, calibration_data)
    _assert_same(extended, calibrate(prepared, calibration_data))


def test_extending_with_nothing_missing_returns_the_same_calibration(chain):
    prepared, data = chain
    calibration = calibrate(prepared, data, bins=64)
    assert extend_calibration(calibration, prepared, data, ("h0", "y")) is calibration


def test_extending_on_other_data_is_refused_in_one_line(chain):
    prepared, data = chain
    first = calibrate(prepared, data, bins=64, tensors=layer_input_tensors(prepared))
    with pytest.raises(DataError, match="holds 100 samples, the calibration was counted on 300"):
        extend_calibration(first, prepared, data.subset(np.arange(100)), ("h0",))


def test_a_tensor_that_is_no_layer_input_or_output_is_refused_by_name(chain):
    prepared, data = chain
    with pytest.raises(QuantLabError, match=r"\['w0'\] is not an activation a layer reads or produces"):
        calibrate(prepared, data, tensors=("w0",))


def test_an_extension_stops_when_asked_and_leaves_the_first_pass_as_it_was(chain):
    prepared, data = chain
    first = calibrate(prepared, data, bins=64, batch_size=100, tensors=layer_input_tensors(prepared))
    with pytest.raises(Cancelled):
        extend_calibration(first, prepared, data, ("h0",), cancel=lambda: True)
    assert first.tensors == ("x", "r0", "r1")


def test_the_probe_adds_its_outputs_after_the_models_own(chain):
    import onnx
    prepared, _ = chain
    probe = onnx.ModelProto()
    probe.ParseFromString(_probe_bytes(prepared.model, calibration_tensors(prepared)))
    assert [out.name for out in probe.graph.output] == ["y", "x", "h0", "r0", "h1", "r1"]
    assert len(probe.graph.initializer) == len(prepared.model.graph.initializer)


@pytest.mark.parametrize("switch", ["PROBE_ARENA", "PROBE_WEIGHTS_IN_MEMORY"])
def test_how_the_probe_session_is_built_changes_no_histogram(demo_cnn, monkeypatch, switch):
    prepared, calibration_data, _ = demo_cnn
    shipped = calibrate(prepared, calibration_data, batch_size=64)
    monkeypatch.setattr(calibrate_module, switch, False)
    _assert_same(shipped, calibrate(prepared, calibration_data, batch_size=64))


def test_the_probes_large_weights_come_from_memory_and_small_ones_stay_inline(demo_cnn):
    import onnx
    prepared, _, _ = demo_cnn
    data, names, buffers = _probe_parts(prepared.model, calibration_tensors(prepared))
    probe = onnx.ModelProto()
    probe.ParseFromString(data)
    large = [init for init in prepared.model.graph.initializer if len(init.raw_data) >= 1024]
    assert large and len(names) == len(large) and [bytes(b) for b in buffers] == [i.raw_data for i in large]
    external = [init for init in probe.graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL]
    assert len(external) == len(large) and not any(init.raw_data for init in external)
    assert len(probe.graph.initializer) == len(prepared.model.graph.initializer)
    assert [out.name for out in probe.graph.output][len(prepared.model.graph.output):] == [
        name for name in calibration_tensors(prepared) if name not in {o.name for o in prepared.model.graph.output}]


@pytest.mark.real_models
@pytest.mark.parametrize("name", ["ocr_det", "ocr_rec", "ocr_cls", "silero_vad", "minilm", "yolo_det"])
def test_every_real_model_gives_the_same_histograms_in_two_passes_and_however_the_probe_is_built(name, monkeypatch):
    from quant_core.model.data import record_state
    from tests.real_models.conftest import cached
    model, data = cached(name)
    prepared = prepare_model(load_model(model))
    calibration_data, _ = split_dataset(record_state(prepared, load_npz(data, prepared.info)))
    one_pass = calibrate(prepared, calibration_data)
    _assert_same(_in_two_passes(prepared, calibration_data)[1], one_pass)
    monkeypatch.setattr(calibrate_module, "PROBE_ARENA", False)
    monkeypatch.setattr(calibrate_module, "PROBE_WEIGHTS_IN_MEMORY", False)
    _assert_same(calibrate(prepared, calibration_data), one_pass)

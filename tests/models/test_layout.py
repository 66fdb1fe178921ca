"""How .npz arrays hold their samples (docs/data.md): batch-first, complete inputs, scalars, streaming state."""
import io

import numpy as np
import pytest

from quant_core.model.data import Dataset, load_npz, split_dataset
from quant_core.errors import DataError
from quant_core.model.layout import (DataLayout, Feeder, InputKind, InputLayout, StatePair, feeder, infer_layout,
                               infer_state, parse_state)
from quant_core.model.model_io import ModelInfo, TensorInfo


def info(inputs, outputs) -> ModelInfo:
    return ModelInfo(inputs=tuple(TensorInfo(*i) for i in inputs), outputs=tuple(TensorInfo(*o) for o in outputs),
                     opset=17, producer="", ir_version=8, already_quantized=False, quantized_ops=(), layers=(),
                     total_params=0, notes=())


# A Silero-VAD-like model: a frame, an RNN state [num_layers, batch, hidden], a scalar sample rate.
VAD = info([("input", ("batch", 64), "float32"), ("state", (2, "batch", 16), "float32"), ("sr", (), "int64")],
           [("prob", ("batch", 2), "float32"), ("stateN", (2, "batch", 16), "float32")])
LSTM = info([("x", ("batch", 8), "float32"), ("h", (1, "batch", 16), "float32"), ("c", (1, "batch", 16), "float32")],
            [("y", ("batch", 3), "float32"), ("hn", (1, "batch", 16), "float32"),
             ("cn", (1, "batch", 16), "float32")])
N = 6
RNG = np.random.default_rng(0)


def vad_arrays(*, frame=(N, 1, 64), sr=None):
    return {"input": RNG.random(frame, dtype=np.float32), "state": RNG.random((N, 2, 1, 16), dtype=np.float32),
            "sr": np.full(N, 16000, dtype=np.int64) if sr is None else sr}


def kinds(layout: DataLayout) -> dict[str, tuple[InputKind, int | None]]:
    return {item.name: (item.kind, item.axis) for item in layout.inputs}


def test_batch_first_arrays_keep_the_classic_layout():
    model = info([("image", ("batch", 1, 8, 8), "float32")], [("logits", ("batch", 10), "float32")])
    layout = infer_layout(model, {"image": np.zeros((5, 1, 8, 8), np.float32)})
    assert layout.classic and layout.stackable and not layout.streaming
    assert kinds(layout) == {"image": (InputKind.BATCH, 0)}


def test_each_sample_a_complete_input_with_batch_1_at_the_models_batch_axis():
    layout = infer_layout(VAD, vad_arrays())
    assert kinds(layout) == {"input": (InputKind.SAMPLE, 0), "state": (InputKind.SAMPLE, 1), "sr": (InputKind.SCALAR, None)}
    assert not layout.classic


def test_batch_first_and_complete_inputs_mix():
    layout = infer_layout(VAD, vad_arrays(frame=(N, 64)))
    assert kinds(layout)["input"] == (InputKind.BATCH, 0) and kinds(layout)["state"] == (InputKind.SAMPLE, 1)


def test_a_scalar_per_sample_stacks_only_while_it_is_constant():
    assert infer_layout(VAD, vad_arrays()).stackable
    varying = vad_arrays(sr=np.array([16000, 8000] * (N // 2), dtype=np.int64))
    assert not infer_layout(VAD, varying).stackable


def test_a_fixed_batch_dimension_of_1_feeds_samples_one_by_one():
    fixed = info([("state", (2, 1, 16), "float32")], [("out", (2, 1, 16), "float32")])
    layout = infer_layout(fixed, {"state": np.zeros((N, 2, 1, 16), np.float32)})
    assert kinds(layout) == {"state": (InputKind.SAMPLE, 1)} and not layout.stackable


def test_a_state_read_batch_first_against_its_fixed_axis_0_of_1_runs_one_sample_at_a_time():
    arrays = {"x": np.zeros((N, 8), np.float32), "h": np.zeros((N, 1, 16), np.float32),
              "c": np.zeros((N, 1, 16), np.float32)}
    layout = infer_layout(LSTM, arrays)
    assert kinds(layout)["h"] == (InputKind.BATCH, 0) and layout.batch_first
    fed = feeder(Dataset(arrays, layout=layout), LSTM, ("x", "h", "c"), ("y", "hn", "cn"), 64)
    assert fed.batch_size == 1 and next(fed.batches())["h"].shape == (1, 1, 16)


def test_output_batch_axes_follow_the_inputs_batch_dimension_name():
    assert dict(infer_layout(VAD, vad_arrays()).output_axes) == {"prob": 0, "stateN": 1}


@pytest.mark.parametrize("arrays, message", [
    (dict(vad_arrays(), state=np.zeros((N, 2, 3, 16), np.float32)),
     r"input 'state' expects shape \(2, batch, 16\) float32, got \(6, 2, 3, 16\) float32: each sample .axis 0. "
     r"must be a complete input with batch size 1"),
    (dict(vad_arrays(), state=np.zeros((N, 3, 1, 16), np.float32)),
     r"input 'state' expects shape \(2, batch, 16\) float32, got \(6, 3, 1, 16\) float32: samples go on axis 0"),
    (dict(vad_arrays(), sr=np.zeros((N, 1), np.int64)),
     r"input 'sr' expects shape \(\) int64, got \(6, 1\) int64: a scalar input takes one value per sample"),
])
def test_data_that_fits_no_layout_gets_one_line(arrays, message):
    with pytest.raises(DataError, match=message) as error:
        infer_layout(VAD, arrays)
    assert "\n" not in str(error.value) and "docs/data.md" in str(error.value)


def test_state_pairs_are_inferred_by_name_and_shape():
    assert infer_state(VAD) == (StatePair("stateN", "state"),)
    assert infer_state(LSTM) == (StatePair("hn", "h"), StatePair("cn", "c"))
    suffixed = info([("h_in", (1, "batch", 4), "float32"), ("h0", (1, "batch", 4), "float32")],
                    [("h_out", (1, "batch", 4), "float32"), ("hn", (1, "batch", 4), "float32")])
    assert infer_state(suffixed) == (StatePair("h_out", "h_in"), StatePair("hn", "h0"))


def test_a_name_match_with_another_shape_is_not_state():
    model = info([("h", (1, "batch", 16), "float32")], [("hn", (1, "batch", 8), "float32")])
    assert infer_state(model) == ()
    model = info([("h", (1, "batch", 16), "float32")], [("hn", (1, "batch", 16), "float16")])
    assert infer_state(model) == ()


def test_state_pairs_can_be_given_or_turned_off():
    assert infer_layout(LSTM, {"x": np.zeros((N, 8), np.float32), "h": np.zeros((N, 1, 1, 16), np.float32),
                               "c": np.zeros((N, 1, 1, 16), np.float32)}, state={"hn": "c"}).state == \
        (StatePair("hn", "c"),)
    assert not infer_layout(VAD, vad_arrays(), state={}).streaming


@pytest.mark.parametrize("state, message", [
    ({"stateX": "state"}, "state mapping stateX=state: the model has no output 'stateX' .outputs: prob, stateN."),
    ({"stateN": "hidden"}, "state mapping stateN=hidden: the model has no input 'hidden' .inputs: input, state, sr."),
    ({"stateN": "input"}, r"state mapping stateN=input: output 'stateN' is \(2, batch, 16\) float32 but input "
                          r"'input' expects \(batch, 64\) float32"),
    ({"stateN": "state", "prob": "state"}, "input 'state' is already fed by another output"),
])
def test_a_state_mapping_that_does_not_match_gets_one_line(state, message):
    with pytest.raises(DataError, match=message) as error:
        infer_layout(VAD, vad_arrays(), state=state)
    assert "\n" not in str(error.value)


def test_state_mappings_parse_from_the_command_line():
    assert parse_state(None) is None and parse_state([]) is None
    assert parse_state(["stateN=state"]) == {"stateN": "state"}
    assert parse_state(["hn=h,cn=c"]) == parse_state(["hn=h", "cn=c"]) == {"hn": "h", "cn": "c"}
    assert parse_state("none") == {}
    with pytest.raises(DataError, match="state mapping 'stateN': write output=input"):
        parse_state("stateN")


def test_a_batch_stacks_complete_inputs_along_the_models_batch_axis():
    arrays = vad_arrays()
    layout = infer_layout(VAD, arrays)
    feed = layout.feed(arrays, 1, 4)
    assert feed["input"].shape == (3, 64) and feed["state"].shape == (2, 3, 16) and feed["sr"].shape == ()
    np.testing.assert_array_equal(feed["state"][:, 2], arrays["state"][3, :, 0])
    one = layout.feed(arrays, 3, 4)
    assert one["input"].shape == (1, 64) and one["state"].shape == (2, 1, 16)


def test_joined_outputs_have_samples_on_axis_0():
    layout = infer_layout(VAD, vad_arrays())
    feeder = Feeder({}, layout, 2, 4, ("prob", "stateN"))
    parts = [(np.zeros((2, 2)), np.arange(64, dtype=np.float32).reshape(2, 2, 16)),
             (np.ones((2, 2)), np.zeros((2, 2, 16), np.float32))]
    prob, state = feeder.join(parts)
    assert prob.shape == (4, 2) and state.shape == (4, 2, 16)
    np.testing.assert_array_equal(state[1, 0], np.arange(16, 32))


def test_a_stream_carries_each_steps_state_output_to_the_next_step():
    arrays = vad_arrays()
    layout = infer_layout(VAD, arrays)
    seen = []

    def run(feed):
        seen.append(feed["state"].copy())
        return {"prob": np.zeros((1, 2)), "stateN": feed["state"] + 1}

    list(Feeder(arrays, layout, 4, N, ("prob", "stateN")).stream(run))
    np.testing.assert_array_equal(seen[0], arrays["state"][0])  # the first step: the recorded state
    for step in range(1, N):
        np.testing.assert_allclose(seen[step], arrays["state"][0] + step, rtol=1e-6)


def test_load_npz_reads_a_plain_npz_of_complete_inputs_and_a_stream_splits_in_order():
    buffer = io.BytesIO()
    np.savez(buffer, **vad_arrays(), labels=np.arange(N) % 2)
    data = load_npz(buffer.getvalue(), VAD)
    assert data.streaming and data.layout.state == (StatePair("stateN", "state"),)
    calibration, evaluation = split_dataset(data, calibration_samples=2)
    np.testing.assert_array_equal(calibration.inputs["state"], data.inputs["state"][:2])
    np.testing.assert_array_equal(evaluation.inputs["state"], data.inputs["state"][2:])
    assert evaluation.layout == data.layout


def test_the_layout_describes_how_the_data_was_understood():
    lines = infer_layout(VAD, vad_arrays()).describe()
    assert lines == ("'input': each sample a complete input (batch dimension 1 at axis 0)",
                     "'state': each sample a complete input (batch dimension 1 at axis 1)",
                     "'sr': one scalar per sample",
                     "samples are stacked along the model's batch axis",
                     "streaming: consecutive samples carry the state stateN → state")
    assert InputLayout("x", InputKind.BATCH).describe() == "'x': samples along the model's batch axis 0"

"""The engine's sessions are built without copies of the weights they drop again, and hold nothing between runs.

Every session on the simulation graph feeds the layers' weights as inputs (or traces them with markers
first), so it is built from the model without those weights' data (`without_weight_data`); what it builds
must be exactly what it built from the whole model, byte for byte.
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quant_core.engine.simulate import SimulationSession, activation_modes_supported
from quant_core.engine.simulation_graph import (build_simulation_model, reorder_weight_inputs, simulation_session,
                                                with_weight_data, without_weight_data)
from quant_core.model.layers import layer_specs
from quant_core.model.model_io import prepare_model
from quant_core.model.runtime import session_options

from .conftest import chain_model


def _weights(model: onnx.ModelProto, specs) -> set[str]:
    return {spec.weight for spec in specs if spec.weight}


def test_the_copy_without_weight_data_empties_the_layers_weights_only(demo_cnn):
    prepared = demo_cnn[0]
    specs = layer_specs(prepared)
    stripped = without_weight_data(prepared.model, specs)
    weights = _weights(prepared.model, specs)
    for original, copy in zip(prepared.model.graph.initializer, stripped.graph.initializer):
        assert (copy.name, copy.data_type, list(copy.dims)) == (original.name, original.data_type, list(original.dims))
        if original.name in weights:
            assert copy.ByteSize() < 64 < original.ByteSize()  # name, type and shape: no values
        else:
            assert copy == original
    assert stripped.graph.node == prepared.model.graph.node and stripped.opset_import == prepared.model.opset_import
    assert with_weight_data(stripped, prepared.model).SerializeToString() == prepared.model.SerializeToString()


def test_the_traced_simulation_model_is_the_same_built_without_the_weights_data(demo_cnn):
    prepared, _, evaluation_data = demo_cnn
    specs = tuple(layer_specs(prepared))
    modes = activation_modes_supported(prepared.model)
    weights = {spec.weight: numpy_helper.to_array(init).astype(np.float32) for spec in specs
               for init in prepared.model.graph.initializer if init.name == spec.weight}
    batch = {"image": evaluation_data.inputs["image"][:16]}
    found = []
    for model in (prepared.model, without_weight_data(prepared.model, specs)):
        base, _, _ = build_simulation_model(model, specs, modes, weights_as_inputs=False)
        traced = reorder_weight_inputs(base, specs, 1)
        assert traced is not None  # the demo CNN's convolutions are traced into onnxruntime's layout
        built, feeds = traced
        session = simulation_session(built.SerializeToString(), session_options(1))
        fed = {f.name: f.value(weights[weight]) for weight, layer_feeds in feeds.items() for f in layer_feeds}
        fed.update((value.name, np.array(0, dtype=np.int64)) for value in built.graph.input if value.name.endswith(".mode"))
        inputs = {value.name for value in built.graph.input}
        fed.update((name, np.array(1.0, np.float32) if name.endswith(("scale", "lo", "hi")) else
                    np.array(0, np.uint8 if name.endswith("u8") else np.int8))
                   for name in inputs - set(fed) - set(batch))
        found.append((sorted((weight, [(f.name, f.shape, None if f.gather is None else f.gather.tobytes())
                                       for f in layer_feeds]) for weight, layer_feeds in feeds.items()),
                      [output.tobytes() for output in session.run(None, {**batch, **fed})]))
    assert found[0] == found[1]  # the same layouts, and the same outputs bit for bit


def _shared_weight_chain() -> onnx.ModelProto:
    """The chain whose second weight is also read by another node (a ReduceSum to an extra output)."""
    model = chain_model()
    model.graph.node.append(helper.make_node("ReduceSum", ["w1"], ["w1_sum"], name="sum_w1", keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("w1_sum", TensorProto.FLOAT, []))
    return model


def test_a_weight_another_node_reads_gets_its_data_back():
    prepared = prepare_model(_shared_weight_chain())
    specs = tuple(layer_specs(prepared))
    modes = activation_modes_supported(prepared.model)
    whole, _, _ = build_simulation_model(prepared.model, specs, modes)
    stripped, _, _ = build_simulation_model(without_weight_data(prepared.model, specs), specs, modes)
    assert "w1" in {init.name for init in stripped.graph.initializer}  # a constant still: the ReduceSum reads it
    assert with_weight_data(stripped, prepared.model).SerializeToString() == whole.SerializeToString()


def test_engine_sessions_keep_no_memory_between_runs(demo_cnn):
    prepared = demo_cnn[0]
    session = SimulationSession(prepared)
    options = session._variants[False].session.get_session_options()
    assert not options.enable_cpu_mem_arena and not options.enable_mem_pattern


def test_sessions_in_the_same_layout_share_one_laid_out_copy_of_each_weight(demo_cnn):
    """The general, per-layer-output and specialized sessions are optimized alike: each traced weight's gather
    index and its FP32 value in that layout are held once (outputs: tests/engine/test_fast_equals_reference.py)."""
    from quant_core.engine.simulate import ActivationMode
    prepared = demo_cnn[0]
    session = SimulationSession(prepared)
    assert session.reordered
    general = session._variants[False]
    specialized = session._build(layer_outputs=False, pattern={i: ActivationMode.UINT8
                                                               for i in general.activation_index.values()})
    per_layer = session._variant(True)
    traced = [layer for layer, feeds in general.weight_feeds.items() if any(f.gather is not None for f in feeds)]
    assert traced  # the demo CNN's convolutions
    for variant in (specialized, per_layer):
        for layer in traced:
            for mine, theirs in zip(general.weight_feeds[layer], variant.weight_feeds[layer]):
                assert mine.gather is theirs.gather
                assert general.default_feeds[mine.name] is variant.default_feeds[theirs.name]
    # What is shared is what each session's own trace lays out (its gather: equal arrays, checked when shared).
    for variant in (general, specialized, per_layer):
        for layer in traced:
            for feed in variant.weight_feeds[layer]:
                assert np.array_equal(variant.default_feeds[feed.name], feed.value(session.fp32_weight(layer)))

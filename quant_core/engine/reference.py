"""The reference simulator: the simplest correct run of a plan, the definition the fast paths are tested against.

One ONNX model per plan: the prepared model with every quantized weight replaced by its
fake-quantized values (`plan.fake_quantized_weight`, computed here with no cache) as a constant
initializer, as an exported model holds its weights (the layer's own: other readers of the same
initializer keep the FP32 weight, `simulation_graph.own_weight_copies`), and before each quantized activation's
reader that activation's fake-quant nodes inline (QuantizeLinear -> DequantizeLinear for 8-bit
integers, Div / Round / Clip / Mul for other widths, Cast for float formats:
`simulation_graph.build_simulation_model`), fed their parameters. Every batch runs the whole model.

What the Evaluator adds for speed, and this file leaves out: one session for every config, its weights
fed as inputs in onnxruntime's reordered (NCHWc) layout, sessions specialized per activation pattern, per-layer-output sessions, suffix runs
from one layer on, anchors, caches. `tests/engine/test_fast_equals_reference.py` holds them equal
to this, bit for bit.
"""
from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from quant_core.engine.plan import Plan, fake_quantized_weight
from quant_core.engine.simulate import activation_modes_supported
from quant_core.engine.simulation_graph import ActivationMode, build_simulation_model, own_weight_copies, simulation_session
from quant_core.model.layers import layer_specs
from quant_core.model.layout import Feeder
from quant_core.model.runtime import session_options


def reference_session(model: bytes):
    """The reference's session: one thread, no prepacking. The engine feeds its weights as inputs, which
    onnxruntime cannot prepack (a MatMul's packed GEMM panels, a Conv's NCHWc filter); the reference holds
    them as constants, so it must not prepack them either, or the two sum in different orders (the last bit
    of ocr_rec's head and of MiniLM's layers, measured). No other option changes its kernels."""
    options = session_options(1)
    options.add_session_config_entry("session.disable_prepacking", "1")
    return simulation_session(model, options)


def simulate_reference(prepared, plan: Plan, feeder: Feeder) -> tuple[np.ndarray, ...]:
    """Return the model outputs of `plan` over every sample `feeder` holds (batch by batch, joined)."""
    # A weight other nodes read too: the layer gets its own copy, they keep the FP32 one (`own_weight_copies`).
    source, specs = own_weight_copies(prepared.model, tuple(layer_specs(prepared)))
    index = {spec.name: i for i, spec in enumerate(specs)}
    own = {spec.name: spec.weight for spec in specs}
    quantized = [entry for entry in plan.layers if entry.activation is not None
                 and entry.activation.mode != ActivationMode.OFF]
    pattern = {index[entry.layer]: entry.activation.mode for entry in quantized}
    model, _, activation_index = build_simulation_model(
        source, specs, activation_modes_supported(prepared.model), weights_as_inputs=False, pattern=pattern)
    del source
    initializers = {init.name: init for init in model.graph.initializer}
    for entry in plan.layers:
        if entry.weight is not None and own[entry.layer] in initializers:
            init = initializers[own[entry.layer]]
            weight = numpy_helper.to_array(init).astype(np.float32)
            values = fake_quantized_weight(weight, entry.weight, name=f"{entry.layer} weight")
            init.CopyFrom(numpy_helper.from_array(values, init.name))
    session = reference_session(model.SerializeToString())
    input_names = {value.name for value in model.graph.input}

    fed: dict[str, np.ndarray] = {}
    for entry in quantized:
        params = entry.activation.feeds(activation_index[entry.layer])
        fed.update((name, value) for name, value in params.items() if name in input_names)

    output_names = [value.name for value in prepared.model.graph.output]
    parts = [tuple(session.run(output_names, {**batch, **fed})) for batch in feeder.batches()]
    return feeder.join(parts)

"""Configs and paths that exercise every way the Evaluator runs a plan, for "fast == reference" tests.

Shared by the demo tests (tests/engine/test_fast_equals_reference.py) and the real-model conformance
tests (tests/real_models/test_fast_equals_reference_real.py): each path the Evaluator can take
(the general session, a session specialized for an activation pattern, the per-layer error session
giving a config's outputs with its errors, a suffix run from one layer on, an anchored search candidate) is driven here, and its outputs returned beside the
reference simulator's (`reference.simulate_reference`).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from quant_core.config import PRESETS, LayerQuant, QuantConfig, TensorQuant
from quant_core.engine.evaluate import Evaluator
from quant_core.engine.reference import simulate_reference
from quant_core.engine.simulate import SPECIALIZE_AFTER

INT8_ACTIVATIONS = TensorQuant("uint8", symmetric=False)


def whole_model_configs(evaluator: Evaluator, light: bool = False) -> dict[str, QuantConfig]:
    """Presets and mixes that change every layer, with and without activations, integer and float
    (`light`: one of each kind, for models whose forward takes seconds)."""
    layers = evaluator.layers
    names = ("W8A8", "W4 weight-only per-group") if light else (
        "W8A8", "W4A8", "W8 weight-only", "W4 weight-only per-group", "FP16")
    configs = {name: PRESETS[name] for name in names}
    if evaluator.calibration is None:
        configs = {name: config for name, config in configs.items() if config.default.activations is None}
    mixed = PRESETS["W8 weight-only"]
    for i, layer in enumerate(layers):
        if i % 3 == 1:
            mixed = mixed.with_layer(layer, LayerQuant(TensorQuant("int3", granularity="per_channel",
                                                                   range_method="mse")))
        elif i % 3 == 2:
            mixed = mixed.with_layer(layer, LayerQuant(TensorQuant("ternary")))
    configs["mixed weights"] = mixed
    return configs


def paths(evaluator: Evaluator, light: bool = False) -> Iterator[tuple[str, QuantConfig, tuple[np.ndarray, ...]]]:
    """Yield (path, config, the Evaluator's outputs) for every run path; compare each with `reference`."""
    for name, config in whole_model_configs(evaluator, light).items():
        yield f"whole model: {name}", config, evaluator.outputs(config)
    if evaluator.calibration is not None:
        # The same activation pattern again and again: from its SPECIALIZE_AFTER-th use a specialized session.
        for bits in range(8, 8 - SPECIALIZE_AFTER - 1, -1):
            config = QuantConfig(LayerQuant(TensorQuant(f"int{bits}", granularity="per_channel"), INT8_ACTIVATIONS),
                                 name=f"W{bits}A8")
            yield f"activation pattern, use {9 - bits}: W{bits}A8", config, evaluator.outputs(config)
    for config in _with_errors_configs(evaluator):
        # A config new to the Evaluator with its per-layer errors: the outputs from the error session's pass.
        _, outputs = evaluator._layer_errors_of(config, with_outputs=True)
        taken = "the error session" if outputs is not None else "not exact there: a whole run"
        yield f"with per-layer errors ({taken}): {config.name}", config, \
            outputs if outputs is not None else evaluator.outputs(config)
    layers = [layer for layer in evaluator.layers if layer in evaluator.session.fp32_weights]
    for layer in ((layers[len(layers) // 2],) if light else (layers[len(layers) // 2], layers[-1])) if layers else ():
        # A sweep row: one layer's weight quantized, the rest FP32 (maybe a run from the layer on).
        evaluator.prepare_sweep(layer, 3)
        for fmt in ("int4",) if light else ("int4", "int2"):
            config = QuantConfig().with_layer(layer, LayerQuant(TensorQuant(fmt, granularity="per_channel")))
            yield f"sweep row {layer} {fmt}", config, evaluator.outputs(config)
    if len(layers) >= 2:
        # A suggestion candidate: one layer away from an anchor config (maybe a run fed the anchor's activations).
        anchor = PRESETS["W8 weight-only"]
        anchored = evaluator.anchor(anchor)
        config = anchor.with_layer(layers[-2], LayerQuant(TensorQuant("int4", granularity="per_channel")))
        yield f"candidate next to an anchor ({'anchored' if anchored else 'whole run'})", config, \
            evaluator.outputs(config)
        evaluator.clear_anchor()


def _with_errors_configs(evaluator: Evaluator) -> list[QuantConfig]:
    configs = [QuantConfig(LayerQuant(TensorQuant("int3", granularity="per_channel")), name="W3 with errors")]
    if evaluator.calibration is not None:
        configs.append(QuantConfig(LayerQuant(TensorQuant("int5", granularity="per_channel"), INT8_ACTIVATIONS),
                                   name="W5A8 with errors"))
    return configs


def reference(evaluator: Evaluator, config: QuantConfig) -> tuple[np.ndarray, ...]:
    """The reference simulator's outputs of `config` on the Evaluator's split."""
    return simulate_reference(evaluator.prepared, evaluator.plan(config), evaluator.feeder)


def general_session(evaluator: Evaluator, config: QuantConfig) -> tuple[np.ndarray, ...]:
    """`config` run whole by the Evaluator's general session (no specialization, suffix or anchor)."""
    weights, activations = evaluator._feeds(config)
    return evaluator.feeder.join([evaluator.session.run(batch, weights=weights, activations=activations,
                                                        specialize=False).outputs
                                  for batch in evaluator.feeder.batches()])


# How close the simulation must stay to the reference where it cannot equal it: a convolution's weight fed
# as an input in onnxruntime's plain layout (a model over the marker budget, `simulation_graph._MAX_MARKERS`)
# runs other kernels than the reference's constant, which onnxruntime lays out blocked (NCHWc). SQNR of the
# Evaluator's outputs against the reference's, in dB.
REFERENCE_SQNR_DB = 20.0


def mismatches(evaluator: Evaluator, light: bool = False, *, exact_reference: bool = True) -> list[str]:
    """Every path whose outputs differ from the reference simulator's, with the size of the difference.

    Every path equals the Evaluator's general session (one session, whole model per batch) bit for bit:
    specialized sessions, suffix runs and anchors change nothing. The general session equals the reference
    bit for bit: it feeds its weights as inputs and the reference holds them as constants, so the reference
    runs without prepacking (`reference.reference_session`) and onnxruntime picks the same kernels for both.
    `exact_reference=False` (the plain-layout fallback only): within REFERENCE_SQNR_DB of the reference.
    """
    from quant_core.numerics.metrics import sqnr_db
    found = []
    for path, config, fast in paths(evaluator, light):
        slow = reference(evaluator, config)
        general = general_session(evaluator, config)
        for index, (a, b, g) in enumerate(zip(fast, slow, general)):
            if a.shape != g.shape or not np.array_equal(a, g, equal_nan=True):
                gap = float(np.max(np.abs(a.astype(np.float64) - g))) if a.shape == g.shape else float("nan")
                found.append(f"{path}: output {index} differs from the general session (max |difference| = {gap:.3g})")
            elif not exact_reference:
                if (sqnr := sqnr_db(b, a)) < REFERENCE_SQNR_DB:
                    found.append(f"{path}: output {index} is {sqnr:.1f} dB from the reference")
            elif not np.array_equal(a, b, equal_nan=True):
                found.append(f"{path}: output {index} differs from the reference "
                             f"(max |difference| = {float(np.max(np.abs(a.astype(np.float64) - b))):.3g})")
    return found

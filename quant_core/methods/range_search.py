"""Per-layer activation range search: for each quantized activation, the range method (min-max, percentile,
MSE, entropy) that minimises that layer's own output error (like Quark's layer-wise percentile search).

Unlike the other methods this rewrites the *config*, not the model: each layer with a quantized input
activation gets the candidate whose isolated SQNR at the layer's output (only that layer quantized,
fed FP32 inputs: `Evaluator.layer_errors`) is highest. One `layer_errors` pass per candidate scores
every layer at once.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from quant_core.config import QuantConfig, TensorQuant
from quant_core.numerics.formats import RangeMethod

# (range method, percentile): the candidates every layer is scored with.
CANDIDATES: tuple[tuple[RangeMethod, float | None], ...] = (
    (RangeMethod.MINMAX, None), (RangeMethod.PERCENTILE, 99.9), (RangeMethod.PERCENTILE, 99.99),
    (RangeMethod.PERCENTILE, 99.999), (RangeMethod.MSE, None), (RangeMethod.ENTROPY, None))


def candidate_label(method: RangeMethod, percentile: float | None) -> str:
    return f"percentile {percentile:g}" if method == RangeMethod.PERCENTILE else method.value


@dataclass(frozen=True)
class RangeSearch:
    """The config with each layer's best activation range, and the table it was chosen from."""

    config: QuantConfig
    candidates: tuple[str, ...]                       # column labels, CANDIDATES order
    rows: tuple[tuple[str, str, tuple[float, ...]], ...]  # (layer, chosen, isolated SQNR dB per candidate)

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "candidates": list(self.candidates),
                "layers": [{"layer": layer, "chosen": chosen, "sqnr_db": list(values)}
                           for layer, chosen, values in self.rows]}


def _with_activation(tq: TensorQuant, method: RangeMethod, percentile: float | None) -> TensorQuant:
    return replace(tq, range_method=method, percentile=percentile if percentile is not None else tq.percentile)


def search_activation_ranges(evaluator, config: QuantConfig, *, candidates=CANDIDATES,
                             progress: Callable[[float], None] | None = None,
                             cancel: Callable[[], bool] | None = None) -> RangeSearch:
    """Return the config with every quantized activation's range method chosen per layer (see module doc)."""
    layers = [layer for layer in evaluator.layers if config.for_layer(layer).activations is not None
              and not config.for_layer(layer).activations.format.is_identity]
    scores: dict[str, list[float]] = {layer: [] for layer in layers}
    for index, (method, percentile) in enumerate(candidates):
        if cancel is not None and cancel():
            from quant_core.engine.calibrate import Cancelled
            raise Cancelled("range search cancelled")
        trial = config
        for layer in layers:
            choice = config.for_layer(layer)
            trial = trial.with_layer(layer, replace(choice, activations=_with_activation(choice.activations, method,
                                                                                        percentile)))
        errors = {error.layer: error.isolated_sqnr_db for error in evaluator.layer_errors(trial)}
        for layer in layers:
            scores[layer].append(errors[layer])
        if progress is not None:
            progress((index + 1) / len(candidates))
    result, rows = config, []
    for layer in layers:
        best = max(range(len(candidates)), key=lambda i: scores[layer][i])
        method, percentile = candidates[best]
        choice = config.for_layer(layer)
        result = result.with_layer(layer, replace(choice, activations=_with_activation(choice.activations, method,
                                                                                      percentile)))
        rows.append((layer, candidate_label(method, percentile), tuple(scores[layer])))
    return RangeSearch(replace(result, name="custom" if layers else config.name),
                       tuple(candidate_label(m, p) for m, p in candidates), tuple(rows))

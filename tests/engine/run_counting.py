"""Counting the whole-model runs an Evaluator makes (for the tests that say what a config costs)."""
from __future__ import annotations

from quant_core.engine.layer_errors import ErrorGraph


def counting_runs(evaluator, monkeypatch):
    """Count the evaluator's whole-model runs, one per batch: simulation-session runs and per-layer error
    session runs (`ErrorGraph`: the FP32 model, the config and each layer alone, in one session); the
    chain's split is one batch."""
    calls = []

    def counting(runner, what):
        def make(*args, **kwargs):
            run = runner(*args, **kwargs)

            def counted(batch):
                calls.append(what)
                return run(batch)
            return counted
        return make

    monkeypatch.setattr(evaluator.session, "runner", counting(evaluator.session.runner, "simulation"))
    runner = ErrorGraph.runner
    monkeypatch.setattr(ErrorGraph, "runner", lambda self, *a, **k: counting(runner, "errors")(self, *a, **k))
    return calls

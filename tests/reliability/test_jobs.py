"""ui.jobs: at most N heavy jobs run at once across threads; the others wait, say so, or time out cleanly."""
from __future__ import annotations

import threading
import time

import pytest

from quant_core.errors import QuantLabError
from ui import jobs
from ui.jobs import JobLimiter, JobsBusy


def _run_threads(count: int, work) -> None:
    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)


@pytest.mark.parametrize("slots", [1, 2])
def test_no_more_than_the_cap_run_at_once(slots):
    limiter = JobLimiter(slots)
    lock = threading.Lock()
    running, peak, finished = [0], [0], []

    def work(index):
        with limiter.job(f"job {index}", timeout_s=10):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.02)
            with lock:
                running[0] -= 1
        finished.append(index)

    _run_threads(6, work)
    assert peak[0] == slots
    assert sorted(finished) == list(range(6))


def test_a_waiting_job_tells_its_user_and_clears_the_message_when_it_starts():
    limiter = JobLimiter(1)
    started, release = threading.Event(), threading.Event()
    messages: list[str | None] = []

    def holder():
        with limiter.job("calibration"):
            started.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    started.wait(5)
    threading.Timer(0.05, release.set).start()
    with limiter.job("the sensitivity sweep", notify=messages.append, timeout_s=5) as waited:
        assert waited >= 0.04
    thread.join(5)
    assert messages[0].startswith("Waiting for another user's job to finish before the sensitivity sweep")
    assert messages[1:] == [None]


def test_a_free_slot_starts_at_once_without_a_message():
    messages = []
    with JobLimiter(1).job("calibration", notify=messages.append) as waited:
        assert waited < 0.05
    assert messages == []


def test_a_job_nested_in_the_same_thread_does_not_wait_for_itself():
    limiter = JobLimiter(1)
    with limiter.job("the sweep", timeout_s=1):
        with limiter.job("calibration", timeout_s=1) as waited:
            assert waited == 0.0
        with limiter.job("calibration again", timeout_s=1):
            pass
    with limiter.job("the next job", timeout_s=0.1):  # the slot was released exactly once
        pass


def test_waiting_too_long_raises_a_one_line_user_error_and_keeps_the_slot_count():
    limiter = JobLimiter(1)
    started, release = threading.Event(), threading.Event()

    def holder():
        with limiter.job("a long sweep"):
            started.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    started.wait(5)
    messages = []
    with pytest.raises(JobsBusy) as caught:
        with limiter.job("calibration", notify=messages.append, timeout_s=0.05):
            pytest.fail("the job ran without a slot")
    release.set()
    thread.join(5)
    assert isinstance(caught.value, QuantLabError) and "\n" not in str(caught.value)
    assert "calibration did not start" in str(caught.value) and "try again" in str(caught.value)
    assert messages[-1] is None  # the waiting message was cleared
    with limiter.job("after", timeout_s=0.1):
        pass


def test_an_exception_in_the_job_frees_the_slot():
    limiter = JobLimiter(1)
    with pytest.raises(RuntimeError):
        with limiter.job("a failing job"):
            raise RuntimeError("boom")
    with limiter.job("the next job", timeout_s=0.1):
        pass


def test_heavy_job_takes_a_slot_of_the_process_wide_limiter():
    outcome = []

    def other_user():
        try:
            with jobs.heavy_job("another user's job", timeout_s=0.05):
                outcome.append("ran")
        except JobsBusy:
            outcome.append("waited, then gave up")

    assert jobs.HEAVY_JOBS.slots == jobs.MAX_HEAVY_JOBS >= 1
    with jobs.heavy_job("this user's job", timeout_s=1):
        _run_threads(1, lambda index: other_user())
    assert outcome == ["waited, then gave up" if jobs.MAX_HEAVY_JOBS == 1 else "ran"]


def test_a_limiter_needs_at_least_one_slot():
    with pytest.raises(ValueError, match="slots must be at least 1"):
        JobLimiter(0)


def test_streamlit_notice_shows_then_clears_the_message():
    from streamlit.testing.v1 import AppTest

    script = """
import streamlit as st
from ui.jobs import streamlit_notice
notify = streamlit_notice()
notify("Waiting for another user's job to finish before calibration")
if st.session_state.get("clear"):
    notify(None)
"""
    at = AppTest.from_string(script).run()
    assert [info.value for info in at.info] == ["Waiting for another user's job to finish before calibration"]
    at.session_state["clear"] = True
    at.run()
    assert not at.info


# --- time budgets of heavy jobs ------------------------------------------------------------------

def _mlp_evaluator():
    from quant_core.engine.calibrate import calibrate
    from quant_core.model.data import split_dataset
    from quant_core.model.demo import load_demo
    from quant_core.engine.evaluate import Evaluator
    from quant_core.model.model_io import load_model, prepare_model

    model_bytes, data = load_demo("mlp")
    prepared = prepare_model(load_model(model_bytes))
    calibration_data, evaluation_data = split_dataset(data, calibration_samples=128, seed=0)
    return Evaluator(prepared, calibrate(prepared, calibration_data), evaluation_data)


def test_a_sweep_stops_at_its_time_budget_with_the_rows_finished_so_far(monkeypatch):
    import quant_core.search.sensitivity as sensitivity

    evaluator = _mlp_evaluator()
    full = sensitivity.run_sweep(evaluator, ["int8", "int4"])
    clock = [0.0]  # every evaluation takes one second on this clock
    evaluate = evaluator.evaluate

    def one_second_each(config):
        clock[0] += 1.0
        return evaluate(config)

    monkeypatch.setattr(evaluator, "evaluate", one_second_each)
    monkeypatch.setattr(sensitivity.time, "perf_counter", lambda: clock[0])
    rows = sensitivity.run_sweep(evaluator, ["int8", "int4"], time_budget_s=2.5)
    assert len(full) == 6
    assert rows == full[:3], "configs started at 0, 1 and 2 s; none at 3 s"
    clock[0] = 0.0
    assert sensitivity.run_sweep(evaluator, ["int8", "int4"], time_budget_s=100.0) == full


@pytest.mark.parametrize("budget", [0, -1.0])
def test_a_sweep_budget_must_be_positive(budget):
    from quant_core.search.sensitivity import run_sweep

    with pytest.raises(ValueError, match="time_budget_s must be a positive number of seconds"):
        run_sweep(None, ["int8"], time_budget_s=budget)


def test_waiting_jobs_start_in_arrival_order_and_a_job_giving_its_slot_back_queues_behind_them():
    limiter = JobLimiter(1)
    order, first_done = [], threading.Event()
    holding = threading.Event()

    def sweep():  # two layers, giving the slot back in between, as the Sensitivity page does
        with limiter.job("layer 1"):
            holding.set()
            first_done.wait(5)
            order.append("sweep layer 1")
        with limiter.job("layer 2", timeout_s=5):
            order.append("sweep layer 2")

    def waiter(name, ready):
        ready.set()
        with limiter.job(name, timeout_s=5):
            order.append(name)

    threads = [threading.Thread(target=sweep)]
    threads[0].start()
    holding.wait(5)
    for name in ("user A", "user B"):
        ready = threading.Event()
        threads.append(threading.Thread(target=waiter, args=(name, ready)))
        threads[-1].start()
        ready.wait(5)
        time.sleep(0.05)  # let it reach the queue before the next one arrives
    first_done.set()
    for thread in threads:
        thread.join(10)
    assert order == ["sweep layer 1", "user A", "user B", "sweep layer 2"]


def test_a_job_that_gave_up_waiting_leaves_the_queue():
    limiter = JobLimiter(1)
    gave_up = []

    def impatient():
        try:
            with limiter.job("impatient", timeout_s=0.05):
                gave_up.append(False)
        except JobsBusy:
            gave_up.append(True)

    with limiter.job("holder"):
        _run_threads(1, lambda index: impatient())
    assert gave_up == [True]
    with limiter.job("next", timeout_s=0.1) as waited:  # the freed slot was not handed to the job that left
        assert waited < 0.05


def test_a_stop_raised_while_clearing_the_waiting_notice_gives_the_slot_back():
    """A Streamlit rerun raises in the notice's st call just after the slot was handed over: the slot must
    not leak (it did: every later heavy job of the server then waited for a job that no longer existed)."""
    limiter = JobLimiter(1)
    holding, release = threading.Event(), threading.Event()

    def holder():
        with limiter.job("holder", timeout_s=5):
            holding.set()
            release.wait(5)

    class Stop(BaseException):
        pass

    def notify(text):
        if text is None:
            raise Stop()

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(5)
    threading.Timer(0.2, release.set).start()
    with pytest.raises(Stop):
        with limiter.job("waiter", notify=notify, timeout_s=5):
            pass
    thread.join(5)
    with limiter.job("next", timeout_s=0.5) as waited:
        assert waited < 0.5

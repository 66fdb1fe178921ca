"""A process-wide cap on concurrent heavy jobs (calibration, sweeps, suggestions, latency runs).

Every Streamlit session runs its script in its own thread of one server process. Without a cap, a
class of users pressing "Run sweep" at once would start that many onnxruntime passes on a 2-core
machine: every one of them slows down and memory grows with the number of passes. The pages wrap
their heavy work in `heavy_job(label)`; at most `MAX_HEAVY_JOBS` such blocks run at a time, the
others wait (telling their user so) and time out with a one-line `JobsBusy` error.

Usage in a `ui` helper::

    with heavy_job("the sensitivity sweep", notify=streamlit_notice()):
        rows = run_sweep(...)

Take the slot before any other lock the job needs (e.g. `ui.cache`'s per-model calibration lock):
`heavy_job` first, then the lock. The other order lets a job holding the slot wait for a lock whose
owner waits for the slot (it would end only with the waiting side's `JobsBusy` timeout).

The only module-level state is `HEAVY_JOBS`, a `JobLimiter`: a first-come-first-served queue of
slots (a finished job hands its slot straight to the longest-waiting job, so a sweep that gives the
slot back between layers cannot take it again before a user who was waiting) plus a thread-local
nesting depth (so a job that calls another heavy job in the same script thread, e.g. a sweep that
first calibrates, does not wait for itself).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from quant_core.errors import QuantLabError

# One heavy job at a time: each runs onnxruntime with one intra-op thread, so on the 2-core server the
# other core stays free for the Streamlit server and every other user's (cheap, cached) reruns.
MAX_HEAVY_JOBS = 1
WAIT_TIMEOUT_S = 300.0  # a job still waiting after this long gives up with JobsBusy

Notify = Callable[[str | None], None]


class JobsBusy(QuantLabError):
    """Every heavy-job slot stayed taken for the whole waiting time."""


class JobLimiter:
    """At most `slots` heavy jobs at once across all threads, started in arrival order; re-entrant within one thread."""

    def __init__(self, slots: int = MAX_HEAVY_JOBS):
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.slots = slots
        self._lock = threading.Lock()
        self._free = slots
        self._waiting: deque[threading.Event] = deque()  # one event per waiting job, oldest first
        self._depth = threading.local()  # per thread: how many nested heavy_job blocks it is inside

    def _try_acquire(self) -> bool:
        with self._lock:
            if self._free and not self._waiting:  # nobody queued before us
                self._free -= 1
                return True
            return False

    def _acquire(self, timeout_s: float | None) -> bool:
        """Wait in line for a slot; False after `timeout_s` (None: no limit)."""
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return True
            turn = threading.Event()
            self._waiting.append(turn)
        if turn.wait(timeout_s):
            return True
        with self._lock:
            if turn.is_set():  # handed the slot just as the wait ended
                return True
            self._waiting.remove(turn)
            return False

    def _release(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()  # the slot goes straight to the oldest waiting job
            else:
                self._free += 1

    @contextmanager
    def job(self, label: str, *, notify: Notify | None = None,
            timeout_s: float | None = WAIT_TIMEOUT_S) -> Iterator[float]:
        """Hold one slot for the block; yield the seconds spent waiting for it.

        `notify(text)` is called with a one-line message when the job has to wait, then with None
        once it starts (so a placeholder can be cleared). `timeout_s=None` waits without limit.
        """
        depth = getattr(self._depth, "value", 0)
        if depth:  # already inside a heavy job in this thread: the slot is ours
            self._depth.value = depth + 1
            try:
                yield 0.0
            finally:
                self._depth.value = depth
            return
        start = time.perf_counter()
        if not self._try_acquire():
            if notify is not None:
                notify(f"Waiting for another user's job to finish before {label} "
                       f"(at most {self.slots} heavy job{'s' if self.slots > 1 else ''} at a time on this server)…")
            if not self._acquire(timeout_s):
                if notify is not None:
                    notify(None)
                raise JobsBusy(f"the server is still busy with other users' jobs after {timeout_s:.0f} s, so "
                               f"{label} did not start: try again in a minute")
            if notify is not None:
                try:
                    notify(None)
                except BaseException:
                    # The slot is ours now: a rerun or stop raised in the notice (a Streamlit call) must
                    # not keep it, or every later heavy job of the process waits for a job that is gone.
                    self._release()
                    raise
        waited = time.perf_counter() - start
        self._depth.value = 1
        try:
            yield waited
        finally:
            self._depth.value = 0
            self._release()


HEAVY_JOBS = JobLimiter(MAX_HEAVY_JOBS)


def heavy_job(label: str, *, notify: Notify | None = None, timeout_s: float | None = WAIT_TIMEOUT_S):
    """Run the block as one of the server's heavy jobs (see `JobLimiter.job`); `label` names it for the user."""
    return HEAVY_JOBS.job(label, notify=notify, timeout_s=timeout_s)


def streamlit_notice(container=None) -> Notify:
    """A `notify` callback that shows the waiting message in an st.empty() slot and clears it afterwards.

    `container` is where the slot goes (default: the current position on the page). Call it inside
    the page's script run, before the `heavy_job` block.
    """
    import streamlit as st

    slot = (container or st).empty()

    def notify(text: str | None) -> None:
        if text is None:
            slot.empty()
        else:
            slot.info(text)

    return notify


def waiting_notice() -> Notify:
    """Like `streamlit_notice`, but its placeholder is created only if the job has to wait.

    For helpers called from many places (e.g. `ui.cache.get_calibration`): a job that starts at once
    leaves no empty element behind. Outside a script run (no page to draw on) it does nothing.
    """
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    notice: list[Notify] = []

    def notify(text: str | None) -> None:
        if get_script_run_ctx(suppress_warning=True) is None or (not notice and text is None):
            return
        if not notice:
            notice.append(streamlit_notice())
        notice[0](text)

    return notify


# --- Stop buttons for long jobs a page starts by itself --------------------------------------------

_STOPPED = "_lab_stopped_jobs"  # session state: keys of the jobs the user stopped


def _stop_job(job: tuple) -> None:
    import streamlit as st

    st.session_state.setdefault(_STOPPED, set()).add(job)


def job_stopped(job: tuple) -> bool:
    """Whether the user pressed Stop on `job` (a hashable key such as (page, model_key, data_key))."""
    import streamlit as st

    return job in st.session_state.get(_STOPPED, set())


def resume_job(job: tuple) -> None:
    """Forget that `job` was stopped, so the page runs it again."""
    import streamlit as st

    st.session_state.get(_STOPPED, set()).discard(job)


@contextmanager
def stoppable_progress(job: tuple, *, stop_key: str, stop_label: str = "Stop") -> Iterator[Callable[[float, str], None]]:
    """A progress bar and a Stop button for the block; yield `progress(fraction, text)`.

    How Stop works: the click reruns the script, and Streamlit ends the running one at its next page
    update (the next `progress` call), so the job stops between two steps. The click also records `job`
    as stopped (`job_stopped`): the page then says so instead of starting the job again.
    """
    import streamlit as st

    bar_column, stop_column = st.columns([5, 1], vertical_alignment="center")
    bar = bar_column.empty()
    button = stop_column.empty()
    button.button(stop_label, key=stop_key, on_click=_stop_job, args=(job,))
    try:
        yield lambda fraction, text: bar.progress(min(max(float(fraction), 0.0), 1.0), text=text)
    finally:
        bar.empty()
        button.empty()

"""Run the batches of a split on several cores, results in batch order.

Every engine session runs with one intra-op thread (`runtime.session_options(1)`): on a shared machine
each user's session then takes one core, and onnxruntime's numbers do not depend on a thread count. A
pass over a split of several batches can still keep every core busy: onnxruntime's `run` releases the
GIL and a session may be run from several threads at once, so batches run side by side, one per worker.

Results are yielded in batch order and each batch is computed exactly as alone (same session, same
feeds, one thread), so the numbers do not depend on the number of workers; at most `workers` batches
are in flight, so memory is `workers` times one batch's, whatever the split's size.
"""
from __future__ import annotations

import functools
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# At most this many batches at once: the machines this lab runs on have 2 cores; more workers than cores
# only add memory.
MAX_WORKERS = 2


def default_workers() -> int:
    """The cores this process may use, at most MAX_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


_THREAD_PREFIX = "qlab-batch"


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """The batch threads, started once and shared by every pass (and every user of a server): starting
    threads per pass cost ~4 ms each on a loaded machine, more than a small model's batch."""
    return ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix=_THREAD_PREFIX)


def map_in_order(function: Callable[[Item], Result], items: Iterable[Item], workers: int) -> Iterator[Result]:
    """Yield function(item) for each item, in the items' order, computing up to `workers` at once.

    Items are drawn lazily: at most `workers` are computed or waiting to be yielded at any time. With one
    worker (or one item), and inside a batch thread (a pass within a pass would wait for threads it
    holds), everything runs in the caller's thread. An exception of `function` is raised in the caller
    when its item's turn comes; items not yet started are then not computed.
    """
    items = iter(items)
    workers = min(workers, MAX_WORKERS)
    if workers <= 1 or threading.current_thread().name.startswith(_THREAD_PREFIX):
        yield from map(function, items)
        return
    first = next(items, None)
    second = next(items, None) if first is not None else None
    if second is None:  # zero or one item: no thread needed
        if first is not None:
            yield function(first)
        return
    pool = _pool()
    pending = deque([pool.submit(function, first), pool.submit(function, second)])
    try:
        for item in items:
            if len(pending) >= workers:
                yield pending.popleft().result()
            pending.append(pool.submit(function, item))
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:  # the caller stopped early or a batch failed: start nothing more
            future.cancel()
        wait(pending)  # and none still running on this pass's data

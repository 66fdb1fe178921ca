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

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
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


def map_in_order(function: Callable[[Item], Result], items: Iterable[Item], workers: int) -> Iterator[Result]:
    """Yield function(item) for each item, in the items' order, computing up to `workers` at once.

    Items are drawn lazily: at most `workers` are computed or waiting to be yielded at any time. With one
    worker (or one item) everything runs in the caller's thread. An exception of `function` is raised
    in the caller when its item's turn comes; items not yet started are then not computed.
    """
    items = iter(items)
    if workers <= 1:
        yield from map(function, items)
        return
    first = next(items, None)
    second = next(items, None) if first is not None else None
    if second is None:  # zero or one item: no thread to start
        if first is not None:
            yield function(first)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qlab-batch") as pool:
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

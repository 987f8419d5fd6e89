"""`cpu_budget`: asserts that a block of hostile-input handling stays within a CPU-time bound;
`slow_collector`: a garbage collector as slow as a large process's, for the parsers' GC tests.

The bound is a containment check (an endless computation or an exponential parse would blow it by
orders of magnitude), not a speed target. It counts CPU time of the calling thread, so a shared
machine's load does not count, and Python's cyclic garbage collector is paused inside the block:
a collection of the test process's own garbage (a worker that ran JAX tests holds many objects)
can take longer than the whole bound and is not the code under test.
"""

import contextlib
import time

from data.safe_eval import gc_paused


@contextlib.contextmanager
def cpu_budget(limit_s: float = 0.05, *context):
    """The block must finish within `limit_s` CPU seconds of this thread (GC paused)."""
    with gc_paused():
        start = time.thread_time()
        yield
        elapsed = time.thread_time() - start
    assert elapsed < limit_s, (*context, f"{elapsed:.3f} s CPU > {limit_s} s")


@contextlib.contextmanager
def slow_collector(seconds: float):
    """A collector that runs on every allocation and burns `seconds` of this thread's CPU per run
    (what a full collection of a large training process costs), restored on exit."""
    import gc

    def burn(phase, info):
        if phase == "start":
            end = time.thread_time() + seconds
            while time.thread_time() < end:
                pass

    threshold = gc.get_threshold()
    gc.callbacks.append(burn)
    gc.set_threshold(1)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(burn)

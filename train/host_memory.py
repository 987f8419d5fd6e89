"""Host memory for XLA:CPU steps: freed buffers stay in the malloc heap (issue 19).

XLA:CPU allocates a compiled program's temporary buffer afresh on every call and frees it after.
glibc serves a request that large (the ~19M model's update step needs 1.03 GB) with a new `mmap`
each time and unmaps it on free, so every step page-faults the whole buffer in again: 258k minor
faults and ~0.5 s of system CPU time per ~2.2 s step on the 2-core CPU (bench/results/mfu_idle.md).
`retain_freed_memory()` asks glibc to serve every request from one heap arena and never hand freed
memory back to the kernel (`mallopt`: M_ARENA_MAX 1, M_MMAP_MAX 0, M_TRIM_THRESHOLD INT_MAX): after
the first step or two the buffer is reused without a fault.

The cost: the process keeps its peak heap (its RSS does not fall after a large step), and threads
share one arena's lock. It has to run before JAX's first computation, which starts XLA's threads (a
thread that already has its own arena keeps it, and that arena still maps large requests);
importing JAX first is fine. The CLI (`launch/main.py`), the LlamaRL multiprocess entry and
`bench/mfu.py` call it first thing; a notebook or library user can do the same.
`LMRL_HOST_MALLOC=system` turns it off. A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import os

from models.errors import UserError

# glibc's <malloc.h> parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
_SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))  # mallopt takes int

ENV = "LMRL_HOST_MALLOC"
_applied: str | None = None


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # not Linux, or not glibc
        return False


def state() -> str:
    """What this process uses: retain_freed_memory()'s answer, or "system" before any call."""
    return _applied or "system"


def retain_freed_memory() -> str:
    """Applies the settings above once per process; returns what this process uses.

    "retain" (applied), "system" (turned off by LMRL_HOST_MALLOC=system) or "unavailable" (not
    glibc). Raises UserError for any other LMRL_HOST_MALLOC value and RuntimeError if glibc refuses
    a setting.
    """
    global _applied
    if _applied is not None:
        return _applied
    mode = os.environ.get(ENV, "retain")
    if mode not in ("retain", "system"):
        raise UserError(f"{ENV}={mode!r}; expected 'retain' (the default) or 'system'")
    if mode == "system":
        _applied = "system"
    elif not _glibc():
        _applied = "unavailable"
    else:
        libc = ctypes.CDLL(None)  # this process's C library (glibc, checked above)
        for param, value in _SETTINGS:
            if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) != 1:
                raise RuntimeError(f"glibc mallopt({param}, {value}) failed")
        _applied = "retain"
    return _applied

"""Registry of verifiable-reward tasks: `get(name, **kw)`, `names()` (see `data.tasks.base`)."""

from __future__ import annotations

from collections.abc import Callable

from data.tasks.arith_mix import ArithMix
from data.tasks.arithmetic import Arithmetic
from data.tasks.base import Task
from data.tasks.countdown import Countdown
from data.tasks.math_files import GSM8K, Math500
from data.tasks.sudoku import Sudoku

_REGISTRY: dict[str, Callable[..., Task]] = {
    "countdown": lambda **kw: Countdown(**{"num_numbers": 3, **kw}),
    "countdown4": lambda **kw: Countdown(**{"num_numbers": 4, **kw}),
    "sudoku4": lambda **kw: Sudoku(size=4, **kw),
    "sudoku9": lambda **kw: Sudoku(size=9, **kw),
    "arithmetic": Arithmetic,
    "arith_mix": ArithMix,
    "gsm8k": GSM8K,
    "math500": Math500,
}


def names() -> list[str]:
    """Registered task names."""
    return sorted(_REGISTRY)


def get(name: str, **kw) -> Task:
    """Builds the task `name` with keyword options (e.g. `get("arithmetic", num_ops=3)`)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown task {name!r}; known: {names()}")
    return _REGISTRY[name](**kw)


__all__ = ["Task", "get", "names"]

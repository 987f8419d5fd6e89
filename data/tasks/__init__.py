"""Registry of verifiable-reward tasks: `get(name, **kw)`, `names()`, `register(name, factory)`.

See `data.tasks.base` for the Task interface.
"""

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


def register(name: str, factory: Callable[..., Task], *, overwrite: bool = False) -> None:
    """Adds a task so that configs can name it (`config.task = name`).

    Args:
      name: lower_snake registry key.
      factory: called as `factory(**config.task_kwargs)`; returns a `Task`.
      overwrite: replace an existing entry of that name (e.g. re-running a notebook cell).

    Raises:
      ValueError: `name` is already registered and `overwrite` is False, or is not lower_snake.
      TypeError: `factory` is not callable.
    """
    if not callable(factory):
        raise TypeError(f"factory for task {name!r} must be callable, got {type(factory)}")
    if not name or not name.replace("_", "").isalnum() or name != name.lower():
        raise ValueError(f"task name must be lower_snake, got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"task {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = factory


def get(name: str, **kw) -> Task:
    """Builds the task `name` with keyword options (e.g. `get("arithmetic", num_ops=3)`)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown task {name!r}; known: {names()}")
    return _REGISTRY[name](**kw)


__all__ = ["Task", "get", "names", "register"]

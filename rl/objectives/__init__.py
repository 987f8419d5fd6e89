"""Objectives registered by name; a config picks one with `rl.objective = "<name>"`.

An objective computes a loss only (sampling, rewards and advantages run outside the gradient step)
and follows the trainer's contract `(params, frozen, batch, rng) -> (loss_sum, denom, aux)`. Modules
register their factories with `@register("name")`; `get(name)` imports them lazily.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

_REGISTRY: dict[str, Callable] = {}

# name -> module that registers it (imported on first use).
_MODULES = {
    "spg": "rl.objectives.spg",
    "spg_elbo": "rl.objectives.spg",
    "spg_no_neg": "rl.objectives.spg",
    "diffu_grpo": "rl.objectives.diffu_grpo",
    "wd1": "rl.objectives.wd1",
    "grpo": "rl.objectives.grpo",
    "rloo": "rl.objectives.grpo",
    "jepo": "rl.objectives.jepo",
    "aipo": "rl.objectives.aipo",
}


def register(name: str):
    """Decorator: registers an objective factory under `name`."""

    def deco(fn):
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"objective {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def get(name: str) -> Callable:
    """The factory registered as `name`, importing its module if needed."""
    if name not in _REGISTRY and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in _REGISTRY:
        known = sorted(set(_REGISTRY) | set(_MODULES))
        raise ValueError(f"unknown objective {name!r}; known: {', '.join(known)}")
    return _REGISTRY[name]


def names() -> list[str]:
    return sorted(set(_REGISTRY) | set(_MODULES))

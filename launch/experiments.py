"""The table from `config.experiment` to its runner (`module:function`), imported lazily."""

from __future__ import annotations

import importlib

EXPERIMENTS = {
    "sft": "train.sft:run",
    "spg": "rl.run_spg:run",
    "grpo": "rl.run_ar:run",
    "jepo": "rl.run_ar:run",
    "pcl": "rl.run_pcl:run",
    "read": "peft.experiment:run",
    "fed_oov": "fed.experiment_oov:run",
    "fred": "fed.experiment_fred:run",
    "treepiece": "parsing.experiment:run",
    "waltz": "rl.run_waltz:run",
    "llamarl": "rl.distributed.run:run",
}


def get_runner(name: str):
    """Returns the runner function for experiment `name`, with a clear error if unknown."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    module, func = EXPERIMENTS[name].split(":")
    return getattr(importlib.import_module(module), func)

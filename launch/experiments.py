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

# `--dry_run` plans of the runners without a policy LM (`module:function` -> DryRunParts); the
# language-model experiments use `train.dry_run.lm_parts`.
DRY_RUN = {
    "read": "peft.pretrain:dry_run_parts",
    "fed_oov": "fed.experiment_oov:dry_run_parts",
    "fred": "fed.experiment_fred:dry_run_parts",
    "treepiece": "parsing.experiment:dry_run_parts",
}


def get_dry_run_parts(config):
    """The runner's `DryRunParts` for `config`, or None for the policy-LM plan."""
    if config.experiment not in DRY_RUN:
        return None
    module, func = DRY_RUN[config.experiment].split(":")
    return getattr(importlib.import_module(module), func)(config)


def get_runner(name: str):
    """Returns the runner function for experiment `name`, with a clear error if unknown."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    module, func = EXPERIMENTS[name].split(":")
    return getattr(importlib.import_module(module), func)

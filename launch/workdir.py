"""Workdir checks and the resolved-config record, plus the errors shown to users as one line."""

from __future__ import annotations

import json
import os

from train.checkpoint import CheckpointError

# Errors that mean "the user's input is wrong": printed as one line, no traceback.
UserError = (ValueError, KeyError, FileNotFoundError, CheckpointError)


def prepare_workdir(config, workdir: str) -> str:
    """Creates `workdir`, refuses one that holds another experiment, writes `config.json`."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise FileNotFoundError(f"workdir {workdir} exists and is not a directory")
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"workdir {workdir} has an unreadable config.json ({e})") from None
        if old.get("experiment") != config.experiment or old.get("variant") != config.get(
            "variant"
        ):
            raise ValueError(
                f"workdir {workdir} holds a run of experiment {old.get('experiment')!r} "
                f"(variant {old.get('variant')!r}), not {config.experiment!r} "
                f"(variant {config.get('variant')!r}); pass a new --workdir"
            )
    with open(path, "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    return path


def write_result(workdir: str, result) -> None:
    """Writes the runner's final metrics to `workdir/result.json`."""
    if not isinstance(result, dict):
        return
    clean = {}
    for k, v in result.items():
        try:
            clean[k] = float(v)
        except (TypeError, ValueError):
            clean[k] = str(v)
    with open(os.path.join(workdir, "result.json"), "w") as f:
        json.dump(clean, f, indent=2, sort_keys=True)

"""The run's workdir: one owner (an fcntl lock), the resolved-config record, config checks, result.

- `lock_workdir` holds an exclusive `flock` on `workdir/.lock` for the process's lifetime; a
  second process on the same workdir is refused with one line naming the owner's pid.
- `prepare_workdir` compares the whole resolved config with the workdir's `config.json`; any
  difference is listed and refused unless `allow_config_change`, which appends the change to
  `workdir/config_changes.jsonl` before rewriting `config.json`.
- `validate_config` checks the values a typo can make nonsensical (non-positive step counts,
  `keep_checkpoints < 1`, negative periods).
Every user mistake raises `UserError` (one line, exit code 2 in `launch.main`).
"""

from __future__ import annotations

import fcntl
import json
import os
import time

from models.errors import UserError

_LOCKS: dict[str, int] = {}  # workdir -> fd; kept open (and locked) until the process exits
_COUNTS = ("steps", "rounds", "epochs")  # keys (or key suffixes) that must be >= 1


def _os_error(workdir: str, e: OSError) -> UserError:
    return UserError(f"workdir {workdir}: {e.strerror or e} ({e.filename or workdir})")


def lock_workdir(workdir: str, *, process_index: int = 0) -> None:
    """Makes `workdir` and takes its lock for this process's lifetime.

    Raises:
      UserError: the workdir cannot be created or written, or another process holds it.
    """
    key = os.path.abspath(workdir)
    if key in _LOCKS:
        return
    name = ".lock" if process_index == 0 else f".lock.p{process_index}"
    path = os.path.join(workdir, name)
    try:
        if os.path.exists(workdir) and not os.path.isdir(workdir):
            raise UserError(f"workdir {workdir} exists and is not a directory")
        os.makedirs(workdir, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise _os_error(workdir, e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise UserError(
            f"workdir {workdir} is in use by another run (pid {owner}); wait for it to finish "
            "or pass another --workdir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _LOCKS[key] = fd


def unlock_workdir(workdir: str) -> None:
    """Releases the lock taken by `lock_workdir` (tests; a process's exit releases it too)."""
    fd = _LOCKS.pop(os.path.abspath(workdir), None)
    if fd is not None:
        os.close(fd)


def validate_config(config) -> None:
    """Refuses config values that cannot be meant (one line naming the key).

    Raises:
      UserError: a field under its old name (`configs.common.RENAMED`), a step/round/epoch
        count < 1 (`warmup_steps` < 0), `keep_checkpoints` < 1,
        a negative `*_every` period or `max_consecutive_skips`.
    """
    from configs.common import RENAMED

    for key, value in _flatten(json.loads(config.to_json_best_effort())).items():
        if key in RENAMED:
            raise UserError(f"config {key} was renamed {RENAMED[key]}; set that instead")
        leaf = key.rsplit(".", 1)[-1]
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        if leaf == "warmup_steps" or leaf.endswith("_every") or leaf == "max_consecutive_skips":
            low = 0
        elif leaf in _COUNTS or leaf.endswith(tuple("_" + c for c in _COUNTS)):
            low = 1
        elif leaf == "keep_checkpoints":
            low = 1
        else:
            continue
        if value < low:
            raise UserError(f"config {key}={value} must be >= {low}")


def _flatten(tree, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def config_diff(old: dict, new: dict) -> dict[str, tuple]:
    """Dotted key -> (old, new) for every leaf that differs (missing leaves are `None`)."""
    a, b = _flatten(old), _flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def prepare_workdir(config, workdir: str, *, allow_config_change: bool = False) -> str:
    """Locks `workdir`, checks its `config.json` against `config`, writes the resolved config.

    Args:
      config: the resolved (locked) ConfigDict.
      workdir: the run directory (created if missing).
      allow_config_change: resume although the config differs; the change is recorded.

    Returns:
      The path of `config.json`.

    Raises:
      UserError: the workdir is unusable or locked, holds another experiment, has an unreadable
        config.json, or holds a run with another config (without `allow_config_change`).
    """
    lock_workdir(workdir)
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json_best_effort(sort_keys=True))
    try:
        if os.path.exists(path):
            try:
                with open(path) as f:
                    old = json.load(f)
                if not isinstance(old, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                raise UserError(
                    f"workdir {workdir} has an unreadable config.json ({e}); fix or delete it"
                ) from None
            if old.get("experiment") != config.experiment or old.get("variant") != config.get(
                "variant"
            ):
                raise UserError(
                    f"workdir {workdir} holds a run of experiment {old.get('experiment')!r} "
                    f"(variant {old.get('variant')!r}), not {config.experiment!r} "
                    f"(variant {config.get('variant')!r}); pass a new --workdir"
                )
            diff = config_diff(old, new)
            if diff and not allow_config_change:
                shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(diff.items())[:8])
                more = f" (+{len(diff) - 8} more)" if len(diff) > 8 else ""
                raise UserError(
                    f"workdir {workdir} holds a run with another config ({shown}{more}); pass "
                    "--allow_config_change to resume with the new one, or a new --workdir"
                )
            if diff:
                rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changes": diff}
                with open(os.path.join(workdir, "config_changes.jsonl"), "a") as f:
                    f.write(json.dumps(rec) + "\n")
        _write_atomic(path, config.to_json_best_effort(indent=2, sort_keys=True))
    except OSError as e:
        raise _os_error(workdir, e) from None
    return path


def write_result(workdir: str, result) -> None:
    """Writes the runner's final metrics to `workdir/result.json` (atomically)."""
    if not isinstance(result, dict):
        return
    from train.metrics import write_result_file

    try:
        write_result_file(workdir, result)
    except OSError as e:
        raise _os_error(workdir, e) from None

"""The one training loop: collect, µ updates, log, evaluate, checkpoint, resume, progress bar.

Every runner drives `fit(state, collect, updates_per_step)`. `collect(state, step)` returns the
batch for loop step `step` and its host metrics: a fixed dataset indexed by the step (supervised
training, `updates_per_step=1`) or rollouts from the current policy (RL, then µ inner updates on
that batch). Because the batch is a pure function of (state, step), the data position is the loop
step; it is stored in each checkpoint's `extra` as `loop_step` (with the last logged `metrics`),
and a resumed run restarts from that loop step, never from the optimizer's update count, so an
interrupted run reads the batches and RNG it would have read and ends with the same numbers.

A collect may return `(None, metrics)`: the step carries nothing to learn from (RL: every
advantage of the rollouts is exactly zero, `rl.skip_flat_batches`). Then no update runs: the
parameters, optimizer state and RNG stay bitwise unchanged, `state.step` still advances by µ
(it counts update calls, skipped ones included) and the loop moves on to the next step. Without
this, Adam turns a gradient that is only fp32 noise (or only the KL term) into a full
learning-rate-sized step, and its momentum keeps moving the weights.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from train.checkpoint import Checkpointer
from train.metrics import MetricWriter, rewind
from train.step import SkipGuard

CollectFn = Callable[[object, int], tuple[object, dict]]


def progress_bar(total: int, initial: int, desc: str) -> tqdm:
    """The run's progress bar; `LMRL_NO_PROGRESS=1` turns it off (tests, logs)."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        dynamic_ncols=True,
        disable=os.environ.get("LMRL_NO_PROGRESS") == "1",
    )


def restore_or(ckpt: Checkpointer | None, state, *, expect_extra: dict | None = None):
    """Restores the latest checkpoint into `state`'s structure, or returns `state` unchanged.

    Returns:
      (state, extra, resumed: bool); `extra["loop_step"]` is where `fit` resumes.
    """
    if ckpt is None:
        return state, {}, False
    out = ckpt.restore(state)
    if out is None:
        return state, {}, False
    restored, extra = out
    return restored, extra, True


def writer_offset(writer) -> int | None:
    return writer.offset() if hasattr(writer, "offset") else None


def mean_metrics(updates: list[dict]) -> dict:
    """The metrics of µ update calls: the one dict when µ = 1, else the mean of each value
    (empty when the step's updates were skipped)."""
    if not updates:
        return {}
    if len(updates) == 1:
        return updates[0]
    return {k: float(np.mean([jax.device_get(u[k]) for u in updates])) for k in updates[0]}


@functools.cache
def _adder(n: int, sharding):
    return jax.jit(lambda s: s + n, out_shardings=sharding)


def advance_step(state, n: int):
    """`state` with `step + n` and everything else unchanged (a skipped loop step's updates)."""
    return state.replace(step=_adder(n, getattr(state.step, "sharding", None))(state.step))


def _start_of(resume: dict | None, ckpt: Checkpointer | None) -> int:
    if resume is not None and "loop_step" in resume:
        return int(resume["loop_step"])
    # A checkpoint written before `loop_step` was recorded (or restored by hand): checkpoints are
    # saved at the loop step, so the latest one's number is where the loop stands.
    latest = ckpt.latest_step() if ckpt is not None else None
    return int(latest or 0)


def fit(
    state=None,
    collect: CollectFn | None = None,
    updates_per_step: int = 1,
    *,
    update_fn: Callable,
    num_steps: int,
    writer: MetricWriter,
    ckpt: Checkpointer | None = None,
    resume: dict | None = None,
    ckpt_every: int = 0,
    log_every: int = 10,
    eval_fn: Callable | None = None,
    eval_every: int = 0,
    extra: dict | None = None,
    desc: str = "train",
    prefix_step: int = 0,
    batch_fn: Callable[[int], object] | None = None,
    before_updates: Callable | None = None,
):
    """Runs loop steps `start .. num_steps - 1`; each collects a batch and applies µ updates.

    Args:
      state: TrainState (fresh, or restored together with `resume`).
      collect: `(state, step) -> (batch, host_metrics)`; deterministic in (state, step). A batch
        of None skips the step's updates (and `before_updates`); see the module docstring.
      updates_per_step: µ, the number of `update_fn` calls on each collected batch.
      update_fn: jitted `(state, batch) -> (state, metrics)`.
      num_steps: total loop steps for this stage.
      writer: metric writer; metrics are logged at `prefix_step + loop_step`.
      ckpt / ckpt_every: checkpoint manager and period in loop steps (0 = only at the end).
      resume: the `extra` dict restored with `state` (None: fresh, or see `batch_fn`).
      log_every: logging period.
      eval_fn / eval_every: `state -> dict` of eval metrics, logged at that period and at the end.
      extra: JSON metadata stored with every checkpoint (stage names etc.).
      desc: progress-bar label.
      prefix_step: offset added to logged steps (for multi-stage runs).
      batch_fn: compatibility for runners not yet on `collect`: `step -> batch`. Without
        `resume`, the loop step is the latest checkpoint's step (saved at the loop step).
      before_updates: `state -> state`, called after `collect` and before the µ updates (RL:
        refresh the objective's `old` policy snapshot).

    The metrics logged for a loop step are the collect metrics and the mean of the µ updates'
    metrics.

    Returns:
      (state, last_logged_metrics: dict[str, float]); a finished run that is resumed returns the
      metrics stored in its last checkpoint (plus a fresh evaluation).
    """
    if (collect is None) == (batch_fn is None):
        raise ValueError("fit needs exactly one of collect= or batch_fn=")
    if collect is None:
        collect = lambda st, step: (batch_fn(step), {})  # noqa: E731
    if updates_per_step < 1:
        raise ValueError(f"updates_per_step must be >= 1, got {updates_per_step}")
    start = _start_of(resume, ckpt)
    # A resume cuts metrics.jsonl back to the checkpoint; a finished stage returns the metrics
    # saved with its last checkpoint, so a rerun reports exactly what the run reported.
    saved = rewind(writer, ckpt, start, num_steps)
    if start >= num_steps and saved:
        return state, saved
    last: dict[str, float] = saved or dict((resume or {}).get("metrics", {}))
    meta = dict(extra or {})
    guard = SkipGuard.for_state(state)

    def save(done: int, force: bool = False):
        guard.check()
        ckpt.save(
            done,
            state,
            {**meta, "loop_step": done, "metrics": last},
            metrics=last,
            log_offset=writer_offset(writer),
            force=force,
        )

    bar = progress_bar(num_steps, min(start, num_steps), desc)
    for step in range(start, num_steps):
        batch, host = collect(state, step)
        updates = []
        if batch is None:  # nothing to learn from: no update, the optimizer state untouched
            state = advance_step(state, updates_per_step)
        elif before_updates is not None:
            state = before_updates(state)
        for i in range(updates_per_step if batch is not None else 0):
            state, m = update_fn(state, batch)
            updates.append(m)
            guard.add(step * updates_per_step + i + 1, m.get("train/skipped"))
        done = step + 1
        if done % max(log_every, 1) == 0 or done == num_steps:
            guard.check()
            last = writer.write(prefix_step + done, {**mean_metrics(updates), **host})
            bar.set_postfix(loss=f"{last.get('train/loss', float('nan')):.4f}")
        if eval_fn is not None and eval_every and done % eval_every == 0 and done != num_steps:
            writer.write(prefix_step + done, eval_fn(state))
        if ckpt is not None and ckpt_every and done % ckpt_every == 0 and done != num_steps:
            save(done)
        bar.update(1)
    bar.close()
    guard.check()
    if eval_fn is not None:
        last.update(writer.write(prefix_step + num_steps, eval_fn(state)))
    if ckpt is not None and ckpt.latest_step() != num_steps:
        save(num_steps, force=True)
    if ckpt is not None:
        ckpt.wait()
    writer.flush()
    return state, last

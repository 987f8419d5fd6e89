"""The training loop: resume, log, evaluate, checkpoint, progress bar.

Batches are a pure function of the step (`batch_fn(step)`), so the data position is the step
stored in the checkpoint and an interrupted run resumes with exactly the batches and RNG it would
have used. Metrics are pulled to the host only at logging steps.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
from tqdm.auto import tqdm

from train.checkpoint import Checkpointer
from train.metrics import MetricWriter, rewind
from train.step import SkipGuard


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
      (state, extra, resumed: bool)
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


def fit(
    *,
    state,
    update_fn: Callable,
    batch_fn: Callable[[int], object],
    num_steps: int,
    writer: MetricWriter,
    ckpt: Checkpointer | None = None,
    ckpt_every: int = 0,
    log_every: int = 10,
    eval_fn: Callable | None = None,
    eval_every: int = 0,
    extra: dict | None = None,
    desc: str = "train",
    prefix_step: int = 0,
):
    """Runs `update_fn` from `state.step` to `num_steps`.

    Args:
      state: TrainState (restored or fresh); its `step` is where training resumes.
      update_fn: jitted `(state, batch) -> (state, metrics)`.
      batch_fn: `step -> batch` (deterministic in the step).
      num_steps: total number of update calls for this stage.
      writer: metric writer; metrics are logged at global step `prefix_step + step`.
      ckpt / ckpt_every: checkpoint manager and period (0 = only at the end).
      log_every: logging period.
      eval_fn / eval_every: `state -> dict` of eval metrics, logged at that period and at the end.
      extra: JSON metadata stored with every checkpoint (stage names etc.).
      desc: progress-bar label.
      prefix_step: offset added to logged steps (for multi-stage runs).

    Returns:
      (state, last_logged_metrics: dict[str, float])
    """
    start = int(jax.device_get(state.step))
    # reliability: a finished stage returns the metrics saved with its last checkpoint
    saved = rewind(writer, ckpt, start, num_steps)
    if start >= num_steps and saved:
        return state, saved
    guard = SkipGuard.for_state(state)
    last: dict[str, float] = {}
    bar = progress_bar(num_steps, start, desc)
    for step in range(start, num_steps):
        state, metrics = update_fn(state, batch_fn(step))
        done = step + 1
        guard.add(done, metrics.get("train/skipped"))
        if done % max(log_every, 1) == 0 or done == num_steps:
            guard.check()
            last = writer.write(prefix_step + done, metrics)
            bar.set_postfix(loss=f"{last.get('train/loss', float('nan')):.4f}")
        if eval_fn is not None and eval_every and done % eval_every == 0 and done != num_steps:
            writer.write(prefix_step + done, eval_fn(state))
        if ckpt is not None and ckpt_every and done % ckpt_every == 0 and done != num_steps:
            guard.check()
            ckpt.save(done, state, extra, metrics=last, log_offset=writer_offset(writer))
        bar.update(1)
    bar.close()
    guard.check()
    if eval_fn is not None:
        last.update(writer.write(prefix_step + num_steps, eval_fn(state)))
    if ckpt is not None and ckpt.latest_step() != num_steps:
        ckpt.save(
            num_steps, state, extra, metrics=last, log_offset=writer_offset(writer), force=True
        )
        ckpt.wait()
    writer.flush()
    return state, last

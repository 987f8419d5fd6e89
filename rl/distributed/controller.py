"""The single-process controller: the generator's loop on a host thread, the trainer's on the
caller's thread, connected by the trajectory queue and the weight channel.

LlamaRL (arXiv:2505.24034; spec `llamarl.md` §1, §5.2, §5.5, §6.2, §9.5). Step `s` of the
trainer consumes rollout `s` and produces weight version `s + 1`; the generator samples rollout
`b` with a version of at least `b - k` (k = `max_staleness`):

- k = 0: rollout b waits for version b, i.e. the synchronous on-policy loop (generate, train,
  sync, generate, ...) in the same code path;
- k = 1: rollout b+1 is sampled with version b while the trainer computes version b+1 (LlamaRL);
- k > 1: bounded asynchrony.

`deterministic=True` (the "simulated clock" mode) pins rollout b to exactly version
`max(b - k, 0)`, so a run's numbers do not depend on thread timing and the same seed gives the
same losses in every mode; `False` takes the newest version available (lag <= k, timing-dependent).
The trainer's `StalenessGate` drops (and counts) any rollout whose lag exceeds k. The weight
sync runs on the trainer's thread after each update, so its time is exposed to the trainer
(§3: T ≈ max(T_g, T_t + T_ws)). A generator that raises stops the run with its error; one that
dies or stops making progress (no heartbeat for `heartbeat_s`: a beat per rollout and per slice
of waiting for weights or queue space) stops it with `PeerDead` naming the role and its last
heartbeat; nothing hangs.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import jax
import numpy as np

from rl.distributed.channels import (
    ChannelClosed,
    ChannelTimeout,
    Heartbeat,
    StalenessGate,
    TrajectoryQueue,
)
from rl.distributed.weight_sync import WeightChannel


class GeneratorFailed(RuntimeError):
    """The generator's loop raised; the original exception is chained."""


@dataclasses.dataclass
class LoopStats:
    steps: int
    wall_s: float
    step_times: list
    gate: dict
    trainer_idle_s: float
    generator_idle_s: float
    sync_seconds: list


def _host(metrics: dict) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


def _get(queue: TrajectoryQueue, hb: Heartbeat, thread, errors, timeout_s: float, poll: float):
    """The next rollout; `PeerDead` if the generator is gone or silent, `ChannelTimeout` after
    `timeout_s` of waiting for a live one."""
    t0 = time.monotonic()
    while True:
        try:
            return queue.get(timeout=poll)
        except ChannelTimeout:
            if errors:  # it failed: its error is raised by the caller
                raise ChannelClosed("the generator failed") from None
            hb.check(alive=thread.is_alive)
            if time.monotonic() - t0 > timeout_s:
                raise


def snapshot(queue: TrajectoryQueue, weights: WeightChannel, next_unconsumed: int) -> dict:
    """The training frontier: queued rollouts, the generator's weight sets, the next sequence.

    The generator produces sequence numbers in order, so everything after the last queued
    rollout (or after the last consumed one, with an empty queue) is regenerated on resume, with
    the same saved weight set in deterministic mode: no prompt is lost or duplicated.
    """
    queued = queue.snapshot()
    next_seq = queued[-1].seq + 1 if queued else next_unconsumed
    return {"queue": queued, "weights": weights.host_sets(), "next_seq": next_seq}


def run_controller(
    trainer,
    generator,
    weights: WeightChannel,
    *,
    num_steps: int,
    max_staleness: int,
    queue_capacity: int = 0,
    deterministic: bool = True,
    timeout_s: float = 120.0,
    on_step: Callable[[int, dict], None] | None = None,
    frontier: dict | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[int, dict], None] | None = None,
    heartbeat_s: float | None = None,
) -> LoopStats:
    """Runs `num_steps` trainer updates with the generator on its own thread.

    Args:
      trainer: a `TrainerExecutor` with its state initialised (its version is the start).
      generator: a `GeneratorExecutor` with `set_rest` called.
      weights: the weight channel to the generator (keep >= k + 1 versions).
      num_steps: trainer updates to apply (rollouts dropped by the gate do not count).
      max_staleness: k (see the module docstring).
      queue_capacity: trajectory-queue bound (0: max(k, 1), all the overlap k allows).
      deterministic: pin rollout b to version max(b - k, 0).
      timeout_s: the longest single channel wait.
      heartbeat_s: the generator's longest silence (None: `timeout_s`); must exceed one rollout.
      on_step: called with (trainer version, host metrics) after each update.
      frontier: a `snapshot` from an earlier run (resume): its weight sets, queued rollouts and
        next sequence number are restored before the generator starts.
      checkpoint_every: call `on_checkpoint(version, snapshot)` every this many versions.
    """
    k = int(max_staleness)
    if weights.keep < k + 1:
        raise ValueError(f"the weight channel keeps {weights.keep} versions; k={k} needs {k + 1}")
    start = trainer.version
    queue = TrajectoryQueue(queue_capacity or max(k, 1), timeout_s=timeout_s)
    weights.timeout_s = timeout_s
    gate = StalenessGate(k)
    stop = threading.Event()
    errors: list[BaseException] = []
    hb = Heartbeat("generator (thread)", timeout_s if heartbeat_s is None else heartbeat_s)
    poll = max(min(hb.timeout_s / 4, 1.0), 0.01)

    def waiting(fn, what):
        """Calls fn(timeout=poll) until it returns, beating between slices (legit waits)."""
        t0 = time.monotonic()
        while True:
            try:
                return fn(timeout=poll)
            except ChannelTimeout:
                if time.monotonic() - t0 > timeout_s:
                    raise
                hb.beat(what)

    first_seq = start
    if frontier is not None:
        treedef = jax.tree.structure(trainer.policy_params())
        for v in sorted(frontier["weights"]):
            weights.install(v, frontier["weights"][v], treedef)
        for ro in frontier["queue"]:
            queue.put(ro)
        first_seq = frontier["next_seq"]
    consumed = {"seq": first_seq - 1 - len(frontier["queue"]) if frontier else start - 1}

    def generator_loop():
        seq = first_seq
        try:
            while not stop.is_set():
                need = max(seq - k, start)
                version, params = waiting(
                    lambda timeout, v=need: weights.wait_for(
                        v, exact=deterministic, timeout=timeout
                    ),
                    f"waiting for weights v{need}",
                )
                hb.beat(f"sampling rollout {seq} with v{version}")
                ro = generator.rollout(params, seq, version)
                hb.beat(f"rollout {seq} done")
                waiting(
                    lambda timeout, r=ro: queue.put(r, timeout=timeout), f"queueing rollout {seq}"
                )
                seq += 1
        except ChannelClosed:
            pass
        except BaseException as e:  # reported by the trainer's loop
            errors.append(e)
            queue.close()

    if weights.latest_version < trainer.version:
        weights.publish(trainer.policy_params(), trainer.version)
    thread = threading.Thread(target=generator_loop, name="generator", daemon=True)
    t_start = time.perf_counter()
    thread.start()
    step_times, done, last = [], 0, time.perf_counter()
    try:
        while done < num_steps:
            try:
                ro = _get(queue, hb, thread, errors, timeout_s, poll)
            except ChannelClosed:
                break
            consumed["seq"] = ro.seq
            if not gate.admit(trainer.version, ro.policy_version):
                continue
            t0 = time.perf_counter()
            metrics = trainer.train_step(ro.batch)
            lag = trainer.version - 1 - ro.policy_version
            done += 1
            host = _host(metrics)
            t_train = time.perf_counter() - t0
            if done < num_steps:  # the last version is never sampled
                rep = weights.publish(trainer.policy_params(), trainer.version)
                host.update(rep.metrics())
            now = time.perf_counter()
            step_times.append(now - last)
            last = now
            host.update(ro.stats)
            host.update(
                {
                    "time/train": t_train,
                    "time/step": step_times[-1],
                    "staleness/lag": float(lag),
                    "staleness/dropped": float(gate.dropped),
                    "llamarl/behaviour_version": float(ro.policy_version),
                    "llamarl/seq": float(ro.seq),
                }
            )
            if on_step is not None:
                on_step(trainer.version, host)
            if checkpoint_every and trainer.version % checkpoint_every == 0 and done < num_steps:
                on_checkpoint(trainer.version, snapshot(queue, weights, consumed["seq"] + 1))
        if errors:
            raise GeneratorFailed(f"the generator failed: {errors[0]!r}") from errors[0]
    finally:
        stop.set()
        queue.close()
        weights.close()
        # A rollout in flight finishes within the heartbeat timeout; a hung one is abandoned
        # (daemon thread) rather than joined for the full channel timeout.
        thread.join(hb.timeout_s)
    return LoopStats(
        steps=done,
        wall_s=time.perf_counter() - t_start,
        step_times=step_times,
        gate=gate.stats(),
        trainer_idle_s=queue.get_wait_s,
        generator_idle_s=queue.put_wait_s,
        sync_seconds=[r.seconds for r in weights.reports],
    )

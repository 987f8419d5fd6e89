"""The one loop: µ updates per collected batch, and resume from the checkpointed loop step.

The collect function depends on the current state (as RL rollouts do) and the loss on the state's
RNG, so a resume that restarts at the wrong step, or with the wrong state or RNG, ends elsewhere.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from train.checkpoint import Checkpointer
from train.loop import fit, restore_or
from train.metrics import MetricWriter, read_metrics
from train.state import TrainState
from train.step import make_update_step

TX = optax.adam(5e-2)


class Crash(RuntimeError):
    pass


def _loss(params, frozen, batch, rng):
    del frozen
    noise = 0.1 * jax.random.normal(rng, batch["y"].shape)
    err = batch["x"] @ params["policy"]["w"] - batch["y"] + noise
    return jnp.sum(err**2), jnp.asarray(err.shape[0], jnp.float32), {}


UPDATE = None


def _update():
    global UPDATE  # one compile for the whole module
    if UPDATE is None:
        UPDATE = make_update_step(_loss, TX)
    return UPDATE


def _state():
    return TrainState.create({"policy": {"w": jnp.zeros((3,))}}, TX, jax.random.key(0))


def _collect(crash_at=None):
    def collect(state, step):
        if step == crash_at:
            raise Crash(step)
        x = np.random.default_rng(step).normal(size=(8, 3)).astype(np.float32)
        # "Rollouts": targets depend on the current policy, like rewards on samples.
        w = np.asarray(state.params["policy"]["w"])
        y = x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.1 * (x @ w)
        return {"x": x, "y": y.astype(np.float32)}, {"rl/target_mean": float(y.mean())}

    return collect


def _run(workdir, num_steps=6, crash_at=None):
    ckpt = Checkpointer(str(workdir / "ckpt"), keep=2)
    writer = MetricWriter(str(workdir), tensorboard=False, console=False)
    state, extra, resumed = restore_or(ckpt, _state())
    try:
        return fit(
            state,
            _collect(crash_at),
            2,
            update_fn=_update(),
            num_steps=num_steps,
            writer=writer,
            ckpt=ckpt,
            resume=extra if resumed else None,
            ckpt_every=2,
            log_every=1,
        )
    finally:
        ckpt.close()
        writer.close()


def test_two_updates_per_step_resume_is_bitwise_equal(tmp_path):
    ref_state, ref_last = _run(tmp_path / "ref")
    assert int(ref_state.step) == 12  # 6 loop steps x 2 updates
    with pytest.raises(Crash):
        _run(tmp_path / "cut", crash_at=3)  # checkpoint at loop step 2, state.step == 4
    assert Checkpointer(str(tmp_path / "cut" / "ckpt")).latest_step() == 2
    state, last = _run(tmp_path / "cut")
    assert int(state.step) == 12
    np.testing.assert_array_equal(state.params["policy"]["w"], ref_state.params["policy"]["w"])
    np.testing.assert_array_equal(
        jax.random.key_data(state.rng), jax.random.key_data(ref_state.rng)
    )
    assert last == ref_last
    # The logged curve matches too (a resumed step's record overrides the crashed run's).
    ref = read_metrics(str(tmp_path / "ref" / "metrics.jsonl"))
    cut = read_metrics(str(tmp_path / "cut" / "metrics.jsonl"))
    assert [r["step"] for r in cut] == [1, 2, 3, 4, 5, 6]
    assert cut == ref


def test_finished_run_returns_its_stored_metrics(tmp_path):
    _, last = _run(tmp_path, num_steps=2)
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    _, extra, _ = restore_or(ckpt, _state())
    ckpt.close()
    assert extra["loop_step"] == 2 and extra["metrics"] == last
    state, again = _run(tmp_path, num_steps=2)
    assert again == last and int(state.step) == 4


def test_batch_fn_compat_resumes_from_checkpoint_step(tmp_path):
    calls = []

    def batch_fn(step):
        calls.append(step)
        return _collect()(_state(), step)[0]

    def go():
        ckpt = Checkpointer(str(tmp_path / "ckpt"), keep=2)
        state, _, _ = restore_or(ckpt, _state())
        kw = dict(update_fn=_update(), writer=MetricWriter(str(tmp_path)))
        out = fit(state, batch_fn=batch_fn, num_steps=3, ckpt=ckpt, ckpt_every=1, **kw)
        ckpt.close()
        return out

    go()
    go()
    assert calls == [0, 1, 2]
    with pytest.raises(ValueError, match="exactly one"):
        fit(_state(), _collect(), batch_fn=lambda s: None, update_fn=None, num_steps=1, writer=None)


def test_before_updates_runs_once_per_batch_and_metrics_are_the_mean_of_the_updates(tmp_path):
    """RL: `before_updates` (the `old` snapshot) sees the state after collect and before the µ
    updates; the logged update metrics are the mean over the µ updates of the loop step."""
    seen = []

    def before(state):
        seen.append(int(state.step))
        return state

    calls = []

    def update(state, batch):
        calls.append(int(state.step))
        return state.replace(step=state.step + 1), {"train/loss": jnp.float32(len(calls))}

    writer = MetricWriter(str(tmp_path), tensorboard=False, console=False)
    _, last = fit(
        _state(),
        _collect(),
        3,
        update_fn=update,
        num_steps=2,
        writer=writer,
        log_every=1,
        before_updates=before,
    )
    writer.close()
    assert seen == [0, 3] and calls == [0, 1, 2, 3, 4, 5]
    rows = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert [r["train/loss"] for r in rows] == [2.0, 5.0] and last["train/loss"] == 5.0


def test_a_checkpoint_without_loop_step_resumes_at_its_own_step():
    """Checkpoints written before `loop_step` was recorded resumed at 0 and retrained from the
    restored weights; they now resume at the checkpoint's step (its number is the loop step)."""
    from train.loop import _start_of

    class Ckpt:
        def latest_step(self):
            return 300

    assert _start_of({"stage": "sft"}, Ckpt()) == 300
    assert _start_of({"loop_step": 7}, Ckpt()) == 7
    assert _start_of(None, None) == 0


def test_a_collect_without_batch_leaves_params_and_optimizer_state_bitwise_unchanged(tmp_path):
    """RL `rl.skip_flat_batches`: a step whose collect returns no batch (every advantage zero)
    makes no update, while the loop and `state.step` still advance; the next batch trains."""
    from rl.advantages import skip_flat

    def collect(state, step):
        batch, metrics = _collect()(state, step)
        adv = np.zeros(8, np.float32) if step < 2 else np.ones(8, np.float32)
        return skip_flat(batch, metrics, adv, enabled=True)

    state = _state()
    # A state an earlier update moved: Adam's moments are non-zero, so momentum would move it.
    state, _ = _update()(state, _collect()(state, 0)[0])
    before = jax.device_get((state.params, state.opt_state, jax.random.key_data(state.rng)))
    writer = MetricWriter(str(tmp_path), tensorboard=False, console=False)
    kw = dict(update_fn=_update(), writer=writer, log_every=1)
    mid, _ = fit(state, collect, 2, num_steps=2, **kw)
    after = jax.device_get((mid.params, mid.opt_state, jax.random.key_data(mid.rng)))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(mid.step) == 1 + 2 * 2 and int(mid.skipped) == 0
    end, _ = fit(mid, collect, 2, num_steps=3, resume={"loop_step": 2}, **kw)
    writer.close()
    assert int(end.step) == 7
    assert not np.array_equal(end.params["policy"]["w"], mid.params["policy"]["w"])
    rows = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert [r["rl/skipped_updates"] for r in rows] == [1.0, 1.0, 0.0]
    assert "train/loss" not in rows[0] and "train/loss" in rows[2]


def test_skip_flat_needs_every_advantage_exactly_zero_and_the_switch():
    from rl.advantages import skip_flat

    b = {"x": 1}
    assert skip_flat(b, {}, np.zeros(4), True) == (None, {"rl/skipped_updates": 1.0})
    assert skip_flat(b, {}, np.zeros(4), False) == (b, {"rl/skipped_updates": 0.0})
    tiny = np.array([0.0, 0.0, 1e-30, 0.0], np.float32)
    assert skip_flat(b, {"m": 2}, tiny, True) == (b, {"m": 2, "rl/skipped_updates": 0.0})

"""Golden cases for the shared RL evaluation statistics and the control switch."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rl import evaluation as ev


def test_paired_bootstrap_golden():
    # 10 prompts: 3 go 0 -> 1, 1 goes 1 -> 0, the rest unchanged: change = +0.2.
    before = np.array([0, 0, 0, 1, 1, 1, 0, 0, 1, 0], float)
    after = np.array([1, 1, 1, 0, 1, 1, 0, 0, 1, 0], float)
    iv = ev.paired_bootstrap(before, after, num_resamples=4000, seed=0)
    assert iv.mean == pytest.approx(0.2)
    assert iv.n == 10
    # The bootstrap distribution of a mean of 10 draws from {+1 x3, -1 x1, 0 x6}: sd ~0.19.
    assert -0.25 < iv.lo < 0.0 < 0.4 < iv.hi < 0.65
    assert not iv.excludes_zero
    # Deterministic given inputs and seed.
    assert ev.paired_bootstrap(before, after, num_resamples=4000, seed=0) == iv


def test_paired_bootstrap_resolves_a_real_change_and_cancels_prompt_difficulty():
    rng = np.random.default_rng(1)
    difficulty = rng.random(512)
    before = (rng.random((512, 4)) > difficulty[:, None]).astype(float)
    after = (rng.random((512, 4)) > difficulty[:, None] - 0.1).astype(float)
    iv = ev.paired_bootstrap(before, after)
    assert iv.excludes_zero and iv.lo > 0
    assert iv.mean == pytest.approx(after.mean() - before.mean())
    same = ev.paired_bootstrap(before, before)
    assert same.mean == same.lo == same.hi == 0.0


def test_paired_bootstrap_rejects_unpaired():
    with pytest.raises(ValueError, match="equal shapes"):
        ev.paired_bootstrap(np.zeros(3), np.zeros(4))


def test_seed_interval_matches_t_table():
    iv = ev.seed_interval([1.0, 2.0, 3.0])
    # t_{0.975, 2} = 4.3027; sd = 1; half = 4.3027 / sqrt(3) = 2.4842
    assert iv.mean == pytest.approx(2.0)
    assert iv.hi - iv.mean == pytest.approx(2.4842, abs=1e-3)
    assert np.isnan(ev.seed_interval([1.0]).lo)


def test_gain_over_control_pairs_by_seed():
    iv = ev.gain_over_control([0.10, 0.12, 0.08], [0.02, 0.03, 0.01])
    assert iv.mean == pytest.approx(0.08)
    assert iv.excludes_zero
    assert str(iv.scaled(100)).startswith("+8.00")


def test_shuffle_keeps_each_group_multiset_and_changes_order():
    rng = np.random.default_rng(0)
    x = np.arange(64, dtype=np.float32)
    y = ev.shuffle_within_groups(x, 8, rng)
    assert not np.array_equal(x, y)
    for g in range(8):
        assert sorted(y[g * 8 : (g + 1) * 8]) == sorted(x[g * 8 : (g + 1) * 8])
    a = ev.shuffle_within_groups(x, 8, ev.control_rng(3, 7))
    b = ev.shuffle_within_groups(x, 8, ev.control_rng(3, 7))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="whole groups"):
        ev.shuffle_within_groups(x[:10], 8, rng)


def test_lr0_control_leaves_params_bitwise_unchanged():
    params = {"w": jax.random.normal(jax.random.key(0), (4, 4))}
    grads = {"w": jnp.ones((4, 4))}
    tx = ev.control_optimizer(optax.adamw(1e-2), "lr0")
    st = tx.init(params)
    p = params
    for _ in range(3):
        upd, st = tx.update(grads, st, p)
        p = optax.apply_updates(p, upd)
    np.testing.assert_array_equal(np.asarray(p["w"]), np.asarray(params["w"]))
    real = ev.control_optimizer(optax.adamw(1e-2), "shuffle")
    upd, _ = real.update(grads, real.init(params), params)
    assert float(jnp.abs(upd["w"]).sum()) > 0
    with pytest.raises(ValueError, match="unknown control"):
        ev.check_control("lr_zero")


def test_change_table_lists_interval():
    rows = ev.change_rows({"acc": np.array([0, 1, 0, 1.0])}, {"acc": np.array([1, 1, 0, 1.0])})
    text = ev.format_change_table(rows)
    assert "acc" in text and "95% CI" in text and "+0.2500" in text

"""PCL (arXiv:2510.01135) unit checks, spec acceptance 4, and the synthetic-environment claims."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import advantages as adv_lib
from rl import curriculum
from rl import curriculum_synth as cs


def test_effective_ratio_is_fraction_of_mixed_groups():
    rng = np.random.default_rng(0)
    r = (rng.random((64, 4)) < rng.random((64, 1))).astype(np.float32)
    r[:5] = 0.0
    r[5:9] = 1.0
    r[9, :] = [1, 0, 0, 0]
    for name in ("group_mean_std", "group_mean", "rloo"):
        a = np.asarray(adv_lib.compute(name, jnp.asarray(r)))
        assert curriculum.effective_ratio(a) == pytest.approx(curriculum.mixed_groups(r).mean())
    assert 0 < curriculum.mixed_groups(r).mean() < 1
    assert curriculum.mixed_groups(r)[:9].sum() == 0 and curriculum.mixed_groups(r)[9]


def test_top_m_golden():
    v = jnp.array([0.05, 0.47, 0.9, 0.61, 0.3, 0.52, 0.99, 0.2])
    idx, vs = curriculum.select_top_m(v, 0.5, 3)
    assert np.asarray(idx).tolist() == [5, 1, 3]  # |v-.5| = .02, .03, .11, closest first
    np.testing.assert_allclose(np.asarray(vs), [0.52, 0.47, 0.61])
    idx, _ = curriculum.select_top_m(v, 0.2, 2)
    assert sorted(np.asarray(idx).tolist()) == [4, 7]


def test_mse_target_is_group_pass_rate():
    r = np.array([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0]], np.float32)
    np.testing.assert_allclose(curriculum.group_pass_rate(r), [0.75, 0.0, 1.0, 0.25])


def test_candidates_are_distinct_and_pure_in_step():
    a = curriculum.sample_candidates(100, 40, 3, 7)
    assert len(set(a.tolist())) == 40 and a.max() < 100
    np.testing.assert_array_equal(a, curriculum.sample_candidates(100, 40, 3, 7))
    assert not np.array_equal(a, curriculum.sample_candidates(100, 40, 3, 8))


# --------------------------------------------------------------------------- tiny LM value model


def _tiny():
    from flax import nnx

    from models.transformer import Transformer, TransformerConfig
    from train.state import split_module

    cfg = TransformerConfig(
        vocab_size=20, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=32, max_len=32
    )
    return split_module(Transformer(cfg, rngs=nnx.Rngs(params=0)))


def _state_and_update():
    from rl import objectives
    from train.optim import make_role_optimizer
    from train.state import TrainState
    from train.step import make_update_step

    g, p, rest = _tiny()
    vp = curriculum.init_value_params(p, 16, 8, seed=1)
    opt = dict(lr=1e-2, schedule="constant", clip_norm=0.0)
    tx = make_role_optimizer({"policy": opt, "value": dict(opt, lr=3e-2)})
    state = TrainState.create({"policy": p, "value": vp}, tx, jax.random.key(0), {"policy": rest})
    loss = curriculum.make_pcl_loss(objectives.get("grpo")(g, {}).loss_fn, g)
    return g, state, loss, tx, make_update_step(loss, tx, donate=False)


def _batch(step, m=4, n=2, p_len=5, t_len=4):
    rng = np.random.default_rng(step)
    pt = rng.integers(3, 20, (m, p_len)).astype(np.int32)
    pm = np.ones((m, p_len), bool)
    pm[0, :2] = False
    gen = rng.integers(3, 20, (m * n, t_len)).astype(np.int32)
    r = rng.integers(0, 2, (m, n)).astype(np.float32)
    return {
        "tokens": np.concatenate([np.repeat(pt, n, 0), gen], 1),
        "mask": np.concatenate([np.repeat(pm, n, 0), np.ones_like(gen, bool)], 1),
        "score_mask": np.concatenate([np.zeros((m * n, p_len), bool), np.ones_like(gen, bool)], 1),
        "old_logp": np.full((m * n, p_len + t_len), -3.0, np.float32),
        "adv": np.asarray(adv_lib.group_mean_std(jnp.asarray(r))).reshape(-1),
        "v_tokens": pt,
        "v_mask": pm,
        "v_target": curriculum.group_pass_rate(r),
    }


def test_value_starts_at_half_and_select_compiles_once():
    g, p, rest = _tiny()
    vp = curriculum.init_value_params(p, 16, 8, seed=1)
    sel = curriculum.make_select_fn(g, 3, 0.5)
    for s in range(3):
        b = _batch(s, m=12)
        idx, v = sel(vp, rest, b["v_tokens"], b["v_mask"])
        assert idx.shape == (3,) and v.shape == (12,)
        np.testing.assert_allclose(np.asarray(v), 0.5, atol=1e-6)
    assert sel._cache_size() == 1


def test_roles_get_their_own_gradients_and_value_lags_policy():
    """The combined step moves `value` exactly as an MSE-only step on the batch's targets (the
    pass rates of rollouts from the pre-update policy) and `policy` exactly as GRPO alone."""
    from rl import objectives

    g, state, loss, _, update = _state_and_update()
    b = _batch(0)
    rest = state.frozen["policy"]
    pg = objectives.get("grpo")(g, {}).loss_fn

    @jax.jit
    def all_grads(params):
        both = jax.grad(lambda p: loss(p, state.frozen, b, None)[0])(params)
        mse = jax.grad(lambda vp: curriculum.value_mse(g, vp, rest, b)[0] / 4)(params["value"])
        pol = jax.grad(
            lambda pp: (lambda s, d, _: s / d)(*pg({"policy": pp}, state.frozen, b, None))
        )(params["policy"])
        return both, mse, pol

    both, mse_only, pg_only = all_grads(state.params)
    for a, c in zip(jax.tree.leaves(both["value"]), jax.tree.leaves(mse_only), strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7)
    for a, c in zip(jax.tree.leaves(both["policy"]), jax.tree.leaves(pg_only), strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7)
    v_fn = jax.jit(lambda vp: curriculum.value_forward(g, vp, rest, b["v_tokens"], b["v_mask"]))
    v_old = np.asarray(v_fn(state.params["value"]))
    before = state.params["policy"]
    new, m = update(state, b)
    v_new = np.asarray(v_fn(new.params["value"]))
    # One step moved V towards π_t's pass rates (the targets in the batch).
    assert np.abs(v_new - b["v_target"]).mean() < np.abs(v_old - b["v_target"]).mean()
    assert any(
        not np.allclose(a, c)
        for a, c in zip(jax.tree.leaves(new.params["policy"]), jax.tree.leaves(before))
    )
    assert np.isfinite(float(m["pcl/value_mse_train"]))


def test_update_compiles_once_with_fixed_shapes():
    traces = []
    g, state, loss, tx, _ = _state_and_update()
    from train.step import make_update_step

    def counted(*a):
        traces.append(1)
        return loss(*a)

    update = make_update_step(counted, tx)
    shapes = None
    for s in range(3):
        b = _batch(s)
        sh = {k: np.shape(v) for k, v in b.items()}
        assert shapes is None or sh == shapes
        shapes = sh
        state, _ = update(state, b)
    assert len(traces) == 1 and update._cache_size() == 1


# --------------------------------------------------------------------------- synthetic environment


@pytest.fixture(scope="module")
def synth():
    c = cs.SynthConfig()
    return c, cs.run(c, "pcl"), cs.run(c, "uniform")


def test_synth_selected_pass_rates_concentrate_around_tau(synth):
    _, pcl, uni = synth
    late_p, late_u = pcl["p_sel"][20:], uni["p_sel"][20:]
    assert np.abs(late_p - 0.5).mean() < 0.6 * np.abs(late_u - 0.5).mean()
    assert ((late_p > 0.25) & (late_p < 0.75)).mean() > 0.5
    assert ((late_u > 0.25) & (late_u < 0.75)).mean() < 0.35


def test_synth_value_mse_falls_and_effective_ratio_beats_uniform(synth):
    _, pcl, uni = synth
    assert pcl["value_mse"][-10:].mean() < 0.5 * pcl["value_mse"][:5].mean()
    assert pcl["eff"][10:].mean() > uni["eff"][10:].mean() + 0.15


def test_synth_selected_difficulty_rises_with_skill(synth):
    _, pcl, _ = synth
    q = pcl["d_sel"].mean(1).reshape(4, -1).mean(1)
    assert np.all(np.diff(q) > 0), q
    assert pcl["skill"][-1] > pcl["skill"][0]


def test_synth_value_targets_are_one_step_behind():
    c = cs.SynthConfig(n=4096, m=8, steps=4, skill_lr=2.0)
    out = cs.run(c, "pcl")
    # Targets estimate π_t's pass rates (within sampling error), not π_{t+1}'s.
    assert np.abs(out["target"] - out["p_sel"]).max() < 0.04
    assert np.abs(out["target"] - out["p_next"]).mean() > 0.1

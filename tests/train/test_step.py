"""Update step: compiles once, microbatching keeps the meaning, non-finite updates are skipped."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from train.state import TrainState
from train.step import all_finite, make_update_step, state_finite


def _quad_loss(params, frozen, batch, rng):
    del frozen, rng
    err = batch["x"] @ params["policy"]["w"] - batch["y"]
    w = batch["w"]
    return jnp.sum(w * err**2), jnp.sum(w), {"aux/mean_err": jnp.mean(err)}


def _state(tx):
    return TrainState.create({"policy": {"w": jnp.ones((3,))}}, tx, jax.random.key(0))


def _batch(n=8, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "x": jax.random.normal(k1, (n, 3)),
        "y": jax.random.normal(k2, (n,)),
        "w": jnp.ones((n,)),
    }


def test_compiles_once_over_three_calls():
    tx = optax.adam(1e-2)
    step = make_update_step(_quad_loss, tx)
    state = _state(tx)
    for i in range(3):
        state, m = step(state, _batch(seed=i))
    assert step._cache_size() == 1
    assert int(state.step) == 3


def test_microbatches_match_full_batch_gradient():
    tx = optax.sgd(0.1)
    b = _batch(8)
    b["w"] = jnp.array([1, 1, 0, 1, 2, 1, 0, 1], jnp.float32)  # uneven weights per microbatch
    s1, m1 = make_update_step(_quad_loss, tx, donate=False)(_state(tx), b)
    s4, m4 = make_update_step(_quad_loss, tx, num_microbatches=4, donate=False)(_state(tx), b)
    np.testing.assert_allclose(s1.params["policy"]["w"], s4.params["policy"]["w"], rtol=1e-6)
    np.testing.assert_allclose(m1["train/loss"], m4["train/loss"], rtol=1e-6)
    # Golden: the weighted least-squares gradient by hand.
    x, y, w = map(np.asarray, (b["x"], b["y"], b["w"]))
    g = 2 * ((x @ np.ones(3) - y) * w) @ x / w.sum()
    np.testing.assert_allclose(s1.params["policy"]["w"], 1 - 0.1 * g, rtol=1e-5)


def test_nan_batch_is_skipped_and_counted():
    tx = optax.adam(1e-2)
    step = make_update_step(_quad_loss, tx, donate=False)
    state = _state(tx)
    bad = _batch()
    bad["y"] = bad["y"].at[0].set(jnp.nan)
    new, m = step(state, bad)
    np.testing.assert_array_equal(new.params["policy"]["w"], state.params["policy"]["w"])
    assert int(new.skipped) == 1 and int(m["train/skipped"]) == 1 and int(new.step) == 1
    new2, _ = step(new, _batch())
    assert np.isfinite(np.asarray(new2.params["policy"]["w"])).all()
    assert not np.allclose(new2.params["policy"]["w"], state.params["policy"]["w"])


def test_finite_loss_with_overflowing_step_is_skipped():
    """A finite loss and gradient whose update overflows the parameters is skipped too."""
    tx = optax.sgd(1e38)  # finite gradient x 1e38 overflows float32
    step = make_update_step(_quad_loss, tx, donate=False)
    state = _state(tx)
    far = {"x": jnp.ones((8, 3)), "y": jnp.full((8,), -1000.0), "w": jnp.ones((8,))}
    new, m = step(state, far)  # gradient ~2e3 per weight, step ~2e41: inf
    assert np.isfinite(float(m["train/loss"])) and np.isfinite(float(m["train/grad_norm"]))
    np.testing.assert_array_equal(new.params["policy"]["w"], state.params["policy"]["w"])
    assert int(new.skipped) == 1 and int(new.step) == 1
    ok, _ = make_update_step(_quad_loss, optax.sgd(1e-3), donate=False)(state, far)
    assert int(ok.skipped) == 0  # the same batch with a sane step is applied


def test_state_finite_equals_all_finite_of_params_and_optimizer_state():
    """The per-parameter grouping (a parameter with its Adam mu and nu) sees a NaN or inf anywhere:
    in a parameter, in one moment only, in a state leaf that is not shaped like the parameters."""
    params = {"a": jnp.ones((3,)), "b": {"c": jnp.ones((2, 2)), "n": jnp.arange(2)}}
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    opt = tx.init(params)
    assert bool(state_finite(params, opt)) and bool(all_finite((params, opt)))

    def poison(tree, path_ok):
        return jax.tree_util.tree_map_with_path(
            lambda p, x: x.at[(0,) * x.ndim].set(jnp.nan) if path_ok(p) else x, tree
        )

    is_c = lambda p: "c" in jax.tree_util.keystr(p)  # noqa: E731
    bad_param = poison(params, is_c)
    bad_nu = opt[:1] + ((opt[1][0]._replace(nu=poison(opt[1][0].nu, is_c)),) + opt[1][1:],)
    for p_, o_ in ((bad_param, opt), (params, bad_nu)):
        assert not bool(state_finite(p_, o_)) and not bool(all_finite((p_, o_)))
    # a state leaf unlike the parameters (Adam's step count is an int: ignored, as before)
    odd = {"scale": jnp.float32(jnp.inf)}
    assert not bool(state_finite(params, (opt, odd)))


def test_skip_guard_stops_after_too_many_in_a_row():
    from models.errors import UserError
    from train.step import SkipGuard, SkippedUpdatesError

    guard = SkipGuard(max_consecutive=2, skipped_before=5)
    for step, counter in enumerate([6, 6, 7, 8], start=1):  # skip, apply, skip, skip
        guard.add(step, jnp.int32(counter))
    guard.check()  # a streak of 2 is allowed
    guard.add(5, jnp.int32(9))
    with pytest.raises(SkippedUpdatesError, match="3 updates in a row .* step 5") as e:
        guard.check()
    assert isinstance(e.value, UserError)
    never = SkipGuard(max_consecutive=0)
    for step in range(1, 50):
        never.add(step, jnp.int32(step))
    never.check()  # 0 disables the guard

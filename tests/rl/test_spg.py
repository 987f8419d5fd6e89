"""SPG, diffu-GRPO and wd1 losses: equal rewards give zero gradient, padding invariance, the
sign of the update, and a single compile of the SPG update step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from models.transformer import Transformer, TransformerConfig
from rl import objectives
from train.state import TrainState, split_module
from train.step import make_update_step

MASK, EOS = 3, 2


@functools.cache
def parts():
    cfg = TransformerConfig(
        vocab_size=10,
        d_model=16,
        n_layers=1,
        n_heads=2,
        n_kv_heads=1,
        d_ff=32,
        max_len=32,
        causal=False,
    )
    return split_module(Transformer(cfg, rngs=nnx.Rngs(0)))


def make_batch(adv, pad_prompt=0, pad_rows=0):
    prompt = np.array([[1, 5, 6], [1, 7, 8], [1, 5, 9], [1, 6, 6]], np.int32)
    comp = np.array(
        [
            [4, 5, 6, 2, 2, 2, 2, 2],
            [4, 4, 4, 4, 4, 5, 2, 2],
            [6, 6, 7, 8, 9, 4, 5, 6],
            [5, 2, 2, 2, 2, 2, 2, 2],
        ],
        np.int32,
    )
    prompt = np.concatenate([np.zeros((4, pad_prompt), np.int32), prompt], 1)
    adv = np.asarray(adv, np.float32)
    row = np.ones(4, bool)
    if pad_rows:
        prompt = np.concatenate([prompt, np.zeros((pad_rows, prompt.shape[1]), np.int32)])
        comp = np.concatenate([comp, np.full((pad_rows, 8), EOS, np.int32)])
        adv = np.concatenate([adv, np.ones(pad_rows, np.float32)])
        row = np.concatenate([row, np.zeros(pad_rows, bool)])
    is_eos = comp == EOS
    valid = (np.cumsum(is_eos, 1) - is_eos) == 0
    return {
        "prompt": jnp.asarray(prompt),
        "prompt_mask": jnp.asarray(prompt != 0),
        "completion": jnp.asarray(comp),
        "valid": jnp.asarray(valid),
        "advantage": jnp.asarray(adv),
        "row_mask": jnp.asarray(row),
    }


KW = dict(mask_block_len=4, num_mc=2, group_size=2, beta=1.5)


def build_loss(name, graphdef, **cfg):
    """The objective's loss from the fields of `cfg` it declares (one dict for every method)."""
    declared = objectives.fields(name)
    sub = {k: v for k, v in cfg.items() if k in declared}
    return objectives.get(name)(graphdef, sub, mask_id=MASK).loss_fn


_SLOW = pytest.mark.slow
METHODS = [
    ("spg", {}),
    pytest.param("spg", {"bound": "eubo"}, marks=_SLOW),
    pytest.param("spg_elbo", {}, marks=_SLOW),
    pytest.param("spg_no_neg", {}, marks=_SLOW),
    pytest.param("spg", {"mask_mode": "random"}, marks=_SLOW),
    pytest.param("spg", {"weighting": "exact"}, marks=_SLOW),
    pytest.param("spg", {"share_masks": True}, marks=_SLOW),
    ("diffu_grpo", {}),
    ("wd1", {}),
]


def loss_and_grad(name, extra, batch, frozen_extra=False):
    graphdef, params, rest = parts()
    loss_fn = build_loss(name, graphdef, **{**KW, **extra})
    frozen = {"policy": rest}
    if frozen_extra:
        frozen.update(old=params, ref=params)

    def f(p):
        ls, d, aux = loss_fn({"policy": p}, frozen, batch, jax.random.key(5))
        return ls / d, aux

    (loss, aux), g = jax.jit(jax.value_and_grad(f, has_aux=True))(params)
    return float(loss), g, aux


def gnorm(g):
    return float(optax.global_norm(g))


@pytest.mark.parametrize("name,extra", METHODS)
def test_equal_rewards_zero_gradient(name, extra):
    loss, g, aux = loss_and_grad(
        name, extra, make_batch([0.0] * 4), frozen_extra=name == "diffu_grpo"
    )
    assert gnorm(g) == 0.0 and loss == 0.0
    assert all(np.isfinite(float(v)) for v in aux.values())
    loss, g, _ = loss_and_grad(name, extra, make_batch([1.0, -1.0, 0.5, -0.5]))
    assert gnorm(g) > 0.0 and np.isfinite(loss)


@pytest.mark.parametrize("name,extra", METHODS)
def test_padding_does_not_change_loss(name, extra):
    adv = [1.0, -1.0, 0.5, -0.5]
    loss0, g0, _ = loss_and_grad(name, extra, make_batch(adv))
    loss1, g1, _ = loss_and_grad(name, extra, make_batch(adv, pad_prompt=3, pad_rows=2))
    assert abs(loss0 - loss1) < 1e-5 * max(1.0, abs(loss0))
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-6)


def test_spg_step_raises_positive_elbo_and_compiles_once():
    graphdef, params, rest = parts()
    loss_fn = build_loss("spg", graphdef, **KW)
    tx = optax.adam(3e-2)
    state = TrainState.create({"policy": params}, tx, jax.random.key(0), frozen={"policy": rest})
    update = make_update_step(loss_fn, tx)
    batch = make_batch([1.0, 1.0, 1.0, 1.0])
    first = None
    for i in range(6):
        state, m = update(state, make_batch([1.0 + 0.1 * i] * 4))
        first = float(m["spg/elbo"]) if first is None else first
    assert float(m["spg/elbo"]) > first
    assert update._cache_size() == 1
    del batch

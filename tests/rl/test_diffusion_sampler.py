"""The LLaDA sampler: schedule, masks filled, block order, determinism, padding, one compile."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.transformer import Transformer, TransformerConfig
from rl.sampling import diffusion as ds
from train.state import split_module

MASK, EOS = 3, 2


@functools.cache
def model_parts():
    cfg = TransformerConfig(
        vocab_size=12,
        d_model=16,
        n_layers=1,
        n_heads=2,
        n_kv_heads=1,
        d_ff=32,
        max_len=32,
        causal=False,
    )
    graphdef, params, rest = split_module(Transformer(cfg, rngs=nnx.Rngs(0)))
    return graphdef, params, rest


def prompts():
    tok = jnp.asarray([[0, 0, 1, 5, 6], [1, 7, 8, 9, 10]], jnp.int32)
    return tok, tok != 0


def test_schedule():
    np.testing.assert_array_equal(ds.unmask_schedule(16, 8, 8), [2] * 8)
    np.testing.assert_array_equal(ds.unmask_schedule(8, 8, 3), [3, 3, 2])
    np.testing.assert_array_equal(ds.unmask_schedule(16, 8, 6), [3, 3, 2, 3, 3, 2])
    with pytest.raises(ValueError):
        ds.unmask_schedule(10, 4, 4)


@pytest.mark.parametrize("temperature,remasking", [(0.0, "low_confidence"), (1.0, "random")])
def test_fills_every_mask_in_block_order(temperature, remasking):
    graphdef, params, rest = model_parts()
    sample = ds.make_sampler(
        graphdef,
        gen_len=16,
        block_len=8,
        steps=8,
        mask_id=MASK,
        temperature=temperature,
        remasking=remasking,
        return_steps=True,
    )
    tok, pm = prompts()
    x, when = sample(params, rest, tok, pm, jax.random.key(0))
    x, when = np.asarray(x), np.asarray(when)
    assert not np.any(x == MASK)
    sched = ds.unmask_schedule(16, 8, 8)
    for r in range(2):
        counts = np.bincount(when[r], minlength=8)
        np.testing.assert_array_equal(counts, sched)  # exactly 2 per step
        # Steps 0-3 commit only in block 0, steps 4-7 only in block 1.
        assert np.all(when[r, :8] < 4) and np.all(when[r, 8:] >= 4)


def test_temperature_zero_deterministic_and_padding_invariant():
    graphdef, params, rest = model_parts()
    sample = ds.make_sampler(graphdef, gen_len=8, block_len=4, steps=4, mask_id=MASK)
    tok, pm = prompts()
    a = np.asarray(sample(params, rest, tok, pm, jax.random.key(0)))
    b = np.asarray(sample(params, rest, tok, pm, jax.random.key(1)))
    np.testing.assert_array_equal(a, b)
    # Three more columns of left padding do not change the decode.
    pad = jnp.zeros((2, 3), jnp.int32)
    c = sample(
        params,
        rest,
        jnp.concatenate([pad, tok], 1),
        jnp.concatenate([pad != 0, pm], 1),
        jax.random.key(2),
    )
    np.testing.assert_array_equal(a, np.asarray(c))
    # The padded row decodes as it does alone without padding.
    d = sample(params, rest, tok[:1, 2:], pm[:1, 2:], jax.random.key(3))
    np.testing.assert_array_equal(a[:1], np.asarray(d))


def test_sampling_uses_keys_and_compiles_once():
    graphdef, params, rest = model_parts()
    sample = ds.make_sampler(
        graphdef,
        gen_len=8,
        block_len=4,
        steps=4,
        mask_id=MASK,
        temperature=1.0,
        eos_id=EOS,
        suppress_eos=True,
    )
    tok, pm = prompts()
    outs = [np.asarray(sample(params, rest, tok, pm, jax.random.key(s))) for s in range(3)]
    assert not all(np.array_equal(outs[0], o) for o in outs[1:])
    np.testing.assert_array_equal(
        outs[0], np.asarray(sample(params, rest, tok, pm, jax.random.key(0)))
    )
    assert sample._cache_size() == 1

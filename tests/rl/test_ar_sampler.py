"""AR sampler: KV-cache greedy == recomputation greedy, log-probs == re-scoring, per-row EOS."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.transformer import Transformer, TransformerConfig
from rl.sampling.autoregressive import make_sampler, process_logits, sample, score_tokens
from train.state import split_module

V, EOS, PAD = 11, 2, 0


@pytest.fixture(scope="module")
def model():
    cfg = TransformerConfig(
        vocab_size=V, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=64, max_len=32
    )
    return Transformer(cfg, rngs=nnx.Rngs(params=0))


def left_padded():
    # Rows of different prompt lengths, left-padded to P = 5.
    toks = np.array([[0, 0, 1, 5, 6], [1, 7, 8, 9, 4], [0, 0, 0, 1, 3]], np.int32)
    return jnp.asarray(toks), jnp.asarray(toks != 0)


def greedy_by_recompute(model, toks, mask, n):
    """Reference: re-run the full sequence for every new token, no cache."""
    graphdef, params, rest = split_module(model)
    last = jax.jit(lambda t, m: nnx.merge(graphdef, params, rest)(t, mask_bt=m).logits[:, -1])
    out_toks = []
    done = np.zeros(toks.shape[0], bool)
    for _ in range(n):
        logits = last(toks, mask)
        tok = np.asarray(jnp.argmax(logits, -1))
        tok = np.where(done, PAD, tok)
        out_toks.append(tok)
        toks = jnp.concatenate([toks, jnp.asarray(tok)[:, None]], 1)
        mask = jnp.concatenate([mask, jnp.asarray(~done)[:, None]], 1)
        done = done | (tok == EOS)
    return np.stack(out_toks, 1)


def test_greedy_cache_equals_recompute(model):
    toks, mask = left_padded()
    out = jax.jit(
        lambda t, m: sample(
            model, t, m, jax.random.key(0), max_new_tokens=6, eos_id=EOS, greedy=True
        )
    )(toks, mask)
    ref = greedy_by_recompute(model, toks, mask, 6)
    np.testing.assert_array_equal(np.asarray(out.tokens), ref)


def test_logprobs_equal_rescoring(model):
    toks, mask = left_padded()
    out = jax.jit(
        lambda t, m, k: sample(
            model, t, m, k, max_new_tokens=7, eos_id=EOS, temperature=1.3, top_k=6
        )
    )(toks, mask, jax.random.key(3))
    full = jnp.concatenate([toks, out.tokens], 1)
    full_mask = jnp.concatenate([mask, out.mask], 1)
    lp = nnx.jit(score_tokens)(model, full, full_mask)[:, toks.shape[1] :]
    np.testing.assert_allclose(np.asarray(lp), np.asarray(out.logp), atol=2e-5)
    assert np.all(np.asarray(out.logp)[~np.asarray(out.mask)] == 0)
    # Sampling under a truncated, tempered distribution: its log-probs differ from the raw ones.
    assert not np.allclose(np.asarray(out.sample_logp), np.asarray(out.logp))


def test_eos_stops_rows_independently(model):
    toks, mask = left_padded()
    # Make EOS very likely so rows stop at different steps.
    out = jax.jit(
        lambda t, m: sample(
            model, t, m, jax.random.key(1), max_new_tokens=12, eos_id=EOS, temperature=3.0
        )
    )(toks, mask)
    t, m, n = map(np.asarray, (out.tokens, out.mask, out.lengths))
    for r in range(t.shape[0]):
        eos = np.flatnonzero(t[r] == EOS)
        if eos.size:
            e = eos[0]
            assert m[r, : e + 1].all() and not m[r, e + 1 :].any()
            assert (t[r, e + 1 :] == PAD).all()
            assert n[r] == e + 1
        else:
            assert m[r].all() and n[r] == t.shape[1]


def test_process_logits_top_k_top_p():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    k2 = process_logits(logits, 1.0, 2, 1.0)
    assert np.isfinite(np.asarray(k2)[0, :2]).all() and (np.asarray(k2)[0, 2:] < -1e29).all()
    p = process_logits(logits, 1.0, 0, 0.7)  # 0.5 < 0.7 <= 0.8: keep the top two
    assert (np.asarray(p)[0, :2] > -1e29).all() and (np.asarray(p)[0, 2:] < -1e29).all()
    p1 = process_logits(logits, 1.0, 0, 0.01)  # the top token always survives
    assert (np.asarray(p1)[0, 0] > -1e29) and (np.asarray(p1)[0, 1:] < -1e29).all()


def test_make_sampler_compiles_once(model):
    graphdef, params, rest = split_module(model)
    fn = make_sampler(graphdef, max_new_tokens=4, eos_id=EOS, temperature=1.0)
    toks, mask = left_padded()
    for seed in range(3):
        fn(params, rest, toks, mask, jax.random.key(seed))
    assert fn._cache_size() == 1

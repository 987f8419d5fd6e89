"""Bounds, MC convergence and masking rules of rl/likelihood.py on a tiny diffusion LM.

log pi(x) of the continuous-time masked-diffusion model is the random-order mixture
E_sigma prod_k pi(x_sigma(k) | x_sigma(<k)); with n = 2..3 tokens it is enumerated exactly.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.transformer import Transformer, TransformerConfig
from rl import likelihood as lk

MASK = 3


@functools.cache
def tiny_model(seed):
    cfg = TransformerConfig(
        vocab_size=8,
        d_model=16,
        n_layers=1,
        n_heads=2,
        n_kv_heads=1,
        d_ff=32,
        max_len=16,
        causal=False,
    )
    model = Transformer(cfg, rngs=nnx.Rngs(seed))
    # Sharper logits than the default init so the bounds are not trivially close.
    model.unembed[...] = model.unembed[...] * 3.0
    return model


def _logps(model, prompt, x, masked_mg):
    """log pi(x_i | z_j) [m, n] for the given masks, in one forward pass."""
    m, n = masked_mg.shape
    mk = jnp.asarray(masked_mg[None])
    draw = lk.MaskDraw(mk, mk, jnp.ones((1, m)), jnp.zeros((1, m, len(prompt)), bool))
    return np.asarray(
        lk.completion_logps(
            model,
            jnp.asarray([prompt]),
            jnp.ones((1, len(prompt)), bool),
            jnp.asarray([x]),
            draw,
            MASK,
        )[0],
        np.float64,
    )


def cond_probs(model, prompt, x):
    """pi(x_i | revealed set R) for every i and every R not containing i: dict (i, R) -> p."""
    n = len(x)
    subsets = [s for r in range(1, n + 1) for s in itertools.combinations(range(n), r)]
    mk = np.zeros((len(subsets), n), bool)
    for j, s in enumerate(subsets):
        mk[j, list(s)] = True
    ll = _logps(model, prompt, x, mk)
    out = {}
    for j, masked in enumerate(subsets):
        revealed = frozenset(set(range(n)) - set(masked))
        for i in masked:
            out[(i, revealed)] = float(np.exp(ll[j, i]))
    return out


def analytic(cp, n, beta):
    """(exact log p, analytic ELBO, analytic EUBO) by enumerating orders."""
    perms = list(itertools.permutations(range(n)))
    probs, elbo = [], 0.0
    inner = np.zeros(n)
    for s in perms:
        terms = [cp[(s[k], frozenset(s[:k]))] for k in range(n)]
        probs.append(np.prod(terms))
        elbo += np.sum(np.log(terms)) / len(perms)
        for k in range(n):
            inner[s[k]] += terms[k] ** beta / len(perms)
    return math.log(np.mean(probs)), elbo, float(np.sum(np.log(inner)) / beta)


@pytest.mark.parametrize("n", [2, 3])
def test_sandwich_exact(n):
    rng = np.random.default_rng(n)
    for seed in range(3):
        model = tiny_model(seed)
        x = list(rng.integers(4, 8, size=n))
        cp = cond_probs(model, [1, 5], x)
        for beta in (float(n), n + 1.0):
            logp, el, eu = analytic(cp, n, beta)
            assert el <= logp + 1e-9 <= eu + 2e-9, (seed, beta, el, logp, eu)
        # Tighter with beta closer to n, and the ELBO is strictly below for non-degenerate p.
        assert analytic(cp, n, n)[2] <= analytic(cp, n, n + 1.0)[2] + 1e-12
        assert el < logp


def test_mc_converges_to_analytic():
    n, beta, m = 3, 3.0, 3000
    model = tiny_model(1)
    x = [4, 6, 5]
    prompt = [1, 5]
    cp = cond_probs(model, prompt, x)
    logp, el, eu = analytic(cp, n, beta)
    valid = jnp.ones((1, n), bool)
    pm = jnp.ones((1, 2), bool)
    draw = lk.draw_masks(
        jax.random.key(0), valid, pm, num_samples=m, mode="random", p_mask_prompt=0.0
    )
    ll = lk.completion_logps(model, jnp.asarray([prompt]), pm, jnp.asarray([x]), draw, MASK)
    e_mc = float(lk.elbo(ll, draw.scored, draw.weight)[0])
    u_mc, cov = lk.eubo(ll, draw.scored, draw.weight, beta, jnp.asarray([n]))
    per = np.asarray(jnp.sum(jnp.where(draw.scored, ll, 0), -1) * draw.weight)[0]
    se = per.std() / np.sqrt(m)
    assert abs(e_mc - el) < 4 * se + 1e-3, (e_mc, el, se)
    assert abs(float(u_mc[0]) - eu) < 0.05, (float(u_mc[0]), eu)
    assert float(cov[0]) == 1.0
    # Few samples: the estimator is noisier; many samples sit close to the bound.
    assert e_mc <= logp and float(u_mc[0]) >= logp


def eubo_numpy(ll, scored, w, beta, length):
    ll = np.asarray(ll, np.float64)
    b, m, g = ll.shape
    out = []
    for r in range(b):
        tot, cov = 0.0, 0
        for i in range(g):
            if not scored[r, :, i].any():
                continue
            cov += 1
            terms = [np.log(w[r, j]) + beta * ll[r, j, i] for j in range(m) if scored[r, j, i]]
            mx = max(terms)
            tot += (mx + np.log(np.sum(np.exp(np.array(terms) - mx))) - np.log(m)) / beta
        out.append(tot * length[r] / cov if cov else 0.0)
    return np.array(out)


def test_eubo_log_space_underflow_and_uncovered():
    rng = np.random.default_rng(0)
    ll = -rng.uniform(0, 3, size=(3, 2, 5)).astype(np.float32)
    ll[0] -= 200.0  # p^beta = exp(-400..) underflows to 0 in fp32
    scored = rng.uniform(size=(3, 2, 5)) < 0.6
    scored[1, :, 2] = False  # a position no sample masked
    scored[2] = False  # nothing scored at all
    w = rng.uniform(1, 3, size=(3, 2)).astype(np.float32)
    length = np.array([5, 5, 5])
    assert np.all(np.exp(2.0 * ll[0]) == 0.0)
    got, cov = lk.eubo(
        jnp.asarray(ll), jnp.asarray(scored), jnp.asarray(w), 2.0, jnp.asarray(length)
    )
    ref = eubo_numpy(ll, scored, w, 2.0, length)
    assert np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-4)
    assert float(cov[1]) < 1.0 and float(cov[2]) == 0.0
    g = jax.grad(
        lambda v: lk.eubo(v, jnp.asarray(scored), jnp.asarray(w), 2.0, jnp.asarray(length))[0].sum()
    )(jnp.asarray(ll))
    assert np.all(np.isfinite(np.asarray(g)))
    assert np.all(np.asarray(g)[~scored] == 0.0)


def test_block_masking_rules():
    g, blen, m = 12, 4, 64
    comp = jnp.asarray([[5, 5, 5, 5, 5, 5, 5, 2, 2, 2, 2, 2], [5] * 12])  # L = 8 and L = 12
    valid = lk.completion_valid(comp, 2)
    np.testing.assert_array_equal(np.asarray(valid.sum(-1)), [8, 12])
    pm = jnp.ones((2, 3), bool)
    for weighting in ("parity", "exact"):
        d = lk.draw_masks(
            jax.random.key(3),
            valid,
            pm,
            num_samples=m,
            mode="block",
            weighting=weighting,
            block_len=blen,
            p_mask_prompt=0.15,
        )
        masked, scored, w = (np.asarray(a) for a in (d.masked, d.scored, d.weight))
        v = np.asarray(valid)[:, None, :]
        assert np.all(masked[~np.broadcast_to(v, masked.shape)])  # past EOS always masked
        assert not np.any(scored & ~v)
        for r, length in enumerate([8, 12]):
            for j in range(m):
                blocks = [masked[r, j, b * blen : (b + 1) * blen] for b in range(g // blen)]
                nb = -(-length // blen)
                if weighting == "parity":
                    assert np.isclose(w[r, j], length / scored[r, j].sum())
                    # Earlier blocks get light 15% hits, so b* is the first block from which
                    # every later block is fully masked.
                    bstar = min(
                        b
                        for b in range(g // blen)
                        if all(blocks[c].all() for c in range(b + 1, g // blen))
                    )
                else:
                    bstar = min(b for b in range(g // blen) if blocks[b].any())
                    assert not masked[r, j, : bstar * blen].any()
                    assert all(blocks[c].all() for c in range(bstar + 1, g // blen))
                    nv = min(blen, length - blen * bstar)
                    k = int(blocks[bstar][:nv].sum())
                    assert 1 <= k <= nv and scored[r, j].sum() == k
                    assert np.isclose(w[r, j], nb * nv / k)
                assert bstar < nb
        # Prompt tokens are perturbed at roughly p_mask_prompt, never scored (not in `scored`).
        assert 0.0 < float(np.asarray(d.prompt_masked).mean()) < 0.4


def test_completion_valid():
    comp = jnp.asarray([[5, 2, 6, 2], [5, 6, 7, 8], [2, 2, 2, 2]])
    np.testing.assert_array_equal(
        np.asarray(lk.completion_valid(comp, 2)),
        [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]],
    )


@pytest.mark.slow
def test_block_exact_elbo_is_unbiased_for_block_bound():
    """Exact block weights: E[elbo] = sum_b ELBO(x_b | x_<b) with later blocks masked."""
    model = tiny_model(2)
    x, prompt = [4, 6, 5, 7], [1, 5]
    blen = 2
    pm = jnp.ones((1, 2), bool)
    comp = jnp.asarray([x])
    # Analytic: per block b, tokens of later blocks stay masked; within-block random order.
    masks, which = [], []
    for b in range(2):
        for order in itertools.permutations([2 * b, 2 * b + 1]):
            for k, i in enumerate(order):
                mk = np.ones(4, bool)
                mk[list(set(range(2 * b)) | set(order[:k]))] = False
                masks.append(mk)
                which.append(i)
    ll_a = _logps(model, prompt, x, np.stack(masks))
    total = sum(ll_a[j, i] for j, i in enumerate(which)) / 2
    d = lk.draw_masks(
        jax.random.key(1),
        jnp.ones((1, 4), bool),
        pm,
        num_samples=4000,
        mode="block",
        weighting="exact",
        block_len=blen,
        p_mask_prompt=0.0,
    )
    ll = lk.completion_logps(model, jnp.asarray([prompt]), pm, comp, d, MASK)
    per = np.asarray(jnp.sum(jnp.where(d.scored, ll, 0), -1) * d.weight)[0]
    assert abs(per.mean() - total) < 4 * per.std() / np.sqrt(per.size) + 1e-3


def test_likelihood_and_sampler_normalise_alike_without_the_mask_token():
    """Issue 15 item 6: the scored policy is the sampled one (SUBS: the mask token has no mass).

    A model whose mask logit is huge would put almost all softmax mass on the mask token if the
    likelihood kept it; with SUBS the log-probabilities over the real tokens sum to one and do not
    depend on the mask logit at all.
    """
    import types

    vocab, mask = 7, 6
    base = jax.random.normal(jax.random.PRNGKey(3), (1, 5, vocab))

    def fake(mask_logit):
        def call(tokens, mask_bt=None):
            b, t = tokens.shape
            logits = jnp.broadcast_to(base[:, :1], (b, t, vocab)).at[..., mask].set(mask_logit)
            return types.SimpleNamespace(logits=logits)

        return call

    prompt = jnp.asarray([[1, 2]])
    pm = jnp.ones((1, 2), bool)
    comp = jnp.asarray([[0, 3, 4]])
    d = lk.MaskDraw(
        masked=jnp.ones((1, 1, 3), bool),
        scored=jnp.ones((1, 1, 3), bool),
        weight=jnp.ones((1, 1)),
        prompt_masked=jnp.zeros((1, 1, 2), bool),
    )
    lo = lk.completion_logps(fake(-5.0), prompt, pm, comp, d, mask)
    hi = lk.completion_logps(fake(50.0), prompt, pm, comp, d, mask)
    np.testing.assert_allclose(lo, hi, rtol=0, atol=1e-6)
    ref = jax.nn.log_softmax(base[0, 0, :mask])  # the real tokens only
    np.testing.assert_allclose(lo[0, 0], ref[jnp.asarray([0, 3, 4])], atol=1e-6)

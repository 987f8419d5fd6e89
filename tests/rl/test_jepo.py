"""JEPO on an exact latent-variable model: bound ordering, the Jensen gap, unbiased gradients, the
variance reduction of leave-one-out baselines; edge cases and the SFT reduction on a transformer."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.transformer import Transformer, TransformerConfig
from rl import objectives
from rl.objectives import jepo
from rl.sampling.autoregressive import score_tokens
from train.state import split_module

C, A, ASTAR = 4, 3, 1  # 4 chain-of-thought values, 3 answers, the reference answer


def toy_params():
    k1, k2 = jax.random.split(jax.random.key(0))
    return {"c": jax.random.normal(k1, (C,)), "a": 1.5 * jax.random.normal(k2, (C, A))}


def logs(theta):
    log_pc = jax.nn.log_softmax(theta["c"])
    log_pa = jax.nn.log_softmax(theta["a"], axis=-1)[:, ASTAR]  # log π(a*|c)
    return log_pc, log_pa


def exact_evidence(theta):
    log_pc, log_pa = logs(theta)
    return jax.nn.logsumexp(log_pc + log_pa)


def exact_bound(theta, n):
    """L^(n) by enumerating all C^n tuples of i.i.d. chains of thought."""
    log_pc, log_pa = logs(theta)
    tuples = jnp.array(list(itertools.product(range(C), repeat=n)))
    logq = jnp.sum(log_pc[tuples], axis=1)
    val = jax.nn.logsumexp(log_pa[tuples], axis=1) - jnp.log(n)
    return jnp.sum(jnp.exp(logq) * val)


def test_bounds_ordered_and_jensen_gap():
    th = toy_params()
    ls = [float(jax.jit(exact_bound, static_argnums=1)(th, n)) for n in (1, 2, 3, 4)]
    ev = float(exact_evidence(th))
    assert ls[0] < ls[1] < ls[2] < ls[3] < ev, (ls, ev)
    # Gap of L^(1) = KL(π(c) ‖ p(c|a*)).
    log_pc, log_pa = logs(th)
    post = log_pc + log_pa - ev
    kl = float(jnp.sum(jnp.exp(log_pc) * (log_pc - post)))
    np.testing.assert_allclose(ev - ls[0], kl, rtol=1e-5)
    # The estimator's L̂ is the bound's integrand: its mean under sampling is L^(n).
    ll = jnp.array([[-1.0, -2.0, -0.5]])
    np.testing.assert_allclose(
        jepo.logmeanexp(ll, jnp.ones((1, 3), bool)),
        [np.log(np.mean(np.exp([-1.0, -2.0, -0.5])))],
        rtol=1e-6,
    )


def estimator_grads(theta, key, n, m, *, multi, baseline=True):
    """Per-group gradient estimates [m, ...] of the JEPO surrogate with β_sup = 1."""

    def one(k):
        log_pc, log_pa = logs(theta)
        cs = jax.random.categorical(k, log_pc, shape=(n,))

        def f(th):
            lpc, lpa = logs(th)
            cot_lp, ll = lpc[cs][None], lpa[cs][None]
            valid = jnp.ones((1, n), bool)
            if baseline:
                adv = jepo.advantages(ll, valid, multi_sample=multi)
            else:  # no baseline: the raw reward
                adv = n * jepo.logmeanexp(ll, valid)[:, None] * jnp.ones((1, n)) if multi else ll
            return jepo.surrogate(
                cot_lp, ll, adv, valid, jnp.ones(1), multi_sample=multi, beta_sup=1.0
            )[0]

        del log_pa
        return jax.grad(lambda th: -f(th))(theta)

    return jax.jit(jax.vmap(one))(jax.random.split(key, m))


@pytest.mark.parametrize("multi,n", [(False, 3), (True, 3)])
def test_gradient_unbiased(multi, n):
    th = toy_params()
    target = jax.jit(jax.grad(lambda t: exact_bound(t, 1 if not multi else n)))(th)
    g = estimator_grads(th, jax.random.key(1), n, 20000, multi=multi)
    for name in ("c", "a"):
        mean = np.asarray(g[name].mean(0))
        se = np.asarray(g[name].std(0)) / np.sqrt(g[name].shape[0])
        err = np.abs(mean - np.asarray(target[name]))
        assert (err <= 4.5 * se + 1e-4).all(), (name, err, se)


@pytest.mark.parametrize("multi", [False, True])
def test_loo_baseline_lowers_variance(multi):
    th = toy_params()
    key = jax.random.key(2)
    var = lambda g: float(sum(jnp.sum(jnp.var(x, 0)) for x in jax.tree.leaves(g)))  # noqa: E731
    with_b = var(estimator_grads(th, key, 4, 8000, multi=multi))
    without = var(estimator_grads(th, key, 4, 8000, multi=multi, baseline=False))
    assert with_b < 0.8 * without, (with_b, without)


def test_bound_gradient_is_softmax_weighted():
    ll = jnp.array([[-1.0, -3.0, -0.2, -2.0]])
    g = jax.grad(lambda x: jepo.bound_term(x, jnp.ones((1, 4), bool), multi_sample=True)[0])(ll)
    np.testing.assert_allclose(g, jax.nn.softmax(ll, axis=-1), rtol=1e-6)


def test_edge_cases_zero_advantage_finite():
    ll = jnp.array([[-1.0, -2.0, -3.0], [-1.0, -5.0, -2.0], [-4.0, -1.0, -2.0]])
    valid = jnp.array([[False] * 3, [True, False, False], [True, True, False]])
    for multi in (False, True):
        a = np.asarray(jepo.advantages(ll, valid, multi_sample=multi))
        assert (a[:2] == 0).all() and a[2, 2] == 0 and np.isfinite(a).all()
        a2 = np.asarray(jepo.advantages(ll[2:, :2], valid[2:, :2], multi_sample=multi))
        np.testing.assert_allclose(a[2, :2] / 3, a2[0] / 2, rtol=1e-6)  # per-slot weights
        loss = jepo.surrogate(
            ll,
            ll,
            jnp.asarray(a),
            valid,
            jnp.array([0.0, 0.0, 1.0]),
            multi_sample=multi,
            beta_sup=0.1,
        )
        assert np.isfinite(np.asarray(loss)).all()
    # Single-sample LOO golden: [-4, -1] -> [-3, 3].
    np.testing.assert_allclose(
        jepo.advantages(ll[2:, :2], valid[2:, :2], multi_sample=False), [[-3.0, 3.0]]
    )
    n = jepo.normalise_clip(jnp.array([[5.0, -5.0, 0.1]]), jnp.ones((1, 3), bool))
    assert np.abs(np.asarray(n)).max() <= 1.0
    f = np.asarray(jepo.format_advantages(jnp.array([[1.0, 1.0, 0.0, 1.0]])))
    assert f[0, 2] < 0 < f[0, 0] and np.abs(f).max() <= 1.0


@pytest.fixture(scope="module")
def tiny_lm():
    cfg = TransformerConfig(
        vocab_size=10, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=32, max_len=16
    )
    return split_module(Transformer(cfg, rngs=nnx.Rngs(params=0)))


def test_empty_cot_reduces_to_sft(tiny_lm):
    """No chain of thought: the JEPO gradient is the SFT gradient of log π(a*|x)."""
    graphdef, params, rest = tiny_lm
    toks = jnp.array([[1, 5, 6, 7, 8, 2, 0, 0], [0, 1, 6, 5, 7, 9, 2, 0]])
    mask = toks != 0
    ans = jnp.zeros_like(mask).at[:, 4:7].set(True) & mask
    batch = {
        "tokens": toks,
        "mask": mask,
        "cot_mask": jnp.zeros_like(mask),
        "ans_mask": ans,
        "adv": jnp.array([0.3, -0.3]),
        "valid": jnp.ones(2, bool),
        "bound_w": jnp.ones(2),
    }
    cfg = {"group_size": 2, "multi_sample": False, "beta_sup": 1.0}
    loss_fn = objectives.get("jepo")(graphdef, cfg).loss_fn
    fz = {"policy": rest}

    def sft(p):
        model = nnx.merge(graphdef, p["policy"], rest)
        return -jnp.sum(score_tokens(model, toks, mask) * ans) / 2

    g1 = jax.jit(jax.grad(lambda p: loss_fn(p, fz, batch, None)[0]))({"policy": params})
    g2 = jax.jit(jax.grad(sft))({"policy": params})
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_answer_loglik_is_a_sum_padding_free(tiny_lm):
    graphdef, params, rest = tiny_lm
    model = nnx.merge(graphdef, params, rest)
    toks = jnp.array([[1, 5, 6, 7, 8, 2]])
    ans = jnp.array([[0, 0, 0, 1, 1, 1]], bool)
    ll = nnx.jit(jepo.answer_loglik)(model, toks, toks != 0, ans)
    lp = nnx.jit(score_tokens)(model, toks, toks != 0)
    np.testing.assert_allclose(ll, jnp.sum(lp[:, 3:]), rtol=1e-6)
    padded = jnp.concatenate([toks, jnp.zeros((1, 3), toks.dtype)], 1)
    pans = jnp.concatenate([ans, jnp.zeros((1, 3), bool)], 1)
    np.testing.assert_allclose(
        nnx.jit(jepo.answer_loglik)(model, padded, padded != 0, pans), ll, rtol=1e-5
    )


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_gradient_pulls_back_to_reference(estimator):
    """On a one-token categorical policy, the on-policy expected gradient of the KL penalty is
    nonzero and a step along it lowers KL(π‖π_ref); the plain k1 sum has zero expected gradient."""
    ref = jnp.array([0.5, -0.3, 0.1, 1.0, -1.0])
    theta = ref + jnp.array([1.5, -1.0, 0.8, -1.2, 0.4])  # a perturbed policy
    ys = jnp.arange(5)[:, None]
    w = jnp.ones((5, 1))

    def expected_grad(kl_of):
        def per_outcome(th):
            lp = jax.nn.log_softmax(th)[ys]
            return kl_of(lp, jax.nn.log_softmax(ref)[ys])  # [5]: one row per outcome y

        jac = jax.jacobian(per_outcome)(theta)  # [5, V]
        probs = jax.lax.stop_gradient(jax.nn.softmax(theta))
        return probs @ jac  # Σ_y π(y) ∇penalty(y): samples drawn from π, then scored

    def true_kl(th):
        lp, lr = jax.nn.log_softmax(th), jax.nn.log_softmax(ref)
        return jnp.sum(jnp.exp(lp) * (lp - lr))

    naive = expected_grad(lambda lp, lr: jnp.sum((lp - lr) * w, 1))
    np.testing.assert_allclose(naive, 0.0, atol=1e-6)  # why the k1 sum regularises nothing
    g = expected_grad(lambda lp, lr: jepo.kl_rows(lp, lr, w, estimator))
    assert float(jnp.dot(g, jax.grad(true_kl)(theta))) > 0
    assert float(true_kl(theta - 0.1 * g)) < float(true_kl(theta))
    if estimator == "k1":  # the score-function form is the exact gradient
        np.testing.assert_allclose(g, jax.grad(true_kl)(theta), rtol=1e-5, atol=1e-6)


def test_partial_group_weighted_like_the_paper():
    """A group with k of n samples valid gets the paper's estimator on those k samples: the
    surrogate's per-slot weight A_i/n equals that of a full group of the k valid samples (A/k)."""
    ll = jnp.array([[-1.0, -3.0, -2.0, 0.0]])
    valid = jnp.array([[True, True, True, False]])
    adv = jax.jit(jepo.advantages, static_argnames="multi_sample")
    for multi in (False, True):
        part = np.asarray(adv(ll, valid, multi_sample=multi))[0, :3] / 4
        full = np.asarray(adv(ll[:, :3], valid[:, :3], multi_sample=multi))[0] / 3
        np.testing.assert_allclose(part, full, rtol=1e-6)


def test_combined_mode_normalises_rl_groups_and_keeps_format_term():
    """RL groups get the normalised, clipped RLOO advantage plus the format term (not raw RLOO)."""
    from rl.advantages import rloo

    ll = jnp.array([[-1.0, -3.0, -2.0, -0.5], [-2.0, -2.5, -1.0, -4.0]])
    valid = jnp.array([[True, True, True, True], [True, True, False, True]])
    marker = jnp.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0]])
    reward = jnp.array([[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 10.0]])  # group 1 solved
    rl_group = jnp.array([[False], [True]])
    fn = jax.jit(jepo.combined_advantages, static_argnums=3)
    lb = jepo.advantages(ll, valid, multi_sample=True)
    a = np.asarray(fn(lb, valid, marker, 10.0, reward=reward, rl_group=rl_group))
    fmt = np.asarray(jepo.format_advantages(marker, 10.0))
    rl_part = a[1] - fmt[1]
    assert np.abs(rl_part).max() <= 1.0 + 1e-6  # normalised and clipped, not raw (±6.7)
    raw = np.asarray(rloo(reward))[1]
    np.testing.assert_allclose(np.sign(rl_part), np.sign(raw))
    assert a[1, 2] < a[1, 1]  # same reward, no marker: the format term still applies
    jepo_only = np.asarray(jepo.normalise_clip(lb, valid.at[1].set(False)))[0]
    np.testing.assert_allclose(a[0], jepo_only + fmt[0], rtol=1e-5, atol=1e-6)

"""AIPO (LlamaRL arXiv:2505.24034 §AIPO): both variants against a NumPy reference (values,
clipped fraction, gradients), the logged importance statistics, and the registered loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.transformer import Transformer, TransformerConfig
from rl import objectives
from rl.objectives.aipo import aipo_token_loss, importance_stats
from rl.sampling.autoregressive import score_tokens
from train.state import split_module

RHO = 2.0


def _case():
    rng = np.random.default_rng(0)
    mu = np.log(rng.uniform(0.05, 0.9, (3, 5))).astype(np.float32)
    # log r spread over [-1.5, 1.5]: some tokens above rho = 2 (log 2 = 0.69), some far below.
    log_r = rng.uniform(-1.5, 1.5, (3, 5)).astype(np.float32)
    logp = mu + log_r
    adv = np.array([1.0, -0.5, 2.0], np.float32)
    w = np.ones((3, 5), np.float32)
    w[1, 3:] = 0.0  # padding
    return logp, mu, adv, w


def _ref(logp, mu, adv, w, rho, variant):
    """NumPy loss (token mean) and d loss / d logp."""
    r = np.exp(logp - mu)
    wt = np.minimum(r, rho)
    a = adv[:, None]
    n = w.sum()
    if variant == "detached":
        loss = -(wt * a * logp * w).sum() / n
        grad = -wt * a * w / n
    else:
        loss = -(wt * a * w).sum() / n
        grad = np.where(r < rho, -r * a, 0.0) * w / n
    return loss, grad, r


@pytest.mark.parametrize("variant", ["detached", "ratio"])
def test_aipo_matches_numpy_reference(variant):
    logp, mu, adv, w = _case()

    def f(lp):
        loss_bt, _ = aipo_token_loss(lp, jnp.asarray(mu), jnp.asarray(adv), RHO, variant)
        return jnp.sum(loss_bt * w) / jnp.sum(w)

    loss, grad = jax.value_and_grad(f)(jnp.asarray(logp))
    ref_loss, ref_grad, r = _ref(logp, mu, adv, w, RHO, variant)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-8)
    clipped = (r > RHO) & (w > 0)
    assert clipped.any() and (~clipped & (w > 0)).any()
    if variant == "ratio":  # a clipped token contributes no gradient (one-sided trust region)
        assert np.all(np.asarray(grad)[clipped] == 0.0)
    else:  # the detached weight keeps clipped tokens at weight rho
        np.testing.assert_allclose(
            np.asarray(grad)[clipped], (-RHO * adv[:, None] * w / w.sum())[clipped], rtol=1e-5
        )
    # Gradient wrt mu is zero: the behaviour log-probs are data.
    g_mu = jax.grad(
        lambda m: jnp.sum(aipo_token_loss(jnp.asarray(logp), m, jnp.asarray(adv), RHO, variant)[0])
    )(jnp.asarray(mu))
    assert np.all(np.asarray(g_mu) == 0.0)


def test_variants_share_the_gradient_below_rho():
    logp, mu, adv, w = _case()
    _, g_det, r = _ref(logp, mu, adv, w, RHO, "detached")
    _, g_rat, _ = _ref(logp, mu, adv, w, RHO, "ratio")
    below = r < RHO
    np.testing.assert_allclose(g_det[below], g_rat[below], rtol=1e-6)


def test_importance_stats_match_numpy():
    logp, mu, adv, w = _case()
    s = {k: float(v) for k, v in importance_stats(jnp.asarray(logp - mu), w, RHO).items()}
    on = w > 0
    r = np.exp(logp - mu)[on]
    wt = np.minimum(r, RHO)
    assert s["aipo/is_mean"] == pytest.approx(wt.mean(), rel=1e-5)
    assert s["aipo/is_max"] == pytest.approx(wt.max(), rel=1e-6)
    assert s["aipo/ratio_max"] == pytest.approx(r.max(), rel=1e-5)
    assert s["aipo/clip_frac"] == pytest.approx((r > RHO).mean(), rel=1e-6)
    assert s["aipo/ess"] == pytest.approx(wt.sum() ** 2 / (len(wt) * (wt**2).sum()), rel=1e-5)
    lr = np.log(r)
    assert s["aipo/mismatch_kl_k1"] == pytest.approx(-lr.mean(), rel=1e-5)
    assert s["aipo/mismatch_kl_k3"] == pytest.approx((r - 1 - lr).mean(), rel=1e-5)


def test_on_policy_weights_are_one():
    logp = jnp.log(jnp.full((2, 3), 0.3))
    s = importance_stats(logp - logp, jnp.ones((2, 3)), RHO)
    assert float(s["aipo/is_mean"]) == 1.0 and float(s["aipo/ess"]) == 1.0
    assert float(s["aipo/clip_frac"]) == 0.0 and float(s["aipo/mismatch_kl_k3"]) == 0.0


def test_bad_variant_and_rho_are_refused():
    with pytest.raises(ValueError, match="variant"):
        objectives.get("aipo")(None, {"variant": "lower"})
    with pytest.raises(ValueError, match="rho"):
        objectives.get("aipo")(None, {"rho": 0.5})


@pytest.mark.parametrize("variant", ["detached", "ratio"])
def test_registered_loss_on_a_tiny_model(variant):
    cfg = TransformerConfig(
        vocab_size=9, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=32, max_len=16
    )
    graphdef, params, rest = split_module(Transformer(cfg, rngs=nnx.Rngs(params=0)))
    rng = np.random.default_rng(1)
    toks = rng.integers(4, 9, (4, 8)).astype(np.int32)
    mask = np.ones((4, 8), bool)
    score = np.zeros((4, 8), bool)
    score[:, 4:] = True
    lp = np.asarray(score_tokens(nnx.merge(graphdef, params, rest), toks, mask))
    mu = np.where(score, lp - rng.uniform(-1.2, 1.2, lp.shape), 0.0).astype(np.float32)
    adv = np.array([1.0, -1.0, 0.5, 0.0], np.float32)
    batch = dict(tokens=toks, mask=mask, score_mask=score, old_logp=mu, adv=adv)
    loss_fn = objectives.get("aipo")(graphdef, {"variant": variant, "rho": RHO}).loss_fn
    loss_sum, denom, aux = loss_fn({"policy": params}, {"policy": rest}, batch, None)
    w = score.astype(np.float32)
    ref_loss, _, r = _ref(lp, mu, adv, w, RHO, variant)
    assert float(denom) == w.sum()
    np.testing.assert_allclose(float(loss_sum / denom), ref_loss, rtol=1e-4, atol=1e-6)
    assert float(aux["aipo/clip_frac"]) == pytest.approx(((r > RHO) * w).sum() / w.sum())

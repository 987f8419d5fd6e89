"""Tests for fed/fred.py: Frechet distance identities, scipy agreement, pooled embeddings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from fed import fred


def _gauss(rng, d):
    x = rng.normal(size=(d, d))
    return rng.normal(size=d), x @ x.T / d + 0.01 * np.eye(d)


def _scipy_fd(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(
        np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real)
    )


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 12))
def test_identity_symmetry_and_scipy(seed, d):
    rng = np.random.default_rng(seed)
    mu1, s1 = _gauss(rng, d)
    mu2, s2 = _gauss(rng, d)
    assert fred.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)
    fd12 = fred.frechet_distance(mu1, s1, mu2, s2)
    assert fd12 == pytest.approx(fred.frechet_distance(mu2, s2, mu1, s1), rel=1e-9, abs=1e-9)
    assert fd12 == pytest.approx(_scipy_fd(mu1, s1, mu2, s2), rel=1e-7, abs=1e-8)


def test_diagonal_closed_form():
    mu1, mu2 = np.array([1.0, 0.0, 2.0]), np.array([0.0, 0.0, -1.0])
    v1, v2 = np.array([4.0, 1.0, 0.25]), np.array([1.0, 9.0, 0.25])
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert want == pytest.approx(10.0 + 1.0 + 4.0)
    got = fred.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(want, rel=1e-12)


def test_singular_covariances_are_fine():
    # rank-deficient inputs (common with few clients) still give a finite, non-negative FD
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 8))
    s = x.T @ x
    fd = fred.frechet_distance(np.zeros(8), s, np.zeros(8), s)
    assert 0.0 <= fd < 1e-6


def test_private_estimate_close_to_clipped_moments_without_noise():
    rng = np.random.default_rng(0)
    embs = [rng.normal(size=(rng.integers(2, 6), 4)) * 0.2 for _ in range(70)]
    mu, cov, _ = fred.private_client_moments(
        embs, clip=100.0, sigma_mean=0.0, sigma_cov=0.0, rng=jax.random.key(0), block_size=32
    )
    # equal weight per client: the mean of per-client means
    np.testing.assert_allclose(mu, np.mean([e.mean(0) for e in embs], 0), atol=1e-6)
    second = np.mean([e.T @ e / len(e) for e in embs], 0)
    np.testing.assert_allclose(cov, second - np.outer(mu, mu), atol=1e-6)
    # noise grows the error
    mu_n, cov_n, _ = fred.private_client_moments(
        embs, clip=1.0, sigma_mean=5.0, sigma_cov=5.0, rng=jax.random.key(1)
    )
    assert fred.frechet_distance(mu_n, cov_n, mu, cov) > 1e-4


def test_embed_fn_ignores_padding():
    from models.transformer import Transformer, TransformerConfig

    cfg = TransformerConfig(
        vocab_size=20, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=32, max_len=16
    )
    embed = fred.make_embed_fn(Transformer(cfg, rngs=nnx.Rngs(0)))
    toks = jnp.array([[3, 4, 5, 0, 0, 0]])
    mask = toks > 0
    e_pad = embed(toks, mask)
    e_tight = embed(toks[:, :3], mask[:, :3])
    assert e_pad.shape == (1, 16)
    np.testing.assert_allclose(e_pad, e_tight, atol=1e-5)


def test_public_and_client_estimators_agree_on_the_same_data():
    """Candidates and clients use one (user-weighted) estimator (issue 15.10)."""
    rng = np.random.default_rng(1)
    # unequal group sizes with different means: pooling examples would weight big groups more
    groups = [rng.normal(size=(n, 5)) * 0.2 + rng.normal(size=5) * 0.3 for n in (2, 3, 40, 7)]
    mu_g, cov_g = fred.grouped_moments(groups, clip=1.0)
    mu_c, cov_c, _ = fred.private_client_moments(
        groups, clip=1.0, sigma_mean=0.0, sigma_cov=0.0, rng=jax.random.key(0)
    )
    assert fred.frechet_distance(mu_g, cov_g, mu_c, cov_c) == pytest.approx(0.0, abs=1e-9)
    pooled = fred.moments(np.asarray(fred.dp.clip_rows(jnp.concatenate(groups), 1.0)))
    assert fred.frechet_distance(*pooled, mu_c, cov_c) > 1e-3  # the old, inconsistent estimator


def test_debiasing_removes_the_mean_noise_bias():
    """E||mu_p - (mu + noise/K)||^2 - d s^2 C^2 / K^2 = ||mu_p - mu||^2 (Sec. 3.6)."""
    assert fred.mean_noise_var(4, 10, clip=2.0, sigma_mean=3.0) == pytest.approx(1.44)
    rng = np.random.default_rng(0)
    d, k, clip, sigma = 16, 20, 1.0, 4.0
    mu, mu_p, cov = np.zeros(d), np.full(d, 0.1), np.eye(d) * 0.05
    var = fred.mean_noise_var(d, k, clip=clip, sigma_mean=sigma)
    exact = fred.frechet_distance(mu_p, cov, mu, cov)
    noisy = [mu + rng.normal(size=d) * sigma * clip / k for _ in range(1500)]
    raw = np.mean([fred.frechet_distance(mu_p, cov, m, cov) for m in noisy])
    deb = np.mean([fred.frechet_distance(mu_p, cov, m, cov, mean_noise_var=var) for m in noisy])
    assert raw - exact == pytest.approx(var, rel=0.1)  # the bias is the noise's energy
    assert abs(deb - exact) < 0.05 * var

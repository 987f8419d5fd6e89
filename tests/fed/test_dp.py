"""Tests for fed/dp.py: sensitivity bounds, symmetric noise, PSD projection, accounting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fed import dp, simulation


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), clip=st.floats(0.1, 3.0), scale=st.floats(0.01, 50.0))
def test_sensitivity_add_remove_one_client(seed, clip, scale):
    rng = np.random.default_rng(seed)
    e_cnd = jnp.asarray(scale * rng.normal(size=(6, 5, 4)), jnp.float32)
    mask_cn = jnp.asarray(rng.random((6, 5)) < 0.8, jnp.float32)
    a_all, b_all = dp.summed_client_moments(e_cnd, mask_cn, clip)
    for u in range(6):
        keep = jnp.arange(6) != u
        a_wo, b_wo = dp.summed_client_moments(e_cnd[keep], mask_cn[keep], clip)
        assert float(jnp.linalg.norm(a_all - a_wo)) <= clip * (1 + 1e-5)
        iu = np.triu_indices(4)
        upper = np.asarray(b_all - b_wo)[iu]
        assert np.linalg.norm(upper) <= clip**2 * (1 + 1e-5)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), clip=st.floats(0.01, 2.0))
def test_dp_fedavg_update_sensitivity(seed, clip):
    rng = np.random.default_rng(seed)
    deltas = [
        {"w": jnp.asarray(rng.normal(size=(3, 2)) * 10), "b": jnp.asarray(rng.normal(size=3))}
        for _ in range(4)
    ]
    clipped = [simulation.clip_tree(d, clip) for d in deltas]
    total = jax.tree.map(lambda *x: sum(x), *clipped)
    without = jax.tree.map(lambda *x: sum(x), *clipped[1:])
    diff = jax.tree.map(jnp.subtract, total, without)
    norm = float(jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(diff))))
    assert norm <= clip * (1 + 1e-5)


def test_client_moments_golden():
    e = jnp.array([[3.0, 4.0], [0.3, 0.4], [9.0, 9.0]])
    mask = jnp.array([1.0, 1.0, 0.0])  # third row is padding
    a, b = dp.client_moments(e, mask, clip=1.0)
    # first row clipped to [0.6, 0.8]; second unchanged
    np.testing.assert_allclose(a, [(0.6 + 0.3) / 2, (0.8 + 0.4) / 2], rtol=1e-6)
    want_b = (np.outer([0.6, 0.8], [0.6, 0.8]) + np.outer([0.3, 0.4], [0.3, 0.4])) / 2
    np.testing.assert_allclose(b, want_b, rtol=1e-6)


def test_symmetric_noise_and_psd_projection():
    z = dp.symmetric_noise(jax.random.key(0), 6, 2.0)
    np.testing.assert_array_equal(z, z.T)
    assert 1.0 < float(jnp.std(z)) < 3.0
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 6))
    psd = x @ x.T
    proj, clipped = dp.psd_project(psd)
    np.testing.assert_allclose(proj, psd, atol=1e-10)
    assert clipped == 0
    proj, clipped = dp.psd_project(np.asarray(z, np.float64))
    assert clipped > 0 and np.linalg.eigvalsh(proj).min() >= -1e-10


def test_dp_mean_cov_zero_noise_is_exact():
    rng = np.random.default_rng(1)
    e_cnd = jnp.asarray(rng.normal(size=(5, 4, 3)) * 0.1, jnp.float32)
    mask = jnp.ones((5, 4))
    a, b = dp.summed_client_moments(e_cnd, mask, 10.0)
    mu, cov, _ = dp.dp_mean_cov(
        a, b, 5, clip=10.0, sigma_mean=0.0, sigma_cov=0.0, rng=jax.random.key(0)
    )
    flat = np.asarray(e_cnd, np.float64).reshape(-1, 3)  # equal counts: mean of means = mean
    np.testing.assert_allclose(mu, flat.mean(0), atol=1e-6)
    np.testing.assert_allclose(cov, np.cov(flat.T, bias=True), atol=1e-6)


def test_epsilon_decreases_with_sigma():
    for kind in ("rdp", "pld"):
        eps = [
            dp.epsilon(dp.gaussian_event(s, steps=3, sampling_rate=0.1), 1e-5, kind)
            for s in (0.8, 1.2, 2.0, 4.0)
        ]
        assert all(a > b for a, b in zip(eps, eps[1:], strict=False)), (kind, eps)


def _exact_gaussian_epsilon(sigma: float, delta: float) -> float:
    from dp_accounting import get_epsilon_gaussian  # imported here: fed.dp imports it lazily too

    return get_epsilon_gaussian(sigma, delta)


@pytest.mark.parametrize("sigma", [0.7, 1.5, 4.0])
def test_single_release_matches_analytic_gaussian(sigma):
    delta = 1e-5
    exact = _exact_gaussian_epsilon(sigma, delta)
    pld = dp.epsilon(dp.gaussian_event(sigma), delta, "pld")
    rdp = dp.epsilon(dp.gaussian_event(sigma), delta, "rdp")
    assert pld == pytest.approx(exact, rel=0.02)
    assert rdp >= exact * 0.999  # RDP is an upper bound, looser than the exact curve
    assert pld <= rdp


def test_mean_cov_event_equals_single_gaussian_with_effective_sigma():
    s_a, s_b = 2.0, 3.0
    eff = (s_a**-2 + s_b**-2) ** -0.5
    composed = dp.epsilon(dp.mean_cov_event(s_a, s_b), 1e-5, "pld")
    assert composed == pytest.approx(_exact_gaussian_epsilon(eff, 1e-5), rel=0.03)


def test_calibrate_sigma_hits_target():
    sigma = dp.calibrate_sigma(2.0, 1e-5)
    eps = dp.epsilon(dp.mean_cov_event(sigma, sigma), 1e-5, "rdp")
    assert eps == pytest.approx(2.0, rel=0.02)
    assert dp.calibrate_sigma(0.5, 1e-5) > sigma

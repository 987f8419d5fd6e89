"""Differential privacy for federated statistics: clipping, Gaussian sums, DP mean/covariance.

FreD (arXiv:2302.09042, Sec. 3 of ../shared/papers/fred.md) needs a user-level DP estimate of the
clients' embedding mean and covariance:

  per example     e_bar = e * min(1, C / ||e||)                          (L2 clip)
  per client      a_u = mean_j e_bar_j (||a_u|| <= C)
                  B_u = mean_j e_bar_j e_bar_j^T (||B_u||_F <= C^2)
  aggregate       S_a = sum_u a_u + N(0, sigma_a^2 C^2 I),  S_B = sum_u B_u + Z,  Z symmetric with
                  i.i.d. N(0, sigma_B^2 C^4) upper triangle (incl. diagonal)
  estimate        mu = S_a / K,  Sigma = Pi_PSD(S_B / K - mu mu^T)

Noise is added to the sums (sensitivity C and C^2 for adding/removing one client) and divided by
the public cohort size K afterwards. Accounting uses `dp_accounting` (RDP and PLD accountants,
add-or-remove-one neighbouring relation); `calibrate_sigma` finds the noise multiplier for a target
(epsilon, delta).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _dpa():
    """`dp_accounting`, imported on first use: its import (scipy.signal, scipy.optimize) takes
    ~1.5 s, which a run without DP accounting (e.g. fed_oov without DP noise) need not pay."""
    import dp_accounting

    return dp_accounting


def clip_rows(x_nd: jax.Array, clip: float) -> jax.Array:
    """Per-example L2 clipping: each row scaled to norm at most `clip`."""
    norm_n = jnp.linalg.norm(x_nd, axis=-1, keepdims=True)
    return x_nd * jnp.minimum(1.0, clip / jnp.maximum(norm_n, 1e-12))


def client_moments(e_nd: jax.Array, mask_n: jax.Array, clip: float) -> tuple[jax.Array, jax.Array]:
    """One client's clipped first and second moments (a_u [d], B_u [d, d]).

    Averaging within the client bounds its contribution by C and C^2 whatever its example count.
    A client with no real example contributes zeros.
    """
    e_nd = clip_rows(e_nd, clip) * mask_n[:, None]
    n = jnp.maximum(jnp.sum(mask_n), 1.0)
    return jnp.sum(e_nd, 0) / n, e_nd.T @ e_nd / n


def summed_client_moments(e_cnd: jax.Array, mask_cn: jax.Array, clip: float):
    """Sums of (a_u, B_u) over a block of clients `[C, n, d]` (vmapped, one [d, d] sum)."""
    a_cd, b_cdd = jax.vmap(client_moments, in_axes=(0, 0, None))(e_cnd, mask_cn, clip)
    return jnp.sum(a_cd, 0), jnp.sum(b_cdd, 0)


def symmetric_noise(rng: jax.Array, d: int, std: float, dtype=jnp.float32) -> jax.Array:
    """Symmetric [d, d] noise: i.i.d. N(0, std^2) on and above the diagonal, mirrored below."""
    z = std * jax.random.normal(rng, (d, d), dtype)
    upper = jnp.triu(z)
    return upper + jnp.triu(z, 1).T


def psd_project(m_dd: np.ndarray, floor: float = 0.0) -> tuple[np.ndarray, int]:
    """Projects a symmetric matrix onto {eigenvalues >= floor} (float64, host).

    Returns:
      The projected matrix and the number of clipped eigenvalues.
    """
    m = np.asarray(m_dd, np.float64)
    w, v = np.linalg.eigh((m + m.T) / 2)
    clipped = int(np.sum(w < floor))
    return (v * np.maximum(w, floor)) @ v.T, clipped


def dp_mean_cov(
    a_sum: jax.Array,
    b_sum: jax.Array,
    num_clients: int,
    *,
    clip: float,
    sigma_mean: float,
    sigma_cov: float,
    rng: jax.Array,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Gaussian mechanism on the summed moments, then divide by K and project to PSD.

    Args:
      a_sum: sum over clients of a_u, `[d]`.
      b_sum: sum over clients of B_u, `[d, d]`.
      num_clients: K, the public cohort size.
      clip: C, the per-example clip norm.
      sigma_mean: noise multiplier for the mean (std = sigma_mean * C).
      sigma_cov: noise multiplier for the second moment (std = sigma_cov * C^2).
      rng: one key; split so the two mechanisms never share randomness.

    Returns:
      (mu [d], Sigma [d, d]) in float64 and info {"psd_clipped": number of clipped eigenvalues}.
    """
    k_mean, k_cov = jax.random.split(rng)
    d = a_sum.shape[0]
    s_a = a_sum + sigma_mean * clip * jax.random.normal(k_mean, (d,), a_sum.dtype)
    s_b = b_sum + symmetric_noise(k_cov, d, sigma_cov * clip**2, b_sum.dtype)
    mu = np.asarray(s_a, np.float64) / num_clients
    second = np.asarray(s_b, np.float64) / num_clients
    cov, clipped = psd_project(second - np.outer(mu, mu))
    return mu, cov, {"psd_clipped": clipped}


# ---------------------------------------------------------------- accounting (dp_accounting, host)


def gaussian_event(sigma: float, *, steps: int = 1, sampling_rate: float = 1.0):
    """`steps` compositions of a (Poisson-subsampled) Gaussian mechanism with multiplier sigma."""
    dpa = _dpa()
    event = dpa.GaussianDpEvent(sigma)
    if sampling_rate < 1.0:
        event = dpa.PoissonSampledDpEvent(sampling_rate, event)
    return dpa.SelfComposedDpEvent(event, steps) if steps > 1 else event


def mean_cov_event(sigma_mean: float, sigma_cov: float, sampling_rate: float = 1.0):
    """The FreD release: two Gaussian mechanisms on the same users (mean and second moment)."""
    dpa = _dpa()
    event = dpa.ComposedDpEvent([dpa.GaussianDpEvent(sigma_mean), dpa.GaussianDpEvent(sigma_cov)])
    if sampling_rate < 1.0:
        event = dpa.PoissonSampledDpEvent(sampling_rate, event)
    return event


def _accountant(kind: str):
    dpa = _dpa()
    add_remove = dpa.NeighboringRelation.ADD_OR_REMOVE_ONE
    if kind == "rdp":
        return dpa.rdp.RdpAccountant(neighboring_relation=add_remove)
    if kind == "pld":
        return dpa.pld.PLDAccountant(add_remove, value_discretization_interval=1e-4)
    raise ValueError(f"unknown accountant {kind!r}; use 'rdp' or 'pld'")


def epsilon(event, delta: float, accountant: str = "pld") -> float:
    """epsilon of a DpEvent at `delta` (PLD for reporting, RDP for quick sweeps)."""
    acc = _accountant(accountant)
    acc.compose(event)
    return float(acc.get_epsilon(delta))


def calibrate_sigma(
    target_epsilon: float,
    delta: float,
    *,
    make_event=lambda s: mean_cov_event(s, s),
    accountant: str = "rdp",
) -> float:
    """Smallest noise multiplier whose event meets (target_epsilon, delta)."""
    dpa = _dpa()
    return float(
        dpa.calibrate_dp_mechanism(
            lambda: _accountant(accountant),
            make_event,
            target_epsilon,
            delta,
            dpa.LowerEndpointAndGuess(1e-3, 1.0),
        )
    )

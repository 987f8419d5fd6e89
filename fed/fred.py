"""FreD: federated private Frechet distance for choosing a prefinetuning corpus (arXiv:2302.09042).

  FD^2(p, c) = ||mu_p - mu_c||^2 + Tr(S_p) + Tr(S_c) - 2 Tr((S_p^{1/2} S_c S_p^{1/2})^{1/2})

The last trace is computed with two symmetric eigendecompositions in float64 on the host
(S_p^{1/2} from eigh(S_p), then the eigenvalues of the symmetric PSD S_p^{1/2} S_c S_p^{1/2}),
never a complex Schur `sqrtm`. The public candidate's moments are exact; the clients' moments come
from `fed.dp.dp_mean_cov` once and are reused for every candidate (no extra privacy cost).
Embeddings are mean-pooled final-normed states of `models.transformer.Transformer`.

One estimator on both sides: user-level DP bounds each client's contribution by averaging within
the client (a_u, B_u of Sec. 3.3 of ../shared/papers/fred.md), so the client moments describe the
*user-weighted* distribution (every user counts once, however much text it has). The public
candidate's moments use the same weighting over its documents (`grouped_moments`); pooling its
examples instead would compare two different mixtures whenever document sizes differ.

Debiasing (Sec. 3.6): the mean's noise adds E||N(0, s_a^2 C^2 I)/K||^2 = d s_a^2 C^2 / K^2 to
||mu_p - mu_hat||^2, and `frechet_distance(..., mean_noise_var=)` subtracts it. It shifts every
candidate's score equally, so rankings are unchanged; it reduces the error of the distance itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fed import dp


def _sym_sqrt(m_dd: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m_dd + m_dd.T) / 2)
    return (v * np.sqrt(np.maximum(w, 0.0))) @ v.T


def trace_sqrt_product(cov_p: np.ndarray, cov_c: np.ndarray) -> float:
    """Tr((S_p^{1/2} S_c S_p^{1/2})^{1/2}) = Tr((S_p S_c)^{1/2}) for PSD inputs, float64."""
    root_p = _sym_sqrt(np.asarray(cov_p, np.float64))
    inner = root_p @ np.asarray(cov_c, np.float64) @ root_p
    w = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sum(np.sqrt(np.maximum(w, 0.0))))


def frechet_distance(mu_p, cov_p, mu_c, cov_c, *, mean_noise_var: float = 0.0) -> float:
    """Squared Frechet distance between N(mu_p, cov_p) and N(mu_c, cov_c) (float64, >= 0).

    Args:
      mu_p, cov_p, mu_c, cov_c: the two Gaussians' means [d] and covariances [d, d].
      mean_noise_var: E||mu_c - mu_c_true||^2 of a noisy mu_c (`mean_noise_var(...)`), subtracted
        from the mean term (the debiasing of Sec. 3.6); 0 for exact moments.

    Returns:
      FD^2, clamped at 0 unless debiasing (then it is an unbiased estimate and may be < 0).
    """
    mu_p, mu_c = np.asarray(mu_p, np.float64), np.asarray(mu_c, np.float64)
    cov_p, cov_c = np.asarray(cov_p, np.float64), np.asarray(cov_c, np.float64)
    mean_term = float(np.sum((mu_p - mu_c) ** 2)) - mean_noise_var
    cov_term = np.trace(cov_p) + np.trace(cov_c) - 2.0 * trace_sqrt_product(cov_p, cov_c)
    if mean_noise_var:  # an unbiased estimate of a small distance may be negative: keep it
        return mean_term + float(cov_term)
    return max(mean_term + float(cov_term), 0.0)


def moments(e_nd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact (population) mean and covariance of embeddings `[n, d]` in float64."""
    e = np.asarray(e_nd, np.float64)
    mu = e.mean(0)
    centred = e - mu
    return mu, centred.T @ centred / len(e)


def mean_noise_var(dim: int, num_clients: int, *, clip: float, sigma_mean: float) -> float:
    """E||mu_hat - mu||^2 from the Gaussian mechanism on the mean: d sigma_a^2 C^2 / K^2."""
    return dim * (sigma_mean * clip) ** 2 / num_clients**2


def grouped_moments(groups: Sequence[np.ndarray], clip: float) -> tuple[np.ndarray, np.ndarray]:
    """User-weighted moments of clipped embeddings, one `[n_g, d]` array per user or document.

    The estimator of `private_client_moments` without noise: mu = mean_g a_g,
    Sigma = mean_g B_g - mu mu^T (PSD: mean_g B_g >= mean_g a_g a_g^T >= mu mu^T), float64.
    """
    a, b = [], []
    for e in groups:
        e = np.asarray(dp.clip_rows(jnp.asarray(e, jnp.float32), clip), np.float64)
        a.append(e.mean(0))
        b.append(e.T @ e / len(e))
    mu = np.mean(a, 0)
    return mu, np.mean(b, 0) - np.outer(mu, mu)


def make_embed_fn(model: nnx.Module) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Jitted `embed(tokens_bt, mask_bt) -> [B, D]`: masked mean of the Transformer's `.final`."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def embed(tokens_bt, mask_bt):
        out = nnx.merge(graphdef, state)(tokens_bt, mask_bt=mask_bt)
        m = mask_bt[..., None].astype(jnp.float32)
        return jnp.sum(out.final.astype(jnp.float32) * m, 1) / jnp.maximum(jnp.sum(m, 1), 1.0)

    return embed


def private_client_moments(
    client_embs: Sequence[np.ndarray],
    *,
    clip: float,
    sigma_mean: float,
    sigma_cov: float,
    rng: jax.Array,
    block_size: int = 64,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """DP (mu, Sigma) of the clients' embeddings; sums accumulate block by block.

    Args:
      client_embs: one `[n_u, d]` array per client.
      clip: per-example clip norm C.
      sigma_mean, sigma_cov: noise multipliers (0 gives the non-private clipped estimate).
      rng: key for the Gaussian mechanisms.
      block_size: clients per vmapped block (pads n_u to the block's max with a mask).

    Returns:
      (mu [d], Sigma [d, d]) float64 and info from `dp.dp_mean_cov`.
    """
    d = client_embs[0].shape[1]
    a_sum, b_sum = jnp.zeros(d), jnp.zeros((d, d))
    summed = jax.jit(dp.summed_client_moments, static_argnums=2)
    for start in range(0, len(client_embs), block_size):
        chunk = client_embs[start : start + block_size]
        n_max = max(len(e) for e in chunk)
        e_cnd = np.zeros((block_size, n_max, d), np.float32)
        mask_cn = np.zeros((block_size, n_max), np.float32)
        for c, e in enumerate(chunk):
            e_cnd[c, : len(e)] = e
            mask_cn[c, : len(e)] = 1.0
        a, b = summed(jnp.asarray(e_cnd), jnp.asarray(mask_cn), clip)
        a_sum, b_sum = a_sum + a, b_sum + b
    return dp.dp_mean_cov(
        a_sum,
        b_sum,
        len(client_embs),
        clip=clip,
        sigma_mean=sigma_mean,
        sigma_cov=sigma_cov,
        rng=rng,
    )


def rank_candidates(
    candidate_moments: Sequence[tuple[np.ndarray, np.ndarray]],
    mu_c,
    cov_c,
    *,
    mean_noise_var: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """FreD of every candidate against one client estimate; returns (fred [K], order best-first)."""
    scores = np.array(
        [
            frechet_distance(mu, cov, mu_c, cov_c, mean_noise_var=mean_noise_var)
            for mu, cov in candidate_moments
        ]
    )
    return scores, np.argsort(scores, kind="stable")

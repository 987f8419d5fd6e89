"""FreD: federated private Frechet distance for choosing a prefinetuning corpus (arXiv:2302.09042).

  FD^2(p, c) = ||mu_p - mu_c||^2 + Tr(S_p) + Tr(S_c) - 2 Tr((S_p^{1/2} S_c S_p^{1/2})^{1/2})

The last trace is computed with two symmetric eigendecompositions in float64 on the host
(S_p^{1/2} from eigh(S_p), then the eigenvalues of the symmetric PSD S_p^{1/2} S_c S_p^{1/2}),
never a complex Schur `sqrtm`. The public candidate's moments are exact; the clients' moments come
from `fed.dp.dp_mean_cov` once and are reused for every candidate (no extra privacy cost).
Embeddings are mean-pooled final-normed states of `models.transformer.Transformer`.
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


def frechet_distance(mu_p, cov_p, mu_c, cov_c) -> float:
    """Squared Frechet distance between N(mu_p, cov_p) and N(mu_c, cov_c) (float64, >= 0)."""
    mu_p, mu_c = np.asarray(mu_p, np.float64), np.asarray(mu_c, np.float64)
    cov_p, cov_c = np.asarray(cov_p, np.float64), np.asarray(cov_c, np.float64)
    mean_term = float(np.sum((mu_p - mu_c) ** 2))
    cov_term = np.trace(cov_p) + np.trace(cov_c) - 2.0 * trace_sqrt_product(cov_p, cov_c)
    return max(mean_term + float(cov_term), 0.0)


def moments(e_nd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact (population) mean and covariance of embeddings `[n, d]` in float64."""
    e = np.asarray(e_nd, np.float64)
    mu = e.mean(0)
    centred = e - mu
    return mu, centred.T @ centred / len(e)


def clipped_moments(e_nd: np.ndarray, clip: float) -> tuple[np.ndarray, np.ndarray]:
    """Moments of the per-example clipped embeddings (what a public candidate is compared with)."""
    return moments(np.asarray(dp.clip_rows(jnp.asarray(e_nd), clip)))


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
    candidate_moments: Sequence[tuple[np.ndarray, np.ndarray]], mu_c, cov_c
) -> tuple[np.ndarray, np.ndarray]:
    """FreD of every candidate against one client estimate; returns (fred [K], order best-first)."""
    scores = np.array([frechet_distance(mu, cov, mu_c, cov_c) for mu, cov in candidate_moments])
    return scores, np.argsort(scores, kind="stable")

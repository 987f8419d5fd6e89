"""AIPO: truncated importance-weighted policy gradient for off-policy (asynchronous) RL.

LlamaRL (arXiv:2505.24034, §AIPO; spec `llamarl.md` §2). Samples come from a behaviour policy μ
(the generator's weights, possibly some versions old and computed with other kernels/precision);
the trainer's policy is π_θ, and per generated token `r_t = π_θ(y_t|·) / μ(y_t|·)`. With ρ ≥ 1
the truncation threshold and A the sequence advantage, two variants behind `variant`:

- `detached` (IMPALA/V-trace ρ̄-truncation, Tunix `sampler_is="token"`):
      l_t = -stopgrad(min(r_t, ρ)) · A · log π_θ(y_t)
  whose gradient is min(r_t, ρ)·A·∇log π for every token (clipped tokens keep weight ρ).
- `ratio` (prime-rl form, a one-sided trust region):
      l_t = -min(r_t, ρ) · A
  whose gradient is r_t·A·∇log π when r_t < ρ and 0 when the token is clipped.

The weight is capped above only (no lower clip). μ is the `old_logp` the sampler returned with
each token (no extra forward pass). An optional β·KL to a frozen reference and the normalisations
are GRPO's (`rl/objectives/grpo.py`), so PPO-clip/GRPO run through the same batch layout.

Logged (`aipo/...`, token-weighted over generated tokens): `is_mean` / `is_max` of the truncated
weight min(r, ρ), `ratio_max` of r, `clip_frac` (fraction with r > ρ), `ess` = (Σw)² / (N·Σw²)
for the truncated weights, and the generator–trainer mismatch KL(μ ‖ π) as k1 = mean(-log r) and
k3 = mean(r - 1 - log r). Under microbatching the step averages these over microbatches (the
maxima become a mean of per-microbatch maxima).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rl.objectives import Objective, register
from rl.objectives.grpo import kl_per_token, normalise, ref_logprobs
from rl.sampling.autoregressive import score_tokens

VARIANTS = ("detached", "ratio")

DEFAULTS = dict(
    rho=2.0,
    variant="detached",
    kl_coef=0.0,
    kl_estimator="k3",
    loss_norm="token",
    max_new_tokens=0,
)


def aipo_token_loss(logp_bt, mu_bt, adv_r, rho: float, variant: str):
    """Per-token AIPO loss [R, T] and the log-ratio log r_t (no gradient through μ).

    Args:
      logp_bt: log π_θ of the sampled tokens [R, T] (differentiable).
      mu_bt: behaviour log-probs log μ [R, T] from the generator.
      adv_r: sequence advantages [R].
      rho: truncation threshold ρ ≥ 1.
      variant: `detached` or `ratio` (see the module docstring).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown AIPO variant {variant!r}; expected one of {VARIANTS}")
    log_r = logp_bt - jax.lax.stop_gradient(mu_bt)
    w = jnp.minimum(jnp.exp(log_r), rho)
    a = adv_r[:, None]
    if variant == "detached":
        return -jax.lax.stop_gradient(w) * a * logp_bt, log_r
    return -w * a, log_r


def importance_stats(log_r_bt, w_bt, rho: float, prefix: str = "aipo") -> dict:
    """Importance-weight diagnostics over the tokens where `w_bt` > 0 (see the module docstring).

    Args:
      log_r_bt: log π_θ - log μ per token [R, T].
      w_bt: token weights [R, T] (1 at generated tokens, 0 elsewhere).
      rho: truncation threshold.
    """
    log_r = jax.lax.stop_gradient(log_r_bt)
    on = w_bt > 0
    n = jnp.maximum(jnp.sum(w_bt), 1.0)
    r = jnp.exp(log_r)
    wt = jnp.minimum(r, rho)
    s1 = jnp.sum(wt * w_bt)
    s2 = jnp.sum(wt**2 * w_bt)
    return {
        f"{prefix}/is_mean": s1 / n,
        f"{prefix}/is_max": jnp.max(jnp.where(on, wt, 0.0)),
        f"{prefix}/ratio_max": jnp.max(jnp.where(on, r, 0.0)),
        f"{prefix}/clip_frac": jnp.sum((r > rho) * w_bt) / n,
        f"{prefix}/ess": s1**2 / jnp.maximum(n * s2, 1e-30),
        f"{prefix}/mismatch_kl_k1": jnp.sum(-log_r * w_bt) / n,
        f"{prefix}/mismatch_kl_k3": jnp.sum((r - 1.0 - log_r) * w_bt) / n,
    }


def make_aipo_loss(graphdef, cfg=None, role: str = "policy"):
    """AIPO loss `(params, frozen, batch, rng) -> (loss_sum, denom, aux)`.

    Batch: GRPO's layout (`tokens`, `mask`, `score_mask`, `old_logp` = log μ, `adv`).

    Args:
      graphdef: the policy's NNX graph definition.
      cfg: dict/ConfigDict overriding `DEFAULTS` (extra keys are ignored).
      role: the params/frozen role holding the policy.
    """
    c = {**DEFAULTS, **{k: v for k, v in dict(cfg or {}).items() if k in DEFAULTS}}
    if c["variant"] not in VARIANTS:
        raise ValueError(f"unknown AIPO variant {c['variant']!r}; expected one of {VARIANTS}")
    if c["rho"] < 1.0:
        raise ValueError(f"AIPO rho must be >= 1, got {c['rho']}")

    def loss_fn(params, frozen, batch, rng):
        del rng
        model = nnx.merge(graphdef, params[role], frozen.get(role, {}) if frozen else {})
        logp = score_tokens(model, batch["tokens"], batch["mask"])
        w = batch["score_mask"].astype(jnp.float32)
        loss_bt, log_r = aipo_token_loss(
            logp, batch["old_logp"], batch["adv"], c["rho"], c["variant"]
        )
        aux = importance_stats(log_r, w, c["rho"])
        ref_lp = ref_logprobs(graphdef, frozen, batch, role)
        if c["kl_coef"] and ref_lp is not None:
            kl = kl_per_token(logp, ref_lp, c["kl_estimator"])
            loss_bt = loss_bt + c["kl_coef"] * kl
            aux["aipo/kl"] = jnp.sum(kl * w) / jnp.maximum(jnp.sum(w), 1.0)
        loss_sum, denom = normalise(loss_bt, w, c["loss_norm"], c["max_new_tokens"])
        return loss_sum, denom, aux

    return loss_fn


@register("aipo", fields=DEFAULTS)
def aipo(graphdef, cfg, *, mask_id=None, role="policy"):
    """AIPO; declares the `ref` snapshot when `kl_coef > 0` (μ comes with the batch)."""
    del mask_id
    snapshots = ("ref",) if cfg["kl_coef"] else ()
    keys = ("aipo/is_mean", "aipo/clip_frac", "aipo/mismatch_kl_k3")
    return Objective(make_aipo_loss(graphdef, cfg, role), snapshots, keys)

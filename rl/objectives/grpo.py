"""GRPO and RLOO losses for causal LMs (token-level clipped ratio, optional KL to a reference).

GRPO (arXiv:2402.03300 eq. 3): per generated token t of sample i,
    ratio = π(y_t|·) / π_old(y_t|·),  l_t = -min(ratio·A_i, clip(ratio, 1-ε_lo, 1+ε_hi)·A_i)
plus β·KL_t with KL_t the k1 estimator `log π - log π_ref` or k3 (Schulman's unbiased, positive)
`exp(log π_ref - log π) - (log π_ref - log π) - 1`. Normalisation (`loss_norm`):
  - `token`: sum over all generated tokens / number of tokens (DAPO's token-level mean);
  - `sequence`: mean over each sample's tokens, then mean over samples (the original GRPO);
  - `constant`: sum over tokens / (samples × max_new_tokens) (Dr.GRPO, arXiv:2503.20783, which
    also drops the group-std division: `advantage="group_mean"` in the runner).
RLOO (arXiv:2402.14740) is the same loss with the leave-one-out advantage and, on-policy, a ratio
of 1 (the clip is then inactive and the gradient is the plain REINFORCE one).

Batch (rows = prompts × samples): `tokens [R,T]`, `mask [R,T]` (real tokens, left-padded prompt
+ right-padded completion), `score_mask [R,T]` (the generated tokens), `old_logp [R,T]`
(behaviour log-probs aligned with `tokens`, from the sampler), `adv [R]`.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from rl.objectives import Objective, register
from rl.sampling.autoregressive import score_tokens

DEFAULTS = dict(
    clip_eps=0.2,
    clip_eps_high=0.2,
    kl_coef=0.0,
    kl_estimator="k3",
    loss_norm="token",
    max_new_tokens=0,
)


def clipped_pg(logp_bt, old_logp_bt, adv_r, clip_lo: float, clip_hi: float):
    """Per-token clipped surrogate loss [R, T] and the clip indicator (for logging)."""
    ratio = jnp.exp(logp_bt - old_logp_bt)
    a = adv_r[:, None]
    unclipped = ratio * a
    clipped = jnp.clip(ratio, 1.0 - clip_lo, 1.0 + clip_hi) * a
    return -jnp.minimum(unclipped, clipped), (clipped < unclipped)


def kl_per_token(logp_bt, ref_logp_bt, estimator: str):
    """k1 or k3 estimate of KL(π ‖ π_ref) per sampled token."""
    d = ref_logp_bt - logp_bt
    if estimator == "k1":
        return -d
    if estimator == "k3":
        return jnp.exp(d) - d - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r}; expected 'k1' or 'k3'")


def normalise(loss_bt, w_bt, how: str, max_new_tokens: int):
    """(loss_sum, denom) under the chosen normalisation; see the module docstring."""
    tok = jnp.sum(loss_bt * w_bt)
    rows = jnp.asarray(w_bt.shape[0], jnp.float32)
    if how == "token":
        return tok, jnp.sum(w_bt)
    if how == "sequence":
        per = jnp.sum(loss_bt * w_bt, 1) / jnp.maximum(jnp.sum(w_bt, 1), 1.0)
        return jnp.sum(per), rows
    if how == "constant":
        return tok, rows * max(max_new_tokens, 1)
    raise ValueError(f"unknown loss_norm {how!r}; expected token, sequence or constant")


def ref_logprobs(graphdef, frozen, batch, role: str = "policy"):
    """Reference-policy token log-probs, or None when the state has no `ref` leaves."""
    if not frozen or "ref" not in frozen:
        return None
    ref = nnx.merge(graphdef, frozen["ref"], frozen.get(role, {}))
    return score_tokens(ref, batch["tokens"], batch["mask"])


def make_grpo_loss(graphdef, cfg=None, role: str = "policy", namespace: str = "grpo"):
    """GRPO loss `(params, frozen, batch, rng) -> (loss_sum, denom, aux)`.

    Args:
      graphdef: the policy's NNX graph definition.
      cfg: dict/ConfigDict overriding `DEFAULTS` (the registered factories reject other keys).
      role: the params/frozen role holding the policy.
      namespace: the metric prefix (`grpo`, or `rloo` for the RLOO registration).
    """
    c = {**DEFAULTS, **{k: v for k, v in dict(cfg or {}).items() if k in DEFAULTS}}

    def loss_fn(params, frozen, batch, rng):
        del rng
        model = nnx.merge(graphdef, params[role], frozen.get(role, {}) if frozen else {})
        logp = score_tokens(model, batch["tokens"], batch["mask"])
        w = batch["score_mask"].astype(jnp.float32)
        pg, was_clipped = clipped_pg(
            logp, batch["old_logp"], batch["adv"], c["clip_eps"], c["clip_eps_high"]
        )
        loss_bt = pg
        ntok = jnp.maximum(jnp.sum(w), 1.0)
        aux = {f"{namespace}/clip_frac": jnp.sum(was_clipped * w) / ntok}
        ref_lp = ref_logprobs(graphdef, frozen, batch, role)
        if c["kl_coef"] and ref_lp is not None:
            kl = kl_per_token(logp, ref_lp, c["kl_estimator"])
            loss_bt = loss_bt + c["kl_coef"] * kl
            aux[f"{namespace}/kl"] = jnp.sum(kl * w) / ntok
        loss_sum, denom = normalise(loss_bt, w, c["loss_norm"], c["max_new_tokens"])
        return loss_sum, denom, aux

    return loss_fn


def _objective(graphdef, cfg, role, ns: str) -> Objective:
    snapshots = ("ref",) if cfg["kl_coef"] else ()
    loss_fn = make_grpo_loss(graphdef, cfg, role, ns)
    return Objective(loss_fn, snapshots, (f"{ns}/kl", f"{ns}/clip_frac"))


@register("grpo", fields=DEFAULTS)
def grpo(graphdef, cfg, *, mask_id=None, role="policy"):
    """GRPO; declares the `ref` snapshot when `kl_coef > 0`."""
    del mask_id
    return _objective(graphdef, cfg, role, "grpo")


@register("rloo", fields={**DEFAULTS, "loss_norm": "constant"})
def rloo(graphdef, cfg, *, mask_id=None, role="policy"):
    """RLOO: the runner pairs it with the leave-one-out advantage; sum over tokens (REINFORCE).
    The GRPO loss, logged under `rloo/` (a method of its own in configs and benchmarks)."""
    del mask_id
    return _objective(graphdef, cfg, role, "rloo")

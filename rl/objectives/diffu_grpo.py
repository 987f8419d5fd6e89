"""diffu-GRPO (d1, arXiv:2504.12216), the SPG paper's D1 baseline (arXiv:2510.09541 App. C).

One-step mean-field likelihood: every completion token masked, prompt tokens masked i.i.d. with
`p_mask_prompt`, one forward pass, per-token log pi(x_i | z). GRPO token loss with the ratio to the
rollout-time policy clipped at 1 +- eps and a k3 KL to the reference policy:

  l_bt = -min(r A, clip(r, 1-eps, 1+eps) A) + beta_kl (exp(ref - l) - (ref - l) - 1),
  r = exp(l - l_old);  loss = sum_{b,t} valid l_bt / sum_{b,t} valid   (d1's normalisation).

d1 (`diffu_grpo_trainer.py`) divides the masked token sum by the micro-batch's valid-token count,
so longer completions weigh more; `norm="sequence"` selects the mean of per-sequence token means
(this module's earlier behaviour) for comparison.

The old and reference log-probs are computed inside the loss, under the same mask draw, from
`frozen["old"]` and `frozen["ref"]` (the snapshots the objective declares: `old` always, `ref`
when `kl_coef > 0`); without them the old policy is the current one (stop-gradient) and the KL
term is off. Metrics are logged under `d1/`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rl import likelihood as lk
from rl.objectives import Objective, register

FIELDS = dict(clip_eps=0.5, kl_coef=0.04, p_mask_prompt=0.15, norm="token")


def _one_step_logps(graphdef, params, rest, batch, draw, mask_id):
    model = nnx.merge(graphdef, params, rest)
    ll = lk.completion_logps(
        model, batch["prompt"], batch["prompt_mask"], batch["completion"], draw, mask_id
    )
    return ll[:, 0]  # [B, G]


def make_diffu_grpo_loss(
    graphdef,
    *,
    mask_id: int,
    clip_eps: float = 0.5,
    kl_coef: float = 0.04,
    p_mask_prompt: float = 0.15,
    norm: str = "token",
    role: str = "policy",
):
    """Builds the d1 loss `(params, frozen, batch, rng) -> (loss_sum, denom, aux)`.

    `norm`: "token" (d1: sum(loss * mask) / sum(mask)) or "sequence" (mean of per-sequence
    token means).
    """
    if norm not in ("token", "sequence"):
        raise ValueError(f"norm must be 'token' or 'sequence', got {norm!r}")

    def loss_fn(params, frozen, batch, rng):
        valid = batch["valid"]
        draw = lk.draw_masks(
            rng, valid, batch["prompt_mask"], num_samples=1, mode="all", p_mask_prompt=p_mask_prompt
        )
        rest = frozen[role]
        ll = _one_step_logps(graphdef, params[role], rest, batch, draw, mask_id)
        if "old" in frozen:
            old = _one_step_logps(graphdef, frozen["old"], rest, batch, draw, mask_id)
        else:
            old = ll
        old = jax.lax.stop_gradient(old)
        adv = batch["advantage"].astype(jnp.float32)[:, None]
        ratio = jnp.exp(ll - old)
        clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
        tok = -jnp.minimum(ratio * adv, clipped * adv)
        kl = jnp.zeros_like(tok)
        if "ref" in frozen and kl_coef:
            ref = jax.lax.stop_gradient(
                _one_step_logps(graphdef, frozen["ref"], rest, batch, draw, mask_id)
            )
            kl = jnp.exp(ref - ll) - (ref - ll) - 1.0
            tok = tok + kl_coef * kl
        w = valid.astype(jnp.float32)
        length = jnp.maximum(jnp.sum(w, -1), 1.0)
        row = batch["row_mask"].astype(jnp.float32)
        per_seq = jnp.sum(tok * w, -1) / length
        n = jnp.maximum(jnp.sum(row), 1.0)
        aux = {
            "d1/kl": jnp.sum(row * jnp.sum(kl * w, -1) / length) / n,
            "d1/clip_frac": jnp.sum(
                row * jnp.sum((jnp.abs(ratio - 1.0) > clip_eps) * w, -1) / length
            )
            / n,
            "d1/loglik": jnp.sum(row * jnp.sum(ll * w, -1) / length) / n,
        }
        if norm == "sequence":
            return jnp.sum(row * per_seq), jnp.sum(row), aux
        return jnp.sum(row * jnp.sum(tok * w, -1)), jnp.sum(row * jnp.sum(w, -1)), aux

    return loss_fn


@register("diffu_grpo", fields=FIELDS, namespace="d1")
def diffu_grpo(graphdef, cfg, *, mask_id=None, role="policy"):
    """d1: snapshots `old` (the sampling policy) and, with a KL, `ref` (the warm start)."""
    if mask_id is None:
        raise ValueError("diffu_grpo needs the tokenizer's mask_id")
    loss_fn = make_diffu_grpo_loss(graphdef, mask_id=mask_id, role=role, **cfg)
    snapshots = ("old", "ref") if cfg["kl_coef"] else ("old",)
    return Objective(loss_fn, snapshots, plot_keys=("d1/loglik", "d1/kl", "d1/clip_frac"))

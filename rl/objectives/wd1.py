"""wd1 (arXiv:2507.08838; `xiaohangt/wd1` rev_grpo_trainer), an SPG-paper baseline
(arXiv:2510.09541 App. C): weighted likelihood with the d1 one-step estimator, no ratio, no old or
reference policy:

  loss = -sum_j softmax_j(A) sum_t l_jt + sum_j softmax_j(-A) sum_t l_jt,

softmaxes over the completions of one prompt's group (the reference's local batch is one group).
Rows are grouped in consecutive runs of `group_size`; padding rows get weight 0. Metrics are
logged under `wd1/`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rl import likelihood as lk
from rl.objectives import Objective, register

FIELDS = dict(group_size=1, p_mask_prompt=0.15)


def make_wd1_loss(
    graphdef,
    *,
    mask_id: int,
    group_size: int,
    p_mask_prompt: float = 0.15,
    role: str = "policy",
):
    """Builds the wd1 loss `(params, frozen, batch, rng) -> (loss_sum, denom, aux)`."""

    def loss_fn(params, frozen, batch, rng):
        valid = batch["valid"]
        draw = lk.draw_masks(
            rng, valid, batch["prompt_mask"], num_samples=1, mode="all", p_mask_prompt=p_mask_prompt
        )
        model = nnx.merge(graphdef, params[role], frozen[role])
        ll = lk.completion_logps(
            model, batch["prompt"], batch["prompt_mask"], batch["completion"], draw, mask_id
        )
        seq = lk.mean_field(ll, draw.scored).reshape(-1, group_size)  # [groups, g]
        row = batch["row_mask"].reshape(-1, group_size)
        adv = batch["advantage"].astype(jnp.float32).reshape(-1, group_size)
        w_pos = jax.nn.softmax(jnp.where(row, adv, -jnp.inf), axis=-1)
        w_neg = jax.nn.softmax(jnp.where(row, -adv, -jnp.inf), axis=-1)
        w_pos, w_neg = jnp.where(row, w_pos, 0.0), jnp.where(row, w_neg, 0.0)
        loss = jnp.sum((w_neg - w_pos) * seq)
        groups = jnp.sum(jnp.any(row, -1)).astype(jnp.float32)
        length = jnp.maximum(jnp.sum(valid, -1), 1).reshape(-1, group_size)
        n = jnp.maximum(jnp.sum(row), 1)
        aux = {"wd1/loglik": jnp.sum(jnp.where(row, seq / length, 0.0)) / n}
        return loss, groups, aux

    return loss_fn


@register("wd1", fields=FIELDS)
def wd1(graphdef, cfg, *, mask_id=None, role="policy"):
    """wd1: no old or reference policy, so no snapshots."""
    if mask_id is None:
        raise ValueError("wd1 needs the tokenizer's mask_id")
    loss_fn = make_wd1_loss(graphdef, mask_id=mask_id, role=role, **cfg)
    return Objective(loss_fn, (), plot_keys=("wd1/loglik",))

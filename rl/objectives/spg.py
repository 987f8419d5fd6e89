"""Sandwiched Policy Gradient (SPG, arXiv:2510.09541, Algorithm 1 and eq. 8).

  J_SPG = E[(1/g) sum_j ( 1[A_j > 0] A_j L_ELBO(x_j | c) + 1[A_j <= 0] A_j L_neg(x_j | c) )]

Positive-advantage completions raise their ELBO (a lower bound of log pi); negative ones lower an
upper bound: the EUBO (Corollary 1), the omega-mixture (eq. 8), the ELBO (`spg_elbo`) or nothing
(`spg_no_neg`, the "zero" ablation). Plain policy gradient: no ratio, no clipping and, as in the
paper, no KL by default; `kl_coef > 0` (our addition, issue 12) adds a k3 KL to the reference
policy `frozen["ref"]` (the warm start; the objective then declares the `ref` snapshot),
k3 = exp(r - l) - (r - l) - 1 per scored token under the same mask draw, token-averaged per
sequence and weighted like the bounds (x L_b). Each
call draws fresh mask keys (the update step splits its RNG per call), independent of rollout keys.
Normalisation as in the reference: loss = -sum_b A_b s_b / sum_b L_b, with s_b the sequence bound
(per-token average times L_b) and L_b the valid completion length (Dr.GRPO-style token mean).

Batch: `prompt` [B,P] int, `prompt_mask` [B,P] bool, `completion` [B,G] int, `valid` [B,G] bool
(through the first EOS), `advantage` [B] float, `row_mask` [B] bool (False = padding row).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rl import likelihood as lk
from rl.objectives import Objective, register

BOUNDS = ("mix", "eubo", "elbo", "zero")

# The objective's config fields (read from `config.rl`) and their defaults.
FIELDS = dict(
    bound="mix",
    beta=1.0,
    omega=0.5,
    num_mc=2,
    mask_mode="block",
    weighting="parity",
    mask_block_len=32,
    p_mask_prompt=0.15,
    share_masks=False,
    group_size=1,
    kl_coef=0.0,
)


def make_spg_loss(
    graphdef,
    *,
    mask_id: int,
    bound: str = "mix",
    beta: float = 1.0,
    omega: float = 0.5,
    num_mc: int = 2,
    mask_mode: str = "block",
    weighting: str = "parity",
    block_len: int = 32,
    p_mask_prompt: float = 0.15,
    share_masks: bool = False,
    group_size: int = 1,
    kl_coef: float = 0.0,
    role: str = "policy",
):
    """Builds the SPG loss `(params, frozen, batch, rng) -> (loss_sum, denom, aux)`.

    Args:
      graphdef: NNX graph definition of the bidirectional policy.
      mask_id: the mask token.
      bound: estimator for negative advantages: "mix", "eubo", "elbo" or "zero".
      beta: Renyi order of the EUBO (>= 1).
      omega: mixture weight of the EUBO in "mix".
      num_mc: m, perturbations per completion (one batched forward pass).
      mask_mode, weighting, block_len, p_mask_prompt: see `rl.likelihood.draw_masks`.
      share_masks: completions of one group (consecutive runs of `group_size` rows) share their
        mask random numbers (see `draw_masks(share_within=...)`).
      kl_coef: weight of the k3 KL to `frozen["ref"]` (0: off, the paper's setting).
      role: params role of the policy.
    """
    if bound not in BOUNDS:
        raise ValueError(f"SPG bound {bound!r} not in {BOUNDS}")

    def loss_fn(params, frozen, batch, rng):
        model = nnx.merge(graphdef, params[role], frozen[role])
        valid = batch["valid"]
        draw = lk.draw_masks(
            rng,
            valid,
            batch["prompt_mask"],
            num_samples=num_mc,
            mode=mask_mode,
            weighting=weighting,
            block_len=block_len,
            p_mask_prompt=p_mask_prompt,
            share_within=group_size if share_masks else 1,
        )
        ll = lk.completion_logps(
            model, batch["prompt"], batch["prompt_mask"], batch["completion"], draw, mask_id
        )
        length = jnp.sum(valid, axis=-1).astype(jnp.float32)
        row = batch["row_mask"].astype(jnp.float32)
        adv = batch["advantage"].astype(jnp.float32) * row
        el = lk.elbo(ll, draw.scored, draw.weight)
        eu, coverage = lk.eubo(ll, draw.scored, draw.weight, beta, length)
        neg = {"mix": lk.mix(el, eu, omega), "eubo": eu, "elbo": el, "zero": jnp.zeros_like(el)}[
            bound
        ]
        s = jnp.where(adv > 0, el, neg)
        loss_sum = -jnp.sum(adv * s)
        kl_b = jnp.zeros_like(el)
        if kl_coef and "ref" in frozen:
            ref_model = nnx.merge(graphdef, frozen["ref"], frozen[role])
            ref = jax.lax.stop_gradient(
                lk.completion_logps(
                    ref_model,
                    batch["prompt"],
                    batch["prompt_mask"],
                    batch["completion"],
                    draw,
                    mask_id,
                )
            )
            k3 = jnp.exp(ref - ll) - (ref - ll) - 1.0
            k3 = jnp.sum(jnp.where(draw.scored, k3, 0.0), axis=(1, 2))
            kl_b = k3 / jnp.maximum(jnp.sum(draw.scored, axis=(1, 2)), 1) * length
            loss_sum = loss_sum + kl_coef * jnp.sum(row * kl_b)
        denom = jnp.sum(row * length)
        n = jnp.maximum(jnp.sum(row), 1.0)
        per_tok = lambda v: jnp.sum(row * v / jnp.maximum(length, 1.0)) / n  # noqa: E731
        aux = {
            "spg/elbo": per_tok(el),
            "spg/eubo": per_tok(eu),
            "spg/eubo_coverage": jnp.sum(row * coverage) / n,
            "spg/kl": per_tok(kl_b),
            "spg/t_hat": jnp.sum(
                row[:, None] * jnp.sum(draw.scored, -1) / jnp.maximum(length[:, None], 1.0)
            )
            / (n * num_mc),
        }
        return loss_sum, denom, aux

    return loss_fn


def _objective(graphdef, c, mask_id, role, bound: str) -> Objective:
    if mask_id is None:
        raise ValueError("SPG needs the tokenizer's mask_id")
    loss_fn = make_spg_loss(
        graphdef,
        mask_id=mask_id,
        bound=bound,
        beta=c["beta"],
        omega=c["omega"],
        num_mc=c["num_mc"],
        mask_mode=c["mask_mode"],
        weighting=c["weighting"],
        block_len=c["mask_block_len"],
        p_mask_prompt=c["p_mask_prompt"],
        share_masks=c["share_masks"],
        group_size=c["group_size"],
        kl_coef=c["kl_coef"],
        role=role,
    )
    snapshots = ("ref",) if c["kl_coef"] else ()
    return Objective(loss_fn, snapshots, plot_keys=("spg/elbo", "spg/eubo", "spg/kl"))


_FIXED_BOUND = {k: v for k, v in FIELDS.items() if k != "bound"}


@register("spg", fields=FIELDS)
def spg(graphdef, cfg, *, mask_id=None, role="policy"):
    """SPG with the configured bound for negative advantages."""
    return _objective(graphdef, cfg, mask_id, role, cfg["bound"])


@register("spg_elbo", fields=_FIXED_BOUND, namespace="spg")
def spg_elbo(graphdef, cfg, *, mask_id=None, role="policy"):
    """SPG with the ELBO for every advantage."""
    return _objective(graphdef, cfg, mask_id, role, "elbo")


@register("spg_no_neg", fields=_FIXED_BOUND, namespace="spg")
def spg_no_neg(graphdef, cfg, *, mask_id=None, role="policy"):
    """SPG without a term for negative advantages (the paper's "zero" ablation)."""
    return _objective(graphdef, cfg, mask_id, role, "zero")

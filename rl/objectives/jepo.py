"""JEPO: chain-of-thought as a latent variable, trained on the Jensen bound of log π(a*|x).

arXiv:2503.19618 (Tang, Wang, Madaan, Munos; NeurIPS 2025 text). No external reward: the
reward of a sampled chain of thought c is the log-likelihood of the reference answer a* after it,
ll = log π(a*|x,c) = Σ_t log π(a*_t | x, c, a*_<t) (a SUM, never divided by |a*|).

- Single-sample bound L^(1) = E_c[ll] (eq. "Jensen"), with n i.i.d. samples and the leave-one-out
  baseline v_i = mean_{j≠i} ll_j:  g = (1/n)Σ_i (ll_i − v_i)∇log π(c_i) + (1/n)Σ_i ∇ll_i.
- Multi-sample bound L^(n) = E[log (1/n)Σ_i π(a*|x,c_i)] (IWAE-style), L^(1) ≤ L^(n) ≤ L^(n+1) ≤
  log π(a*|x); with L̂ = logmeanexp_i ll_i and ṽ_i = logmeanexp_{j≠i} ll_j:
  g = Σ_i (L̂ − ṽ_i)∇log π(c_i) + ∇L̂. We return the score advantage as n(L̂ − ṽ_i) so that both
  variants share the form (1/n)Σ_i A_i ∇log π(c_i) + β_sup ∇(bound term); after the practical
  normalisation A/std(A) the factor n cancels, giving the paper's update (App. B.2).
- Practical update (App. B.2): Ã = clip(A / std(A), −1, 1) with std over the valid samples of the
  batch; a format penalty r_fmt = −p when the generation lacks "the final answer is", its RLOO
  advantage normalised separately and added to Ã on c_i (design: one forward pass per sample;
  c_i is the whole generation when the marker is missing, so the penalty hits exactly the
  malformed text; for well-formed samples it covers the text up to the marker, not the sampled
  answer, which JEPO replaces by a*); β_sup weights the
  supervised/bound term (autodiff through logsumexp gives the self-normalised weights
  softmax_i(ll_i)); β·KL(π‖π_ref) on the sampled chain-of-thought tokens, in a form whose
  on-policy gradient is not zero (`kl_rows`; default k3 as in GRPO).
- Combined JEPO+RL: groups where the verifier succeeded use the RLOO advantage on the sampled
  generation and no bound term (the runner builds those rows; this loss is agnostic).

Batch rows are prompts × n samples (n = `group_size`, static). `tokens [R,T]`, `mask [R,T]` hold
[x, c_i, a*] (the answer tokenised on its own, then concatenated); `cot_mask` marks c_i's tokens
(target-aligned, as in `score_tokens`), `ans_mask` marks a*'s tokens; `adv [R]` is the final
advantage on c_i; `valid [R]` marks well-formed samples; `bound_w [R]` is 1 in groups whose bound
term is used (JEPO groups with ≥ 2 valid samples).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rl.objectives import Objective, register
from rl.objectives.grpo import kl_per_token, ref_logprobs
from rl.sampling.autoregressive import score_tokens

NEG = -1e30
DEFAULTS = dict(group_size=4, multi_sample=True, beta_sup=0.0, kl_coef=0.0, kl_estimator="k3")


def logmeanexp(x_bn, valid_bn):
    """log((1/k)Σ_{valid} exp x) per row [B]; rows without valid entries give NEG."""
    v = valid_bn.astype(bool)
    k = jnp.sum(v, axis=1)
    lse = jax.nn.logsumexp(jnp.where(v, x_bn, NEG), axis=1)
    return jnp.where(k > 0, lse - jnp.log(jnp.maximum(k, 1)), NEG)


def loo_logmeanexp(x_bn, valid_bn):
    """ṽ_i = log((1/(k−1))Σ_{j≠i, valid} exp x_j) [B, n] (NEG where undefined)."""
    n = x_bn.shape[1]
    others = valid_bn.astype(bool)[:, None, :] & ~jnp.eye(n, dtype=bool)[None]
    return jax.vmap(logmeanexp, in_axes=(None, 1), out_axes=1)(x_bn, others)


def advantages(ll_bn, valid_bn, *, multi_sample: bool):
    """Raw leave-one-out advantages [B, n] (zero for invalid samples and groups with < 2 valid).

    The surrogate averages A_i∇log π(c_i) over the n slots of a group, so a group with k valid
    samples gets the paper's estimator computed on those k samples: single-sample
    (n/k)(ll_i − mean_{j≠i} ll_j), i.e. (1/k)Σ_valid; multi-sample n(L̂ − ṽ_i), i.e. Σ_valid, with
    L̂, ṽ over the valid samples. (Scaling by k instead of n would weight a group with k < n
    valid samples by k/n relative to the paper.)
    """
    v = valid_bn.astype(bool)
    k = jnp.sum(v, axis=1, keepdims=True).astype(jnp.float32)
    ok = v & (k >= 2)
    ll = jnp.where(v, ll_bn, 0.0)
    n = ll_bn.shape[1]
    if multi_sample:
        a = n * (logmeanexp(ll_bn, v)[:, None] - loo_logmeanexp(ll_bn, v))
    else:
        a = ll - (jnp.sum(ll, axis=1, keepdims=True) - ll) / jnp.maximum(k - 1.0, 1.0)
        a = a * n / jnp.maximum(k, 1.0)
    return jnp.where(ok, a, 0.0)


def normalise_clip(a_bn, valid_bn, clip: float = 1.0, eps: float = 1e-6):
    """A / (std over valid samples of the batch + eps), clipped to [−clip, clip]."""
    v = valid_bn.astype(bool)
    w = v.astype(jnp.float32)
    cnt = jnp.maximum(jnp.sum(w), 1.0)
    mean = jnp.sum(a_bn * w) / cnt
    std = jnp.sqrt(jnp.sum((a_bn - mean) ** 2 * w) / cnt)
    out = jnp.where(std > eps, a_bn / (std + eps), 0.0)
    return jnp.where(v, jnp.clip(out, -clip, clip), 0.0)


def format_advantages(has_marker_bn, penalty: float = 10.0, clip: float = 1.0):
    """RLOO advantage of r_fmt = −penalty·[no marker], normalised by its own batch std."""
    from rl.advantages import rloo

    r = -penalty * (1.0 - has_marker_bn.astype(jnp.float32))
    return normalise_clip(rloo(r), jnp.ones_like(r, bool), clip)


def combined_advantages(
    lb_adv_bn, valid_bn, has_marker_bn, format_penalty: float, *, reward=None, rl_group=None
):
    """The final advantage on each sample's chain of thought (or whole generation), [B, n].

    JEPO groups: the lower-bound advantage normalised by its std over the valid samples of the
    JEPO groups and clipped (App. B.2). Combined JEPO+RL (`reward`, `rl_group` [B, 1] given):
    groups where the verifier succeeded use the RLOO advantage of the reward, normalised and
    clipped the same way over the RL groups, so both kinds of group enter one update on the same
    scale (design: the paper does not say; raw RLOO advantages would weigh RL groups by the
    reward scale instead). The format advantage (its own normalisation) is added to every group,
    as in the paper's full update.
    """
    from rl.advantages import rloo

    valid = valid_bn.astype(bool)
    if rl_group is None:
        a = normalise_clip(lb_adv_bn, valid)
    else:
        rl_rows = jnp.broadcast_to(jnp.asarray(rl_group, bool), valid.shape)
        a_rl = normalise_clip(rloo(reward), rl_rows)
        a = jnp.where(rl_rows, a_rl, normalise_clip(lb_adv_bn, valid & ~rl_rows))
    if format_penalty > 0:
        a = a + format_advantages(has_marker_bn, format_penalty)
    return a


def bound_term(ll_bn, valid_bn, *, multi_sample: bool):
    """The β_sup term per group [B]: mean_i ll_i (single) or L̂ = logmeanexp_i ll_i (multi)."""
    v = valid_bn.astype(bool)
    if multi_sample:
        out = logmeanexp(ll_bn, v)
    else:
        out = jnp.sum(jnp.where(v, ll_bn, 0.0), 1) / jnp.maximum(jnp.sum(v, 1), 1)
    return jnp.where(jnp.sum(v, 1) > 0, out, 0.0)


def surrogate(
    cot_logp_bn, ll_bn, adv_bn, valid_bn, bound_w_b, *, multi_sample: bool, beta_sup: float
):
    """Per-group loss [B] whose gradient is the JEPO estimator (advantages held fixed)."""
    n = cot_logp_bn.shape[1]
    pg = jnp.sum(jax.lax.stop_gradient(adv_bn) * cot_logp_bn, axis=1) / n
    sup = bound_term(ll_bn, valid_bn, multi_sample=multi_sample) * bound_w_b
    return -(pg + beta_sup * sup)


def kl_rows(lp_bt, ref_lp_bt, w_bt, estimator: str):
    """Per-row KL(π‖π_ref) penalty [R] on the weighted (sampled, on-policy) tokens.

    The penalty must have a nonzero expected gradient on-policy. The plain k1 sum
    Σ_t(log π − log π_ref) does not: its gradient Σ_t∇log π has mean zero under π, so it would
    regularise nothing. Hence:
      - `k1`: the score-function form: value Σ_t(log π − log π_ref), gradient
        sg(Σ_t(log π − log π_ref))·Σ_t∇log π, whose mean is the exact ∇KL(π‖π_ref) of the sequence;
      - `k2`: Σ_t ½(log π − log π_ref)², gradient Σ_t(log π − log π_ref)∇log π;
      - `k3`: Σ_t (π_ref/π − log(π_ref/π) − 1) (as in GRPO), gradient Σ_t(1 − π_ref/π)∇log π,
        whose mean under π is ∇KL(π_ref‖π).
    """
    d = (lp_bt - ref_lp_bt) * w_bt
    if estimator == "k1":
        k1 = jnp.sum(d, 1)
        lp = jnp.sum(lp_bt * w_bt, 1)
        return jax.lax.stop_gradient(k1) * (lp - jax.lax.stop_gradient(lp)) + (
            jax.lax.stop_gradient(k1)
        )
    if estimator == "k2":
        return jnp.sum(0.5 * d**2, 1)
    return jnp.sum(kl_per_token(lp_bt, ref_lp_bt, estimator) * w_bt, 1)


def make_jepo_loss(graphdef, cfg=None, role: str = "policy"):
    """JEPO loss `(params, frozen, batch, rng) -> (loss_sum, denom, aux)`; denom = groups."""
    c = {**DEFAULTS, **{k: v for k, v in dict(cfg or {}).items() if k in DEFAULTS}}
    n = int(c["group_size"])

    def loss_fn(params, frozen, batch, rng):
        del rng
        model = nnx.merge(graphdef, params[role], frozen.get(role, {}) if frozen else {})
        lp = score_tokens(model, batch["tokens"], batch["mask"])
        cot_w = batch["cot_mask"].astype(jnp.float32)
        groups = lambda x: x.reshape(-1, n)  # noqa: E731
        cot_lp = groups(jnp.sum(lp * cot_w, 1))
        ll = groups(jnp.sum(lp * batch["ans_mask"], 1))
        valid = groups(batch["valid"])
        bound_w = groups(batch["bound_w"].astype(jnp.float32))[:, 0]
        per_group = surrogate(
            cot_lp,
            ll,
            groups(batch["adv"]),
            valid,
            bound_w,
            multi_sample=c["multi_sample"],
            beta_sup=c["beta_sup"],
        )
        used = jnp.maximum(jnp.sum(bound_w), 1.0)
        aux = {
            "jepo/bound": jnp.sum(
                bound_term(jax.lax.stop_gradient(ll), valid, multi_sample=c["multi_sample"])
                * bound_w
            )
            / used,
            "jepo/valid_frac": jnp.mean(valid.astype(jnp.float32)),
        }
        ref_lp = ref_logprobs(graphdef, frozen, batch, role)
        if c["kl_coef"] and ref_lp is not None:
            kl = kl_rows(lp, ref_lp, cot_w, c["kl_estimator"])
            per_group = per_group + c["kl_coef"] * jnp.mean(groups(kl), 1)
            aux["jepo/kl"] = jnp.sum(kl) / jnp.maximum(jnp.sum(cot_w), 1.0)
        return jnp.sum(per_group), jnp.asarray(per_group.shape[0], jnp.float32), aux

    return loss_fn


def answer_loglik(model, tokens_bt, mask_bt, ans_mask_bt):
    """log π(a*|x,c) per row [R]: teacher-forced sum over the answer tokens."""
    return jnp.sum(score_tokens(model, tokens_bt, mask_bt) * ans_mask_bt, axis=1)


@register("jepo", fields=DEFAULTS, batch="answer_likelihood")
def jepo(graphdef, cfg, *, mask_id=None, role="policy"):
    """JEPO; declares the `ref` snapshot when `kl_coef > 0`."""
    del mask_id
    snapshots = ("ref",) if cfg["kl_coef"] else ()
    return Objective(make_jepo_loss(graphdef, cfg, role), snapshots, ("jepo/bound", "jepo/kl"))

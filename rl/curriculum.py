"""Prompt Curriculum Learning: a value model picks intermediate prompts (arXiv:2510.01135).

Not Path Consistency Learning: there is no soft-Q residual here. Per RL step (spec §1):

    X_cand ← k·m prompts drawn uniformly                  (host RNG, threaded by step)
    v      ← V_φ(X_cand)                                  (one forward pass, no generation)
    X_t    ← the m prompts with the smallest |v − τ|      (`lax.top_k`, one jitted call)
    Y, r   ← n rollouts per prompt from π_t
    π_{t+1}, φ_{t+1} ← GRPO on (X_t, Y, r)  +  MSE(V_φ(x_i), ŷ_i),  ŷ_i = mean_j r(x_i, y_ij)

The targets ŷ are pass rates under π_t while the update produces π_{t+1}: after the step the value
model describes the policy one step behind, by construction (the paper: "acceptable since
π_{t+1} ≈ π_t"). Both roles live in one `TrainState` (`params = {"policy", "value"}`) with one
optimizer per role; their parameters are disjoint, so summing the two losses gives each role
exactly its own gradient.

V_φ is the policy's architecture over the prompt tokens (a copy of the warm-start policy, spec's
"natural choice") with a two-layer MLP head on the final hidden state of the last prompt slot
(prompts are left-padded, so that slot is always real), squashed by a sigmoid to [0, 1]: the spec's
allowed, documented deviation "sigmoid + MSE".

Also here: the effective ratio (fraction of samples with a non-zero advantage; for binary rewards
with group advantages, the fraction of samples in mixed groups) and the group pass rates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

EPS_ADV = 1e-6


# --------------------------------------------------------------------------- statistics


def group_pass_rate(r_bn) -> np.ndarray:
    """ŷ [B]: the mean reward of each prompt's group (the value model's MSE target)."""
    return np.asarray(r_bn, np.float32).mean(axis=1)


def effective_ratio(adv, eps: float = EPS_ADV) -> float:
    """Fraction of samples whose advantage is non-zero (|A| > eps), any shape."""
    a = np.asarray(adv, np.float32)
    return float(np.mean(np.abs(a) > eps)) if a.size else 0.0


def mixed_groups(r_bn) -> np.ndarray:
    """bool [B]: groups that are neither all-equal (binary: neither all 0 nor all 1)."""
    r = np.asarray(r_bn)
    return r.max(axis=1) > r.min(axis=1)


# --------------------------------------------------------------------------- selection


def select_top_m(v_c: jax.Array, tau: float, m: int):
    """The m candidates with the smallest |v − τ| (greedy top-m), closest first.

    Args:
      v_c: predicted pass rates of the candidates [C].
      tau: target pass rate.
      m: number to keep (static).

    Returns:
      (idx [m] int32 into the candidates, v [m] their predictions).
    """
    _, idx = jax.lax.top_k(-jnp.abs(v_c - tau), m)
    return idx, v_c[idx]


def sample_candidates(num_prompts: int, num: int, seed: int, step: int) -> np.ndarray:
    """`num` distinct prompt indices drawn uniformly, a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step, 0xC0])
    return rng.choice(num_prompts, num, replace=False)


# --------------------------------------------------------------------------- value model


def init_value_params(policy_params, d_model: int, hidden: int, seed: int) -> dict:
    """Value-role params: a copy of the policy backbone and a fresh MLP head.

    The last layer starts at zero weight and bias logit(0.5)=0, so V starts at 0.5 everywhere
    (no prompt is preferred before the first targets arrive).
    """
    k1, _ = jax.random.split(jax.random.key(seed))
    body = jax.tree.map(jnp.copy, policy_params)
    head = {
        "w1": jax.random.normal(k1, (d_model, hidden), jnp.float32) / np.sqrt(d_model),
        "b1": jnp.zeros((hidden,), jnp.float32),
        "w2": jnp.zeros((hidden,), jnp.float32),
        "b2": jnp.zeros((), jnp.float32),
    }
    return {"body": body, "head": head}


def value_forward(graphdef, value_params, rest, tokens_bp, mask_bp) -> jax.Array:
    """V_φ(x) ∈ (0, 1), [B], from left-padded prompt tokens [B, P]."""
    model = nnx.merge(graphdef, value_params["body"], rest)
    out = model(tokens_bp, mask_bt=mask_bp)
    h = out.final[:, -1].astype(jnp.float32)  # last slot: real for every left-padded prompt
    hd = value_params["head"]
    z = jax.nn.gelu(h @ hd["w1"] + hd["b1"]) @ hd["w2"] + hd["b2"]
    return jax.nn.sigmoid(z)


def make_select_fn(graphdef, m: int, tau: float):
    """One jitted call: `(value_params, rest, cand_tokens [C,P], cand_mask) -> (idx [m], v [C])`.

    C = k·m is static, so this compiles once for the whole run.
    """

    @jax.jit
    def select(value_params, rest, tokens_cp, mask_cp):
        v = value_forward(graphdef, value_params, rest, tokens_cp, mask_cp)
        idx, _ = select_top_m(v, tau, m)
        return idx, v

    return select


def value_mse(graphdef, value_params, rest, batch):
    """(sum of squared errors, count) of V_φ on `v_tokens`/`v_mask` against `v_target` [m]."""
    v = value_forward(graphdef, value_params, rest, batch["v_tokens"], batch["v_mask"])
    err = (v - batch["v_target"]) ** 2
    return jnp.sum(err), jnp.asarray(err.shape[0], jnp.float32), v


def make_pcl_loss(policy_loss_fn, graphdef, *, value_coef: float = 1.0, role: str = "policy"):
    """GRPO loss for `policy` plus the value MSE for `value`, in the trainer's contract.

    Each part is normalised by its own denominator and the pair is returned with denominator 1,
    so neither role's gradient is scaled by the other's token count. (With microbatches the
    result is the mean of per-microbatch losses; the PCL runner uses one microbatch.)

    Batch: the policy loss's keys plus `v_tokens [m,P]`, `v_mask [m,P]`, `v_target [m]`.
    """

    def loss_fn(params, frozen, batch, rng):
        pg_sum, pg_den, aux = policy_loss_fn(params, frozen, batch, rng)
        rest = frozen.get(role, {})
        se, cnt, _ = value_mse(graphdef, params["value"], rest, batch)
        pg = pg_sum / jnp.maximum(pg_den, 1.0)
        mse = se / cnt
        aux = {**aux, "pcl/policy_loss": pg, "pcl/value_mse_train": mse}
        return pg + value_coef * mse, jnp.ones((), jnp.float32), aux

    return loss_fn

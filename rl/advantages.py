"""Advantage estimators for group-sampled policy gradients (computed outside the gradient step).

Rewards come as `r_bn` [num_prompts, n_samples_per_prompt]:
- `group_mean`: A = r - mean_group(r) (Dr.GRPO, arXiv:2503.20783: no std division).
- `group_mean_std`: A = (r - mean_group(r)) / (std_group(r) + eps) (GRPO, arXiv:2402.03300 §4.1).
- `rloo`: A_i = r_i - mean_{j != i} r_j (RLOO, arXiv:2402.14740 eq. 3); equals
  n/(n-1) * group_mean, an unbiased baseline since it does not depend on sample i.
- `batch_norm`: A = (r - mean_batch(r)) / (std_batch(r) + eps) (REINFORCE++, arXiv:2501.03262).

An optional `valid_bn` mask excludes samples (they get A = 0 and do not enter the statistics).

This is the one registry of estimators (`ESTIMATORS`, `compute(name, ...)`): every runner picks
its estimator by name here. They run outside the gradient step, in float32, with jax.numpy by
default; `xp=numpy` computes them on the host with numpy (the SPG runner's rollouts, whose
mean-subtracted advantages have always been numpy's float32 arithmetic, bit for bit).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

EPS = 1e-6


def _masked(r_bn, valid_bn, xp):
    v = xp.ones_like(r_bn, bool) if valid_bn is None else valid_bn.astype(bool)
    return r_bn.astype(np.float32), v, v.astype(np.float32)


def group_mean(r_bn, valid_bn=None, xp=jnp):
    r, v, w = _masked(r_bn, valid_bn, xp)
    cnt = xp.maximum(xp.sum(w, axis=1, keepdims=True), 1.0)
    mean = xp.sum(r * w, axis=1, keepdims=True) / cnt
    return xp.where(v, r - mean, 0.0)


def group_mean_std(r_bn, valid_bn=None, eps: float = EPS, xp=jnp):
    r, v, w = _masked(r_bn, valid_bn, xp)
    cnt = xp.maximum(xp.sum(w, axis=1, keepdims=True), 1.0)
    centred = group_mean(r, v, xp)
    std = xp.sqrt(xp.sum(centred**2 * w, axis=1, keepdims=True) / cnt)
    # A constant group carries no signal; float32 rounding of its mean must not be amplified.
    return xp.where(v & (std > eps), centred / (std + eps), 0.0)


def rloo(r_bn, valid_bn=None, xp=jnp):
    """Leave-one-out baseline; groups with fewer than 2 valid samples get zero advantage."""
    r, v, w = _masked(r_bn, valid_bn, xp)
    cnt = xp.sum(w, axis=1, keepdims=True)
    total = xp.sum(r * w, axis=1, keepdims=True)
    loo = (total - r * w) / xp.maximum(cnt - 1.0, 1.0)
    return xp.where(v & (cnt >= 2), r - loo, 0.0)


def batch_norm(r_bn, valid_bn=None, eps: float = EPS, xp=jnp):
    r, v, w = _masked(r_bn, valid_bn, xp)
    cnt = xp.maximum(xp.sum(w), 1.0)
    mean = xp.sum(r * w) / cnt
    std = xp.sqrt(xp.sum((r - mean) ** 2 * w) / cnt)
    return xp.where(v & (std > eps), (r - mean) / (std + eps), 0.0)


ESTIMATORS = {
    "group_mean": group_mean,
    "group_mean_std": group_mean_std,
    "rloo": rloo,
    "batch_norm": batch_norm,
}


def check(name: str) -> str:
    """`name` if it is a registered estimator, else a ValueError listing them."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; known: {sorted(ESTIMATORS)}")
    return name


def compute(name: str, r_bn, valid_bn=None, *, xp=jnp):
    """Advantages [B, n] by estimator `name` (one of `ESTIMATORS`), in array module `xp`."""
    return ESTIMATORS[check(name)](r_bn, valid_bn, xp=xp)


def skip_flat(batch: dict, metrics: dict, adv, enabled: bool) -> tuple[dict | None, dict]:
    """A collect's `(batch, metrics)`, with batch None when `enabled` and every advantage in
    `adv` (host numpy, [B]) is exactly zero: no reward signal, so `train.loop.fit` skips the
    step's updates (parameters and optimizer state unchanged). `rl/skipped_updates` is 1 then,
    else 0.

    Why (`rl.skip_flat_batches`): with every group flat, the gradient is only the KL term (fp32
    noise while the policy equals its reference), which Adam normalises into a full
    learning-rate-sized step, and its momentum keeps moving the weights after the signal is gone.
    Skipping also drops that batch's KL pull towards the reference.
    """
    skip = bool(enabled) and not np.any(np.asarray(adv))
    return (None if skip else batch), {**metrics, "rl/skipped_updates": float(skip)}

"""Optimizers from config: AdamW with warmup + cosine/constant schedule and global-norm clipping.

One optimizer per role (`policy`, `value`, ...) via `optax.multi_transform` on the top-level keys
of the params dict.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import optax

_FIELDS = {
    "lr",
    "warmup_steps",
    "total_steps",
    "weight_decay",
    "b1",
    "b2",
    "eps",
    "clip_norm",
    "schedule",
    "optimizer",
    "min_lr_ratio",
}


def make_schedule(cfg) -> optax.Schedule:
    lr, warmup = float(cfg.get("lr", 1e-3)), int(cfg.get("warmup_steps", 0))
    total = int(cfg.get("total_steps", 1000))
    kind = cfg.get("schedule", "cosine")
    if kind == "constant":
        return (
            optax.join_schedules(
                [optax.linear_schedule(0.0, lr, max(warmup, 1)), optax.constant_schedule(lr)],
                [warmup],
            )
            if warmup
            else optax.constant_schedule(lr)
        )
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0 if warmup else lr,
            lr,
            warmup,
            max(total, warmup + 1),
            end_value=lr * float(cfg.get("min_lr_ratio", 0.1)),
        )
    raise ValueError(f"unknown schedule {kind!r}; expected 'cosine' or 'constant'")


def make_optimizer(cfg) -> optax.GradientTransformation:
    """AdamW (or SGD) with global-norm clipping, from an optim ConfigDict/dict."""
    unknown = set(dict(cfg)) - _FIELDS
    if unknown:
        raise ValueError(f"unknown optimizer field(s) {sorted(unknown)}; known: {sorted(_FIELDS)}")
    sched = make_schedule(cfg)
    kind = cfg.get("optimizer", "adamw")
    if kind == "adamw":
        opt = optax.adamw(
            sched,
            b1=float(cfg.get("b1", 0.9)),
            b2=float(cfg.get("b2", 0.999)),
            eps=float(cfg.get("eps", 1e-8)),
            weight_decay=float(cfg.get("weight_decay", 0.0)),
        )
    elif kind == "sgd":
        opt = optax.sgd(sched)
    else:
        raise ValueError(f"unknown optimizer {kind!r}; expected 'adamw' or 'sgd'")
    clip = cfg.get("clip_norm", 1.0)
    return optax.chain(optax.clip_by_global_norm(float(clip)), opt) if clip else opt


def make_role_optimizer(role_cfgs: Mapping[str, object]) -> optax.GradientTransformation:
    """One optimizer per role; params must be a dict keyed by the same roles."""
    txs = {role: make_optimizer(c) for role, c in role_cfgs.items()}
    if len(txs) == 1:
        return next(iter(txs.values()))

    def labels(params):
        missing = set(params) - set(txs)
        if missing:
            raise ValueError(f"no optimizer for role(s) {sorted(missing)}; have {sorted(txs)}")
        return {role: jax.tree.map(lambda _, r=role: r, sub) for role, sub in params.items()}

    return optax.multi_transform(txs, labels)

"""WaltzRL two-agent training core (arXiv:2510.08240): the state, the per-agent loss and the one
compiled update used for both agents.

- `TrainState.params` is keyed by role (`conversation`, `feedback`); `frozen` holds each agent's
  reference tree (`frozen["ref"][role]`, the warm start) and the non-trainable NNX state. Both
  agents share one architecture, so their trees have the same shapes.
- One optimizer per role: each role has its own optax state. The learning rate lives in that
  state (`optax.inject_hyperparams`), so the two roles' optimizer states have the same structure
  and one compiled `agent_update(params, opt_state, ref, rest, batch)` serves both agents
  (same shapes -> one compile; `agent_update.traces` counts traces).
- Loss per agent (REINFORCE++ extended to two actors, spec §3): PPO-clipped ratio against the
  sampler's behaviour log-probs with batch-normalised advantages, a token mean per sample
  (1/|y|), plus beta * KL(pi || pi_ref) with the k3 estimator evaluated on the *current* log-probs,
  so the KL term has a gradient. Returns (sum, denominator) as every loss in the codebase.
- Stage 1 (`train_conversation=False`, a static Python flag) does not call the update for the
  conversation role at all, so its parameters and optimizer state stay bitwise unchanged (a zero
  learning rate would not: Adam moments and weight decay still move).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rl.sampling.autoregressive import score_tokens
from train.lm import build_transformer
from train.state import TrainState, split_module

ROLES = ("conversation", "feedback")


def build_agents(model_cfg, vocab_size: int, seed: int):
    """Two Transformers of one architecture: (graphdef, params {role: tree}, rest)."""
    params, rest, graphdef = {}, None, None
    for i, role in enumerate(ROLES):
        model = build_transformer(model_cfg, vocab_size, seed * 2 + i)
        graphdef, params[role], rest = split_module(model)
    return graphdef, params, rest


def agent_optimizer(optim_cfg) -> optax.GradientTransformation:
    """Clipped AdamW whose learning rate is stored in the optimizer state."""
    adam = optax.inject_hyperparams(optax.adamw)(
        learning_rate=float(optim_cfg.lr),
        b1=float(optim_cfg.get("b1", 0.9)),
        b2=float(optim_cfg.get("b2", 0.999)),
        weight_decay=float(optim_cfg.get("weight_decay", 0.0)),
    )
    return optax.chain(optax.clip_by_global_norm(float(optim_cfg.get("clip_norm", 1.0))), adam)


def create_state(params, rest, role_optims, rng) -> TrainState:
    """TrainState with one optimizer state per role and each agent's reference = its start."""
    copy = lambda t: jax.tree.map(jnp.array, t)  # noqa: E731  (references must not alias)
    return TrainState(
        params=params,
        frozen={"ref": {r: copy(params[r]) for r in ROLES}, "rest": rest},
        opt_state={r: agent_optimizer(role_optims[r]).init(params[r]) for r in ROLES},
        step=jnp.zeros((), jnp.int32),
        rng=rng,
        skipped=jnp.zeros((), jnp.int32),
    )


def make_agent_loss(graphdef, *, clip_eps: float, kl_coef: float):
    """`(params, ref, rest, batch) -> (loss_sum, denom, aux)` for one agent.

    Batch rows [R, T]: `tokens`, `mask` (real tokens), `score_mask` (the agent's generated tokens),
    `old_logp` (sampler log-probs aligned with tokens), `adv` [R].
    """

    def loss_fn(params, ref, rest, batch):
        logp = score_tokens(nnx.merge(graphdef, params, rest), batch["tokens"], batch["mask"])
        ref_lp = jax.lax.stop_gradient(
            score_tokens(nnx.merge(graphdef, ref, rest), batch["tokens"], batch["mask"])
        )
        w = batch["score_mask"].astype(jnp.float32)
        ratio = jnp.exp(logp - batch["old_logp"])
        a = batch["adv"][:, None]
        pg = -jnp.minimum(ratio * a, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * a)
        d = ref_lp - logp
        kl = jnp.exp(d) - d - 1.0  # k3; its gradient w.r.t. logp is 1 - exp(d)
        n_y = jnp.sum(w, axis=1)
        has = (n_y > 0).astype(jnp.float32)
        per_sample = jnp.sum((pg + kl_coef * kl) * w, axis=1) / jnp.maximum(n_y, 1.0)
        ntok = jnp.maximum(jnp.sum(w), 1.0)
        aux = {
            "kl": jnp.sum(kl * w) / ntok,
            "clip_frac": jnp.sum((jnp.abs(ratio - 1.0) > clip_eps) * w) / ntok,
            "pg": jnp.sum(pg * w) / ntok,
        }
        return jnp.sum(per_sample * has), jnp.sum(has), aux

    return loss_fn


def make_agent_update(graphdef, tx: optax.GradientTransformation, *, clip_eps, kl_coef):
    """One jitted update for either agent; skipped (state kept) on a non-finite loss/gradient.

    Returns:
      `update(params, opt_state, ref, rest, batch) -> (params, opt_state, metrics)`, with
      `update.traces` the number of times it has been traced (1 after any number of calls with
      the same shapes, for both agents).
    """
    loss_fn = make_agent_loss(graphdef, clip_eps=clip_eps, kl_coef=kl_coef)
    counter = {"traces": 0}

    def update(params, opt_state, ref, rest, batch):
        counter["traces"] += 1

        def f(p):
            s, d, aux = loss_fn(p, ref, rest, batch)
            return s / jnp.maximum(d, 1.0), aux

        (loss, aux), g = jax.value_and_grad(f, has_aux=True)(params)
        gnorm = optax.tree.norm(g)
        ok = jnp.isfinite(loss) & jnp.isfinite(gnorm)
        g = jax.tree.map(lambda x: jnp.where(ok, x, 0.0), g)
        upd, new_opt = tx.update(g, opt_state, params)
        new_params = optax.apply_updates(params, upd)
        keep = lambda n, o: jax.tree.map(lambda a, b: jnp.where(ok, a, b), n, o)  # noqa: E731
        return (
            keep(new_params, params),
            keep(new_opt, opt_state),
            {"loss": loss, "grad_norm": gnorm, "skipped": (~ok).astype(jnp.int32), **aux},
        )

    jitted = jax.jit(update, donate_argnums=(0, 1))

    class _Update:
        def __call__(self, *args):
            return jitted(*args)

        @property
        def traces(self) -> int:
            return counter["traces"]

    return _Update()


def waltz_update(state: TrainState, update_fn, batches: dict, *, train_conversation: bool):
    """Updates the agents present in `batches` with the shared compiled update.

    Args:
      state: the two-agent TrainState.
      update_fn: from `make_agent_update`.
      batches: role -> batch (numpy or jax arrays of one static layout).
      train_conversation: static stage flag; False (stage 1, frozen-conversation ablation) leaves
        the conversation role's parameters and optimizer state untouched (bitwise).

    Returns:
      (state, metrics with `<role>/<name>` keys).
    """
    params, opt = dict(state.params), dict(state.opt_state)
    metrics, skipped = {}, state.skipped
    for role in ROLES:
        if role not in batches or (role == "conversation" and not train_conversation):
            continue
        b = jax.tree.map(jnp.asarray, batches[role])
        params[role], opt[role], m = update_fn(
            params[role], opt[role], state.frozen["ref"][role], state.frozen["rest"], b
        )
        skipped = skipped + m["skipped"]
        metrics.update({f"{role}/{k}": v for k, v in m.items()})
    new = state.replace(params=params, opt_state=opt, step=state.step + 1, skipped=skipped)
    return new, metrics


def trees_equal(a, b) -> bool:
    """Bitwise equality of two pytrees (same structure, same bytes)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(la, lb)
    )

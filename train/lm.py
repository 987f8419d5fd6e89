"""Language-model pieces shared by every runner: model construction and the two LM losses.

- `ar`: next-token cross-entropy on completion tokens (token-normalised).
- `mdlm`: the masked-diffusion (MDLM/LLaDA) continuous-time ELBO, arXiv 2502.09992 eq. (3) and
  arXiv 2510.09541 §2: t ~ U(eps, 1) per sequence (antithetic/stratified over the batch), each
  generation-region token masked with probability t, loss = sum over masked tokens of
  -log p(x_i | x_t) / t, divided by the region length. The prompt is never masked; positions after
  the completion are trained to EOS, as in LLaDA's SFT, so the sampler learns to fill unused
  length with EOS.

Losses follow the trainer's contract: `(params, frozen, batch, rng) -> (loss_sum, denom, aux)`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from models.transformer import Transformer, TransformerConfig


def build_transformer(model_cfg, vocab_size: int, seed: int, **overrides) -> Transformer:
    """Builds the Transformer from a model ConfigDict; `vocab_size` comes from the tokenizer."""
    cfg = TransformerConfig.from_config(model_cfg, vocab_size=vocab_size, **overrides)
    return Transformer(cfg, rngs=nnx.Rngs(params=seed))


def token_logprobs(logits_btv: jax.Array, targets_bt: jax.Array) -> jax.Array:
    """log p(target) in float32, [B, T]."""
    logp = jax.nn.log_softmax(logits_btv.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, targets_bt[..., None], axis=-1)[..., 0]


def make_ar_loss(graphdef, role: str = "policy") -> Callable:
    """Next-token cross-entropy on `loss_mask` tokens."""

    def loss_fn(params, frozen, batch, rng):
        del rng
        model = nnx.merge(graphdef, params[role], frozen.get(role, {}) if frozen else {})
        tokens, mask = batch["tokens"], batch["mask"]
        out = model(tokens[:, :-1], mask_bt=mask[:, :-1])
        tgt = tokens[:, 1:]
        w = batch["loss_mask"][:, 1:].astype(jnp.float32)
        lp = token_logprobs(out.logits, tgt)
        correct = (jnp.argmax(out.logits, -1) == tgt).astype(jnp.float32)
        denom = jnp.sum(w)
        aux = {"train/token_acc": jnp.sum(correct * w) / jnp.maximum(denom, 1.0)}
        return -jnp.sum(lp * w), denom, aux

    return loss_fn


def mdlm_mask(rng, region_bt: jax.Array, eps: float = 1e-3):
    """Samples t per row (stratified) and the masked positions inside `region_bt`.

    Returns:
      (t_b [B], masked_bt bool [B, T])
    """
    b = region_bt.shape[0]
    k1, k2 = jax.random.split(rng)
    u0 = jax.random.uniform(k1, ())
    t = jnp.mod(u0 + jnp.arange(b) / b, 1.0)
    t = eps + (1.0 - eps) * t
    masked = region_bt & (jax.random.uniform(k2, region_bt.shape) < t[:, None])
    return t, masked


def make_mdlm_loss(graphdef, mask_id: int, eos_id: int, role: str = "policy") -> Callable:
    """Masked-diffusion ELBO loss (see module docstring)."""

    def loss_fn(params, frozen, batch, rng):
        model = nnx.merge(graphdef, params[role], frozen.get(role, {}) if frozen else {})
        tokens, real = batch["tokens"], batch["mask"]
        region = ~batch["prompt_mask"]
        target = jnp.where(real, tokens, eos_id)
        t, masked = mdlm_mask(rng, region)
        x_t = jnp.where(masked, mask_id, target)
        out = model(x_t)  # bidirectional, no key padding: trailing EOS is content here
        # SUBS: the mask token is never a target, so it leaves the softmax (as in the sampler and
        # the RL likelihood); argmax accuracy below uses the same support.
        logits = out.logits.at[..., mask_id].set(-jnp.inf)
        lp = token_logprobs(logits, target)
        w = masked.astype(jnp.float32)
        length = jnp.maximum(jnp.sum(region, axis=1), 1).astype(jnp.float32)
        per_seq = -jnp.sum(lp * w, axis=1) / t / length
        correct = (jnp.argmax(logits, -1) == target).astype(jnp.float32)
        aux = {"train/masked_acc": jnp.sum(correct * w) / jnp.maximum(jnp.sum(w), 1.0)}
        return jnp.sum(per_seq), jnp.asarray(tokens.shape[0], jnp.float32), aux

    return loss_fn

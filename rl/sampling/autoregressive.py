"""Autoregressive sampling with a KV cache inside `lax.while_loop`, and teacher-forced re-scoring.

Used by the GRPO family and JEPO (arXiv:2503.19618, §3: n samples per prompt at temperature 1,
top-p 1). The prompt batch is LEFT-padded (`data.pipeline.encode_prompts`), so every prompt ends
at the same slot: one prefill call writes the whole prompt into the cache, then the loop feeds one
token per step. A row that has emitted EOS keeps running (static shapes) but its later tokens are
`pad`, masked out of the cache and of the returned masks, so rows stop independently; the loop ends
early once every row is done.

The returned `logp` is log π(y_t | x, y_<t) under the *untempered, untruncated* policy, i.e. what
a teacher-forced forward pass (`score_tokens`) gives; it is the behaviour log-prob the GRPO ratio
and the KL need. `sample_logp` is the log-prob under the distribution actually sampled from
(temperature / top-k / top-p applied).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

NEG_INF = -1e30


class SampleOutput(NamedTuple):
    tokens: jax.Array  # [B, N] int32, pad after EOS
    mask: jax.Array  # [B, N] bool: generated tokens, EOS included
    logp: jax.Array  # [B, N] float32 log π(y_t | ...) of the raw policy (0 where ~mask)
    sample_logp: jax.Array  # [B, N] float32 log-prob under the sampling distribution
    lengths: jax.Array  # [B] int32 number of generated tokens (EOS included)


def process_logits(logits_bv: jax.Array, temperature: float, top_k: int, top_p: float):
    """Temperature, then top-k, then nucleus (top-p) truncation; returns masked logits [B, V]."""
    logits = logits_bv.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)
    v = logits.shape[-1]
    if 0 < top_k < v:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, NEG_INF, logits)
    if top_p < 1.0:
        sorted_l = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_l, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (the top token is always kept).
        before = jnp.cumsum(probs, axis=-1) - probs
        keep = before < top_p
        cutoff = jnp.min(jnp.where(keep, sorted_l, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, NEG_INF, logits)
    return logits


def sample(
    model,
    prompt_bt: jax.Array,
    prompt_mask_bt: jax.Array,
    rng: jax.Array,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
) -> SampleOutput:
    """Samples up to `max_new_tokens` continuations of a left-padded prompt batch.

    Call under `jax.jit` (with the sampling knobs static) or through `make_sampler`.

    Args:
      model: a causal `models.transformer.Transformer` (NNX module).
      prompt_bt: int tokens [B, P], left-padded.
      prompt_mask_bt: bool [B, P], True at real prompt tokens (each row ends at slot P - 1).
      rng: PRNG key.
      max_new_tokens: N, the static generation budget.
      eos_id / pad_id: stop token and filler after it.
      temperature, top_k (0 = off), top_p (1 = off): sampling distribution.
      greedy: argmax decoding (ignores the knobs above).

    Returns:
      SampleOutput (see the class).
    """
    b, p = prompt_bt.shape
    n = max_new_tokens
    cache = model.init_cache(b, p + n)
    out = model(prompt_bt, mask_bt=prompt_mask_bt, cache=cache)

    def body(carry):
        i, cache, logits, toks, lp, slp, real, done, key = carry
        key, sub = jax.random.split(key)
        raw = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        if greedy:
            tok = jnp.argmax(raw, axis=-1).astype(jnp.int32)
            s_lp = jnp.zeros((b,), jnp.float32)
        else:
            proc = jax.nn.log_softmax(process_logits(logits, temperature, top_k, top_p), -1)
            tok = jax.random.categorical(sub, proc, axis=-1).astype(jnp.int32)
            s_lp = jnp.take_along_axis(proc, tok[:, None], axis=-1)[:, 0]
        r_lp = jnp.take_along_axis(raw, tok[:, None], axis=-1)[:, 0]
        live = ~done
        tok = jnp.where(live, tok, pad_id)
        toks = toks.at[:, i].set(tok)
        real = real.at[:, i].set(live)
        lp = lp.at[:, i].set(jnp.where(live, r_lp, 0.0))
        slp = slp.at[:, i].set(jnp.where(live, s_lp, 0.0))
        step = model(tok[:, None], mask_bt=live[:, None], cache=cache)
        done = done | (tok == eos_id)
        return i + 1, step.cache, step.logits[:, -1], toks, lp, slp, real, done, key

    def cond(carry):
        i, done = carry[0], carry[7]
        return (i < n) & ~jnp.all(done)

    init = (
        jnp.zeros((), jnp.int32),
        out.cache,
        out.logits[:, -1],
        jnp.full((b, n), pad_id, jnp.int32),
        jnp.zeros((b, n), jnp.float32),
        jnp.zeros((b, n), jnp.float32),
        jnp.zeros((b, n), bool),
        jnp.zeros((b,), bool),
        rng,
    )
    _, _, _, toks, lp, slp, mask, _, _ = jax.lax.while_loop(cond, body, init)
    return SampleOutput(toks, mask, lp, slp, jnp.sum(mask, axis=1).astype(jnp.int32))


def make_sampler(graphdef, *, max_new_tokens: int, eos_id: int, pad_id: int = 0, **knobs):
    """A jitted `(params, rest, prompt_bt, prompt_mask_bt, rng) -> SampleOutput`.

    `params`/`rest` are the split NNX states (`train.state.split_module`); the sampling knobs are
    closed over, so the function compiles once per prompt shape.
    """
    from flax import nnx

    @jax.jit
    def fn(params, rest, prompt_bt, prompt_mask_bt, rng):
        model = nnx.merge(graphdef, params, rest)
        return sample(
            model,
            prompt_bt,
            prompt_mask_bt,
            rng,
            max_new_tokens=max_new_tokens,
            eos_id=eos_id,
            pad_id=pad_id,
            **knobs,
        )

    return fn


def score_tokens(model, tokens_bt: jax.Array, mask_bt: jax.Array) -> jax.Array:
    """Teacher-forced log π(tokens[:, t] | tokens[:, :t]) aligned with `tokens_bt`, [B, T] fp32.

    Slot 0 (nothing to condition on) and padding get 0. Padding may sit anywhere (left-padded
    prompt, right-padded completion): positions count real tokens, as in the sampler.
    """
    out = model(tokens_bt[:, :-1], mask_bt=mask_bt[:, :-1])
    logp = jax.nn.log_softmax(out.logits.astype(jnp.float32), axis=-1)
    lp = jnp.take_along_axis(logp, tokens_bt[:, 1:, None], axis=-1)[..., 0]
    lp = jnp.where(mask_bt[:, 1:], lp, 0.0)
    return jnp.concatenate([jnp.zeros_like(lp[:, :1]), lp], axis=1)

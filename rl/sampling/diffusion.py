"""LLaDA semi-autoregressive low-confidence remasking sampler for masked-diffusion LMs
(LLaDA arXiv:2502.09992 Alg. 5; as used by SPG arXiv:2510.09541 §5, d1 and wd1).

The completion of G masked positions is decoded block by block (G / block_len blocks); each block
takes `steps / nblocks` steps, and step s commits k_s tokens, k = floor(B / spb) with the first
B mod spb steps one more (a static schedule). At each step the full bidirectional model scores the
prompt and all G positions (no cache); a token is proposed at every position by
argmax(logits / tau + Gumbel) (tau = 0: argmax; fp32 Gumbel noise from explicit keys), its
confidence is the untempered softmax probability of the proposal (`low_confidence`) or U(0,1)
(`random`), positions already committed or outside the current block get -inf, and the top-k_s
positions are committed for good. The whole loop is one `lax.fori_loop` under `jax.jit`.

Fixes relative to the reference (paper §9): the prompt's key-padding mask is applied, so left
padded batches do not attend to padding (bug 4); `suppress_eos` lowers EOS proposals' confidence
before the top-k, so it has an effect (LLaDA #137, bug 6), still letting EOS commit when nothing
else is left.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rl.likelihood import subs_logits

REMASKING = ("low_confidence", "random")


def unmask_schedule(gen_len: int, block_len: int, steps: int) -> np.ndarray:
    """Static per-step unmask counts [nblocks * steps_per_block] (sums to gen_len)."""
    if gen_len % block_len:
        raise ValueError(f"gen_len={gen_len} is not a multiple of block_len={block_len}")
    nblocks = gen_len // block_len
    spb = max(1, steps // nblocks)
    if spb > block_len:
        raise ValueError(f"{spb} steps per block exceed block_len={block_len}")
    per = np.full(spb, block_len // spb, np.int32)
    per[: block_len % spb] += 1
    return np.tile(per, nblocks)


def make_sampler(
    graphdef,
    *,
    gen_len: int,
    block_len: int,
    steps: int,
    mask_id: int,
    eos_id: int | None = None,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    suppress_eos: bool = False,
    return_steps: bool = False,
):
    """Builds the jitted sampler.

    Args:
      graphdef: NNX graph definition of a bidirectional Transformer (`causal=False`).
      gen_len, block_len, steps: G, B and the total number of denoising steps S.
      mask_id: the mask token.
      eos_id: EOS id (needed for `suppress_eos`).
      temperature: tau; 0 decodes greedily (deterministic).
      remasking: "low_confidence" or "random".
      suppress_eos: commit EOS proposals after every other proposal of the step.
      return_steps: also return the step at which each position was committed (int32 [B, G]).

    Returns:
      `sample(params, frozen, prompt_bp, prompt_mask_bp, rng) -> completion_bg` (int32 [B, G]),
      jitted; compiles once per (batch, prompt length).
    """
    if remasking not in REMASKING:
        raise ValueError(f"remasking {remasking!r} not in {REMASKING}")
    if suppress_eos and eos_id is None:
        raise ValueError("suppress_eos needs eos_id")
    sched = jnp.asarray(unmask_schedule(gen_len, block_len, steps))
    spb = int(sched.shape[0] // (gen_len // block_len))
    total = int(sched.shape[0])

    @jax.jit
    def sample(params, frozen, prompt_bp, prompt_mask_bp, rng):
        model = nnx.merge(graphdef, params, frozen)
        b, p = prompt_bp.shape
        key_mask = jnp.concatenate([prompt_mask_bp, jnp.ones((b, gen_len), bool)], axis=1)
        pos = jnp.arange(gen_len)

        def body(i, carry):
            x_bg, when_bg = carry
            blk = i // spb
            k = sched[i]
            step_key = jax.random.fold_in(rng, i)
            tokens = jnp.concatenate([prompt_bp, x_bg], axis=1)
            logits = model(tokens, mask_bt=key_mask).logits[:, p:].astype(jnp.float32)
            # Never propose the mask token itself (MDLM's SUBS parameterisation); the likelihood
            # (`rl.likelihood.completion_logps`) and the MDLM loss normalise the same way.
            logits = subs_logits(logits, mask_id)
            if temperature > 0:
                gumbel = jax.random.gumbel(step_key, logits.shape, jnp.float32)
                proposal = jnp.argmax(logits / temperature + gumbel, axis=-1)
            else:
                proposal = jnp.argmax(logits, axis=-1)
            if remasking == "low_confidence":
                probs = jax.nn.softmax(logits, axis=-1)
                conf = jnp.take_along_axis(probs, proposal[..., None], axis=-1)[..., 0]
            else:
                conf = jax.random.uniform(jax.random.fold_in(step_key, 1), (b, gen_len))
            if suppress_eos:
                conf = jnp.where(proposal == eos_id, conf - 2.0, conf)
            candidate = (x_bg == mask_id) & (pos[None, :] // block_len == blk)
            conf = jnp.where(candidate, conf, -jnp.inf)
            # Rank by confidence (ties: lower position first); commit the top k of each row.
            order = jnp.argsort(-conf, axis=-1, stable=True)
            rank = jnp.argsort(order, axis=-1, stable=True)
            commit = candidate & (rank < k)
            x_bg = jnp.where(commit, proposal.astype(x_bg.dtype), x_bg)
            return x_bg, jnp.where(commit, i, when_bg)

        x0 = jnp.full((b, gen_len), mask_id, jnp.int32)
        x, when = jax.lax.fori_loop(0, total, body, (x0, jnp.full((b, gen_len), -1, jnp.int32)))
        return (x, when) if return_steps else x

    return sample


@functools.partial(jax.jit, static_argnames=("mask_id",))
def count_masks(completion_bg: jax.Array, mask_id: int) -> jax.Array:
    """Number of mask tokens left per row (0 after a full decode)."""
    return jnp.sum(completion_bg == mask_id, axis=-1)

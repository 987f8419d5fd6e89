"""Backbone pretraining for the READ experiment: a bidirectional Transformer encoder trained as a
masked LM on the generated corpus of `data.glue` (spec §7.1), cached in the workdir.

Loss (BERT-style, all selected tokens replaced by [MASK]): mean over masked real, non-special
tokens of -log p(x_i | x_masked).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data import glue
from models.transformer import Transformer
from train.checkpoint import Checkpointer
from train.lm import build_transformer, token_logprobs
from train.loop import fit, restore_or
from train.metrics import MetricWriter
from train.optim import make_optimizer
from train.state import TrainState
from train.step import make_update_step


def mlm_mask(rng, tokens_bt, mask_bt, prob: float):
    """Positions to predict: real, non-special tokens, each with probability `prob` [B, T] bool."""
    content = mask_bt & (tokens_bt > glue.UNK)
    return content & (jax.random.uniform(rng, tokens_bt.shape) < prob)


def make_mlm_loss(graphdef, mask_prob: float):
    """Masked-LM loss in the trainer's `(params, frozen, batch, rng) -> (sum, denom, aux)` form."""

    def loss_fn(params, frozen, batch, rng):
        model = nnx.merge(graphdef, params, frozen)
        tokens, mask = batch["tokens"], batch["mask"]
        target = mlm_mask(rng, tokens, mask, mask_prob)
        out = model(jnp.where(target, glue.MASK, tokens), mask_bt=mask)
        w = target.astype(jnp.float32)
        lp = token_logprobs(out.logits, tokens)
        acc = jnp.sum((jnp.argmax(out.logits, -1) == tokens) * w) / jnp.maximum(jnp.sum(w), 1.0)
        return -jnp.sum(lp * w), jnp.sum(w), {"pretrain/masked_acc": acc}

    return loss_fn


def pretrain_backbone(config, workdir: str, writer: MetricWriter) -> tuple[Transformer, dict]:
    """Pretrains (or restores the cached) backbone.

    The run is a pure function of the config seed: batches are drawn from the step index, so an
    interrupted pretraining resumes to the same weights.

    Returns:
      (backbone, metrics) with the final MLM loss and masked-token accuracy on held-out text.
    """
    pc, vocab = config.pretrain, glue.Vocab()
    backbone = build_transformer(config.model, len(vocab), config.seed)
    graphdef, params, rest = nnx.split(backbone, nnx.Param, ...)
    corpus = glue.make_corpus(
        config.data.corpus_size, seed=config.seed, max_len=config.data.max_len
    )
    held = glue.make_corpus(256, seed=config.seed + 10_000, max_len=config.data.max_len)
    loss_fn = make_mlm_loss(graphdef, pc.mask_prob)
    tx = make_optimizer(pc.optim)
    state = TrainState.create(params, tx, jax.random.key(config.seed), frozen=rest)
    ckpt = Checkpointer(os.path.join(workdir, "pretrain"), keep=1)
    state, _, resumed = restore_or(ckpt, state)
    if resumed and int(state.step) >= pc.steps:
        print(f"pretrain: using the cached backbone in {ckpt.directory}")
    n, bs = len(corpus["tokens"]), pc.batch_size

    def batch_fn(step):
        epoch, i = divmod(step * bs, n)
        perm = np.random.default_rng([config.seed, epoch]).permutation(n)
        idx = perm[np.arange(i, i + bs) % n]
        return {k: v[idx] for k, v in corpus.items()}

    @jax.jit
    def held_out(params, frozen):
        s, d, aux = loss_fn(params, frozen, held, jax.random.key(1))
        return {"pretrain/heldout_loss": s / d, "pretrain/heldout_acc": aux["pretrain/masked_acc"]}

    state, _ = fit(
        state=state,
        update_fn=make_update_step(loss_fn, tx),
        batch_fn=batch_fn,
        num_steps=pc.steps,
        writer=writer,
        ckpt=ckpt,
        ckpt_every=config.ckpt_every,
        log_every=config.log_every,
        desc="pretrain",
        eval_fn=lambda s: held_out(s.params, s.frozen),
    )
    ckpt.close()
    metrics = {k: float(v) for k, v in held_out(state.params, state.frozen).items()}
    return nnx.merge(graphdef, state.params, state.frozen), metrics

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
from train.loop import fit
from train.metrics import MetricWriter
from train.optim import make_optimizer
from train.runtime import Runtime
from train.state import TrainState, split_module


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


def _setup(config):
    """(graphdef, init() -> TrainState, MLM loss, optimizer) of the backbone pretraining."""
    pc, vocab = config.pretrain, glue.Vocab()

    def build():
        return build_transformer(config.model, len(vocab), config.seed)

    graphdef, _, _ = split_module(nnx.eval_shape(build))
    tx = make_optimizer(pc.optim)

    def init():
        _, params, rest = split_module(build())
        return TrainState.create(params, tx, jax.random.key(config.seed), frozen=rest)

    return graphdef, init, make_mlm_loss(graphdef, pc.mask_prob), tx


def dry_run_parts(config):
    """`--dry_run`: the backbone's MLM update (the largest model READ trains)."""
    from train.dry_run import DryRunParts

    _, init, loss_fn, tx = _setup(config)
    shape = (config.pretrain.batch_size, config.data.max_len)
    batch = {"tokens": np.zeros(shape, np.int32), "mask": np.ones(shape, bool)}
    return DryRunParts(init, loss_fn, tx, batch, what="MLM pretraining update of the backbone")


def pretrain_backbone(
    config, workdir: str, writer: MetricWriter, runtime: Runtime | None = None
) -> tuple[Transformer, dict]:
    """Pretrains (or restores the cached) backbone on the run's mesh.

    The run is a pure function of the config seed: batches are drawn from the step index, so an
    interrupted pretraining resumes to the same weights.

    Args:
      runtime: the run's Runtime (default: a new one from `config.mesh_shape`).

    Returns:
      (backbone, metrics): the backbone's parameters sharded like the state; the final MLM loss
      and masked-token accuracy on held-out text.
    """
    pc = config.pretrain
    rt = runtime or Runtime(config)
    graphdef, init, loss_fn, tx = _setup(config)
    corpus = glue.make_corpus(
        config.data.corpus_size, seed=config.seed, max_len=config.data.max_len
    )
    held = rt.put(glue.make_corpus(256, seed=config.seed + 10_000, max_len=config.data.max_len))
    state = rt.create_state(init)
    ckpt = Checkpointer(os.path.join(workdir, "pretrain"), keep=1)
    state, extra, resumed = rt.restore(ckpt, state)
    if resumed and int(extra.get("loop_step", state.step)) >= pc.steps:
        print(f"pretrain: using the cached backbone in {ckpt.directory}")
    n, bs = len(corpus["tokens"]), pc.batch_size

    def collect(st, step):
        del st
        epoch, i = divmod(step * bs, n)
        perm = np.random.default_rng([config.seed, epoch]).permutation(n)
        idx = perm[np.arange(i, i + bs) % n]
        return rt.put({k: v[idx] for k, v in corpus.items()}), {}

    @rt.jit
    def held_out(params, frozen, held):
        s, d, aux = loss_fn(params, frozen, held, jax.random.key(1))
        return {"pretrain/heldout_loss": s / d, "pretrain/heldout_acc": aux["pretrain/masked_acc"]}

    state, _ = fit(
        state,
        collect,
        1,
        update_fn=rt.update_step(loss_fn, tx),
        num_steps=pc.steps,
        writer=writer,
        ckpt=ckpt,
        resume=extra if resumed else None,
        ckpt_every=config.ckpt_every,
        log_every=config.log_every,
        desc="pretrain",
        eval_fn=lambda s: held_out(s.params, s.frozen, held),
    )
    ckpt.close()
    metrics = {k: float(v) for k, v in held_out(state.params, state.frozen, held).items()}
    return nnx.merge(graphdef, state.params, state.frozen), metrics

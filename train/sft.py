"""Supervised training of a small LM on a generated task (`configs/sft.py`), and the SFT stage
that RL runners reuse as their warm start.

The objective is `ar` (causal next-token loss) or `mdlm` (masked-diffusion ELBO, bidirectional);
see train/lm.py. Batches are indexed by step (grain MapDataset), so resuming is exact.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from flax import nnx

from train.checkpoint import Checkpointer
from train.lm import build_transformer, make_ar_loss, make_mdlm_loss
from train.loop import fit, restore_or
from train.metrics import MetricWriter
from train.optim import make_optimizer
from train.plot import plot_metrics
from train.state import TrainState, split_module
from train.step import make_update_step


def make_task_and_tokenizer(config):
    """The task named by `config.task` (with `config.task_kwargs`) and a character tokenizer."""
    from data import tasks
    from data.tokenizer import CharTokenizer

    task = tasks.get(config.task, **dict(config.get("task_kwargs", {}) or {}))
    return task, CharTokenizer()


def encode_split(task, tokenizer, split: str, num: int, seed: int, max_len: int, style: str):
    from data.pipeline import encode_sft_example

    examples = task.generate(split, num, seed)
    return examples, [encode_sft_example(ex, task, tokenizer, max_len, style) for ex in examples]


def stack_records(records) -> dict[str, np.ndarray]:
    return {k: np.stack([r[k] for r in records]) for k in records[0]}


@dataclasses.dataclass
class SFTResult:
    model: nnx.Module
    metrics: dict[str, float]
    steps: int


def sft_stage(
    config,
    workdir: str,
    *,
    task,
    tokenizer,
    writer: MetricWriter,
    objective: str,
    prefix: str = "sft",
) -> SFTResult:
    """Trains (or resumes, or reloads when finished) the SFT model in `workdir`.

    Args:
      config: ConfigDict with `model`, `optim`, `sft` (steps, batch_size, num_train, num_test,
        max_len, style), `seed`, `log_every`, `ckpt_every`, `keep_checkpoints`.
      workdir: where the stage keeps its checkpoints (`workdir/ckpt`).
      task, tokenizer: from `make_task_and_tokenizer`.
      writer: metric writer (metrics are logged under `{prefix}/...` as well as `train/...`).
      objective: "ar" or "mdlm".

    Returns:
      SFTResult with the trained model (merged NNX module) and final eval metrics.
    """
    sc = config.sft
    causal = objective == "ar"
    _, train_recs = encode_split(
        task, tokenizer, "train", sc.num_train, config.seed, sc.max_len, sc.style
    )
    _, test_recs = encode_split(
        task, tokenizer, "test", sc.num_test, config.seed, sc.max_len, sc.style
    )
    from data.pipeline import make_batches

    batches = make_batches(train_recs, sc.batch_size, config.seed)
    test_batch = stack_records(test_recs)

    model = build_transformer(
        config.model,
        tokenizer.vocab_size,
        config.seed,
        causal=causal,
        max_len=max(config.model.max_len, sc.max_len),
    )
    graphdef, params, rest = split_module(model)
    optim = dict(config.optim)
    optim["total_steps"] = sc.steps
    tx = make_optimizer(optim)
    state = TrainState.create(
        {"policy": params}, tx, jax.random.key(config.seed), frozen={"policy": rest}
    )
    if objective == "ar":
        loss_fn = make_ar_loss(graphdef)
    elif objective == "mdlm":
        loss_fn = make_mdlm_loss(graphdef, tokenizer.mask_id, tokenizer.eos_id)
    else:
        raise ValueError(f"unknown SFT objective {objective!r}; expected 'ar' or 'mdlm'")
    update = make_update_step(loss_fn, tx, num_microbatches=sc.get("microbatches", 1))
    ckpt = Checkpointer(os.path.join(workdir, "ckpt"), keep=config.keep_checkpoints)
    state, _, _ = restore_or(ckpt, state)

    eval_loss = jax.jit(loss_fn)
    acc_key = "train/token_acc" if objective == "ar" else "train/masked_acc"

    def eval_fn(st):
        # Fixed key: the held-out MDLM loss uses the same masks at every evaluation.
        loss_sum, denom, aux = eval_loss(st.params, st.frozen, test_batch, jax.random.key(1234))
        return {f"{prefix}/test_loss": loss_sum / denom, f"{prefix}/test_acc": aux[acc_key]}

    def batch_fn(step):
        return batches[step]

    state, last = fit(
        state=state,
        update_fn=update,
        batch_fn=batch_fn,
        num_steps=sc.steps,
        writer=writer,
        ckpt=ckpt,
        ckpt_every=config.ckpt_every,
        log_every=config.log_every,
        eval_fn=eval_fn,
        eval_every=config.get("eval_every", 0),
        extra={"stage": prefix},
        desc=prefix,
    )
    ckpt.close()
    trained = nnx.merge(graphdef, state.params["policy"], state.frozen["policy"])
    metrics = {k: v for k, v in last.items() if k.startswith(f"{prefix}/")}
    metrics["train/loss"] = last.get("train/loss", float("nan"))
    metrics["skipped"] = int(jax.device_get(state.skipped))
    return SFTResult(trained, metrics, sc.steps)


def run(config, workdir: str) -> dict[str, float]:
    """Runner for `configs/sft.py`."""
    task, tokenizer = make_task_and_tokenizer(config)
    writer = MetricWriter(workdir)
    res = sft_stage(
        config, workdir, task=task, tokenizer=tokenizer, writer=writer, objective=config.objective
    )
    writer.close()
    png = plot_metrics(
        writer.jsonl_path,
        ["train/loss", "sft/test_loss", "sft/test_acc", "train/grad_norm"],
        os.path.join(workdir, "plot.png"),
        title=f"SFT {config.task} ({config.objective})",
    )
    m = res.metrics
    print("\n" + "=" * 64)
    print(f"SFT on {config.task} ({config.objective}), {res.steps} steps")
    print(f"  final train loss      {m['train/loss']:.4f}")
    print(f"  held-out loss         {m.get('sft/test_loss', float('nan')):.4f}")
    print(f"  held-out token acc    {m.get('sft/test_acc', float('nan')):.4f}")
    print(f"  skipped updates       {m['skipped']}")
    print(f"  metrics     {writer.jsonl_path}")
    print(f"  tensorboard {writer.tb_dir}")
    print(f"  checkpoint  {os.path.join(workdir, 'ckpt')}")
    print(f"  plot        {png}")
    print("=" * 64)
    return m

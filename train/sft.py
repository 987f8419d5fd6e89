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

from models.errors import UserError
from train.checkpoint import Checkpointer
from train.lm import build_transformer, make_ar_loss, make_mdlm_loss
from train.loop import fit
from train.metrics import MetricWriter
from train.optim import make_optimizer
from train.runtime import Runtime, finish
from train.state import TrainState, split_module


def make_task_and_tokenizer(config):
    """The task named by `config.task` (with `config.task_kwargs`) and a character tokenizer.

    With `config.data_source == "tfds"` (the default) a generated task's `generate` reads its
    examples from array_record files through tfds + grain (`data.source.SourcedTask`); the
    examples are the same as in memory ("memory").
    """
    from data import tasks
    from data.source import SourcedTask
    from data.tokenizer import CharTokenizer

    kwargs = dict(config.get("task_kwargs", {}) or {})
    task = tasks.get(config.task, **kwargs)
    mode = config.get("data_source", "memory")
    if mode not in ("tfds", "memory"):
        raise UserError(f"config.data_source must be 'tfds' or 'memory', got {mode!r}")
    if mode == "tfds" and (getattr(task, "generated", False) or hasattr(task, "load")):
        task = SourcedTask(task, config.task, kwargs)
    return task, CharTokenizer()


def encode_split(task, tokenizer, split: str, num: int, seed: int, max_len: int, style: str):
    """(examples, encoded records); for a file-backed source the records are a lazy
    `grain.MapDataset` (encoded as read), so a large training split never sits in memory."""
    from data.pipeline import encode_sft_example

    def encode(ex):
        return encode_sft_example(ex, task, tokenizer, max_len, style)

    if hasattr(task, "source"):
        ds = task.source(split, num, seed)
        return ds, ds.map(encode)
    examples = task.generate(split, num, seed)
    return examples, [encode(ex) for ex in examples]


def stack_records(records) -> dict[str, np.ndarray]:
    return {k: np.stack([r[k] for r in records]) for k in records[0]}


@dataclasses.dataclass
class SFTResult:
    model: nnx.Module
    metrics: dict[str, float]
    steps: int


def make_lm_init(config, vocab_size: int, tx, *, causal: bool, max_len: int, seed: int):
    """The policy LM's graphdef and `init() -> TrainState` for `Runtime.create_state`.

    The graphdef comes from an abstract model (`nnx.eval_shape`), so nothing is allocated here.
    """

    def build():
        return build_transformer(config.model, vocab_size, seed, causal=causal, max_len=max_len)

    graphdef, _, _ = split_module(nnx.eval_shape(build))

    def init():
        _, params, rest = split_module(build())
        frozen = {"policy": rest}
        return TrainState.create({"policy": params}, tx, jax.random.key(seed), frozen=frozen)

    return graphdef, init


def make_lm_loss(objective: str, graphdef, tokenizer_or_ids):
    """The `ar` or `mdlm` loss; `tokenizer_or_ids` gives `mask_id` and `eos_id` for mdlm."""
    if objective == "ar":
        return make_ar_loss(graphdef)
    if objective == "mdlm":
        t = tokenizer_or_ids
        return make_mdlm_loss(graphdef, t.mask_id, t.eos_id)
    raise ValueError(f"unknown SFT objective {objective!r}; expected 'ar' or 'mdlm'")


def sft_stage(
    config,
    workdir: str,
    *,
    task,
    tokenizer,
    writer: MetricWriter,
    objective: str,
    prefix: str = "sft",
    runtime: Runtime | None = None,
) -> SFTResult:
    """Trains (or resumes, or reloads when finished) the SFT model in `workdir`.

    Args:
      config: ConfigDict with `model`, `optim`, `sft` (steps, batch_size, num_train, num_test,
        max_len, style, microbatches), `seed`, `log_every`, `ckpt_every`, `keep_checkpoints`,
        `mesh_shape`.
      workdir: where the stage keeps its checkpoints (`workdir/ckpt`).
      task, tokenizer: from `make_task_and_tokenizer`.
      writer: metric writer (metrics are logged under `{prefix}/...` as well as `train/...`).
      objective: "ar" or "mdlm".
      runtime: the run's Runtime (default: a new one from `config.mesh_shape`).

    Returns:
      SFTResult with the trained model (merged NNX module, sharded like the state) and final
      eval metrics.
    """
    sc = config.sft
    rt = runtime or Runtime(config)
    _, train_recs = encode_split(
        task, tokenizer, "train", sc.num_train, config.seed, sc.max_len, sc.style
    )
    _, test_recs = encode_split(
        task, tokenizer, "test", sc.num_test, config.seed, sc.max_len, sc.style
    )
    test_recs = [test_recs[i] for i in range(len(test_recs))]  # one evaluation batch
    from data.pipeline import make_batches

    batches = make_batches(train_recs, sc.batch_size, config.seed)
    test_batch = rt.put(stack_records(test_recs))

    tx = make_optimizer({**dict(config.optim), "total_steps": sc.steps})
    graphdef, init = make_lm_init(
        config,
        tokenizer.vocab_size,
        tx,
        causal=objective == "ar",
        max_len=max(config.model.max_len, sc.max_len),
        seed=config.seed,
    )
    loss_fn = make_lm_loss(objective, graphdef, tokenizer)
    state = rt.create_state(init)
    ckpt = Checkpointer(os.path.join(workdir, "ckpt"), keep=config.keep_checkpoints)
    layout = {"scan_layers": bool(config.model.get("scan_layers", False))}
    state, extra, resumed = rt.restore(ckpt, state, expect=layout)
    update = rt.update_step(loss_fn, tx, microbatches=sc.get("microbatches", 1))

    eval_loss = rt.jit(loss_fn)
    acc_key = "train/token_acc" if objective == "ar" else "train/masked_acc"

    def eval_fn(st):
        # Fixed key: the held-out MDLM loss uses the same masks at every evaluation.
        loss_sum, denom, aux = eval_loss(st.params, st.frozen, test_batch, jax.random.key(1234))
        return {f"{prefix}/test_loss": loss_sum / denom, f"{prefix}/test_acc": aux[acc_key]}

    def collect(st, step):
        del st
        return rt.put(batches[step]), {}

    state, last = fit(
        state,
        collect,
        1,
        update_fn=update,
        num_steps=sc.steps,
        writer=writer,
        ckpt=ckpt,
        resume=extra if resumed else None,
        ckpt_every=config.ckpt_every,
        log_every=config.log_every,
        eval_fn=eval_fn,
        eval_every=config.get("eval_every", 0),
        extra={"stage": prefix, **layout},
        desc=prefix,
    )
    ckpt.close()
    trained = nnx.merge(graphdef, state.params["policy"], state.frozen["policy"])
    metrics = {k: v for k, v in last.items() if k.startswith(f"{prefix}/")}
    metrics["train/loss"] = last.get("train/loss", float("nan"))
    metrics["skipped"] = int(jax.device_get(state.skipped))
    return SFTResult(trained, metrics, sc.steps)


def run(config, workdir: str) -> dict[str, float]:
    """Runner for `configs/sft.py`: data, model and loss (`sft_stage`), runtime, loop, report."""
    task, tokenizer = make_task_and_tokenizer(config)
    rt = Runtime(config)
    writer = rt.writer(workdir)
    res = sft_stage(
        config,
        workdir,
        task=task,
        tokenizer=tokenizer,
        writer=writer,
        objective=config.objective,
        runtime=rt,
    )
    writer.close()
    m = res.metrics
    result = {
        "train/loss": m["train/loss"],
        "sft/test_loss": m.get("sft/test_loss", float("nan")),
        "sft/test_acc": m.get("sft/test_acc", float("nan")),
        "skipped": m["skipped"],
    }
    return finish(
        workdir,
        result,
        metrics_path=writer.jsonl_path,
        plot_keys=["train/loss", "sft/test_loss", "sft/test_acc", "train/grad_norm"],
        title=f"SFT on {config.task} ({config.objective}), {res.steps} steps, "
        f"mesh {tuple(rt.mesh.shape.values())}",
        lines=[
            ("metrics", writer.jsonl_path),
            ("tensorboard", writer.tb_dir),
            ("checkpoint", os.path.join(workdir, "ckpt")),
        ],
    )

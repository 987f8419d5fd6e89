"""Adapting the frozen backbone to one task with one method (READ, arXiv:2305.15348, and the
baselines of `models.peft`): the loss, the functional model split, evaluation and the stage loop.

Two ways to run a method:
- online: the whole `AdaptedModel` is split into trainable / frozen states by the method's
  filter; every step runs the backbone (for READ/ladder/head under stop_gradient).
- cached (READ, ladder, head with `cache_states`): the backbone states of every example are
  computed once per dataset (`models.read.cache_states`), and the step only touches the side
  network and the task head; the backbone is not even an argument of the step.

Loss: cross-entropy (classification) or squared error (regression, the 0-5 score), summed over
the batch with denominator = batch size.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data import glue
from models.peft import AdaptedModel, split_trainable
from models.read import cache_states
from train.checkpoint import Checkpointer
from train.loop import fit
from train.metrics import MetricWriter
from train.optim import make_optimizer
from train.runtime import Runtime
from train.state import TrainState


def task_loss(out_bc: jax.Array, label_b: jax.Array, n_classes: int):
    """(loss_sum, denom, aux) of a task head's outputs [B, C] (C = 1 for regression)."""
    if n_classes == 0:
        err = out_bc[:, 0] - label_b.astype(jnp.float32)
        return jnp.sum(err**2), jnp.asarray(label_b.shape[0], jnp.float32), {}
    logp = jax.nn.log_softmax(out_bc, -1)
    nll = -jnp.take_along_axis(logp, label_b[:, None].astype(jnp.int32), -1)[:, 0]
    acc = jnp.mean(jnp.argmax(out_bc, -1) == label_b)
    return jnp.sum(nll), jnp.asarray(label_b.shape[0], jnp.float32), {"train/acc": acc}


class Split:
    """The functional form of an `AdaptedModel`: `apply(params, frozen, batch) -> out [B, C]`.

    In cached mode the params are {"side": ..., "head": ...} and a batch carries `hidden`
    [B, N+1, T, D] and `final` [B, T, D] instead of tokens.
    """

    def __init__(self, model: AdaptedModel, cached: bool):
        self.model, self.cached = model, cached
        if cached:
            if not model.uses_states:
                raise ValueError(f"method {model.method!r} cannot run on cached backbone states")
            parts = {"head": model.head}
            if model.method != "head":
                parts["side"] = model.side
            self.graphdefs = {k: nnx.split(m)[0] for k, m in parts.items()}
            self.params = {k: nnx.split(m)[1] for k, m in parts.items()}
            self.frozen = {}
        else:
            self.graphdef, self.params, self.frozen = split_trainable(model)
        names = ("hidden", "final", "mask", "label") if cached else ("tokens", "mask", "label")
        self.batch_keys = names

    def apply(self, params, frozen, batch):
        if not self.cached:
            model = nnx.merge(self.graphdef, params, frozen)
            return model(batch["tokens"], batch["mask"])
        hidden = jnp.moveaxis(batch["hidden"], 1, 0)
        final = batch["final"]
        if "side" in self.graphdefs:
            final = nnx.merge(self.graphdefs["side"], params["side"])(hidden, final)
        return nnx.merge(self.graphdefs["head"], params["head"])(final, batch["mask"])

    def write_back(self, params):
        """Copies trained params into `self.model`."""
        if self.cached:
            nnx.update(self.model.head, params["head"])
            if "side" in params:
                nnx.update(self.model.side, params["side"])
        else:
            nnx.update(self.model, params)

    def loss_fn(self, n_classes: int):
        def loss_fn(params, frozen, batch, rng):
            del rng
            return task_loss(self.apply(params, frozen, batch), batch["label"], n_classes)

        return loss_fn


def make_predict(split: Split, n_classes: int):
    @jax.jit
    def predict(params, frozen, batch):
        out = split.apply(params, frozen, batch)
        return out[:, 0] if n_classes == 0 else jnp.argmax(out, -1)

    return predict


def evaluate(predict, params, frozen, data: dict, spec: glue.TaskSpec, batch_size: int) -> float:
    """Task score (points) over `data`, in fixed-size (padded) batches so it compiles once."""
    n = len(data["label"])
    preds = []
    for i in range(0, n, batch_size):
        idx = np.arange(i, i + batch_size) % n  # wrap the last batch; extra rows are dropped
        preds.append(np.asarray(predict(params, frozen, {k: v[idx] for k, v in data.items()})))
    return glue.score(spec.metric, np.concatenate(preds)[:n], data["label"])


def compiled_cost(compiled) -> dict:
    """Memory and FLOPs of a compiled step (XLA's static analysis; a proxy on CPU).

    peak_bytes = argument + output - alias + temp: every live input (trainable params, frozen
    backbone, optimizer state, batch), outputs that do not reuse a donated input buffer, and
    XLA's scratch (activations kept for the backward pass, gradients, optimizer temporaries).
    """
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    arg, out = mem.argument_size_in_bytes, mem.output_size_in_bytes
    alias, temp = mem.alias_size_in_bytes, mem.temp_size_in_bytes
    return {
        "peak_bytes": int(arg + out - alias + temp),
        "argument_bytes": int(arg),
        "output_bytes": int(out),
        "alias_bytes": int(alias),
        "temp_bytes": int(temp),
        "flops": float(cost.get("flops", float("nan"))),
    }


def batch_iter(data: dict, batch_size: int, seed: int, keys=None):
    """`step -> batch` of `keys` (default: all), a pure function of the step."""
    n = len(data["label"])
    data = {k: v for k, v in data.items() if keys is None or k in keys}

    def batch_fn(step):
        epoch, i = divmod(step * batch_size, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        idx = perm[np.arange(i, i + batch_size) % n]
        return {k: v[idx] for k, v in data.items()}

    return batch_fn


def with_states(backbone, data: dict, batch_size: int) -> dict:
    """`data` plus the frozen backbone's cached states (hidden [n, N+1, T, D], final [n, T, D])."""
    return {**data, **cache_states(backbone, data["tokens"], data["mask"], batch_size=batch_size)}


def build(config, backbone, method: str, spec: glue.TaskSpec, cached: bool):
    """(model, split, tx) for one method on a (copied) backbone."""
    hp = dict(config.peft)
    hp["lora_targets"] = tuple(hp["lora_targets"].split("+"))
    # A copy with its own buffers: update steps donate their state, and `nnx.clone` would
    # share the backbone's arrays with every method.
    graphdef, weights = nnx.split(backbone)
    model = AdaptedModel(
        nnx.merge(graphdef, jax.tree.map(jnp.copy, weights)),
        method,
        max(spec.n_classes, 1),
        hp,
        rngs=nnx.Rngs(params=config.seed + 1),
    )
    split = Split(model, cached=cached and model.uses_states)
    ocfg = dict(config.finetune.optim)
    ocfg["lr"] = config.finetune.lr[method]
    return model, split, make_optimizer(ocfg)


def train_method(
    config,
    workdir: str,
    backbone,
    method: str,
    data: dict,
    writer: MetricWriter,
    prefix_step: int = 0,
    runtime: Runtime | None = None,
) -> dict[str, float]:
    """Adapts `backbone` with `method`; returns test score, trainable params and step time.

    Args:
      data: {"spec", "train", "valid", "test"} (+ "*_states" splits when cached states exist).
      runtime: the run's Runtime (default: a new one from `config.mesh_shape`).
    """
    fc, spec = config.finetune, data["spec"]
    rt = runtime or Runtime(config)
    model, split, tx = build(config, backbone, method, spec, fc.cache_states)
    suffix = "_states" if split.cached else ""
    train, valid, test = (data[k + suffix] for k in ("train", "valid", "test"))
    loss_fn = split.loss_fn(spec.n_classes)
    # The adapted model is assembled around the (already sharded) pretrained backbone; only the
    # new adapter and head leaves move onto the mesh.
    state = rt.shard_state(
        TrainState.create(split.params, tx, jax.random.key(config.seed), frozen=split.frozen)
    )
    ckpt = Checkpointer(
        os.path.join(workdir, "finetune", spec.name, method), keep=config.keep_checkpoints
    )
    state, extra, resumed = rt.restore(ckpt, state)
    host_batch = batch_iter(train, fc.batch_size, config.seed, split.batch_keys)

    def batch_fn(step):
        return rt.put(host_batch(step))

    # Compiled ahead of time once: the same executable trains and reports memory and FLOPs.
    with jax.set_mesh(rt.mesh):
        update = rt.update_step(loss_fn, tx).jitted.lower(state, batch_fn(0)).compile()
    predict = make_predict(split, spec.n_classes)
    ev = lambda s, d: evaluate(predict, s.params, s.frozen, d, spec, fc.eval_batch_size)
    # Step time: a few steps on a throwaway copy (the real state is donated).
    probe = jax.tree.map(jnp.copy, state)
    probe, _ = update(probe, batch_fn(0))
    jax.block_until_ready(probe)
    t0, n_probe = time.perf_counter(), 5
    for i in range(n_probe):
        probe, _ = update(probe, batch_fn(i))
    jax.block_until_ready(probe)
    step_ms = 1e3 * (time.perf_counter() - t0) / n_probe
    del probe

    state, _ = fit(
        state,
        lambda st, step: (batch_fn(step), {}),
        1,
        update_fn=update,
        num_steps=fc.steps,
        writer=writer,
        ckpt=ckpt,
        resume=extra if resumed else None,
        ckpt_every=config.ckpt_every,
        log_every=config.log_every,
        eval_fn=lambda s: {f"{method}/valid_score": ev(s, valid)},
        desc=method,
        prefix_step=prefix_step,
    )
    ckpt.close()
    split.write_back(state.params)
    n_train = int(sum(x.size for x in jax.tree.leaves(state.params)))
    return {
        "test_score": ev(state, test),
        "valid_score": ev(state, valid),
        "trainable_params": n_train,
        "step_ms": step_ms,
        **compiled_cost(update),
        "skipped": int(state.skipped),
        "cached_states": bool(split.cached),
    }


def load_task(config, backbone) -> dict:
    """Generated train/valid/test splits of `config.data.task` (+ cached states if asked)."""
    dc, seed = config.data, config.seed
    spec = glue.TASK_SPECS[dc.task]
    out = {"spec": spec}
    for k, n, off in (("train", dc.n_train, 1), ("valid", dc.n_valid, 2), ("test", dc.n_test, 3)):
        out[k] = glue.make_task(dc.task, n, seed=seed * 100 + off, max_len=dc.max_len)
        if config.finetune.cache_states:
            out[k + "_states"] = with_states(backbone, out[k], config.finetune.eval_batch_size)
    return out

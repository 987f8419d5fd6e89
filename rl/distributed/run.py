"""Runner for `configs/llamarl.py`: SFT warm start, then LlamaRL's executor loop with AIPO.

LlamaRL (arXiv:2505.24034). data (the generated arithmetic task) -> model (the SFT-warmed policy,
the SFT stage cached in `rl.sft_dir` or `workdir/sft`, trained on the trainer's sub-mesh) ->
loss (`rl.objective`, AIPO by default) -> executors (trainer and generator on their own
sub-meshes, `rl/distributed/executors.py`) -> the controller (`rl/distributed/controller.py`:
generator thread, trajectory queue, staleness gate, weight channel) -> `train.runtime.finish`.

The two-process mode (trainer and generator in their own processes) is
`rl/distributed/multiprocess.py`; it starts from the `policy.npz` this runner exports after SFT.

Held-out evaluation (`rl/ar_eval.py`, as in `rl/run_ar.py`): the warm start (cached next to the
SFT checkpoint) and the final policy are scored on `rl.num_eval` held-out prompts (greedy
accuracy, sampled pass@1, the answer log-likelihood bound) with the generator's sampler and the
same keys, and the change is reported with its paired-bootstrap 95% interval (the default uses
512 prompts, `:tiny` 4; `rl.num_eval` must be at least 1). With `rl.control = lr0` the same
runner gives the paired control.

Checkpoints hold the trainer state and the training frontier (see `run`). Not yet: a final
checkpoint of a finished run (a finished run reruns).
"""

from __future__ import annotations

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np

from models.errors import UserError
from rl import ar_eval, objectives
from rl.distributed.controller import run_controller
from rl.distributed.executors import GeneratorExecutor, TrainerExecutor, role_devices
from rl.distributed.weight_sync import WeightChannel
from rl.run_ar import RUNNER_FIELDS, rl_optimizer
from train.checkpoint import Checkpointer, CheckpointError
from train.loop import writer_offset
from train.metrics import MetricWriter, rewind
from train.runtime import NullWriter, Runtime, finish, is_main_process
from train.sft import make_task_and_tokenizer, sft_stage
from train.state import split_module

PLOT_KEYS = ["rl/reward_mean", "train/loss", "aipo/is_mean", "aipo/mismatch_kl_k3", "time/step"]


def build(config, workdir: str, writer):
    """(trainer, generator, weight channel, sft steps, layout) for `config` (no RL step run)."""
    rc, lc = config.rl, config.llamarl
    if tuple(config.get("mesh_shape", (-1, 1, 1))) != (-1, 1, 1):
        raise UserError(
            f"mesh_shape={tuple(config.mesh_shape)} is not read by llamarl: the trainer and "
            "generator sub-meshes come from llamarl.layout, llamarl.trainer_devices and "
            "llamarl.trainer_mesh (set those instead)"
        )
    task, tokenizer = make_task_and_tokenizer(config)
    t_dev, g_dev, layout = role_devices(lc.layout, lc.trainer_devices)
    tx = rl_optimizer(config)
    trainer_rt = Runtime({"mesh_shape": tuple(lc.trainer_mesh)}, t_dev)
    sft_dir = rc.sft_dir or os.path.join(workdir, "sft")
    sft = sft_stage(
        config,
        sft_dir,
        task=task,
        tokenizer=tokenizer,
        writer=writer,
        objective="ar",
        runtime=trainer_rt,
    )
    graphdef, params, rest = split_module(sft.model)
    export_policy(sft_dir, params)
    objective = objectives.build(rc, graphdef, runner_fields=RUNNER_FIELDS)
    if "old" in objective.snapshots:
        # μ ships with every rollout: a recomputed "old" policy would anchor the ratio on the
        # trainer's own weights and hide the staleness AIPO corrects (spec §9.4).
        raise objectives.ConfigError(
            f"objective {rc.objective!r} needs an 'old' snapshot; llamarl uses the generator's μ"
        )
    trainer = TrainerExecutor(
        lc.trainer_mesh, t_dev, objective.loss_fn, tx, microbatches=rc.microbatches
    )
    rl_seed = config.seed if rc.get("seed", -1) < 0 else rc.seed
    frozen = objectives.initial_frozen(objective, params, {})
    trainer.init_state(params, rest, jax.random.key(rl_seed + 5), frozen or None)
    generator = GeneratorExecutor.from_config(config, g_dev, graphdef, rest, task, tokenizer)
    cast = None if generator.param_dtype == jnp.float32 else generator.param_dtype
    weights = WeightChannel(
        generator.param_shardings(trainer.policy_params()),
        keep=lc.max_staleness + 1,
        timeout_s=lc.timeout_s,
        bucket_bytes=int(lc.bucket_mb * (1 << 20)),
        cast_dtype=cast,
        checksum=lc.checksum,
    )
    return trainer, generator, weights, sft.steps, layout


def export_policy(sft_dir: str, params) -> None:
    """Writes the SFT policy's leaves to `sft_dir/policy.npz` once (process 0): the warm start of
    the two-process mode (`rl/distributed/multiprocess.py`), which reads it without orbax."""
    path = os.path.join(sft_dir, "policy.npz")
    if os.path.exists(path) or not is_main_process():
        return
    leaves = [np.asarray(x) for x in jax.device_get(jax.tree.leaves(params))]
    with open(path + ".tmp", "wb") as f:
        np.savez(f, **{f"leaf_{i}": x for i, x in enumerate(leaves)})
    os.replace(path + ".tmp", path)


def frontier_path(workdir: str, version: int) -> str:
    return os.path.join(workdir, "frontier", f"{version}.pkl")


def save_frontier(workdir: str, version: int, frontier: dict) -> None:
    """Writes the frontier next to the state checkpoint of the same version (atomic rename)."""
    path = frontier_path(workdir, version)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        pickle.dump(frontier, f)
    os.replace(path + ".tmp", path)


def load_frontier(workdir: str, version: int) -> dict:
    path = frontier_path(workdir, version)
    if not os.path.exists(path):
        raise CheckpointError(
            f"checkpoint {version} has no training frontier {path}; move the workdir away"
        )
    with open(path, "rb") as f:
        return pickle.load(f)


def run(config, workdir: str) -> dict[str, float]:
    """Runner for configs/llamarl.py; returns the final metrics.

    A workdir with a checkpoint resumes from it: the trainer state (orbax, `workdir/ckpt`) and
    the training frontier of the same version (`workdir/frontier/<v>.pkl`: queued rollouts, the
    generator's weight sets, the next sequence number), so a killed run ends with the numbers of
    an uninterrupted one (deterministic mode).
    """
    rc, lc = config.rl, config.llamarl
    writer = MetricWriter(workdir) if is_main_process() else NullWriter(workdir)
    trainer, generator, weights, sft_steps, layout = build(config, workdir, writer)
    # The warm start's held-out scores: the trainer holds the SFT weights until a checkpoint
    # restores (cached next to the SFT checkpoint, so a resumed run reads them back).
    texts: list[str] = []
    sft_dir = rc.sft_dir or os.path.join(workdir, "sft")
    view = generator.view(trainer.policy_params())
    before = ar_eval.cached_evaluate(generator.rollouts, view, sft_dir, config, texts)
    del view
    writer.write(sft_steps, ar_eval.summary(before, "before"))
    if texts:
        writer.text(sft_steps, "eval/samples", "\n\n".join(texts))
    ckpt = Checkpointer(os.path.join(workdir, "ckpt"), keep=config.keep_checkpoints)
    frontier = None
    restored = ckpt.restore(trainer.state)
    if restored is not None:
        trainer.state = restored[0]
        trainer.version = int(jax.device_get(trainer.state.step))
        rewind(writer, ckpt, trainer.version, rc.steps)
        frontier = load_frontier(workdir, trainer.version)
    history: list[dict] = []

    def on_step(version, m):
        history.append(m)
        if version % max(config.log_every, 1) == 0 or version == rc.steps:
            writer.write(sft_steps + version, m)

    def on_checkpoint(version, snap):
        save_frontier(workdir, version, snap)
        ckpt.save(
            version,
            trainer.state,
            {"stage": "llamarl", "loop_step": version},
            metrics=history[-1] if history else {},
            log_offset=writer_offset(writer),
        )

    stats = run_controller(
        trainer,
        generator,
        weights,
        num_steps=rc.steps - trainer.version,
        max_staleness=lc.max_staleness,
        queue_capacity=lc.queue_capacity,
        deterministic=lc.deterministic,
        timeout_s=lc.timeout_s,
        heartbeat_s=lc.get("heartbeat_s", 0.0) or None,
        on_step=on_step,
        frontier=frontier,
        checkpoint_every=config.ckpt_every,
        on_checkpoint=on_checkpoint,
    )
    ckpt.wait()
    ckpt.close()
    final = generator.view(trainer.policy_params())
    after = ar_eval.evaluate_after(
        generator.rollouts, final, writer, sft_steps + rc.steps, workdir, before
    )
    scores, table = ar_eval.report(config, sft_steps, before, after, {})
    writer.close()
    rewards = [h.get("rl/reward_mean", np.nan) for h in history]
    steady = stats.step_times[1:] or stats.step_times
    half = max(len(rewards) // 2, 1)
    result = {
        "mode": lc.mode,
        "layout": layout,
        "max_staleness": lc.max_staleness,
        "steps": stats.steps,
        "reward_first_half": float(np.nanmean(rewards[:half])),
        "reward_second_half": float(np.nanmean(rewards[half:] or rewards)),
        "train/loss": history[-1].get("train/loss", float("nan")) if history else float("nan"),
        "aipo/is_mean": float(np.mean([h.get("aipo/is_mean", np.nan) for h in history])),
        "aipo/clip_frac": float(np.mean([h.get("aipo/clip_frac", np.nan) for h in history])),
        "aipo/mismatch_kl_k3": float(
            np.mean([h.get("aipo/mismatch_kl_k3", np.nan) for h in history])
        ),
        "staleness/mean": stats.gate["staleness/mean"],
        "staleness/dropped": stats.gate["staleness/dropped"],
        "step_time_median_s": float(np.median(steady)) if steady else float("nan"),
        "time/trainer_idle_ratio": stats.trainer_idle_s / max(stats.wall_s, 1e-9),
        "time/generator_idle_ratio": stats.generator_idle_s / max(stats.wall_s, 1e-9),
        "ws_seconds_mean": float(np.mean(stats.sync_seconds)) if stats.sync_seconds else 0.0,
        "wall_s": stats.wall_s,
        "skipped": int(jax.device_get(trainer.state.skipped)),
    }
    result.update(scores)
    if is_main_process():
        print(table)
    return finish(
        workdir,
        result,
        metrics_path=writer.jsonl_path,
        plot_keys=PLOT_KEYS,
        title=f"llamarl {lc.mode} (k={lc.max_staleness}, {rc.objective}) after {sft_steps} SFT "
        f"steps: {layout}",
    )

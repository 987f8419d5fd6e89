"""Runner for `configs/spg.py`: MDLM warm start, then SPG (or d1 / wd1) on a generated task.

Stages (arXiv:2510.09541 Algorithm 1): (1) the base model: with `rl.init_weights` set (the
`llada8b` variant), a local HF checkpoint directory (safetensors + `tokenizer.json`, e.g.
LLaDA-8B-Instruct) is loaded by `models.convert.load_hf_checkpoint`, each tensor placed sharded
on the run's one mesh (`config.mesh_shape`; `llada8b`: FSDP over all devices) as it is read, with
the checkpoint's own tokenizer and chat template; otherwise the warm-start SFT stage
(`train.sft.sft_stage`, MDLM loss, cached under `workdir/sft`: a finished stage is reloaded, an
interrupted one resumes); (2) held-out evaluation of the warm start (`rl.spg_eval`: greedy and
sampled pass@1 on `rl.num_eval` unseen-grid puzzles, greedy on `rl.num_eval_seen` training-grid
puzzles); (3) RL: per step, g completions for each of the step's prompts from the LLaDA sampler
(temperature `rl.temperature`), rewards, mean-subtracted advantages, µ updates of the registered
objective (checkpointed in `workdir/ckpt`, resumable; a step whose advantages are all zero makes
no update with `rl.skip_flat_batches`, logged as `rl/skipped_updates`); `rl.control` = `lr0`
(zero updates) or `shuffle` (rewards permuted within groups) runs the same loop as a control;
(4) evaluation again, the before/after table with 95% paired bootstrap intervals over prompts,
`result.json` and `plot.png`.
"""

from __future__ import annotations

import os

import jax

from rl import advantages as adv_lib
from rl import objectives
from rl.evaluation import check_control, control_optimizer
from rl.rollout import make_rollout_fn
from rl.sampling.diffusion import make_sampler
from rl.spg_eval import make_eval_fn, result_dict, summarise
from train.checkpoint import Checkpointer
from train.loop import fit
from train.optim import make_optimizer
from train.runtime import Runtime, finish
from train.sft import make_task_and_tokenizer, sft_stage
from train.state import TrainState, split_module

# The `rl` fields this runner reads; the objective's own fields are declared by the objective.
RUNNER_FIELDS = (
    "objective",
    "steps",
    "prompts_per_step",
    "group_size",
    "inner_updates",
    "microbatches",
    "advantage",
    "max_prompt_len",
    "gen_len",
    "block_len",
    "gen_steps",
    "temperature",
    "num_train_prompts",
    "num_eval",
    "eval_samples",
    "num_eval_seen",
    "eval_resamples",
    "control",
    "drop_flat_groups",
    "skip_flat_batches",
    "eval_gen_lens",
    "eval_batch_size",
    "eval_every",
    "compat",
    "init_weights",
)


def build_objective(config, graphdef, tokenizer) -> objectives.Objective:
    """The objective named by `config.rl.objective` with its declared fields (validated)."""
    return objectives.build(
        config.rl, graphdef, runner_fields=RUNNER_FIELDS, mask_id=tokenizer.mask_id
    )


def _sampler(graphdef, rc, tokenizer, gen_len: int, steps: int, temperature: float):
    """The LLaDA sampler with `rc`'s block length and the tokenizer's mask and EOS ids."""
    return make_sampler(
        graphdef,
        gen_len=gen_len,
        steps=steps,
        temperature=temperature,
        block_len=rc.block_len,
        mask_id=tokenizer.mask_id,
        eos_id=tokenizer.eos_id,
    )


def make_train_rollout(config, graphdef, task, tokenizer):
    """`rollout(params, frozen, rl_step) -> (batch, metrics)` for `config.rl`: the training
    prompts, the sampler at the rollout temperature, rewards and group advantages."""
    from data.pipeline import encode_prompts

    rc = config.rl
    train_ex = task.generate("train", rc.num_train_prompts, config.seed + 1)
    train_p = encode_prompts(train_ex, task, tokenizer, rc.max_prompt_len, config.sft.style)
    sampler = _sampler(graphdef, rc, tokenizer, rc.gen_len, rc.gen_steps, rc.temperature)
    return make_rollout_fn(
        sampler,
        task=task,
        tokenizer=tokenizer,
        examples=train_ex,
        prompts=train_p,
        prompts_per_step=rc.prompts_per_step,
        group_size=rc.group_size,
        seed=config.seed,
        compat=rc.compat,
        control=rc.get("control", "none"),
        drop_flat_groups=rc.get("drop_flat_groups", False),
        advantage=rc.get("advantage", "group_mean"),
    )


def load_base_model(config, mesh=None):
    """The pretrained base of `rl.init_weights`: (model, tokenizer), weights sharded on `mesh`.

    `mesh` is the run's (`Runtime(config).mesh`, the default): one mesh per run, so the loaded
    parameters already have the shardings the RL state is created with. The `llada8b` variant's
    `mesh_shape` (1, -1, 1) splits each tensor FSDP over all devices as it is read.
    The directory must hold the HF safetensors shards and `tokenizer.json`; the architecture is
    `config.model` (bidirectional). Nothing is downloaded.
    """
    from data.tokenizer import HFTokenizer
    from models.convert import load_hf_checkpoint
    from models.errors import MissingFileError
    from models.sharding import state_shardings
    from models.transformer import TransformerConfig

    path = config.rl.init_weights
    if not os.path.isdir(path):
        raise MissingFileError(
            f"rl.init_weights={path!r} is not a directory; download the checkpoint (e.g. "
            "GSAI-ML/LLaDA-8B-Instruct: *.safetensors and tokenizer.json) there yourself"
        )
    tokenizer = HFTokenizer(path)
    vocab = config.model.get("vocab_size", 0) or tokenizer.vocab_size
    if vocab < tokenizer.vocab_size:
        raise ValueError(f"model.vocab_size {vocab} < tokenizer vocabulary {tokenizer.vocab_size}")
    cfg = TransformerConfig.from_config(config.model, vocab_size=vocab, causal=False)
    mesh = Runtime(config).mesh if mesh is None else mesh

    def put(_, arr, var):
        return jax.device_put(arr, state_shardings(var, mesh))

    return load_hf_checkpoint(path, cfg, put=put), tokenizer


def run(config, workdir: str) -> dict[str, float]:
    """Runs the base stage (SFT warm start or HF weights) + RL; returns before/after metrics."""
    rc = config.rl
    rt = Runtime(config)
    writer = rt.writer(workdir)
    task, tokenizer = make_task_and_tokenizer(config)
    if rc.init_weights:
        model, tokenizer = load_base_model(config, rt.mesh)  # the checkpoint's own tokenizer
        base_steps = 0
    else:
        sft = sft_stage(
            config,
            os.path.join(workdir, "sft"),
            task=task,
            tokenizer=tokenizer,
            writer=writer,
            objective="mdlm",
            runtime=rt,
        )
        model, base_steps = sft.model, sft.steps
    graphdef, params, rest = split_module(model)
    objective = build_objective(config, graphdef, tokenizer)

    def sampler_of(gen_len, steps, temperature):
        return _sampler(graphdef, rc, tokenizer, gen_len, steps, temperature)

    eval_both = make_eval_fn(config, task, tokenizer, sampler_of)
    before, before_scores = eval_both(params, rest)
    writer.write(base_steps, before)
    writer.text(base_steps, "eval/samples", "\n\n".join(eval_both.samples))

    control = check_control(rc.get("control", "none"))
    tx = control_optimizer(make_optimizer(dict(config.rl_optim)), control)

    def init(params, rest):
        frozen = objectives.initial_frozen(objective, params, {"policy": rest})
        key = jax.random.fold_in(jax.random.key(config.seed), 11)
        return TrainState.create({"policy": params}, tx, key, frozen=frozen)

    state = rt.create_state(init, params, rest)
    ckpt = Checkpointer(os.path.join(workdir, "ckpt"), keep=config.keep_checkpoints)
    state, extra, resumed = rt.restore(ckpt, state)
    update = rt.update_step(objective.loss_fn, tx, microbatches=rc.get("microbatches", 1))
    rollout = make_train_rollout(config, graphdef, task, tokenizer)

    def collect(st, step):
        batch, metrics = rollout(st.params["policy"], st.frozen["policy"], step)
        skip = rc.get("skip_flat_batches", False)
        batch, metrics = adv_lib.skip_flat(batch, metrics, batch["advantage"], skip)
        return (None if batch is None else rt.put(batch)), metrics

    final = {}

    def eval_fn(st):
        final["metrics"], final["scores"] = eval_both(st.params["policy"], st.frozen["policy"])
        step = base_steps + int(jax.device_get(st.step)) // max(rc.inner_updates, 1)
        writer.text(step, "eval/samples", "\n\n".join(eval_both.samples))
        return final["metrics"]

    state, last = fit(
        state,
        collect,
        rc.inner_updates,
        update_fn=update,
        num_steps=rc.steps,
        writer=writer,
        ckpt=ckpt,
        resume=extra if resumed else None,
        ckpt_every=config.ckpt_every,
        log_every=config.log_every,
        eval_fn=eval_fn,
        eval_every=rc.eval_every,
        extra={"stage": "rl"},
        desc=rc.objective + ("" if control == "none" else f"[{control}]"),
        prefix_step=base_steps,
        before_updates=objectives.make_refresh_old(objective),
    )
    ckpt.close()
    if "scores" not in final:  # a finished run, resumed: fit returned its saved metrics
        writer.write(base_steps + rc.steps, eval_fn(state))
    after, after_scores = final["metrics"], final["scores"]
    writer.close()

    g0 = rc.gen_len
    rows, table = summarise(before_scores, after_scores, rc.get("eval_resamples", 2000))
    result = result_dict(before, after, rows, f"test/accuracy@{g0}")
    result["control"] = control
    result["rl/final_reward_mean"] = last.get("rl/reward_mean", float("nan"))
    result["train/skipped"] = int(jax.device_get(state.skipped))
    keys = ["rl/reward_mean", f"eval/accuracy@{g0}", "train/loss", "train/grad_norm"]
    keys += [*objective.plot_keys, "rl/collapse", "sft/test_loss"]
    return finish(
        workdir,
        result,
        metrics_path=writer.jsonl_path,
        plot_keys=keys,
        title=_title(config, resumed, control),
        table=LEGEND + "\n" + table,
    )


LEGEND = (
    "before = warm start; change = after - before with a 95% paired bootstrap interval over "
    "prompts.\ntest = unseen solution grids; seen = fresh puzzles from training grids; "
    "sampled = pass@1 at the rollout temperature"
)


def _title(config, resumed, control) -> str:
    rc = config.rl
    bound = f"-{rc.bound}" if "bound" in objectives.fields(rc.objective) else ""
    base = f"loading {rc.init_weights}" if rc.init_weights else f"{config.sft.steps} MDLM SFT steps"
    return (
        f"{rc.objective}{bound} on {config.task}: {rc.steps} RL steps after {base}"
        + (" (resumed)" if resumed else "")
        + ("" if control == "none" else f", control={control}")
    )

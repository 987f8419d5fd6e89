"""Runner for autoregressive RL (`configs/grpo.py`, `configs/jepo.py`): SFT warm start, then RL.

Stage 1 is the cached SFT stage (`train.sft.sft_stage`, in `rl.sft_dir` or `workdir/sft`). Stage 2
samples `group_size` completions for each of `prompts_per_step` training prompts with the KV-cache
sampler, builds a static-shape batch on the host (rewards, JEPO's [x, c, a*] rows, advantages) and
applies the objective named by `rl.objective` (GRPO/RLOO arXiv:2402.03300 / 2402.14740; JEPO
arXiv:2503.19618) through the shared jitted update step. Held-out greedy accuracy, sampled pass@1
and the n-sample answer log-likelihood bound (JEPO's proxy NLL) are measured per prompt before and
after RL (`rl/ar_eval.py`); the printed table gives each change with a paired-bootstrap 95%
interval over prompts, and `workdir/eval.npz` keeps the per-prompt scores for benchmarks.

Controls (`rl.control`, see `rl/evaluation.py`): `lr0` runs the identical loop with exact-zero
updates; `shuffle` permutes the rewards (GRPO/RLOO) or the answer log-likelihoods among the valid
samples (JEPO) within each group with `control_rng(rl_seed, step)`, so every group keeps its reward
multiset while the link between a completion and its reward is lost (JEPO's β_sup bound term
still sees the true answer). `rl.drop_zero_var` removes groups whose rewards are all equal from
the loss (DAPO, arXiv:2503.14476; shapes stay static: their rows get zero weight);
`rl.skip_flat_batches` skips the whole update of a GRPO/RLOO step whose every advantage is zero
(`rl.advantages.skip_flat`; logged as `rl/skipped_updates`).

Rollouts are a pure function of (parameters, step): prompts and the sampling key are derived from
the step, so a resumed run repeats exactly the rollouts the uninterrupted run would have made.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rl import advantages as adv_lib
from rl import ar_eval, objectives
from rl import evaluation as ev
from rl.objectives import jepo
from rl.sampling.autoregressive import make_sampler
from train.checkpoint import Checkpointer
from train.loop import fit
from train.optim import make_optimizer
from train.runtime import Runtime, finish
from train.sft import make_task_and_tokenizer, sft_stage
from train.state import TrainState, split_module

# The `rl` fields this runner reads; the objective's own fields are declared by the objective.
RUNNER_FIELDS = (
    "objective",
    "sft_dir",
    "seed",
    "steps",
    "prompts_per_step",
    "group_size",
    "inner_updates",
    "microbatches",
    "num_train_prompts",
    "num_eval",
    "eval_batch_size",
    "eval_samples",
    "control",
    "drop_zero_var",
    "skip_flat_batches",
    "max_prompt_len",
    "max_new_tokens",
    "max_answer_tokens",
    "temperature",
    "top_k",
    "top_p",
    "reward",
    "advantage",
    "format_penalty",
    "combine_rl",
)


def cut_at_marker(text: str, marker: str) -> str | None:
    """The chain of thought up to and including the last `marker`, or None if there is none
    (always None for a task without a marker: no generation is well-formed for the bound)."""
    idx = text.lower().rfind(marker) if marker else -1
    return None if idx < 0 else text[: idx + len(marker)]


def jepo_rows(prompt_toks, prompt_mask, gen_toks, gen_mask, answers, tokenizer, rc, marker: str):
    """[x, c_i, a*] rows (numpy) for JEPO scoring and training.

    c_i is the generation cut after the task's answer `marker` (`Task.answer_marker`),
    re-tokenised on its own; malformed generations (no marker) keep their whole text as c_i (it
    carries the format penalty) and are invalid for the bound. a* = tokenize(" N") + [eos],
    tokenised on its own and concatenated as ids.

    Returns:
      dict with tokens/mask/cot_mask/ans_mask [R, P+N+A] and valid [R].
    """
    r, p = prompt_toks.shape
    length = p + rc.max_new_tokens + rc.max_answer_tokens
    toks = np.full((r, length), tokenizer.pad_id, np.int32)
    mask = np.zeros((r, length), bool)
    cot = np.zeros((r, length), bool)
    ans = np.zeros((r, length), bool)
    valid = np.zeros((r,), bool)
    toks[:, :p], mask[:, :p] = prompt_toks, prompt_mask
    for i in range(r):
        text = tokenizer.decode(gen_toks[i][gen_mask[i]])
        c_text = cut_at_marker(text, marker)
        valid[i] = c_text is not None
        c_ids = tokenizer.encode(c_text if valid[i] else text)[: rc.max_new_tokens]
        a_ids = tokenizer.encode(f" {answers[i]}", add_eos=True)[: rc.max_answer_tokens]
        c_end = p + len(c_ids)
        toks[i, p:c_end] = c_ids
        toks[i, c_end : c_end + len(a_ids)] = a_ids
        mask[i, p : c_end + len(a_ids)] = True
        cot[i, p:c_end] = True
        ans[i, c_end : c_end + len(a_ids)] = True
    return {"tokens": toks, "mask": mask, "cot_mask": cot, "ans_mask": ans, "valid": valid}


class Rollouts:
    """Sampling, rewards and batch construction for one objective (host side)."""

    def __init__(self, config, graphdef, task, tokenizer):
        from data.pipeline import encode_prompts

        self.c, self.rc, self.task, self.tok = config, config.rl, task, tokenizer
        rc = self.rc
        self.kind = objectives.batch_kind(rc.objective)
        # The marker before the final answer is the task's (JEPO cuts chains of thought there).
        self.marker = task.answer_marker.lower()
        if self.kind == "answer_likelihood" and not self.marker:
            raise ValueError(
                f"objective {rc.objective!r} needs a task with an answer marker; "
                f"task {config.task!r} has none"
            )
        adv_lib.check(rc.advantage)
        # RL randomness (prompt order, sampling) can vary while the SFT warm start is shared.
        self.rl_seed = config.seed if rc.get("seed", -1) < 0 else rc.seed
        self.train = task.generate("train", rc.num_train_prompts, config.seed + 1)
        self.test = task.generate("test", rc.num_eval, config.seed)
        style = config.sft.style
        self.train_p = encode_prompts(self.train, task, tokenizer, rc.max_prompt_len, style)
        self.test_p = encode_prompts(self.test, task, tokenizer, rc.max_prompt_len, style)
        kw = dict(
            max_new_tokens=rc.max_new_tokens, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id
        )
        self.sample = make_sampler(
            graphdef, temperature=rc.temperature, top_k=rc.top_k, top_p=rc.top_p, **kw
        )
        self.greedy = make_sampler(graphdef, greedy=True, **kw)

        @jax.jit
        def ll_fn(params, rest, toks, mask, ans):
            return jepo.answer_loglik(nnx.merge(graphdef, params, rest), toks, mask, ans)

        self.ll_fn = ll_fn

    def _generate(self, state, prompts, idx, key, n):
        pt = np.repeat(prompts["tokens"][idx], n, 0)
        pm = np.repeat(prompts["mask"][idx], n, 0)
        p, rest = state.params["policy"], state.frozen["policy"]
        out = (
            self.sample(p, rest, pt, pm, key)
            if key is not None
            else self.greedy(p, rest, pt, pm, jax.random.key(0))
        )
        out = jax.device_get(out)
        return pt, pm, out

    def prompt_indices(self, step: int) -> np.ndarray:
        """The training prompts of `step` (a pure function of the RL seed and the step)."""
        rng = np.random.default_rng([self.rl_seed, step])
        return rng.choice(len(self.train), self.rc.prompts_per_step, replace=False)

    def batch(self, state, step: int):
        """The training batch for `step` and host statistics."""
        rc, n = self.rc, self.rc.group_size
        idx = self.prompt_indices(step)
        key = jax.random.fold_in(jax.random.key(self.rl_seed + 17), step)
        pt, pm, out = self._generate(state, self.train_p, idx, key, n)
        examples = [self.train[i] for i in idx for _ in range(n)]
        texts = [self.tok.decode(t[m]) for t, m in zip(out.tokens, out.mask, strict=True)]
        has_marker = np.array([bool(self.marker) and self.marker in t.lower() for t in texts])
        has_marker = has_marker.astype(np.float32)
        stats = {"rl/has_marker": has_marker.mean(), "rl/gen_len": out.lengths.mean()}
        reward = None
        if rc.reward == "exact":
            reward = np.array(
                [self.task.reward(t, ex) for t, ex in zip(texts, examples, strict=True)]
            )
            stats["rl/reward_mean"] = reward.mean()
            mixed = reward.reshape(-1, n).std(1) > 0
            stats["rl/mixed_groups"] = mixed.mean()
            if rc.control == "shuffle":
                reward = ev.shuffle_within_groups(reward, n, ev.control_rng(self.rl_seed, step))
        if self.kind == "rewards":
            if reward is None:
                raise ValueError(f"objective {rc.objective!r} needs a verifier (rl.reward=exact)")
            a = adv_lib.compute(rc.advantage, jnp.asarray(reward.reshape(-1, n))).reshape(-1)
            z = np.zeros_like(pt, np.float32)
            score = np.concatenate([np.zeros_like(pm), out.mask], 1)
            if rc.drop_zero_var:
                score = score & np.repeat(mixed, n)[:, None]
            batch = {
                "tokens": np.concatenate([pt, out.tokens], 1),
                "mask": np.concatenate([pm, out.mask], 1),
                "score_mask": score,
                "old_logp": np.concatenate([z, out.logp], 1),
                "adv": np.asarray(a),
            }
            return batch, stats
        return self._jepo_batch(state, pt, pm, out, examples, reward, has_marker, stats, step)

    def _jepo_batch(self, state, pt, pm, out, examples, reward, has_marker, stats, step=0):
        rc, n = self.rc, self.rc.group_size
        answers = [int(ex["answer"]) for ex in examples]
        rows = jepo_rows(pt, pm, out.tokens, out.mask, answers, self.tok, rc, self.marker)
        ll = self.ll_fn(
            state.params["policy"],
            state.frozen["policy"],
            rows["tokens"],
            rows["mask"],
            rows["ans_mask"],
        )
        valid = jnp.asarray(rows["valid"]).reshape(-1, n)
        ll = ll.reshape(-1, n)
        if rc.control == "shuffle":
            rng = ev.control_rng(self.rl_seed, step)
            v = rows["valid"].reshape(-1, n)
            ll = jnp.asarray(ev.shuffle_valid_within_groups(np.asarray(ll), v, rng))
        k = jnp.sum(valid, 1, keepdims=True)
        bound_w = jnp.broadcast_to(k >= 2, valid.shape)
        rl_group = None
        if rc.combine_rl and reward is not None:
            # Groups where the verifier succeeded: RLOO on the whole sampled generation.
            rl_group = reward.reshape(-1, n).max(1, keepdims=True) > 0
            gen_len = out.mask.sum(1)
            p = pt.shape[1]
            cot = rows["cot_mask"].copy()
            for i in np.flatnonzero(np.repeat(rl_group[:, 0], n)):
                rows["tokens"][i, p:] = self.tok.pad_id
                rows["tokens"][i, p : p + gen_len[i]] = out.tokens[i, : gen_len[i]]
                rows["mask"][i, p:] = np.arange(rows["mask"].shape[1] - p) < gen_len[i]
                cot[i] = rows["mask"][i] & (np.arange(cot.shape[1]) >= p)
                rows["ans_mask"][i] = False
            rows["cot_mask"] = cot
            bound_w = bound_w & ~rl_group
            stats["jepo/rl_group_frac"] = float(rl_group.mean())
        a = jepo.combined_advantages(
            jepo.advantages(ll, valid, multi_sample=rc.multi_sample),
            valid,
            jnp.asarray(has_marker).reshape(-1, n),
            rc.format_penalty,
            reward=None if rl_group is None else jnp.asarray(reward.reshape(-1, n)),
            rl_group=rl_group,
        )
        stats["jepo/ll_mean"] = float(jnp.sum(ll * valid) / jnp.maximum(jnp.sum(valid), 1))
        batch = dict(
            rows, adv=np.asarray(a).reshape(-1), bound_w=np.asarray(bound_w, np.float32).reshape(-1)
        )
        return batch, stats


def rl_optimizer(config):
    """The RL optimizer (`config.rl_optim`) under `config.rl.control` (lr0: exact-zero updates)."""
    optim = dict(config.rl_optim, total_steps=config.rl.steps)
    return ev.control_optimizer(make_optimizer(optim), config.rl.control)


def run(config, workdir: str) -> dict[str, float]:
    """Runner for configs/grpo.py and configs/jepo.py; returns the final metrics."""
    rc = config.rl
    ev.check_control(rc.control)
    task, tokenizer = make_task_and_tokenizer(config)
    rt = Runtime(config)
    writer = rt.writer(workdir)
    sft_dir = rc.sft_dir or os.path.join(workdir, "sft")
    sft = sft_stage(
        config, sft_dir, task=task, tokenizer=tokenizer, writer=writer, objective="ar", runtime=rt
    )
    graphdef, params, rest = split_module(sft.model)
    objective = objectives.build(rc, graphdef, runner_fields=RUNNER_FIELDS)
    tx = rl_optimizer(config)
    rl_seed = config.seed if rc.get("seed", -1) < 0 else rc.seed

    def init(params, rest):
        frozen = objectives.initial_frozen(objective, params, {"policy": rest})
        return TrainState.create({"policy": params}, tx, jax.random.key(rl_seed + 5), frozen)

    state = rt.create_state(init, params, rest)
    update = rt.update_step(objective.loss_fn, tx, microbatches=rc.microbatches)
    roll = Rollouts(config, graphdef, task, tokenizer)
    texts: list[str] = []
    before = ar_eval.cached_evaluate(roll, state, sft_dir, config, texts)
    writer.write(0, ar_eval.summary(before, "before"))
    if texts:
        writer.text(0, "eval/samples", "\n\n".join(texts))
    ckpt = Checkpointer(os.path.join(workdir, "ckpt"), keep=config.keep_checkpoints)
    state, extra, resumed = rt.restore(ckpt, state)

    # JEPO's batches carry answer log-likelihoods, not reward advantages: never skipped.
    skip = roll.kind == "rewards" and rc.get("skip_flat_batches", False)

    def collect(st, step):
        batch, stats = roll.batch(st, step)
        if roll.kind == "rewards":
            batch, stats = adv_lib.skip_flat(batch, stats, batch["adv"], skip)
        return (None if batch is None else rt.put(batch)), stats

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
        extra={"stage": "rl"},
        desc=rc.objective,
        prefix_step=sft.steps,
        before_updates=objectives.make_refresh_old(objective),
    )
    ckpt.close()
    after = ar_eval.evaluate_after(roll, state, writer, sft.steps + rc.steps, workdir, before)
    writer.close()
    extra = {
        "skipped": int(jax.device_get(state.skipped)),
        "train/loss": last.get("train/loss", float("nan")),
    }
    result, text = ar_eval.report(config, sft.steps, before, after, extra)
    keys = ["train/loss", "rl/reward_mean", *objective.plot_keys, "rl/mixed_groups"]
    return finish(
        workdir,
        result,
        metrics_path=writer.jsonl_path,
        plot_keys=list(dict.fromkeys(keys)),
        title=f"{config.experiment} ({config.variant})",
        table=text,
    )

"""The RL loop pieces shared by the diffusion (SPG) and autoregressive runners.

prompts -> g completions per prompt (a `sample_fn`) -> rewards (the task's verifier on decoded
text) -> mean-subtracted group advantages (SPG arXiv:2510.09541 §1: not divided by the std) -> µ
inner updates on the same rollouts (each update call splits fresh mask keys from the state's RNG,
which is independent of the rollout keys). Also: greedy evaluation at several generation lengths,
the collapse detector (fraction of completions that are one repeated token), and a resumable loop.

A sampler here is `sample_fn(params, frozen, prompt_bp, prompt_mask_bp, rng) -> completion_bg`;
completions hold the generated tokens only, with EOS marking their end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from train.loop import progress_bar, writer_offset
from train.metrics import rewind
from train.step import SkipGuard


def valid_through_eos(completion_bg: np.ndarray, eos_id: int) -> np.ndarray:
    """bool [B, G]: tokens up to and including the first EOS."""
    is_eos = completion_bg == eos_id
    return (np.cumsum(is_eos, axis=-1) - is_eos) == 0


def group_advantages(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """A_j = R_j - mean of its group; rows are in consecutive groups of `group_size`."""
    r = rewards.reshape(-1, group_size)
    return (r - r.mean(axis=1, keepdims=True)).reshape(-1).astype(np.float32)


def collapse_rate(completion_bg: np.ndarray, valid_bg: np.ndarray, eos_id: int) -> float:
    """Fraction of completions whose non-EOS tokens are one repeated token (length >= 2)."""
    out = []
    for row, v in zip(completion_bg, valid_bg, strict=True):
        toks = row[v & (row != eos_id)]
        out.append(len(toks) >= 2 and bool(np.all(toks == toks[0])))
    return float(np.mean(out)) if out else 0.0


def decode(tokenizer, completion_bg: np.ndarray) -> list[str]:
    return [tokenizer.decode(row.tolist()) for row in completion_bg]


def score(task, texts: Sequence[str], examples: Sequence[dict], compat: str) -> np.ndarray:
    """Task rewards of decoded completions (never raises; see data.tasks.base)."""
    return np.asarray(
        [task.reward(t, ex, compat) for t, ex in zip(texts, examples, strict=True)], np.float32
    )


def task_metrics(task, texts: Sequence[str], examples: Sequence[dict]) -> dict[str, float]:
    """Mean of per-example metrics; `cell_accuracy` is pooled (sum correct / sum blank cells, the
    paper's Sudoku metric) when the task reports cell counts; `accuracy` is the headline."""
    rows = [task.metrics(t, ex) for t, ex in zip(texts, examples, strict=True)]
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    if "correct_cells" in out and "blank_cells" in out:
        blank = sum(r["blank_cells"] for r in rows)
        out["cell_accuracy"] = sum(r["correct_cells"] for r in rows) / max(blank, 1.0)
        out.pop("correct_cells")
        out.pop("blank_cells")
    out["accuracy"] = out.get("cell_accuracy", out.get("correct", 0.0))
    return out


def evaluate(
    samplers: dict[int, Callable],
    params,
    frozen,
    prompts: dict[str, np.ndarray],
    examples: Sequence[dict],
    task,
    tokenizer,
    *,
    batch_size: int,
    prefix: str = "eval",
) -> dict[str, float]:
    """Greedy evaluation at each generation length (keys `eval/<metric>@<G>`).

    The prompt set is padded to a multiple of `batch_size` by repeating the first rows (dropped
    after decoding), so every sampler call has one static shape.
    """
    n = len(examples)
    nb = -(-n // batch_size)
    idx = np.concatenate([np.arange(n), np.zeros(nb * batch_size - n, np.int64)])
    out = {}
    for gen_len, sample in samplers.items():
        comps = []
        for i in range(nb):
            sl = idx[i * batch_size : (i + 1) * batch_size]
            c = sample(
                params,
                frozen,
                jnp.asarray(prompts["tokens"][sl]),
                jnp.asarray(prompts["mask"][sl]),
                jax.random.key(0),
            )
            comps.append(np.asarray(c))
        comp = np.concatenate(comps)[:n]
        texts = decode(tokenizer, comp)
        for k, v in task_metrics(task, texts, examples).items():
            out[f"{prefix}/{k}@{gen_len}"] = v
        valid = valid_through_eos(comp, tokenizer.eos_id)
        out[f"{prefix}/collapse@{gen_len}"] = collapse_rate(comp, valid, tokenizer.eos_id)
    return out


def make_rollout_fn(
    sample_fn: Callable,
    *,
    task,
    tokenizer,
    examples: Sequence[dict],
    prompts: dict[str, np.ndarray],
    prompts_per_step: int,
    group_size: int,
    seed: int,
    compat: str = "fixed",
) -> Callable[[Any, int], tuple[dict, dict[str, float]]]:
    """Builds `rollout(params, frozen, rl_step) -> (batch, metrics)`.

    Prompts are drawn by a permutation that depends only on (seed, epoch), and the sampler key is
    fold_in(key(seed), rl_step), so a resumed run sees the rollouts it would have seen.
    The batch holds `prompt`, `prompt_mask`, `completion`, `valid`, `advantage`, `row_mask`,
    `reward` with B = prompts_per_step * group_size rows in consecutive groups.
    """
    n = len(examples)
    base = jax.random.fold_in(jax.random.key(seed), 7)

    def pick(rl_step: int) -> np.ndarray:
        per_epoch = max(n // prompts_per_step, 1)
        epoch, pos = divmod(rl_step, per_epoch)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        return perm[pos * prompts_per_step : (pos + 1) * prompts_per_step]

    def rollout(params, frozen, rl_step: int):
        ids = np.repeat(pick(rl_step), group_size)
        ptok, pmask = prompts["tokens"][ids], prompts["mask"][ids]
        comp = np.asarray(
            sample_fn(
                params,
                frozen,
                jnp.asarray(ptok),
                jnp.asarray(pmask),
                jax.random.fold_in(base, rl_step),
            )
        )
        exs = [examples[i] for i in ids]
        texts = decode(tokenizer, comp)
        rewards = score(task, texts, exs, compat)
        adv = group_advantages(rewards, group_size)
        valid = valid_through_eos(comp, tokenizer.eos_id)
        batch = {
            "prompt": ptok.astype(np.int32),
            "prompt_mask": pmask,
            "completion": comp.astype(np.int32),
            "valid": valid,
            "advantage": adv,
            "row_mask": np.ones(len(ids), bool),
        }
        metrics = {
            "rl/reward_mean": float(rewards.mean()),
            "rl/reward_std_in_group": float(rewards.reshape(-1, group_size).std(1).mean()),
            "rl/accuracy": float(np.mean(rewards >= task.reward_range(compat)[1] - 1e-6)),
            "rl/pos_frac": float(np.mean(adv > 0)),
            "rl/neg_frac": float(np.mean(adv < 0)),
            "rl/completion_len": float(valid.sum(1).mean()),
            "rl/collapse": collapse_rate(comp, valid, tokenizer.eos_id),
        }
        return batch, metrics

    return rollout


def rl_loop(
    *,
    state,
    update_fn: Callable,
    rollout_fn: Callable,
    num_steps: int,
    inner_updates: int,
    writer,
    ckpt=None,
    ckpt_every: int = 0,
    log_every: int = 1,
    eval_fn: Callable | None = None,
    eval_every: int = 0,
    before_updates: Callable | None = None,
    desc: str = "rl",
    prefix_step: int = 0,
):
    """Runs RL steps from `state.step // inner_updates` to `num_steps`.

    Each RL step: `rollout_fn(params, frozen, rl_step)`, optionally `before_updates(state)` (e.g.
    snapshot the old policy), then `inner_updates` calls of `update_fn(state, batch)`. Metrics of
    the step (rollout metrics and the mean of the update metrics) are logged at the RL step.
    Checkpoints are saved at RL-step boundaries, so resuming repeats nothing. Metrics are logged
    at `prefix_step + rl_step` (after an SFT stage's steps).

    Returns:
      (state, last logged metrics)
    """
    start = int(jax.device_get(state.step)) // inner_updates
    # reliability: a finished run returns the metrics saved with its last checkpoint
    saved = rewind(writer, ckpt, start * inner_updates, num_steps * inner_updates)
    if start >= num_steps and saved:
        return state, saved
    guard = SkipGuard.for_state(state)
    last: dict[str, float] = {}
    bar = progress_bar(num_steps, start, desc)
    for rl_step in range(start, num_steps):
        batch, roll_metrics = rollout_fn(state.params["policy"], state.frozen["policy"], rl_step)
        if before_updates is not None:
            state = before_updates(state)
        jbatch = jax.tree.map(jnp.asarray, batch)
        upd = []
        for _ in range(inner_updates):
            state, m = update_fn(state, jbatch)
            upd.append(m)
            guard.add(int(rl_step * inner_updates + len(upd)), m.get("train/skipped"))
        done = rl_step + 1
        if done % max(log_every, 1) == 0 or done == num_steps:
            guard.check()
            mean = {k: float(np.mean([jax.device_get(u[k]) for u in upd])) for k in upd[0]}
            last = writer.write(prefix_step + done, {**roll_metrics, **mean})
            bar.set_postfix(reward=f"{roll_metrics['rl/reward_mean']:.3f}")
        if eval_fn is not None and eval_every and done % eval_every == 0 and done != num_steps:
            writer.write(prefix_step + done, eval_fn(state))
        if ckpt is not None and ckpt_every and done % ckpt_every == 0 and done != num_steps:
            guard.check()
            ckpt.save(
                done * inner_updates,
                state,
                {"rl_step": done},
                metrics=last,
                log_offset=writer_offset(writer),
            )
        bar.update(1)
    bar.close()
    guard.check()
    if ckpt is not None and ckpt.latest_step() != num_steps * inner_updates:
        ckpt.save(
            num_steps * inner_updates,
            state,
            {"rl_step": num_steps},
            metrics=last,
            log_offset=writer_offset(writer),
            force=True,
        )
        ckpt.wait()
    return state, last

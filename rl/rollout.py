"""Rollouts and evaluation for the masked-diffusion (SPG) runner.

prompts -> g completions per prompt (a `sample_fn`) -> rewards (the task's verifier on decoded
text) -> group advantages from the `rl.advantages` registry (default `group_mean`, SPG
arXiv:2510.09541 §1: mean-subtracted, not divided by the std). The µ inner updates on the same
rollouts run in the one loop, `train.loop.fit` (each update call splits fresh mask keys from the
state's RNG, which is independent of the rollout keys). Also: greedy evaluation at several
generation lengths and the collapse detector (fraction of completions that are one repeated token).

A sampler here is `sample_fn(params, frozen, prompt_bp, prompt_mask_bp, rng) -> completion_bg`;
completions hold the generated tokens only, with EOS marking their end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rl import advantages as adv_lib
from rl.evaluation import check_control, control_rng, shuffle_within_groups


def valid_through_eos(completion_bg: np.ndarray, eos_id: int) -> np.ndarray:
    """bool [B, G]: tokens up to and including the first EOS."""
    is_eos = completion_bg == eos_id
    return (np.cumsum(is_eos, axis=-1) - is_eos) == 0


def group_advantages(rewards: np.ndarray, group_size: int, estimator: str = "group_mean"):
    """Advantages [B] float32 of flat rewards in consecutive groups of `group_size`, by the
    registered `estimator` (default A_j = R_j - mean of its group), computed with numpy."""
    r = np.asarray(rewards).reshape(-1, group_size)
    return adv_lib.compute(estimator, r, xp=np).reshape(-1).astype(np.float32)


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


def prompt_scores(task, texts: Sequence[str], examples: Sequence[dict]) -> dict[str, np.ndarray]:
    """Per-prompt scores [N] whose mean is the headline metric of `task_metrics`.

    `accuracy` is per-prompt correctness, or for cell-counting tasks (Sudoku) correct cells
    divided by the mean number of blank cells, so that its mean is exactly the pooled cell
    accuracy and a paired bootstrap over prompts gives that metric's interval. `solved` is 0/1.
    """
    rows = [task.metrics(t, ex) for t, ex in zip(texts, examples, strict=True)]
    if "correct_cells" in rows[0]:
        blank = max(float(np.mean([r["blank_cells"] for r in rows])), 1.0)
        acc = np.asarray([r["correct_cells"] / blank for r in rows])
        return {"accuracy": acc, "solved": np.asarray([r["solved"] for r in rows])}
    return {"accuracy": np.asarray([r.get("correct", 0.0) for r in rows])}


def _decode_all(sample, params, frozen, prompts, idx, batch_size, n, key):
    comps = []
    for i in range(len(idx) // batch_size):
        sl = idx[i * batch_size : (i + 1) * batch_size]
        c = sample(
            params,
            frozen,
            jnp.asarray(prompts["tokens"][sl]),
            jnp.asarray(prompts["mask"][sl]),
            jax.random.fold_in(key, i),
        )
        comps.append(np.asarray(c))
    return np.concatenate(comps)[:n]


def sample_texts(
    task, examples: Sequence[dict], completions: Sequence[str], num: int = 4
) -> list[str]:
    """`num` readable (prompt, completion, target) records for TensorBoard / samples.jsonl."""
    return [
        f"prompt: {task.prompt(ex)!r}\ncompletion: {c!r}\ntarget: {task.target(ex)!r}"
        for ex, c in list(zip(examples, completions))[:num]
    ]


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
    sampled: Callable | None = None,
    num_samples: int = 0,
    sample_seed: int = 0,
    return_scores: bool = False,
    samples: list | None = None,
):
    """Greedy evaluation at each generation length (keys `eval/<metric>@<G>`), and optionally
    sampled pass@1 (`eval/sampled_accuracy`: the mean score of `num_samples` completions per prompt
    from `sampled`, a sampler at the rollout temperature, with keys fixed by `sample_seed`, so the
    before and after evaluations draw the same noise).

    The prompt set is padded to a multiple of `batch_size` by repeating the first rows (dropped
    after decoding), so every sampler call has one static shape.

    Returns:
      the metrics dict, or with `return_scores` (metrics, per-prompt scores): scores are keyed
      like the metrics without the prefix (`accuracy@24`, `solved@24`, `sampled_accuracy`), [N]
      for greedy and [N, num_samples] for sampled. `samples`, if a list, receives the first few
      (prompt, greedy completion, target) texts at the first length, for logging.
    """
    n = len(examples)
    nb = -(-n // batch_size)
    idx = np.concatenate([np.arange(n), np.zeros(nb * batch_size - n, np.int64)])
    out, scores = {}, {}
    for gen_len, sample in samplers.items():
        comp = _decode_all(sample, params, frozen, prompts, idx, batch_size, n, jax.random.key(0))
        texts = decode(tokenizer, comp)
        if samples is not None and not samples:
            samples.extend(sample_texts(task, examples, texts))
        for k, v in task_metrics(task, texts, examples).items():
            out[f"{prefix}/{k}@{gen_len}"] = v
        for k, v in prompt_scores(task, texts, examples).items():
            scores[f"{k}@{gen_len}"] = v
        valid = valid_through_eos(comp, tokenizer.eos_id)
        out[f"{prefix}/collapse@{gen_len}"] = collapse_rate(comp, valid, tokenizer.eos_id)
    if sampled is not None and num_samples > 0:
        cols = []
        for s in range(num_samples):
            key = jax.random.fold_in(jax.random.key(sample_seed), 1000 + s)
            comp = _decode_all(sampled, params, frozen, prompts, idx, batch_size, n, key)
            cols.append(prompt_scores(task, decode(tokenizer, comp), examples)["accuracy"])
        scores["sampled_accuracy"] = np.stack(cols, axis=1)
        out[f"{prefix}/sampled_accuracy"] = float(scores["sampled_accuracy"].mean())
    return (out, scores) if return_scores else out


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
    control: str = "none",
    drop_flat_groups: bool = False,
    advantage: str = "group_mean",
) -> Callable[[Any, int], tuple[dict, dict[str, float]]]:
    """Builds `rollout(params, frozen, rl_step) -> (batch, metrics)`.

    `control="shuffle"` permutes the rewards within each group (`rl.evaluation.control_rng(seed,
    rl_step)`, so a resumed run shuffles alike) before the advantages: each group keeps its reward
    multiset, the completion-reward link is gone. `drop_flat_groups` (DAPO's dynamic sampling,
    without resampling) sets `row_mask` False for groups whose rewards are all equal, so they leave
    the loss's denominator too. `advantage` names the estimator in `rl.advantages`.

    Prompts are drawn by a permutation that depends only on (seed, epoch), and the sampler key is
    fold_in(key(seed), rl_step), so a resumed run sees the rollouts it would have seen.
    The batch holds `prompt`, `prompt_mask`, `completion`, `valid`, `advantage`, `row_mask`,
    `reward` with B = prompts_per_step * group_size rows in consecutive groups.
    """
    check_control(control)
    adv_lib.check(advantage)
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
        if control == "shuffle":
            rewards = shuffle_within_groups(rewards, group_size, control_rng(seed, rl_step))
        adv = group_advantages(rewards, group_size, advantage)
        flat = np.repeat(rewards.reshape(-1, group_size).std(1) == 0, group_size)
        row_mask = ~flat if drop_flat_groups else np.ones(len(ids), bool)
        valid = valid_through_eos(comp, tokenizer.eos_id)
        batch = {
            "prompt": ptok.astype(np.int32),
            "prompt_mask": pmask,
            "completion": comp.astype(np.int32),
            "valid": valid,
            "advantage": adv,
            "row_mask": row_mask,
        }
        metrics = {
            "rl/reward_mean": float(rewards.mean()),
            "rl/reward_std_in_group": float(rewards.reshape(-1, group_size).std(1).mean()),
            "rl/accuracy": float(np.mean(rewards >= task.reward_range(compat)[1] - 1e-6)),
            "rl/pos_frac": float(np.mean(adv > 0)),
            "rl/neg_frac": float(np.mean(adv < 0)),
            "rl/flat_group_frac": float(np.mean(flat)),
            "rl/completion_len": float(valid.sum(1).mean()),
            "rl/collapse": collapse_rate(comp, valid, tokenizer.eos_id),
        }
        return batch, metrics

    return rollout

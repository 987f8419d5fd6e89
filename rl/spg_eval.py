"""The powered held-out evaluation of `rl.run_spg` (issue 12): evaluation sets, per-prompt scores,
the before/after table with paired 95% intervals, and the result dict.

Sets (sizes are config fields): `test` = `rl.num_eval` puzzles of the task's test split (Sudoku:
solution grids never seen in SFT or RL), greedy at each `rl.eval_gen_lens` and sampled pass@1
(`rl.eval_samples` completions per prompt at the rollout temperature, fixed keys); `seen` =
`rl.num_eval_seen` fresh puzzles drawn from the train split (grids the warm start saw), greedy at
the training length only, so train-grid and unseen-grid changes are reported side by side.
"""

from __future__ import annotations

from collections.abc import Callable

from rl.evaluation import change_rows, format_change_table
from rl.rollout import evaluate


def make_eval_fn(config, task, tokenizer, sampler_of: Callable) -> Callable:
    """`eval_fn(params, frozen) -> (metrics, scores)` over the configured evaluation sets.

    After each call `eval_fn.samples` holds a few (prompt, greedy completion, target) texts.

    `sampler_of(gen_len, steps, temperature)` builds a sampler. Score keys are
    `<set>/<metric>@<G>` and `<set>/sampled_accuracy`; metric keys carry the `eval/` prefix
    (`eval/…` for the test set, as before, and `eval_seen/…` for train-grid puzzles).
    """
    from data.pipeline import encode_prompts

    rc = config.rl
    style = config.sft.style

    def prompts(split, num, seed):
        ex = task.generate(split, num, seed)
        return ex, encode_prompts(ex, task, tokenizer, rc.max_prompt_len, style)

    test_ex, test_p = prompts("test", rc.num_eval, config.seed + 2)
    greedy = {g: sampler_of(g, g // 2, 0.0) for g in rc.eval_gen_lens}
    sampled = sampler_of(rc.gen_len, rc.gen_steps, rc.temperature) if rc.eval_samples else None
    num_seen = rc.get("num_eval_seen", 0)
    seen = prompts("train", num_seen, config.seed + 3) if num_seen else None
    seen_greedy = {rc.gen_len: greedy[rc.gen_len]} if rc.gen_len in greedy else {}
    if seen and not seen_greedy:
        seen_greedy = {rc.gen_len: sampler_of(rc.gen_len, rc.gen_len // 2, 0.0)}

    def eval_fn(params, frozen):
        common = dict(task=task, tokenizer=tokenizer, batch_size=rc.eval_batch_size)
        eval_fn.samples = []
        metrics, sc = evaluate(
            greedy,
            params,
            frozen,
            test_p,
            test_ex,
            sampled=sampled,
            num_samples=rc.eval_samples,
            sample_seed=config.seed + 5,
            return_scores=True,
            samples=eval_fn.samples,
            **common,
        )
        scores = {f"test/{k}": v for k, v in sc.items()}
        if seen:
            m2, sc2 = evaluate(
                seen_greedy,
                params,
                frozen,
                seen[1],
                seen[0],
                prefix="eval_seen",
                return_scores=True,
                **common,
            )
            metrics.update({k: v for k, v in m2.items() if "/collapse" not in k})
            scores.update({f"seen/{k}": v for k, v in sc2.items()})
        return metrics, scores

    eval_fn.samples = []
    return eval_fn


def summarise(before_scores, after_scores, num_resamples: int = 2000) -> tuple[list[dict], str]:
    """Rows (see `rl.evaluation.change_rows`) and the printed table, headline metric first."""
    rows = change_rows(before_scores, after_scores, num_resamples=num_resamples)
    rows.sort(key=lambda r: (not r["metric"].startswith("test/accuracy"), r["metric"]))
    return rows, format_change_table(rows)


def result_dict(before: dict, after: dict, rows: list[dict], headline: str) -> dict:
    """Flat result.json entries: before/after metrics, and `change/<score>/{mean,lo,hi,n}` (in
    the metric's units, fractions) for every row; `change/headline/*` is `headline`'s row."""
    out = {f"before/{k}": v for k, v in before.items()}
    out.update({f"after/{k}": v for k, v in after.items()})
    for r in rows:
        for f in ("mean", "lo", "hi"):
            out[f"change/{r['metric']}/{f}"] = r[f"change_{f}"]
        out[f"change/{r['metric']}/n"] = r["n"]
        if r["metric"] == headline:
            out.update({f"change/headline/{f}": r[f"change_{f}"] for f in ("mean", "lo", "hi")})
            out["change/headline/metric"] = headline
    return out

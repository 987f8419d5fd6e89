"""Powered held-out evaluation for the autoregressive RL runner (`rl/run_ar.py`).

Per held-out prompt (sizes are config fields: `rl.num_eval` prompts, `rl.eval_samples` sampled
chains of thought each, `rl.eval_batch_size` prompts per sampler call):
  - `greedy`  [N]    greedy-decoding exact match;
  - `pass1`   [N, k] exact match of each of k samples at the training temperature (sampled pass@1
                     is its mean over samples);
  - `answer_ll` [N]  the k-sample answer log-likelihood bound log mean_i π(a*|x, c_i) (JEPO's
                     proxy NLL; c_i are the same k samples);
  - `has_marker` [N] greedy output contains the answer marker.
Sampling keys depend only on `config.seed` and the prompt block, so the warm start and every run
and control that shares it are scored on the same prompts with the same keys: the paired
bootstrap of `rl.evaluation` then measures the change of one policy over another.

The warm start's scores depend only on the SFT checkpoint and the evaluation settings, so they are
cached next to the SFT checkpoint (`<sft_dir>/eval_cache/<key>.npz`) and shared by all RL runs,
seeds and controls that use it.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from rl import evaluation as ev
from rl.objectives import jepo

METRICS = ("greedy", "pass1", "answer_ll", "has_marker")


def evaluate(roll, state, samples: list | None = None) -> dict[str, np.ndarray]:
    """Per-prompt held-out scores of the policy in `state` (see the module docstring).

    Args:
      roll: a `rl.run_ar.Rollouts` (holds the held-out prompts, samplers and scorer).
      state: the TrainState to evaluate.
      samples: if a list, receives a few (prompt, greedy completion, target) texts for logging.
    """
    from rl.rollout import sample_texts
    from rl.run_ar import jepo_rows

    rc, k = roll.rc, roll.rc.eval_samples
    out = {m: [] for m in METRICS}
    for s in range(0, len(roll.test), rc.eval_batch_size):
        idx = np.arange(s, min(s + rc.eval_batch_size, len(roll.test)))
        exs = [roll.test[i] for i in idx]
        _, _, g = roll._generate(state, roll.test_p, idx, None, 1)
        if samples is not None and not samples:
            greedy_texts = [roll.tok.decode(t[m]) for t, m in zip(g.tokens, g.mask, strict=True)]
            samples.extend(sample_texts(roll.task, exs, greedy_texts))
        for ex, t, m in zip(exs, g.tokens, g.mask, strict=True):
            met = roll.task.metrics(roll.tok.decode(t[m]), ex)
            out["greedy"].append(met["correct"])
            out["has_marker"].append(met.get("has_marker", 0.0))
        key = jax.random.fold_in(jax.random.key(roll.c.seed + 99), s)
        pt, pm, smp = roll._generate(state, roll.test_p, idx, key, k)
        reps = [ex for ex in exs for _ in range(k)]
        texts = [roll.tok.decode(t[m]) for t, m in zip(smp.tokens, smp.mask, strict=True)]
        corr = [roll.task.metrics(t, ex)["correct"] for t, ex in zip(texts, reps, strict=True)]
        out["pass1"].extend(np.asarray(corr, np.float64).reshape(-1, k).tolist())
        answers = [int(ex["answer"]) for ex in reps]
        rows = jepo_rows(pt, pm, smp.tokens, smp.mask, answers, roll.tok, rc, roll.marker)
        p, rest = state.params["policy"], state.frozen["policy"]
        ll = roll.ll_fn(p, rest, rows["tokens"], rows["mask"], rows["ans_mask"]).reshape(-1, k)
        out["answer_ll"].extend(np.asarray(jepo.logmeanexp(ll, jnp.ones_like(ll, bool))).tolist())
    return {m: np.asarray(v, np.float64) for m, v in out.items()}


def evaluate_after(roll, state, writer, step: int, workdir: str, before) -> dict[str, np.ndarray]:
    """The final policy's `evaluate`, logged at `step` (means and sample texts), and both
    evaluations' per-prompt scores saved to `workdir/eval.npz` (`before_*`, `after_*`) for
    benchmarks that pair runs by prompt."""
    texts: list[str] = []
    after = evaluate(roll, state, texts)
    writer.write(step, summary(after, "after"))
    writer.text(step, "eval/samples", "\n\n".join(texts))
    np.savez(
        os.path.join(workdir, "eval.npz"),
        **{f"before_{k}": v for k, v in before.items()},
        **{f"after_{k}": v for k, v in after.items()},
    )
    return after


def summary(scores: dict[str, np.ndarray], prefix: str) -> dict[str, float]:
    """Means of the per-prompt scores as `{prefix}/{metric}` (accuracy = greedy)."""
    m = {k: float(ev.per_prompt(v).mean()) for k, v in scores.items()}
    return {
        f"{prefix}/accuracy": m["greedy"],
        f"{prefix}/pass1": m["pass1"],
        f"{prefix}/answer_ll": m["answer_ll"],
        f"{prefix}/has_marker": m["has_marker"],
    }


def cache_key(config) -> str:
    """Everything the warm start's scores depend on besides the SFT checkpoint's directory."""
    rc = config.rl
    fields = {
        "seed": config.seed,
        "task": config.task,
        "task_kwargs": dict(config.task_kwargs),
        "model": config.model.to_dict(),
        "sft": dict(config.sft),
        "eval": [rc.num_eval, rc.eval_samples, rc.eval_batch_size, rc.max_prompt_len],
        "gen": [rc.max_new_tokens, rc.max_answer_tokens, rc.temperature, rc.top_k, rc.top_p],
    }
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def cached_evaluate(roll, state, sft_dir: str, config, samples=None) -> dict[str, np.ndarray]:
    """`evaluate` of the warm start, read from or written to `<sft_dir>/eval_cache/` (a cached
    evaluation has no `samples`)."""
    path = os.path.join(sft_dir, "eval_cache", cache_key(config) + ".npz")
    if os.path.exists(path):
        with np.load(path) as f:
            return {m: f[m] for m in METRICS}
    scores = evaluate(roll, state, samples)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + f".tmp{os.getpid()}.npz"
    np.savez(tmp, **scores)
    os.replace(tmp, path)
    return scores


def change_report(before, after) -> tuple[list[dict], str]:
    """Paired-bootstrap rows (points for accuracies, nats for the bound) and the printed table."""
    scale = {"greedy": 100.0, "pass1": 100.0, "has_marker": 100.0, "answer_ll": 1.0}
    b = {k: ev.per_prompt(v) * scale[k] for k, v in before.items()}
    a = {k: ev.per_prompt(v) * scale[k] for k, v in after.items()}
    rows = ev.change_rows(b, a)
    for r in rows:
        r["unit"] = "nats" if r["metric"] == "answer_ll" else "points"
    return rows, ev.format_change_table(rows)


def report(config, sft_steps, before, after, extra) -> tuple[dict, str]:
    """result.json fields (means, intervals) and the printed before/after table."""
    rows, table = change_report(before, after)
    result = {**summary(before, "before"), **summary(after, "after"), **extra}
    for r in rows:
        for f in ("mean", "lo", "hi"):
            result[f"change/{r['metric']}_{f}"] = r[f"change_{f}"]
    rc = config.rl
    lines = [
        "=" * 80,
        f"{config.experiment} on {config.task}: SFT {sft_steps} steps, RL {rc.steps} steps "
        f"({rc.objective}, reward={rc.reward}, control={rc.control}); {rc.num_eval} held-out "
        f"prompts, pass1 over {rc.eval_samples} samples; accuracies in points, answer_ll in nats",
        table,
        f"skipped updates {result.get('skipped', 0)}",
        "=" * 80,
    ]
    return result, "\n".join(lines)

"""JEPO without a verifier vs GRPO with an exact-match reward (arXiv:2503.19618 §4, MATH setting).

Methods, all from the same SFT warm start (one cached SFT run, `configs/grpo.py` defaults) and at
equal compute (same RL steps, prompts per step, samples per prompt, token budget):
  - `jepo_single`: single-sample Jensen bound, leave-one-out baseline, no verifier;
  - `jepo_multi`: multi-sample (n = group size) bound, log-space LOO baselines, no verifier;
  - `grpo_exact`: GRPO, group mean/std advantage of the exact-match reward.
Each runs for several RL seeds (prompt order and sampling). Reported: held-out greedy accuracy
and the held-out n-sample answer log-likelihood bound (JEPO's proxy NLL), before and after RL.
The paper finds multi-sample JEPO about as accurate as RL at test time; we report what we find.

Usage: python -m bench.jepo_vs_rl [--steps=60] [--seeds=0,1,2] [--root=/tmp/jepo_vs_rl]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.common import device_info, md_table, write_results

METHODS = {
    "jepo_single": ("jepo", "reward=none,multi=0"),
    "jepo_multi": ("jepo", "reward=none,multi=1"),
    "grpo_exact": ("grpo", "objective=grpo"),
}


def make_config(method: str, seed: int, args):
    import importlib

    name, variant = METHODS[method]
    c = importlib.import_module(f"configs.{name}").get_config(variant)
    c.rl.sft_dir = os.path.join(args.root, "sft")
    c.rl.seed = seed
    c.rl.steps = args.steps
    c.rl.prompts_per_step = args.prompts
    c.rl.num_eval = args.num_eval
    c.ckpt_every = 0
    c.log_every = 10
    return c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--num_eval", type=int, default=128)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--root", default="/tmp/jepo_vs_rl")
    args = ap.parse_args()
    from rl.run_ar import run

    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []
    for seed in seeds:
        for method in args.methods.split(","):
            c = make_config(method, seed, args)
            workdir = os.path.join(args.root, f"{method}_s{seed}")
            t0 = time.time()
            out = run(c, workdir)
            runs.append(
                {
                    "method": method,
                    "seed": seed,
                    "minutes": (time.time() - t0) / 60,
                    **{k: out[k] for k in out if k.startswith(("before/", "after/"))},
                }
            )
            summarise(runs, args)


def summarise(runs, args):
    rows = []
    for method in METHODS:
        rs = [r for r in runs if r["method"] == method]
        if not rs:
            continue
        row = {"method": method, "seeds": len(rs)}
        for k in (
            "before/accuracy",
            "after/accuracy",
            "before/answer_ll",
            "after/answer_ll",
            "after/has_marker",
            "minutes",
        ):
            v = np.array([r[k] for r in rs])
            row[k] = f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v[0]:.3f}"
        rows.append(row)
    cols = [
        "method",
        "seeds",
        "before/accuracy",
        "after/accuracy",
        "before/answer_ll",
        "after/answer_ll",
        "after/has_marker",
        "minutes",
    ]
    table = md_table(rows, cols)
    print(table)
    info = device_info()
    md = (
        "# JEPO (no verifier) vs GRPO (exact match) on arithmetic chains of thought\n\n"
        f"Device: {info}\n\nOne shared SFT warm start (configs/grpo.py defaults), then "
        f"{args.steps} RL steps x {args.prompts} prompts x 4 samples per method and seed "
        f"(equal compute). Held-out: {args.num_eval} test prompts; accuracy = greedy exact "
        "match; answer_ll = mean over prompts of the n=4 bound log mean_i pi(a*|x, c_i) "
        "(c_i sampled at temperature 1). Mean ± std over seeds.\n\n"
        f"{table}\n"
    )
    write_results(
        "jepo_vs_rl", {"device": info, "args": vars(args), "runs": runs, "summary": rows}, md
    )


if __name__ == "__main__":
    main()

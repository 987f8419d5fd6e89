"""JEPO without a verifier vs GRPO/RLOO with one (arXiv:2503.19618 §4, MATH setting), with controls.

Methods, all from one cached SFT warm start and at equal sampled tokens (same RL steps, prompts
per step, samples per prompt and generation length):
  - `grpo`: GRPO, group mean/std advantage of the exact-match reward;
  - `rloo`: RLOO, leave-one-out advantage of the exact-match reward (the paper's RL baseline);
  - `jepo_single`: single-sample Jensen bound, leave-one-out baseline, no verifier;
  - `jepo_multi`: multi-sample (n = group size) bound, log-space LOO baselines, no verifier.
Each method runs per seed with `rl.control=none` and with its `shuffle` control (rewards or
answer log-likelihoods permuted within groups: same prompts, keys, update sizes and drift, no
link between a completion and its score). Per seed, the gain over control is a paired bootstrap
over the held-out prompts of (method after RL) − (control after RL); over seeds, the mean gain
with a Student-t interval (`rl.evaluation.gain_over_control` on the per-seed changes).

Runs go through `bench.ar_sweep` cells (`<root>/cells/<method>_s<seed>[_shuffle].json`), so a
finished run is never repeated and the sweep's runs with the same settings are reused.

Usage: python -m bench.jepo_vs_rl [--seeds=0,1,2] [--methods=...] [--root=/tmp/arrl]
       [--steps=N] [--summarise_only]
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from bench.common import device_info, md_table, write_results

METHODS = {
    "grpo": "grpo",
    "rloo": "grpo:objective=rloo",
    "jepo_single": "jepo:reward=none,multi=0",
    "jepo_multi": "jepo:reward=none,multi=1",
}
TITLE = "JEPO (no verifier) vs GRPO/RLOO (exact match) on arithmetic, with shuffle controls"
METRICS = (("greedy", 100.0, "points"), ("pass1", 100.0, "points"), ("answer_ll", 1.0, "nats"))


def cell(method: str, seed: int, control: str, steps: int) -> tuple[str, str]:
    name = f"{method}_s{seed}" + ("" if control == "none" else f"_{control}")
    spec = f"{name}={METHODS[method]};rl.seed={seed};rl.control={control}"
    if steps:
        spec += f";rl.steps={steps}"
    return name, spec


def load(root: str, name: str):
    p = os.path.join(root, "cells", f"{name}.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        rec = json.load(f)
    with np.load(rec.get("eval_file") or os.path.join(rec["workdir"], "eval.npz")) as z:
        rec["scores"] = {k: z[k] for k in z.files}
    return rec


def summarise(
    root: str,
    seeds,
    methods,
    steps: int,
    notes: str = "",
    out: str = "jepo_vs_rl",
    title: str = TITLE,
) -> str:
    from rl import evaluation as ev

    rows, per_seed = [], []
    for method in methods:
        changes = {m: ([], []) for m, _, _ in METRICS}
        for seed in seeds:
            rec = load(root, cell(method, seed, "none", steps)[0])
            ctl = load(root, cell(method, seed, "shuffle", steps)[0])
            if rec is None:
                continue
            row = {"method": method, "seed": seed, "min": round(rec["minutes"], 1)}
            for m, k, _ in METRICS:
                s = rec["scores"]
                ch = ev.paired_bootstrap(s[f"before_{m}"], s[f"after_{m}"]).scaled(k)
                row[f"{m} change"] = str(ch)
                if ctl is not None:
                    c = ctl["scores"]
                    cc = ev.paired_bootstrap(c[f"before_{m}"], c[f"after_{m}"]).scaled(k)
                    gain = ev.paired_bootstrap(c[f"after_{m}"], s[f"after_{m}"]).scaled(k)
                    row[f"{m} ctl change"] = str(cc)
                    row[f"{m} gain vs ctl"] = str(gain)
                    changes[m][0].append(ch.mean)
                    changes[m][1].append(cc.mean)
            per_seed.append(row)
        row = {"method": method, "seeds": len(changes["greedy"][0])}
        for m, _, _ in METRICS:
            meth, ctl = changes[m]
            if meth:
                row[f"{m} gain vs ctl"] = str(ev.gain_over_control(meth, ctl))
        rows.append(row)
    cols = ["method", "seed"]
    for m, _, _ in METRICS:
        cols += [f"{m} change", f"{m} ctl change", f"{m} gain vs ctl"]
    cols.append("min")
    seed_table = md_table(per_seed, cols)
    over = md_table(rows, ["method", "seeds"] + [f"{m} gain vs ctl" for m, _, _ in METRICS])
    info = device_info()
    md = (
        f"# {title}\n\n"
        f"Device: {info}\n\n"
        "One shared SFT warm start; every run from it with the configs' defaults (see "
        "configs/grpo.py, configs/jepo.py), equal sampled tokens per method. Held-out: the "
        "configs' `rl.num_eval` prompts; greedy = greedy exact match, pass1 = sampled exact "
        "match averaged over `rl.eval_samples` samples, answer_ll = the n-sample bound "
        "log mean_i π(a*|x, c_i). Accuracies in points, answer_ll in nats.\n\n"
        "## Per seed: change from the warm start, the shuffle control's change, and the "
        "gain over the control (paired bootstrap over prompts, 95%)\n\n"
        f"{seed_table}\n\n"
        "## Over seeds: gain over control (mean of per-seed (method − control) changes, "
        "Student-t 95% interval; NaN with one seed)\n\n"
        f"{over}\n\n{notes}\n"
    )
    write_results(out, {"device": info, "per_seed": per_seed, "over_seeds": rows}, md)
    return seed_table + "\n\n" + over


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--controls", default="none,shuffle")
    ap.add_argument("--steps", type=int, default=0, help="0: the configs' rl.steps")
    ap.add_argument("--root", default="/tmp/arrl")
    ap.add_argument("--notes", default="", help="a file whose text is appended to the report")
    ap.add_argument("--summarise_only", action="store_true")
    ap.add_argument("--out", default="jepo_vs_rl", help="bench/results/<out>.{md,json}")
    ap.add_argument("--title", default="", help="the report's title (default: the comparison)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    if not args.summarise_only:
        from bench.ar_sweep import run_cell

        for seed in seeds:
            for method in methods:
                for control in args.controls.split(","):
                    name, spec = cell(method, seed, control, args.steps)
                    if load(args.root, name) is None:
                        run_cell(spec, args.root)
    notes = open(args.notes).read() if args.notes else ""
    kw = {"title": args.title} if args.title else {}
    print(summarise(args.root, seeds, methods, args.steps, notes, args.out, **kw))


if __name__ == "__main__":
    main()

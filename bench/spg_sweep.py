"""The issue-12 sweep for `configs/spg.py`: which settings make SPG's signal beat the drift.

Every cell is one `rl.run_spg.run` from ONE shared warm start (`--sft_steps` MDLM steps, seed
`--seed`, cached in `bench/results/spg_runs/sweep_subs/sft<N>_seed<k>_<task>` and symlinked into
each cell), with config overrides given as `name=field=value;field=value`. A cell with a
`result.json` is read back, so an interrupted sweep resumes. Reported per cell: warm-start and
final held-out greedy accuracy at the training length on unseen grids, the paired change with its
95% bootstrap interval over prompts, sampled pass@1 and train-grid changes, and the cell's wall
time.

  python -m bench.spg_sweep --cells='lr1e-4=rl_optim.lr=1e-4' --cells='kl=rl.kl_coef=0.05' \
      [--sft_steps=300] [--seed=0] [--steps=60] [--out=spg_sweep] [--report_only]
  python -m bench.spg_sweep --compare=default_40:default_40_shuffle --seeds=0,1,2 --out=NAME

`--compare=A:B` reads cells A (method) and B (its control) back for each seed and reports the
per-seed changes with their intervals over prompts, the mean change over seeds (t interval) and
the gain of A over B paired by seed (`rl.evaluation.gain_over_control`).
"""

from __future__ import annotations

import argparse
import ast
import json
import os

from bench.common import RESULTS, device_info, md_table, run_spg_cell, write_results


def parse_cell(spec: str) -> tuple[str, dict]:
    """`name=a.b=v;c.d=w` -> (name, {"a.b": v, "c.d": w}); values are Python literals or str."""
    name, _, rest = spec.partition("=")
    out = {}
    for item in filter(None, rest.split(";")):
        k, _, v = item.partition("=")
        try:
            out[k.strip()] = ast.literal_eval(v.strip())
        except (ValueError, SyntaxError):
            out[k.strip()] = v.strip()
    return name.strip(), out


def apply(config, overrides: dict):
    for key, v in overrides.items():
        *path, leaf = key.split(".")
        node = config
        for p in path:
            node = node[p]
        node[leaf] = v
    return config


def cell_dir(root, name, *, variant, seed, sft_steps) -> str:
    return os.path.join(root, f"sft{sft_steps}_seed{seed}_{variant or 'default'}", name)


def run_cell(name, overrides, *, variant, seed, sft_steps, steps, root, report_only=False):
    """Runs (or reads back) one cell; None when `report_only` and the cell has no result."""
    from configs import spg as spg_config

    wd = cell_dir(root, name, variant=variant, seed=seed, sft_steps=sft_steps)
    res = os.path.join(wd, "result.json")
    if os.path.exists(res):
        with open(res) as f:
            return json.load(f)
    if report_only:
        return None
    c = spg_config.get_config(",".join(filter(None, [variant, f"seed={seed}"])))
    c.sft.steps = sft_steps
    c.rl.steps = steps
    c.rl.eval_every = 0
    apply(c, overrides)
    out = run_spg_cell(c, wd, os.path.join(root, f"sft{sft_steps}_seed{seed}_{c.task}"))
    out["load1"] = os.getloadavg()[0]
    out["overrides"] = overrides
    out["rl_steps"] = steps
    with open(res, "w") as f:
        json.dump(out, f, indent=2, sort_keys=True)
    return out


def row_of(name: str, r: dict, gen_len: int) -> dict:
    def ci(key):
        k = f"change/{key}"
        if f"{k}/mean" not in r:
            return "-"
        return f"{100 * r[k + '/mean']:+.1f} [{100 * r[k + '/lo']:+.1f}, {100 * r[k + '/hi']:+.1f}]"

    return {
        "cell": name,
        "overrides": "; ".join(f"{k}={v}" for k, v in r.get("overrides", {}).items()) or "-",
        "warm start": f"{100 * r[f'before/eval/accuracy@{gen_len}']:.1f}",
        "after": f"{100 * r[f'after/eval/accuracy@{gen_len}']:.1f}",
        "change (unseen grids)": ci(f"test/accuracy@{gen_len}"),
        "sampled pass@1": ci("test/sampled_accuracy"),
        "change (train grids)": ci(f"seen/accuracy@{gen_len}"),
        "RL steps": r.get("rl_steps", "40"),
        "reward (last)": f"{r.get('rl/final_reward_mean', float('nan')):.3f}",
        "wall s": f"{r.get('wall_s', 0):.0f}",
        "CPU s": f"{r.get('cpu_s', float('nan')):.0f}",
    }


def compare(names: str, seeds, *, variant, sft_steps, root, gen_len) -> tuple[dict, str]:
    """Method vs control over seeds (see the module docstring); returns (payload, markdown)."""
    from rl.evaluation import gain_over_control, seed_interval

    a, b = names.split(":")
    key = f"change/test/accuracy@{gen_len}"
    rows, ch = [], {a: [], b: []}
    for seed in seeds:
        row = {"seed": seed}
        for n in (a, b):
            wd = cell_dir(root, n, variant=variant, seed=seed, sft_steps=sft_steps)
            with open(os.path.join(wd, "result.json")) as f:
                r = json.load(f)
            ch[n].append(100 * r[f"{key}/mean"])
            row["warm start"] = f"{100 * r[f'before/eval/accuracy@{gen_len}']:.1f}"
            row[n] = f"{100 * r[key + '/mean']:+.1f} [{100 * r[key + '/lo']:+.1f}, " + (
                f"{100 * r[key + '/hi']:+.1f}]"
            )
            sk = "change/test/sampled_accuracy"
            row[f"{n} sampled"] = f"{100 * r[sk + '/mean']:+.1f}"
            row[f"{n} train grids"] = f"{100 * r[f'change/seen/accuracy@{gen_len}/mean']:+.1f}"
        row["gain over control"] = f"{ch[a][-1] - ch[b][-1]:+.1f}"
        rows.append(row)
    summary = {
        f"{a} change over seeds": seed_interval(ch[a]),
        f"{b} change over seeds": seed_interval(ch[b]),
        f"{a} gain over {b}": gain_over_control(ch[a], ch[b]),
    }
    lines = [f"- {k}: {v} points (95% t interval, n = {v.n} seeds)" for k, v in summary.items()]
    md = md_table(rows, list(rows[0])) + "\n\n" + "\n".join(lines)
    return {"rows": rows, "summary": {k: v.as_dict() for k, v in summary.items()}}, md


def _cols(rows):
    return list(dict.fromkeys(k for r in rows for k in r))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", action="append", default=[])
    ap.add_argument("--report_only", action="store_true", help="read back finished cells only")
    ap.add_argument("--compare", default="", help="METHOD:CONTROL cell names, over --seeds")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variant", default="", help="configs/spg.py variant, e.g. bound=mix")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sft_steps", type=int, default=300)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", default="spg_sweep")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    from configs import spg as spg_config

    gen_len = spg_config.get_config(args.variant or None).rl.gen_len
    # Post-SUBS (63c9429) caches: a warm start trained before the likelihood dropped the mask
    # token is a different model, so it must not be reused.
    root = os.path.join(RESULTS, "spg_runs", "sweep_subs")
    if args.compare:
        seeds = [int(x) for x in args.seeds.split(",")]
        kw = dict(variant=args.variant, sft_steps=args.sft_steps, root=root, gen_len=gen_len)
        payload, md = compare(args.compare, seeds, **kw)
        print(md)
        note = f"Held-out greedy accuracy at G={gen_len}, unseen grids; points. " + args.note
        write_results(
            args.out, {"device": device_info(), **payload}, f"# SPG vs control\n\n{note}\n\n{md}\n"
        )
        return
    rows, cells = [], {}
    for spec in args.cells:
        name, ov = parse_cell(spec)
        r = run_cell(
            name,
            ov,
            variant=args.variant,
            seed=args.seed,
            sft_steps=args.sft_steps,
            steps=args.steps,
            root=root,
            report_only=args.report_only,
        )
        if r is None:
            rows.append({"cell": name, "overrides": spec.partition("=")[2], "after": "not run"})
            continue
        cells[name] = r
        rows.append(row_of(name, r, gen_len))
        print(md_table(rows, _cols(rows)), flush=True)
    table = md_table(rows, _cols(rows))
    note = (
        f"One seed ({args.seed}), warm start {args.sft_steps} MDLM SFT steps, {args.steps} RL "
        f"steps per cell, variant `{args.variant or 'default'}`. Change = after - before in "
        "points (greedy at the training length, unseen grids unless noted) with a 95% paired "
        "bootstrap interval over the held-out prompts. Wall times on a shared 2-core CPU (load "
        "in the json). " + args.note
    )
    write_results(
        args.out,
        {"device": device_info(), "args": vars(args), "cells": cells, "rows": rows},
        f"# SPG sweep\n\n{note}\n\n{table}\n",
    )


if __name__ == "__main__":
    main()

"""Sweep of the autoregressive RL settings (configs/grpo.py, configs/jepo.py) from one SFT start.

Every cell is one RL run from the same cached SFT checkpoint (`<root>/sft`), scored on the same
held-out prompts with the same sampling keys, so cells compare by paired bootstrap over prompts.
A cell is `name=config[:variant][;field=value...]`, e.g.
  `lr3e-4_kl05=grpo;rl_optim.lr=3e-4;rl.kl_coef=0.05`
  `lr3e-4_kl05_shuffle=grpo;rl_optim.lr=3e-4;rl.kl_coef=0.05;rl.control=shuffle`
Each finished cell writes `<root>/cells/<name>.json` (so cells can run in separate processes);
`--summarise` collects them into bench/results/<out>.{md,json}, pairing each cell with the
control cell of the same name + `_shuffle` when it exists (gain over control = paired bootstrap
of the two runs' after-RL scores on the same prompts).

A cell may name evaluation stages after `@`: `a=grpo;rl.steps=180@60,120` trains one run to 60,
evaluates, resumes the same workdir to 120, evaluates, and so on to `rl.steps`, writing the cells
`a_t60`, `a_t120`, `a_t180`. Rollouts are a pure function of (parameters, step) and a resumed run
equals an uninterrupted one, so each stage is exactly the run of that many steps (constant
learning-rate schedules only: a decaying schedule depends on the total).

Usage: python -m bench.ar_sweep --root=/tmp/arrl --cells='a=grpo;rl.steps=60' [--summarise]
"""

from __future__ import annotations

import argparse
import ast
import glob
import json
import os
import time

import numpy as np

from bench.common import device_info, md_table, write_results


def parse_cell(spec: str):
    name, rest = spec.split("=", 1)
    parts = rest.split(";")
    cfg, _, variant = parts[0].partition(":")
    overrides = {}
    for p in parts[1:]:
        k, v = p.split("=", 1)
        try:
            overrides[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            overrides[k] = v
    return name.strip(), cfg, variant, overrides


def make_config(cfg: str, variant: str, overrides: dict, root: str):
    import importlib

    c = importlib.import_module(f"configs.{cfg}").get_config(variant)
    c.rl.sft_dir = os.path.join(root, "sft")
    c.ckpt_every = 0
    for k, v in overrides.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = type(node[last])(v) if not isinstance(node[last], str) else str(v)
    return c


def split_stages(spec: str) -> tuple[str, list[int]]:
    """`spec@60,120` -> (spec, [60, 120]); no `@` -> (spec, [])."""
    if "@" not in spec:
        return spec, []
    spec, _, st = spec.rpartition("@")
    return spec, sorted(int(x) for x in st.split(","))


def eval_file(rec: dict) -> str:
    return rec.get("eval_file") or os.path.join(rec["workdir"], "eval.npz")


def run_cell(spec: str, root: str) -> dict:
    """Runs one cell (every stage of it); returns the last stage's record."""
    import shutil
    import subprocess

    from rl.run_ar import run

    spec, stages = split_stages(spec)
    name, cfg, variant, overrides = parse_cell(spec)
    c = make_config(cfg, variant, overrides, root)
    workdir = os.path.join(root, "runs", name)
    total = c.rl.steps
    if stages and c.rl_optim.get("schedule", "cosine") != "constant":
        raise ValueError(f"cell {name}: stages need a constant learning-rate schedule")
    stages = [s for s in stages if s < total] + [total]
    rec = {}
    for s in stages:
        c.rl.steps = s
        cname = name if len(stages) == 1 else f"{name}_t{s}"
        load0 = os.getloadavg()[0]
        t0 = time.time()
        out = run(c, workdir)
        efile = os.path.join(workdir, "eval.npz")
        if len(stages) > 1:
            efile = os.path.join(workdir, f"eval_t{s}.npz")
            shutil.copyfile(os.path.join(workdir, "eval.npz"), efile)
        rec = {
            "name": cname,
            "base": name,
            "stage": s,
            "spec": spec if len(stages) == 1 else f"{spec}@{s}",
            "minutes": (time.time() - t0) / 60,
            "load_start": load0,
            "load_end": os.getloadavg()[0],
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
            "workdir": workdir,
            "eval_file": efile,
            **{k: v for k, v in out.items() if isinstance(v, (int, float))},
        }
        os.makedirs(os.path.join(root, "cells"), exist_ok=True)
        with open(os.path.join(root, "cells", f"{cname}.json"), "w") as f:
            json.dump(rec, f, indent=2, sort_keys=True)
    return rec


def over_control(rec: dict, ctl: dict) -> dict:
    """Paired bootstrap over prompts of the method's vs the control's after-RL scores."""
    from rl import evaluation as ev

    a, b = np.load(eval_file(rec)), np.load(eval_file(ctl))
    out = {}
    for m, k in (("greedy", 100.0), ("pass1", 100.0), ("answer_ll", 1.0)):
        iv = ev.paired_bootstrap(ev.per_prompt(b[f"after_{m}"]), ev.per_prompt(a[f"after_{m}"]))
        out[f"{m}_vs_ctl"] = str(iv.scaled(k))
    return out


def seed_mean_row(recs: dict) -> dict:
    """Mean over cells (seeds) of each change, with a 95% t-interval over the cells."""
    from scipy import stats

    row = {"cell": f"mean of {len(recs)}", "spec": "t-interval over cells"}
    for m, key in (("accuracy", "greedy"), ("pass1", "pass1"), ("answer_ll", "answer_ll")):
        x = np.array([r[f"change/{key}_mean"] for r in recs.values()])
        half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
        row[f"{m} change [95% CI]"] = (
            f"{x.mean():+.2f} [{x.mean() - half:+.2f}, {x.mean() + half:+.2f}]"
        )
    return row


def summarise(root: str, out_name: str, title: str, notes: str, mean: bool = False) -> str:
    recs = {}
    for p in sorted(glob.glob(os.path.join(root, "cells", "*.json"))):
        with open(p) as f:
            r = json.load(f)
        recs[r["name"]] = r
    rows = []
    for name, r in recs.items():
        row = {"cell": name, "spec": r["spec"].split("=", 1)[1], "min": round(r["minutes"], 1)}
        row["load"] = f"{r['load_start']:.0f}-{r['load_end']:.0f}"
        for m, unit in (("accuracy", 100), ("pass1", 100), ("answer_ll", 1)):
            key = "greedy" if m == "accuracy" else m
            row[f"{m} before"] = (
                f"{r[f'before/{m}'] * unit:.1f}" if unit > 1 else (f"{r[f'before/{m}']:.3f}")
            )
            row[f"{m} change [95% CI]"] = (
                f"{r[f'change/{key}_mean']:+.2f} [{r[f'change/{key}_lo']:+.2f}, "
                f"{r[f'change/{key}_hi']:+.2f}]"
            )
        base, stage = r.get("base", name), r.get("stage")
        ctl = next(
            (
                x
                for x in recs.values()
                if x.get("base", x["name"]) == base + "_shuffle" and x.get("stage") == stage
            ),
            None,
        )
        if ctl is not None:
            row.update(over_control(r, ctl))
        rows.append(row)
    if mean and len(recs) > 1:
        rows.append(seed_mean_row(recs))
    cols = ["cell", "spec", "accuracy before", "accuracy change [95% CI]", "pass1 before"]
    cols += ["pass1 change [95% CI]", "answer_ll before", "answer_ll change [95% CI]"]
    cols += ["greedy_vs_ctl", "pass1_vs_ctl", "answer_ll_vs_ctl", "min", "load"]
    table = md_table(rows, cols)
    info = device_info()
    md = f"# {title}\n\nDevice: {info}\n\n{notes}\n\n{table}\n"
    write_results(out_name, {"device": info, "cells": recs, "rows": rows}, md)
    return table


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/arrl")
    ap.add_argument("--cells", default="", help="cells separated by '|'")
    ap.add_argument("--summarise", action="store_true")
    ap.add_argument("--out", default="grpo_sweep")
    ap.add_argument("--title", default="GRPO/JEPO settings sweep on arithmetic (one SFT start)")
    ap.add_argument("--notes", default="")
    ap.add_argument("--mean", action="store_true", help="add a mean-over-cells row (seeds)")
    args = ap.parse_args()
    for spec in filter(None, args.cells.split("|")):
        run_cell(spec, args.root)
    if args.summarise:
        print(summarise(args.root, args.out, args.title, args.notes, args.mean))


if __name__ == "__main__":
    main()

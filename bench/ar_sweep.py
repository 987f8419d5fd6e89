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


def run_cell(spec: str, root: str) -> dict:
    import subprocess

    from rl.run_ar import run

    name, cfg, variant, overrides = parse_cell(spec)
    c = make_config(cfg, variant, overrides, root)
    workdir = os.path.join(root, "runs", name)
    load0 = os.getloadavg()[0]
    t0 = time.time()
    out = run(c, workdir)
    rec = {
        "name": name,
        "spec": spec,
        "minutes": (time.time() - t0) / 60,
        "load_start": load0,
        "load_end": os.getloadavg()[0],
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "workdir": workdir,
        **{k: v for k, v in out.items() if isinstance(v, (int, float))},
    }
    os.makedirs(os.path.join(root, "cells"), exist_ok=True)
    with open(os.path.join(root, "cells", f"{name}.json"), "w") as f:
        json.dump(rec, f, indent=2, sort_keys=True)
    return rec


def over_control(rec: dict, ctl: dict) -> dict:
    """Paired bootstrap over prompts of the method's vs the control's after-RL scores."""
    from rl import evaluation as ev

    a, b = np.load(os.path.join(rec["workdir"], "eval.npz")), None
    b = np.load(os.path.join(ctl["workdir"], "eval.npz"))
    out = {}
    for m, k in (("greedy", 100.0), ("pass1", 100.0), ("answer_ll", 1.0)):
        iv = ev.paired_bootstrap(ev.per_prompt(b[f"after_{m}"]), ev.per_prompt(a[f"after_{m}"]))
        out[f"{m}_vs_ctl"] = str(iv.scaled(k))
    return out


def summarise(root: str, out_name: str, title: str, notes: str) -> str:
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
        ctl = recs.get(name + "_shuffle")
        if ctl is not None:
            row.update(over_control(r, ctl))
        rows.append(row)
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
    args = ap.parse_args()
    for spec in filter(None, args.cells.split("|")):
        run_cell(spec, args.root)
    if args.summarise:
        print(summarise(args.root, args.out, args.title, args.notes))


if __name__ == "__main__":
    main()

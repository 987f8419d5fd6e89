"""Small-scale reproduction of the shape of SPG's Table 1 (arXiv:2510.09541), and the sampler
throughput benchmark.

Table: SPG-Mix, SPG-EUBO, SPG-ELBO, D1 (diffu-GRPO) and WD1 on 4x4 Sudoku and 3-number Countdown
(compact format, the `configs/spg.py` model), >= 3 seeds each, equal compute (same warm start per
(task, seed), same RL steps, prompts, group size, µ and generation budget). Each cell is one
`rl.run_spg.run` in `bench/results/spg_runs/table_subs/steps<N>/<task>/<method>/seed<k>` and is
cached: a cell with a `result.json` is read back, an interrupted one resumes from its checkpoint.
The SFT warm start of (task, seed) runs once (`spg_runs/table_subs/<task>/sft_seed<k>`) and is
shared by every method through a symlink. The caches are keyed by path only: delete them after
changing `configs/spg.py`. Reported: held-out greedy accuracy at the training generation length
(Sudoku: pooled cell accuracy) after RL, mean ± std over the finished seeds, the paired change per
seed, and the warm-start value.

  python -m bench.spg_table [--tasks=sudoku4,countdown] [--seeds=3] [--rl_steps=N]
                            [--budget_min=M] [--methods=SPG-Mix,D1] [--out=NAME] [--sampler]

`bench_sampler(...)` measures sampler tokens/s and FLOP utilisation; `bench/mfu.py` can call it.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from bench.common import RESULTS, device_info, md_table, run_spg_cell, write_results

CONTROL = "Control-shuffle"
METHODS = {
    "SPG-Mix": "method=spg,bound=mix",
    "SPG-EUBO": "method=spg,bound=eubo",
    "SPG-ELBO": "method=spg,bound=elbo",
    "SPG-zero": "method=spg,bound=zero",
    "D1": "method=diffu_grpo",
    "WD1": "method=wd1",
    # The shuffled-advantage control of the default method (configs/spg.py's bound): the same
    # loop, prompts and keys, with rewards permuted within each group (issue 12).
    CONTROL: "method=spg,control=shuffle",
}


def cell_dir(root: str, task: str, method: str, seed: int, rl_steps: int | None) -> str:
    steps_dir = f"steps{rl_steps}" if rl_steps is not None else "steps_default"
    return os.path.join(root, steps_dir, task, method, f"seed{seed}")


def run_cell(task: str, method: str, seed: int, rl_steps: int | None, root: str) -> dict:
    """Runs (or reads back) one cell; returns its result dict (with its `seed`)."""
    from configs import spg as spg_config

    wd = cell_dir(root, task, method, seed, rl_steps)
    res_path = os.path.join(wd, "result.json")
    if os.path.exists(res_path):
        with open(res_path) as f:
            return {"seed": seed, **json.load(f)}
    variant, _, control = METHODS[method].partition(",control=")
    config = spg_config.get_config(f"task={task},seed={seed},{variant}")
    if control:
        config.rl.control = control
    if rl_steps is not None:
        config.rl.steps = rl_steps
    config.rl.eval_every = 0  # before/after only: the table needs no curve, and it halves eval time
    out = run_spg_cell(config, wd, os.path.join(root, task, f"sft_seed{seed}"))
    with open(res_path, "w") as f:
        json.dump(out, f, indent=2, sort_keys=True)
    return {"seed": seed, **out}


def summarise(results: dict, tasks, gen_lens, methods=tuple(METHODS)) -> tuple[list[dict], str]:
    rows = []
    for method in methods:
        row = {"method": method}
        for task in tasks:
            g = gen_lens[task]
            vals = np.array(
                [r[f"after/eval/accuracy@{g}"] for r in results.get((task, method), [])]
            )
            base = np.array(
                [r[f"before/eval/accuracy@{g}"] for r in results.get((task, method), [])]
            )
            if len(vals):
                # Seeds differ mostly in their warm start (their own SFT run), so the paired change
                # after - before per seed is the comparison between methods; the raw mean is kept.
                d = 100 * (vals - base)
                row[task] = f"{100 * vals.mean():.1f} ± {100 * vals.std():.1f} (n={len(vals)})"
                row[f"{task} change"] = f"{d.mean():+.2f} ± {d.std():.2f}"
                row[f"{task} warm start"] = f"{100 * base.mean():.1f}"
                row.update(_intervals(results, task, method, g))
            else:
                row[task] = "not run"
                row[f"{task} change"] = row[f"{task} warm start"] = "-"
        rows.append(row)
    cols = ["method"] + [c for t in tasks for c in (t, f"{t} change", f"{t} warm start")]
    extra = [k for r in rows for k in r if k not in cols]
    cols += list(dict.fromkeys(extra))
    return rows, md_table(rows, cols)


def _intervals(results: dict, task: str, method: str, g: int) -> dict:
    """Per-seed paired 95% intervals over prompts (cells from the powered harness), the t
    interval of the change over seeds, and the gain over the shuffle control paired by seed."""
    from rl.evaluation import gain_over_control, seed_interval

    cells = results.get((task, method), [])
    key = f"change/test/accuracy@{g}"
    if not cells or f"{key}/mean" not in cells[0]:
        return {}
    per_seed = [
        f"{100 * c[key + '/mean']:+.1f} [{100 * c[key + '/lo']:+.1f}, {100 * c[key + '/hi']:+.1f}]"
        for c in cells
    ]
    ch = [c[key + "/mean"] for c in cells]
    out = {
        f"{task} change per seed (95% CI over prompts)": "; ".join(per_seed),
        f"{task} change over seeds (95% t)": str(seed_interval(ch).scaled(100)),
    }
    # The control paired by seed: a method run on fewer seeds is compared on those seeds only.
    # Cells without a `seed` (older callers) pair by position.
    ctrl = {
        c.get("seed", i): c[key + "/mean"] for i, c in enumerate(results.get((task, CONTROL), []))
    }
    seeds = [c.get("seed", i) for i, c in enumerate(cells)]
    pairs = [(c[key + "/mean"], ctrl[s]) for s, c in zip(seeds, cells) if s in ctrl]
    if method != CONTROL and len(pairs) > 1:
        a, b = zip(*pairs)
        out[f"{task} gain over control (95% t)"] = str(gain_over_control(a, b).scaled(100))
    elif method != CONTROL and pairs:
        out[f"{task} gain over control (95% t)"] = (
            f"{100 * (pairs[0][0] - pairs[0][1]):+.2f} (1 seed, no interval)"
        )
    return out


def bench_sampler(
    *,
    d_model=64,
    n_layers=2,
    n_heads=4,
    d_ff=192,
    vocab=105,
    batch=32,
    prompt_len=32,
    gen_len=64,
    steps=32,
    block_len=16,
    dtype="float32",
    iters=3,
) -> dict:
    """Tokens/s and FLOP utilisation of the jitted LLaDA sampler (one full decode per call).

    FLOPs per denoising step: 2 * params * B * T (no KV cache: the full prompt + G positions are
    recomputed) + 4 * n_layers * T^2 * d_model * B for attention, T = prompt_len + gen_len.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from bench.common import matmul_peak, time_fn
    from models.transformer import Transformer, TransformerConfig
    from rl.sampling.diffusion import make_sampler
    from train.state import split_module

    cfg = TransformerConfig(
        vocab_size=vocab,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_heads,
        d_ff=d_ff,
        max_len=prompt_len + gen_len,
        causal=False,
        dtype=dtype,
    )
    graphdef, params, rest = split_module(Transformer(cfg, rngs=nnx.Rngs(0)))
    sample = make_sampler(
        graphdef, gen_len=gen_len, block_len=block_len, steps=steps, mask_id=3, temperature=1.0
    )
    prompt = jax.random.randint(jax.random.key(1), (batch, prompt_len), 5, vocab)
    pmask = jnp.ones((batch, prompt_len), bool)
    sec = time_fn(
        lambda k: sample(params, rest, prompt, pmask, k), jax.random.key(2), warmup=1, iters=iters
    )
    t = prompt_len + gen_len
    p = cfg.num_params(embeddings=False) + cfg.vocab_size * cfg.d_model
    flops = steps * (2.0 * p * batch * t + 4.0 * n_layers * t * t * d_model * batch)
    gpu = jax.default_backend() == "gpu"
    peak = matmul_peak(4096 if gpu else 1024, jnp.bfloat16 if gpu else jnp.float32)
    return {
        "bench": "diffusion_sampler",
        "params": cfg.num_params(),
        "batch": batch,
        "gen_len": gen_len,
        "steps": steps,
        "decode_s": sec,
        "tokens_per_s": batch * gen_len / sec,
        "achieved_flops": flops / sec,
        "peak_flops": peak,
        "mfu": flops / sec / peak,
        "dtype": dtype,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="sudoku4,countdown")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rl_steps", type=int, default=None)
    ap.add_argument("--budget_min", type=float, default=0.0, help="stop starting cells after")
    ap.add_argument("--sampler", action="store_true", help="only the sampler benchmark")
    ap.add_argument("--out", default="spg_table", help="results name in bench/results/")
    ap.add_argument("--note", default="", help="reading appended to the Markdown note")
    args = ap.parse_args()
    if args.sampler:
        row = bench_sampler()
        table = md_table([row], list(row))
        print(table)
        write_results(
            "spg_sampler",
            {"device": device_info(), "rows": [row]},
            f"# Diffusion sampler throughput\n\n{device_info()}\n\n{table}\n",
        )
        return
    from configs import spg as spg_config

    tasks = args.tasks.split(",")
    gen_lens = {t: spg_config.get_config(f"task={t}").rl.gen_len for t in tasks}
    # Post-SUBS (63c9429) caches only: older warm starts and cells are different models.
    root = os.path.join(RESULTS, "spg_runs", "table_subs")
    results: dict = {}
    t0 = time.time()
    skipped = []
    # Seed-major order, so a time budget yields whole seeds of every method first.
    for seed in range(args.seeds):
        for task in tasks:
            for method in args.methods.split(","):
                done = os.path.exists(
                    os.path.join(cell_dir(root, task, method, seed, args.rl_steps), "result.json")
                )
                # The budget stops new cells only; finished ones are always read back.
                if not done and args.budget_min and time.time() - t0 > 60 * args.budget_min:
                    skipped.append((task, method, seed))
                    continue
                results.setdefault((task, method), []).append(
                    run_cell(task, method, seed, args.rl_steps, root)
                )
    rows, table = summarise(results, tasks, gen_lens, args.methods.split(","))
    print(table)
    note = (
        "Held-out greedy accuracy (%) after RL at the training generation length; Sudoku is "
        "pooled cell accuracy. mean ± std over seeds (n = seeds finished). Equal compute per "
        "cell: same warm start, RL steps, prompts per step, group size, µ and sampler budget."
    )
    note += f" RL steps per cell: {args.rl_steps or 'config default'}; tasks run: {tasks}."
    note += (
        " `change` is the paired after - before difference per seed (points), mean ± std: seeds"
        " differ mostly in their own warm start (SFT seed), so it is the column that compares"
        " methods. Countdown is the small-scale version of `configs/spg.py` (3 operands in 1..9,"
        " targets <= 50). Gradient diagnostics of the same estimators: `spg_estimators.md`."
    )
    if skipped:
        note += f"\n\nNot run within the time budget: {len(skipped)} cells: {skipped}"
    if args.note:
        note += "\n\n" + args.note
    payload = {
        "device": device_info(),
        "rows": rows,
        "cells": {f"{t}/{m}": v for (t, m), v in results.items()},
    }
    write_results(args.out, payload, f"# SPG Table 1 (small scale)\n\n{note}\n\n{table}\n")


if __name__ == "__main__":
    main()

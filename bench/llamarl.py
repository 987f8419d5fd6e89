"""LlamaRL modes on CPU: measured step times on 8 fake devices and the §3 cost model.

LlamaRL (arXiv:2505.24034; spec `llamarl.md` §3, §6.2, §8). Runs `configs/llamarl.py:tiny` (the
SFT stage cached in runs/bench_llamarl_sft) in sync (k=0, co-located), async (k=1) and
async_k (k=2) on 8 fake CPU devices, each plain and with a latency-injected generator (a sleep per
generated token standing in for memory-bound decode or tool latency, §6.2 mode 2), and prints the
§8 speed table: median step time after warm-up, speed-up over sync, phase times, idle ratios,
weight-sync time, staleness and IS statistics. Next to each measured async speed-up it prints the
cost model's prediction T_sync / max(T_g(N_g), T_t(N_t) + T_ws) from the phases measured on
the mode's own sub-meshes (the sync blocks the trainer), and the overlap-only bound from the
co-located run's phases. A split sweep evaluates
min over N_g of max(T_g(N_g), T_t(N - N_g)) for N = 8 from the measured one-step phase times under
linear scaling and under sub-linear scaling e(n) = n^-0.3 (assumed curves, not measured ones).

Every number here is CPU evidence: the fake devices share two cores, so in-process overlap of
compute cannot speed anything up (only the injected sleep overlaps); it is functional and
cost-model evidence, never a GPU speed-up. Not yet: the pinned two-process mode, time-to-target
reward (the tiny policy's reward does not rise), measured T(n) curves.

    python -m bench.llamarl [--steps 12] [--latency_ms 2]
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("LMRL_NO_PROGRESS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

from bench.common import device_info, md_table, write_results  # noqa: E402

MODES = [("sync", "mode=sync"), ("async", "mode=async"), ("async_k", "mode=async_k,k=2")]


def run_mode(arg: str, steps: int, latency_s: float, sft_dir: str) -> dict:
    from configs import llamarl
    from rl.distributed.run import run

    c = llamarl.get_config("tiny," + arg)
    c.rl.steps = steps
    c.rl.sft_dir = sft_dir
    c.llamarl.inject_latency_per_token_s = latency_s
    c.ckpt_every = 0  # no checkpoint inside the timed steps
    c.lock()
    with tempfile.TemporaryDirectory() as wd:
        res = run(c, wd)
        rows = [json.loads(x) for x in open(os.path.join(wd, "metrics.jsonl"))]
    rl = [r for r in rows if "llamarl/seq" in r][2:]  # discard compile / warm-up steps

    def med(key):
        vals = [r[key] for r in rl if key in r]
        return float(np.median(vals)) if vals else 0.0

    return {
        "layout": res["layout"],
        "k": int(res["max_staleness"]),
        "step_s": med("time/step"),
        "step_p90_s": float(np.percentile([r["time/step"] for r in rl], 90)),
        "T_gen": med("time/generate"),
        "T_train": med("time/train"),
        "T_ws": med("ws/seconds"),
        "trainer_idle": res["trainer_idle_ratio"],
        "generator_idle": res["generator_idle_ratio"],
        "lag_mean": res["staleness/mean"],
        "dropped": res["staleness/dropped"],
        "is_mean": med("aipo/is_mean"),
        "kl_k3": med("aipo/mismatch_kl_k3"),
        "tokens_per_step": med("train/denom"),
    }


def split_sweep(t_g1: float, t_t1: float, n: int = 8, alpha: float = 0.0) -> dict:
    """Cost model over N_g = 1..n-1 from one-device times with e(m) = m^-alpha."""

    def t(w, m):
        return w / (m * m**-alpha)

    sync = t(t_g1, n) + t(t_t1, n)
    rows = [(g, max(t(t_g1, g), t(t_t1, n - g))) for g in range(1, n)]
    best_g, best = min(rows, key=lambda x: x[1])
    return {"alpha": alpha, "best_N_g": best_g, "predicted_speedup": sync / best}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--latency_ms", type=float, default=2.0)
    args = ap.parse_args()
    sft_dir = os.path.join("runs", "bench_llamarl_sft")  # the cached warm start (not committed)
    out, rows = {"device": device_info(), "steps": args.steps}, []
    for latency in (0.0, args.latency_ms / 1000):
        base = None
        for name, arg in MODES:
            r = run_mode(arg, args.steps, latency, sft_dir)
            r.update(mode=name, latency_ms_per_token=latency * 1000)
            if name == "sync":
                base = r
                r["speedup"] = 1.0
                r["predicted_speedup"] = 1.0
                r["overlap_only_speedup"] = 1.0
            else:
                r["speedup"] = base["step_s"] / max(r["step_s"], 1e-9)
                # §3 with the phases measured on this mode's sub-meshes: T_sync (measured) /
                # max(T_g(N_g), T_t(N_t) + T_ws), the sync blocking the trainer.
                t_async = max(r["T_gen"], r["T_train"] + r["T_ws"])
                r["predicted_speedup"] = base["step_s"] / max(t_async, 1e-9)
                # The same from the co-located run's phases only (no re-layout effect).
                t_sync = base["T_gen"] + base["T_train"] + base["T_ws"]
                t_overlap = max(base["T_gen"], base["T_train"] + base["T_ws"])
                r["overlap_only_speedup"] = t_sync / max(t_overlap, 1e-9)
            rows.append(r)
            print(name, latency, {k: v for k, v in r.items() if isinstance(v, float)})
    out["modes"] = rows
    sync0 = rows[0]
    out["split_sweep"] = [
        split_sweep(sync0["T_gen"], sync0["T_train"], alpha=a) for a in (0.0, 0.3)
    ]
    cols = [
        "mode",
        "latency_ms_per_token",
        "layout",
        "k",
        "step_s",
        "step_p90_s",
        "speedup",
        "predicted_speedup",
        "overlap_only_speedup",
        "T_gen",
        "T_train",
        "T_ws",
        "trainer_idle",
        "generator_idle",
        "lag_mean",
        "dropped",
        "is_mean",
        "kl_k3",
    ]
    md = [
        "# LlamaRL modes on CPU (functional and cost-model evidence, not GPU speed-ups)",
        "",
        f"`python -m bench.llamarl --steps {args.steps} --latency_ms {args.latency_ms}`: "
        "configs/llamarl.py:tiny on 8 fake CPU devices sharing 2 cores; steps 0-1 discarded; "
        "times are medians in seconds (the machine is shared: expect noise of tens of percent). "
        "`predicted_speedup` = T_step(sync) / max(T_g, T_t + T_ws) with the phases measured in "
        "that mode on its sub-meshes (§3/§8); `overlap_only_speedup` = (T_g + T_t + T_ws) / "
        "max(T_g, T_t + T_ws) from the co-located run's phases (what overlap alone can give).",
        "",
        md_table(rows, cols),
        "",
        "Split sweep (cost model, N = 8 devices, integer N_g: work W_g : W_t in the ratio of the "
        "sync run's T_gen : T_train; efficiency e(n) = n^-alpha assumed, not measured; alpha = 0 "
        "is linear scaling, where the designs tie up to integrality):",
        "",
        md_table(out["split_sweep"], ["alpha", "best_N_g", "predicted_speedup"]),
        "",
        f"Device: {out['device']}",
    ]
    text = "\n".join(md)
    print(text)
    write_results("llamarl", out, text)


if __name__ == "__main__":
    main()

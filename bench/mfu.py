"""Model FLOP utilisation of the shared update step and of the samplers.

Achieved FLOP/s = (6 * params * tokens + attention FLOPs) / step time, where attention FLOPs are
12 * n_layers * T^2 * d_model per sequence (QK^T and AV, forward + backward, full square counted).
XLA's own count (`compiled.cost_analysis()["flops"]`) is reported beside the formula, so a step
that recomputes work (or a formula that misses some) shows up as a gap between the two.

The peak is a dense matmul measured in the same process (CPU: fp32; GPU: bf16). On a shared
machine both the peak and the step move with the load, so they are measured *interleaved*: each
of `--reps` repetitions times the peak matmul, the update step, and the step with attention
replaced by a cheap elementwise stand-in, back to back, and the MFU of a repetition is its step
against its own peak. The table reports the median over repetitions with the spread (min-max), and
the 1-minute load average around each repetition. Attention's share of the step is
`1 - t(stub) / t(step)`: the time attention (scores, mask, softmax, weighted sum, and their
backward) adds to the step; the Q/K/V and output projections are outside it.

Every time is also taken as process CPU time (all threads): on an oversubscribed machine the wall
clock mostly measures the other processes, while CPU seconds per step (and per peak matmul) move
much less. `mfu_cpu` = (FLOPs / CPU s of the step) / (FLOPs / CPU s of the peak). It equals the
wall-clock MFU when both keep every core busy; idle cores in the step (serial phases) lower the
wall-clock figure only, so on an idle machine `mfu` is the figure to quote.

`--baseline=PATH` imports another models/transformer.py (e.g. from a checkout of an older commit)
and measures its update step in the same repetitions, as the row `update_step[baseline]`: a
before/after comparison under the same load.

Rows: the update step (issue 2, issue 19), the LLaDA diffusion sampler (tokens/s and FLOP
utilisation, issue 4; `bench.spg_table.bench_sampler`), and KV-cache AR decoding at batch 1 and 64
(tokens/s, issue 5; `bench.decode.bench_decode`). `--rows=update` runs the update step only.

Usage: python -m bench.mfu [--size=cpu|gpu300m] [--steps=8] [--reps=3] [--rows=all|update]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import models.transformer as _this_transformer
from bench.common import GPU300M, device_info, md_table, write_results
from models.transformer import TransformerConfig
from train.host_memory import retain_freed_memory
from train.lm import make_ar_loss
from train.state import TrainState, split_module
from train.step import make_update_step

SIZES = {
    # ~19M parameters at sequence length 256 (issue 2's CPU target size).
    "cpu": dict(
        cfg=dict(
            vocab_size=512, d_model=512, n_layers=6, n_heads=8, n_kv_heads=4, d_ff=1536, max_len=256
        ),
        batch=8,
        seq=256,
        dtype="float32",
    ),
    # ~300M parameters for a GPU (bf16 compute, fp32 params).
    "gpu300m": dict(cfg=GPU300M, batch=16, seq=1024, dtype="bfloat16"),
}


def step_flops(cfg: TransformerConfig, batch: int, seq: int) -> float:
    params = cfg.num_params(embeddings=False) + cfg.vocab_size * cfg.d_model  # unembed matmul
    return 6.0 * params * batch * seq + 12.0 * cfg.n_layers * seq * seq * cfg.d_model * batch


def attention_flops(cfg: TransformerConfig, batch: int, seq: int) -> float:
    return 12.0 * cfg.n_layers * seq * seq * cfg.d_model * batch


def _attention_stub(query, key, value, *args, **kw):
    """Attention's stand-in: keeps q/k/v (and their projections) live, drops scores/softmax."""
    del args, kw
    g = query.shape[2] // key.shape[2]
    return query + jnp.repeat(key + value, g, axis=2)


def _timed(fn, arg, iters: int, cpu: bool = False) -> list[float]:
    """Seconds per call: wall clock, or (cpu=True) this process's CPU time over all threads."""
    clock = time.process_time if cpu else time.perf_counter
    times = []
    for _ in range(iters):
        t0 = clock()
        jax.block_until_ready(fn(arg))
        times.append(clock() - t0)
    return times


def _timed2(fn, arg, iters: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds per call, both from the same calls."""
    wall, cpu = [], []
    for _ in range(iters):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(arg))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


class UpdateStep:
    """The jitted update step of `size`, compiled once, with or without real attention."""

    def __init__(self, size: str, stub_attention: bool = False, module=None):
        spec = SIZES[size]
        tf = module or _this_transformer
        self.cfg = cfg = tf.TransformerConfig(**spec["cfg"], dtype=spec["dtype"])
        self.b, self.t = spec["batch"], spec["seq"]
        model = tf.Transformer(cfg, rngs=nnx.Rngs(0))
        graphdef, params, rest = split_module(model)
        tx = optax.adamw(1e-4)
        state = TrainState.create(
            {"policy": params}, tx, jax.random.key(0), frozen={"policy": rest}
        )
        toks = jax.random.randint(jax.random.key(1), (self.b, self.t + 1), 0, cfg.vocab_size)
        self.batch = {
            "tokens": toks,
            "mask": jnp.ones_like(toks, bool),
            "loss_mask": jnp.ones_like(toks, bool),
        }
        real = jax.nn.dot_product_attention
        if stub_attention:  # patched while tracing only: the compiled step keeps the stub
            jax.nn.dot_product_attention = _attention_stub
        try:
            step = make_update_step(make_ar_loss(graphdef), tx)
            self.compiled = step.lower(state, self.batch).compile()
        finally:
            jax.nn.dot_product_attention = real
        self.state = state
        for _ in range(2):  # warm-up
            jax.block_until_ready(self(self.batch))

    def __call__(self, batch):
        self.state, m = self.compiled(self.state, batch)
        return m["train/loss"]

    def xla_stats(self) -> dict:
        cost = self.compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        hlo = self.compiled.as_text()
        return {
            "xla_flops": float(cost.get("flops", float("nan"))),
            "hlo_transposes": len(re.findall(r"= \S+ transpose\(", hlo)),
            "hlo_copies": len(re.findall(r"= \S+ copy\(", hlo)),
        }


class Peak:
    """Dense square matmul FLOP/s (size picked once as the fastest of n/2, n, 2n)."""

    def __init__(self):
        gpu = jax.default_backend() == "gpu"
        n, self.dtype = (4096, jnp.bfloat16) if gpu else (2048, jnp.float32)
        f = jax.jit(lambda x, y: x @ y)
        best = None
        for m in (n // 2, n, 2 * n):
            a = jax.random.normal(jax.random.key(0), (m, m), self.dtype)
            jax.block_until_ready(f(a, a))
            rate = 2 * m**3 / min(_timed(lambda x: f(x, x), a, 3))
            if best is None or rate > best[0]:
                best = (rate, m)
        self.m = best[1]
        self.a = jax.random.normal(jax.random.key(0), (self.m, self.m), self.dtype)
        self.f = f

    def measure(self, seconds: float) -> tuple[float, float]:
        """Median FLOP/s per wall second and per CPU second, over calls filling ~`seconds`."""
        one = min(_timed(lambda x: self.f(x, x), self.a, 2))
        iters = max(5, int(seconds / max(one, 1e-6)))
        wall, cpu = _timed2(lambda x: self.f(x, x), self.a, iters)
        return 2 * self.m**3 / wall, 2 * self.m**3 / cpu


def _spread(xs: list[float]) -> dict:
    med = statistics.median(xs)
    return {"median": med, "min": min(xs), "max": max(xs), "spread": (max(xs) - min(xs)) / med}


def load_transformer(path: str):
    """Imports another version of models/transformer.py (e.g. a checkout of an older commit)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("baseline_transformer", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def bench_update(size: str, iters: int, reps: int, baseline: str = "") -> list[dict]:
    """Interleaved repetitions of (peak, step, step with stubbed attention); see module doc.

    With `baseline` (a path to another models/transformer.py), its step and stub run in the same
    repetitions, so the two versions see the same load.
    """
    variants = {"update_step": None}
    if baseline:
        variants["update_step[baseline]"] = load_transformer(baseline)
    steps = {
        k: (UpdateStep(size, module=m), UpdateStep(size, stub_attention=True, module=m))
        for k, m in variants.items()
    }
    peak = Peak()
    per_rep = {k: [] for k in variants}
    for _ in range(reps):
        load0 = os.getloadavg()[0]
        p, pc = peak.measure(seconds=3.0)
        times = {
            k: (_timed2(a, a.batch, iters), _timed2(b, b.batch, iters))
            for k, (a, b) in steps.items()
        }
        p2, pc2 = peak.measure(seconds=3.0)
        p, pc = max(p, p2), max(pc, pc2)  # a burst of load lowers the MFU, never raises it
        load = (load0 + os.getloadavg()[0]) / 2
        for k, ((ts, tsc), (tstub, tstubc)) in times.items():
            flops = step_flops(steps[k][0].cfg, steps[k][0].b, steps[k][0].t)
            per_rep[k].append(
                {
                    "peak_flops": p,
                    "step_s": ts,
                    "stub_step_s": tstub,
                    "mfu": flops / ts / p,
                    "attention_share": 1.0 - tstub / ts,
                    "step_cpu_s": tsc,
                    "mfu_cpu": flops / tsc / pc,
                    "attention_share_cpu": 1.0 - tstubc / tsc,
                    "load1": load,
                }
            )
    rows = []
    for k, reps_k in per_rep.items():
        step = steps[k][0]
        cfg, b, t = step.cfg, step.b, step.t
        flops = step_flops(cfg, b, t)
        summary = {f: _spread([r[f] for r in reps_k]) for f in reps_k[0]}
        rows.append(
            {
                "bench": k,
                "size": size,
                "params": cfg.num_params(),
                "batch": b,
                "seq": t,
                "step_s": summary["step_s"]["median"],
                "tokens_per_s": b * t / summary["step_s"]["median"],
                "formula_flops": flops,
                **step.xla_stats(),
                "attention_flop_share": attention_flops(cfg, b, t) / flops,
                "attention_share": summary["attention_share"]["median"],
                "attention_share_cpu": summary["attention_share_cpu"]["median"],
                "achieved_flops": flops / summary["step_s"]["median"],
                "peak_flops": summary["peak_flops"]["median"],
                "mfu": summary["mfu"]["median"],
                "mfu_min": summary["mfu"]["min"],
                "mfu_max": summary["mfu"]["max"],
                "mfu_cpu": summary["mfu_cpu"]["median"],
                "mfu_cpu_min": summary["mfu_cpu"]["min"],
                "mfu_cpu_max": summary["mfu_cpu"]["max"],
                "load1": summary["load1"]["median"],
                "dtype": SIZES[size]["dtype"],
                "reps": reps_k,
                "summary": summary,
            }
        )
    return rows


def other_rows(size: str) -> list[dict]:
    """Sampler and AR-decode rows (not interleaved; tokens/s, and the sampler's FLOP/s)."""
    from bench.decode import bench_decode
    from bench.spg_table import bench_sampler

    gpu = size != "cpu"
    samp = (
        dict(d_model=1024, n_layers=16, n_heads=16, d_ff=4096, vocab=32000, batch=32)
        | dict(prompt_len=64, gen_len=256, steps=128, block_len=32, dtype="bfloat16")
        if gpu
        else dict(d_model=256, n_layers=4, n_heads=4, d_ff=768, batch=32)
        | dict(prompt_len=32, gen_len=64, steps=32, block_len=16)
    )
    rows = [bench_sampler(**samp)]
    for b in (1, 64):
        r = bench_decode(size, b, 128)
        rows.append(
            {
                "bench": f"ar_decode_b{b}",
                "size": size,
                "params": r["params"],
                "batch": b,
                "seq": r["prompt"] + r["new_tokens"],
                "step_s": r["ms_per_step"] / 1e3,
                "tokens_per_s": r["tokens_per_s"],
            }
        )
    return rows


def main():
    retain_freed_memory()  # as the CLI does, before JAX's first computation (train/host_memory.py)
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="gpu300m" if jax.default_backend() == "gpu" else "cpu")
    p.add_argument("--steps", type=int, default=8, help="timed steps per repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--rows", default="all", choices=["all", "update"])
    p.add_argument("--out", default="mfu", help="results name under bench/results/")
    p.add_argument("--baseline", default="", help="another models/transformer.py to interleave")
    args = p.parse_args()
    ups = bench_update(args.size, args.steps, args.reps, args.baseline)
    up = ups[0]
    rows = list(ups)
    if args.rows == "all":
        rows += other_rows(args.size)
        for r in rows[len(ups) :]:
            r["peak_flops"] = up["peak_flops"]
            if "achieved_flops" in r:
                r["mfu"] = r["achieved_flops"] / up["peak_flops"]
    info = device_info()
    cols = ["bench", "size", "params", "batch", "seq", "step_s", "tokens_per_s"]
    cols += ["achieved_flops", "peak_flops", "mfu", "mfu_min", "mfu_max"]
    cols += ["mfu_cpu", "mfu_cpu_min", "mfu_cpu_max", "load1"]
    table = md_table(rows, cols)
    s = up["summary"]
    xla_cols = ["bench", "formula_flops", "xla_flops", "attention_flop_share", "attention_share"]
    xla_cols += ["attention_share_cpu"]
    xla_cols += ["hlo_transposes", "hlo_copies"]
    reps = md_table(
        [{"bench": u["bench"], **r} for u in ups for r in u["reps"]],
        ["bench"] + list(up["reps"][0]),
    )
    print(table, "\n\n" + md_table(ups, xla_cols) + "\n\n" + reps)
    md = (
        f"# MFU\n\nDevice: {info}\n\nUpdate step: {args.reps} interleaved repetitions of "
        f"(peak matmul, {args.steps} steps, {args.steps} steps with attention stubbed); MFU is "
        f"each repetition's step against its own peak, median (min-max) "
        f"{s['mfu']['median']:.3f} ({s['mfu']['min']:.3f}-{s['mfu']['max']:.3f}); peak spread "
        f"{s['peak_flops']['spread']:.1%}, 1-min load average {s['load1']['min']:.1f}-"
        f"{s['load1']['max']:.1f} on {os.cpu_count()} CPUs. Target on an idle 2-core CPU: "
        f"update-step MFU >= 0.65. `step_s` of the decode rows is seconds per generated token "
        f"step; AR decoding is memory/latency bound and has no FLOP utilisation figure here.\n\n"
        f"{table}\n\nFLOPs per update step (formula vs XLA's cost analysis), attention's share "
        f"of the FLOPs and of the step time, and the compiled step's transpose/copy counts:\n\n"
        f"{md_table(ups, xla_cols)}\n\nRepetitions:\n\n{reps}\n"
    )
    write_results(args.out, {"device": info, "rows": rows}, md)


if __name__ == "__main__":
    main()

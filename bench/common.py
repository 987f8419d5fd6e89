"""Benchmark helpers: timing after compile, the measured matmul peak, result files."""

from __future__ import annotations

import json
import os
import platform
import time

import jax
import jax.numpy as jnp

from train import host_memory

# The ~300M-parameter GPU model that bench/mfu.py and bench/decode.py both measure.
GPU300M = dict(
    vocab_size=32000, d_model=1024, n_layers=20, n_heads=16, n_kv_heads=8, d_ff=3072, max_len=1024
)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def time_fn(fn, *args, warmup: int = 2, iters: int = 5) -> float:
    """Median seconds per call of `fn(*args)` after `warmup` calls (compile excluded)."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def matmul_peak(n: int = 2048, dtype=jnp.float32, iters: int = 5) -> float:
    """Measured dense-matmul FLOP/s on the default device: the best of n/2, n and 2n squares.

    Taking the best size keeps the peak honest when one size happens to run badly (cache sizes,
    a busy machine), so utilisation figures are not inflated by a low peak.
    """
    best = 0.0
    for m in (n // 2, n, 2 * n):
        a = jax.random.normal(jax.random.key(0), (m, m), dtype)
        b = jax.random.normal(jax.random.key(1), (m, m), dtype)
        f = jax.jit(lambda x, y: x @ y)
        best = max(best, 2 * m**3 / time_fn(f, a, b, iters=iters))
    return best


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        return names[0] if names else ""
    except OSError:
        return ""


def device_info() -> dict:
    """The device, the host CPU model and this process's host allocator setting
    (train/host_memory.state(): "retain" where the benchmark applied it, "system" where it did not
    or was told not to, "unavailable" off glibc)."""
    d = jax.devices()[0]
    return {
        "platform": d.platform,
        "device": d.device_kind,
        "num_devices": jax.device_count(),
        "host": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "host_malloc": host_memory.state(),
        "jax": jax.__version__,
    }


def write_results(name: str, payload: dict, markdown: str) -> tuple[str, str]:
    """Writes bench/results/<name>.json and .md, and the .md table's companion PNG
    (`bench.plots.table_png`, when the table has numbers); returns the .json and .md paths."""
    os.makedirs(RESULTS, exist_ok=True)
    jp, mp = os.path.join(RESULTS, f"{name}.json"), os.path.join(RESULTS, f"{name}.md")
    with open(jp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    with open(mp, "w") as f:
        f.write(markdown.rstrip() + "\n")
    from bench.plots import table_png

    table_png(mp)
    return jp, mp


def md_table(rows: list[dict], cols: list[str]) -> str:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def run_spg_cell(config, workdir: str, shared_sft: str) -> dict:
    """`rl.run_spg.run(config, workdir)` with the SFT warm start shared through `workdir/sft`
    (a symlink to `shared_sft`, trained by the first cell that needs it); adds the cell's wall
    time and CPU-seconds (all threads: on a shared machine the wall time says little)."""
    import time

    from rl.run_spg import run

    os.makedirs(shared_sft, exist_ok=True)
    os.makedirs(workdir, exist_ok=True)
    link = os.path.join(workdir, "sft")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(shared_sft), link)
    t0, c0 = time.time(), time.process_time()
    out = run(config, workdir)
    out["wall_s"] = time.time() - t0
    out["cpu_s"] = time.process_time() - c0
    return out

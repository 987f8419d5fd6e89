"""Autoregressive decode throughput of the KV-cache sampler (rl/sampling/autoregressive.py).

Tokens/s = batch × new tokens / wall time of one jitted `sample` call (prefill included, compile
excluded, EOS disabled so every row decodes the full budget), at batch 1 and 64. At batch 1 a
decode step is memory-bound: every step reads all parameters and the KV cache written so far, so
memory-bandwidth utilisation = (param bytes + mean KV bytes) × steps / time / peak bandwidth.
The peak comes from a table of datasheet numbers for known accelerators; on a CPU (or an unknown
device) it is measured with a large on-device copy, which reads and writes each byte once.

Usage: python -m bench.decode [--size=cpu|gpu300m] [--new=128]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from flax import nnx

from bench.common import GPU300M, device_info, md_table, time_fn, write_results
from models.transformer import Transformer, TransformerConfig, as_dtype
from rl.sampling.autoregressive import make_sampler
from train.state import split_module

SIZES = {
    # The default RL policy of configs/grpo.py and configs/jepo.py.
    "cpu": dict(
        cfg=dict(
            vocab_size=105, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=384, max_len=512
        ),
        prompt=16,
        dtype="float32",
    ),
    "gpu300m": dict(
        cfg=GPU300M,
        prompt=64,
        dtype="bfloat16",
    ),
}

# Datasheet HBM bandwidth, bytes/s.
PEAK_BW = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}


def peak_bandwidth() -> tuple[float, str]:
    kind = jax.devices()[0].device_kind
    for name, bw in PEAK_BW.items():
        if name in kind:
            return bw, f"datasheet ({name})"
    x = jnp.ones((64 * 1024 * 1024,), jnp.float32)  # 256 MiB
    f = jax.jit(lambda a: a * 1.0001)
    sec = time_fn(f, x, warmup=1, iters=5)
    return 2 * x.nbytes / sec, "measured copy"


def bench_decode(size: str, batch: int, new: int) -> dict:
    spec = SIZES[size]
    cfg = TransformerConfig(**spec["cfg"], dtype=spec["dtype"], param_dtype=spec["dtype"])
    graphdef, params, rest = split_module(Transformer(cfg, rngs=nnx.Rngs(0)))
    p = spec["prompt"]
    toks = jax.random.randint(jax.random.key(1), (batch, p), 5, cfg.vocab_size)
    mask = jnp.ones_like(toks, bool)
    fn = make_sampler(graphdef, max_new_tokens=new, eos_id=-1, temperature=1.0)
    sec = time_fn(
        lambda k: fn(params, rest, toks, mask, k).tokens, jax.random.key(0), warmup=1, iters=3
    )
    itemsize = jnp.dtype(as_dtype(spec["dtype"])).itemsize
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    kv_per_tok = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * itemsize * batch
    mean_kv = kv_per_tok * (p + new / 2)
    bytes_moved = (param_bytes + mean_kv) * new
    return {
        "bench": "decode",
        "size": size,
        "params": cfg.num_params(),
        "batch": batch,
        "prompt": p,
        "new_tokens": new,
        "sec": sec,
        "tokens_per_s": batch * new / sec,
        "ms_per_step": 1e3 * sec / new,
        "bytes_per_s": bytes_moved / sec,
        "dtype": spec["dtype"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="gpu300m" if jax.default_backend() == "gpu" else "cpu")
    ap.add_argument("--new", type=int, default=128)
    args = ap.parse_args()
    rows = [bench_decode(args.size, b, args.new) for b in (1, 64)]
    bw, how = peak_bandwidth()
    on_cpu = jax.default_backend() == "cpu"
    for r in rows:
        r["peak_bw"] = bw
        # On a CPU this model's weights and cache sit in L2/L3, so DRAM bandwidth is no bound.
        r["bw_util"] = "n/a (cpu)" if on_cpu else r["bytes_per_s"] / bw
    info = device_info()
    cols = [
        "size",
        "params",
        "batch",
        "new_tokens",
        "sec",
        "tokens_per_s",
        "ms_per_step",
        "bytes_per_s",
        "bw_util",
    ]
    table = md_table(rows, cols)
    print(table)
    md = (
        f"# Decode throughput (KV-cache sampler)\n\nDevice: {info}\n\nPeak bandwidth: "
        f"{bw:.3g} B/s ({how}). Bandwidth utilisation is meaningful at batch 1 (memory-bound "
        f"decode); at batch 64 compute dominates.\n\n{table}\n"
    )
    write_results(
        "decode", {"device": info, "peak_bw": bw, "peak_bw_source": how, "rows": rows}, md
    )


if __name__ == "__main__":
    main()

"""Model FLOP utilisation of the shared update step and of the samplers.

Achieved FLOP/s = (6 * params * tokens + attention FLOPs) / step time, where attention FLOPs are
12 * n_layers * T^2 * d_model per sequence (QK^T and AV, forward + backward, full square counted).
The peak is a dense matmul measured in the same process (CPU: fp32; GPU: bf16), so the ratio says
how close the step gets to what this machine can actually do.

Rows: the update step (issue 2), the LLaDA diffusion sampler (tokens/s and FLOP utilisation,
issue 4; `bench.spg_table.bench_sampler`), and KV-cache AR decoding at batch 1 and 64 (tokens/s,
issue 5; `bench.decode.bench_decode`). The matmul peak is measured before and after the rows and
the larger value is used, so a busy machine lowers the MFU rather than inflating it.

Usage: python -m bench.mfu [--size=cpu|gpu300m] [--steps=5]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bench.common import GPU300M, device_info, matmul_peak, md_table, time_fn, write_results
from models.transformer import Transformer, TransformerConfig
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
    "gpu300m": dict(
        cfg=GPU300M,
        batch=16,
        seq=1024,
        dtype="bfloat16",
    ),
}


def step_flops(cfg: TransformerConfig, batch: int, seq: int) -> float:
    params = cfg.num_params(embeddings=False) + cfg.vocab_size * cfg.d_model  # unembed matmul
    return 6.0 * params * batch * seq + 12.0 * cfg.n_layers * seq * seq * cfg.d_model * batch


def bench_update(size: str, iters: int) -> dict:
    spec = SIZES[size]
    cfg = TransformerConfig(**spec["cfg"], dtype=spec["dtype"])
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    graphdef, params, rest = split_module(model)
    tx = optax.adamw(1e-4)
    state = TrainState.create({"policy": params}, tx, jax.random.key(0), frozen={"policy": rest})
    b, t = spec["batch"], spec["seq"]
    toks = jax.random.randint(jax.random.key(1), (b, t + 1), 0, cfg.vocab_size)
    batch = {
        "tokens": toks,
        "mask": jnp.ones_like(toks, bool),
        "loss_mask": jnp.ones_like(toks, bool),
    }
    step = make_update_step(make_ar_loss(graphdef), tx)
    holder = {"s": state}

    def call(bt):
        holder["s"], m = step(holder["s"], bt)
        return m["train/loss"]

    sec = time_fn(call, batch, warmup=2, iters=iters)
    flops = step_flops(cfg, b, t)
    return {
        "bench": "update_step",
        "size": size,
        "params": cfg.num_params(),
        "batch": b,
        "seq": t,
        "step_s": sec,
        "tokens_per_s": b * t / sec,
        "achieved_flops": flops / sec,
        "dtype": spec["dtype"],
    }


def measured_peak() -> float:
    gpu = jax.default_backend() == "gpu"
    return matmul_peak(4096 if gpu else 2048, jnp.bfloat16 if gpu else jnp.float32)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="gpu300m" if jax.default_backend() == "gpu" else "cpu")
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    from bench.decode import bench_decode
    from bench.spg_table import bench_sampler

    peak0 = measured_peak()
    rows = [bench_update(args.size, args.steps)]
    gpu = args.size != "cpu"
    samp = (
        dict(
            d_model=1024,
            n_layers=16,
            n_heads=16,
            d_ff=4096,
            vocab=32000,
            batch=32,
            prompt_len=64,
            gen_len=256,
            steps=128,
            block_len=32,
            dtype="bfloat16",
        )
        if gpu
        else dict(
            d_model=256,
            n_layers=4,
            n_heads=4,
            d_ff=768,
            batch=32,
            prompt_len=32,
            gen_len=64,
            steps=32,
            block_len=16,
        )
    )
    rows.append(bench_sampler(**samp))
    for b in (1, 64):
        r = bench_decode(args.size, b, 128)
        rows.append(
            {
                "bench": f"ar_decode_b{b}",
                "size": args.size,
                "params": r["params"],
                "batch": b,
                "seq": r["prompt"] + r["new_tokens"],
                "step_s": r["ms_per_step"] / 1e3,
                "tokens_per_s": r["tokens_per_s"],
            }
        )
    peak = max(peak0, measured_peak())
    for r in rows:
        r["peak_flops"] = peak
        if "achieved_flops" in r:
            r["mfu"] = r["achieved_flops"] / peak
    info = device_info()
    cols = [
        "bench",
        "size",
        "params",
        "batch",
        "seq",
        "step_s",
        "tokens_per_s",
        "achieved_flops",
        "peak_flops",
        "mfu",
    ]
    table = md_table(rows, cols)
    print(table)
    md = (
        f"# MFU\n\nDevice: {info}\n\nPeak = dense matmul measured in the same process. "
        f"Target on CPU: update-step MFU >= 0.60. `step_s` of the "
        f"decode rows is seconds per generated token step. AR decoding is memory/latency bound "
        f"and has no FLOP utilisation figure here.\n\n{table}\n"
    )
    write_results("mfu", {"device": info, "rows": rows}, md)


if __name__ == "__main__":
    main()

"""Model FLOP utilisation of the shared update step (and, when added, samplers).

Achieved FLOP/s = (6 * params * tokens + attention FLOPs) / step time, where attention FLOPs are
12 * n_layers * T^2 * d_model per sequence (QK^T and AV, forward + backward, full square counted).
The peak is a dense matmul measured in the same process (CPU: fp32; GPU: bf16), so the ratio says
how close the step gets to what this machine can actually do.

Usage: python -m bench.mfu [--size=cpu|gpu300m] [--steps=5]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bench.common import device_info, matmul_peak, md_table, time_fn, write_results
from models.transformer import Transformer, TransformerConfig
from train.lm import make_ar_loss
from train.state import TrainState, split_module
from train.step import make_update_step

SIZES = {
    # ~19M parameters at sequence length 256 (issue 2's CPU target size).
    "cpu": dict(cfg=dict(vocab_size=512, d_model=512, n_layers=6, n_heads=8, n_kv_heads=4,
                         d_ff=1536, max_len=256), batch=8, seq=256, dtype="float32"),
    # ~300M parameters for a GPU (bf16 compute, fp32 params).
    "gpu300m": dict(cfg=dict(vocab_size=32000, d_model=1024, n_layers=20, n_heads=16,
                             n_kv_heads=8, d_ff=3072, max_len=1024), batch=16, seq=1024,
                    dtype="bfloat16"),
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
    batch = {"tokens": toks, "mask": jnp.ones_like(toks, bool), "loss_mask": jnp.ones_like(toks, bool)}
    step = make_update_step(make_ar_loss(graphdef), tx)
    holder = {"s": state}

    def call(bt):
        holder["s"], m = step(holder["s"], bt)
        return m["train/loss"]

    sec = time_fn(call, batch, warmup=2, iters=iters)
    flops = step_flops(cfg, b, t)
    peak_dtype = jnp.bfloat16 if jax.default_backend() == "gpu" else jnp.float32
    peak = matmul_peak(4096 if jax.default_backend() == "gpu" else 2048, peak_dtype)
    return {"bench": "update_step", "size": size, "params": cfg.num_params(), "batch": b,
            "seq": t, "step_s": sec, "tokens_per_s": b * t / sec, "achieved_flops": flops / sec,
            "peak_flops": peak, "mfu": flops / sec / peak, "dtype": spec["dtype"]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="gpu300m" if jax.default_backend() == "gpu" else "cpu")
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    rows = [bench_update(args.size, args.steps)]
    info = device_info()
    cols = ["bench", "size", "params", "batch", "seq", "step_s", "tokens_per_s", "achieved_flops",
            "peak_flops", "mfu"]
    table = md_table(rows, cols)
    print(table)
    md = (f"# MFU\n\nDevice: {info}\n\nPeak = dense matmul measured in the same process. "
          f"Target on CPU: MFU >= 0.60.\n\n{table}\n")
    write_results("mfu", {"device": info, "rows": rows}, md)


if __name__ == "__main__":
    main()

"""READ width sweep: backward FLOPs vs backbone width (arXiv:2305.15348; spec §7.4 of read.md).

    python -m bench.read_width [--widths 32,64,128,256]

For each backbone width d (4 layers, d_ff = 3d, the `configs/read.py` batch), compiles one update
step per method and the same method's forward loss alone, and reports XLA's FLOP counts
(`cost_analysis()`, a CPU proxy): step, forward, and step - forward, i.e. the backward pass plus
the optimizer update. READ and the ladder run the backbone under `stop_gradient`, so their
backward pass touches only the side network (r x d input and output projections: linear in d,
small), while full fine-tuning and LoRA backpropagate through every backbone layer (~d^2). Nothing
is trained. Writes bench/results/read_width.json and .md.
"""

from __future__ import annotations

import argparse
import time

import jax
from flax import nnx

from bench.common import device_info, md_table, write_results
from configs.read import get_config
from data import glue
from models.transformer import Transformer, TransformerConfig
from peft.finetune import batch_iter, build, compiled_cost, with_states
from train.state import TrainState
from train.step import make_update_step

METHODS = (("read", False), ("read", True), ("ladder", False), ("lora", False), ("full", False))


def step_and_forward_flops(config, backbone, method: str, cached: bool, data: dict) -> dict:
    """FLOPs of one compiled update step and of the forward loss alone (same batch)."""
    spec = data["spec"]
    _, split, tx = build(config, backbone, method, spec, cached)
    train = data["train_states" if split.cached else "train"]
    batch = batch_iter(train, config.finetune.batch_size, 0, split.batch_keys)(0)
    loss_fn = split.loss_fn(spec.n_classes)
    fwd = jax.jit(loss_fn).lower(split.params, split.frozen, batch, jax.random.key(0)).compile()
    state = TrainState.create(split.params, tx, jax.random.key(0), frozen=split.frozen)
    step = compiled_cost(make_update_step(loss_fn, tx).lower(state, batch).compile())
    f_fwd = compiled_cost(fwd)["flops"]
    return {"step": step["flops"], "forward": f_fwd, "backward": step["flops"] - f_fwd}


def sweep(widths) -> list[dict]:
    rows = []
    for d in widths:
        config = get_config()
        config.model.d_model, config.model.d_ff = d, 3 * d
        vocab = glue.Vocab()
        tcfg = TransformerConfig.from_config(config.model, vocab_size=len(vocab))
        backbone = Transformer(tcfg, rngs=nnx.Rngs(0))
        task = glue.make_task("agree", 64, seed=1, max_len=config.data.max_len)
        data = {"spec": glue.TASK_SPECS["agree"], "train": task}
        data["train_states"] = with_states(backbone, task, 64)
        for method, cached in METHODS:
            f = step_and_forward_flops(config, backbone, method, cached, data)
            name = method + (" (cached)" if cached else "")
            rows.append(
                {
                    "d_model": d,
                    "method": name,
                    "step_MFLOP": f["step"] / 1e6,
                    "forward_MFLOP": f["forward"] / 1e6,
                    "backward_MFLOP": f["backward"] / 1e6,
                }
            )
            print(rows[-1], flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", default="32,64,128,256")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    widths = [int(w) for w in args.widths.split(",")]
    rows = sweep(widths)
    first = {r["method"]: r["backward_MFLOP"] for r in rows if r["d_model"] == widths[0]}
    for r in rows:
        r["backward_vs_smallest"] = r["backward_MFLOP"] / first[r["method"]]
    meta = {**device_info(), "seconds": round(time.perf_counter() - t0, 1)}
    cfg = get_config()
    meta.update(layers=cfg.model.n_layers, batch=cfg.finetune.batch_size, T=cfg.data.max_len)
    cols = list(rows[0])
    md = "\n".join(
        [
            "# READ width sweep: backward FLOPs vs backbone width",
            "",
            ", ".join(f"{k}={v}" for k, v in meta.items()),
            "",
            md_table(rows, cols),
            "",
            "backward = step - forward (the backward pass plus the optimizer update), from",
            "`cost_analysis()` of the compiled executables (a CPU proxy, not a device count);",
            "`backward_vs_smallest` = backward FLOPs relative to the same method at the smallest",
            "width. READ's side network has r = 32 (configs/read.py).",
        ]
    )
    print(md)
    write_results("read_width", {"meta": meta, "rows": rows}, md)
    return rows


if __name__ == "__main__":
    main()

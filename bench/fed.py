"""Federated simulation speed: `vmap` vs `loop` backends, exact and with `share_char_encoder`.

    .venv/bin/python -m bench.fed [--clients 100] [--repeats 3] [--oov-rounds 20]

One FedAvg round of the small char-aware word LM (models/word_lm.py, d_emb 32, LSTM 64, 2 local
steps of 8 sentences) over N generated clients, vmap blocks of `--block` clients. Modes:

  * `loop`: one jitted step per client batch (the reference);
  * `vmap_scan`: every local step inside the scan (the computation before issue 19 item 2);
  * `vmap`: exact, local step 0 outside the scan so the char CNN's vocabulary table is computed
    once per block and its backward runs for all clients as one large matmul (fed/simulation.py);
  * `vmap_chunk`: as `vmap`, local steps 1.. over chunks of `--chunk` clients (`lax.map`), so
    per-client activations stay in cache;
  * `loop+share`, `vmap+share`, `vmap_chunk+share`: `share_char_encoder` (fed/oov.py
    make_table_lift), an algorithm change: the table is computed once per round outside the
    clients, the char encoder is frozen locally and updated at the server through its VJP.

Compilation is excluded (one warm-up round per mode); the modes are timed interleaved, `--repeats`
times each, and the median kept; the 1-minute load average is printed with every row (the CPU is
shared). `--oov-rounds N > 0` also trains `configs/fed_oov.py:expand_train=adapter` for N rounds
with and without the option and reports the OOV table's EMR (the option's effect on accuracy).
Writes bench/results/fed.json and bench/results/fed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax
import numpy as np
from flax import nnx

from bench.common import device_info, md_table, write_results
from fed import data, oov, partition, simulation
from models.word_lm import WordLM, WordLMConfig

MODES = ("loop", "vmap_scan", "vmap", "vmap_chunk", "loop+share", "vmap+share", "vmap_chunk+share")


def _setup(num_clients: int):
    corpus = data.generate_corpus(num_clients=num_clients, sentences_per_client=(20, 40), seed=0)
    vocab = data.build_vocab(corpus.clients, 500)
    w2i = {w: i for i, w in enumerate(vocab)}
    cfg = WordLMConfig(vocab_size=len(vocab), filters=(16, 16, 16), d_emb=32, hidden=64)
    model = WordLM(cfg, data.chars_of(vocab, cfg.max_chars), rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    examples = [oov.lm_examples(s, w2i, 10) for s in corpus.clients]
    return graphdef, params, rest, examples


def _algorithm(mode, graphdef, rest, chunk):
    share = mode.endswith("+share")
    work = simulation.make_sgd_client_work(
        oov.make_loss_fn(graphdef, rest, adapter=False, share_char_encoder=share),
        0.5,
        train_personal=False,
    )
    options = {}
    if mode == "vmap_scan":
        options = {"shared_first_step": False}
    elif mode.startswith("vmap_chunk"):
        options = {"client_chunk": chunk}
    return simulation.make_fed_avg(
        work,
        simulation.fed_avg_tx(),
        backend="loop" if mode.startswith("loop") else "vmap",
        lift=oov.make_table_lift(graphdef, rest) if share else None,
        vmap_options=options,
    )


def _rounds(alg, params, examples, block_size):
    blocks = [
        partition.make_block(
            examples[i : i + block_size], batch_size=8, num_steps=2, block_size=block_size
        )
        for i in range(0, len(examples), block_size)
    ]

    def one_round():
        state = alg.init(params)
        for b in blocks:
            state, _, _ = alg.apply(state, b, {}, jax.random.key(0))
        return jax.block_until_ready(state)

    return one_round


def _speed(counts, block, repeats, chunk):
    graphdef, params, rest, examples = _setup(max(counts))
    rows = []
    for n in counts:
        fns, outs = {}, {}
        for mode in MODES:
            fns[mode] = _rounds(
                _algorithm(mode, graphdef, rest, chunk), params, examples[:n], block
            )
            outs[mode] = fns[mode]()  # compile + warm up
        times = {m: [] for m in MODES}
        for r in range(repeats):  # interleaved: every mode sees the same load
            for mode in MODES:
                t = time.perf_counter()
                fns[mode]()
                times[mode].append(time.perf_counter() - t)
            print(f"{n} clients, repeat {r}: load {os.getloadavg()[0]:.1f}", flush=True)
        ref = outs["loop"].shared
        row = {"clients": n, "load_1min_end": round(os.getloadavg()[0], 1)}
        for mode in MODES:
            med = float(np.median(times[mode]))
            row[f"{mode}_s"] = med
            row[f"{mode}_x_loop"] = float(np.median(times["loop"])) / med
            row[f"{mode}_spread_s"] = float(np.max(times[mode]) - np.min(times[mode]))
            # the ratio within each repeat (loop and mode timed back to back): its range
            paired = np.asarray(times["loop"]) / np.asarray(times[mode])
            row[f"{mode}_x_loop_min"] = float(paired.min())
            row[f"{mode}_x_loop_max"] = float(paired.max())
            diff = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), outs[mode].shared, ref)
            row[f"{mode}_max_abs_diff_vs_loop"] = max(jax.tree.leaves(diff))
            print(
                f"{n:5d} clients {mode:10s}: {med:.3f} s/round (median of {repeats}), "
                f"{row[f'{mode}_x_loop']:.2f}x loop, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        rows.append(row)
    return rows


def _oov_effect(rounds, eval_clients):
    from configs.fed_oov import get_config
    from fed import experiment_oov

    rows = []
    for share in (False, True):
        c = get_config(f"expand_train=adapter,share_char_encoder={share}")
        c.fed.rounds = rounds
        c.pers.num_eval_clients = eval_clients
        c.pers.methods = "none+oov_char"
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as wd:
            out = experiment_oov.run(c, wd)
        for m in ("none", "oov_char"):
            rows.append(
                {
                    "share_char_encoder": share,
                    "method": m,
                    "top1": out[f"{m}/top1"],
                    "top3": out[f"{m}/top3"],
                    "oov_rate": out[f"{m}/oov_rate"],
                    "seconds": time.perf_counter() - t,
                    "load_1min": round(os.getloadavg()[0], 1),
                }
            )
        print(rows[-2:], flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", default="100")
    ap.add_argument("--block", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=5, help="client_chunk of the vmap_chunk modes")
    ap.add_argument("--oov-rounds", type=int, default=0)
    ap.add_argument("--oov-eval-clients", type=int, default=50)
    ap.add_argument("--out", default="fed", help="results name under bench/results/")
    args = ap.parse_args(argv)
    os.environ.setdefault("LMRL_NO_PROGRESS", "1")
    counts = [int(c) for c in args.clients.split(",") if c]
    rows = _speed(counts, args.block, args.repeats, args.chunk) if counts else None
    oov_rows, oov_meta = [], {}
    if args.oov_rounds:
        oov_rows = _oov_effect(args.oov_rounds, args.oov_eval_clients)
        oov_meta = {"rounds": args.oov_rounds, "eval_clients": args.oov_eval_clients}
    # a section not run this time keeps fed.json's rows, whatever --out is (OOV runs take ~15 min)
    prev_path = os.path.join(os.path.dirname(__file__), "results", "fed.json")
    prev = json.load(open(prev_path)) if os.path.exists(prev_path) else {}
    rows = rows if rows is not None else prev.get("rows", [])
    if not args.oov_rounds:
        oov_rows, oov_meta = prev.get("oov_effect", []), prev.get("oov_meta", {})
    meta = {
        **device_info(),
        "model": "WordLM d_emb=32 hidden=64 filters=16x3, V=504, 2 local steps x 8 sentences",
        "vmap_block": args.block,
        "client_chunk": args.chunk,
        "repeats": args.repeats,
    }
    cols = ["clients", "load_1min_end"] + [f"{m}_{k}" for m in MODES for k in ("s", "x_loop")]
    paired_cols = ["clients"] + [f"{m}_x_loop_{k}" for m in MODES[1:] for k in ("min", "max")]
    md = [
        "# Federated simulation: vmap vs loop, exact and with share_char_encoder",
        "",
        ", ".join(f"{k}={v}" for k, v in meta.items()),
        "",
        md_table(rows, cols),
        "",
        "Seconds per FedAvg round (median of interleaved repeats); `*_x_loop` = loop time / mode "
        "time. Max |server params - loop's| per mode: "
        + "; ".join(f"{m} {r[f'{m}_max_abs_diff_vs_loop']:.2g}" for r in rows[-1:] for m in MODES)
        + " (the `+share` modes are a different algorithm).",
    ]
    if rows and "vmap_x_loop_min" in rows[-1]:
        md += [
            "",
            "Range (min-max) over repeats of the per-repeat ratio loop time / mode time:",
            "",
            md_table(rows, paired_cols),
        ]
    if oov_rows:
        md += [
            "",
            f"## Effect of share_char_encoder on the OOV table ({oov_meta.get('rounds')} FedAdam "
            f"rounds, {oov_meta.get('eval_clients')} evaluation clients, expand_train=adapter)",
            "",
            md_table(oov_rows, list(oov_rows[0])),
        ]
    payload = {"meta": meta, "rows": rows, "oov_effect": oov_rows, "oov_meta": oov_meta}
    write_results(args.out, payload, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

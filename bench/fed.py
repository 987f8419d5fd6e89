"""Clients per second of the `vmap` vs `loop` federated backends (fed/simulation.py).

    .venv/bin/python -m bench.fed [--clients 10,100,1000] [--block 100]

One FedAvg round of the small char-aware word LM (models/word_lm.py, d_emb 32, LSTM 64, 2 local
steps of 8 sentences) over N generated clients. `vmap` trains blocks of `--block` clients at once
(one jitted call per block); `loop` runs one jitted step per client batch. Compilation is excluded
(one warm-up round at the same shapes); the time is the best of `--repeats` rounds. Writes
bench/results/fed.json and bench/results/fed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
from flax import nnx

from fed import data, oov, partition, simulation
from models.word_lm import WordLM, WordLMConfig


def _setup(num_clients: int):
    corpus = data.generate_corpus(num_clients=num_clients, sentences_per_client=(20, 40), seed=0)
    vocab = data.build_vocab(corpus.clients, 500)
    w2i = {w: i for i, w in enumerate(vocab)}
    cfg = WordLMConfig(vocab_size=len(vocab), filters=(16, 16, 16), d_emb=32, hidden=64)
    model = WordLM(cfg, data.chars_of(vocab, cfg.max_chars), rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    examples = [oov.lm_examples(s, w2i, 10) for s in corpus.clients]
    work = simulation.make_sgd_client_work(
        oov.make_loss_fn(graphdef, rest, adapter=False), 0.5, train_personal=False
    )
    return params, examples, work


def _round_time(alg, params, examples, block_size, repeats):
    blocks = [
        partition.make_block(
            examples[i : i + block_size], batch_size=8, num_steps=2, block_size=block_size
        )
        for i in range(0, len(examples), block_size)
    ]
    state = alg.init(params)

    def one_round(state):
        for b in blocks:
            state, _, _ = alg.apply(state, b, {}, jax.random.key(0))
        return jax.block_until_ready(state)

    state = one_round(state)  # compile
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        state = one_round(state)
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", default="10,100,1000")
    ap.add_argument("--block", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.clients.split(",")]
    params, examples, work = _setup(max(counts))
    rows = []
    for n in counts:
        row = {"clients": n}
        for backend in ("vmap", "loop"):
            alg = simulation.make_fed_avg(work, simulation.fed_avg_tx(), backend=backend)
            block = min(n, args.block) if backend == "vmap" else n
            secs = _round_time(alg, params, examples[:n], block, args.repeats)
            row[f"{backend}_s"] = secs
            row[f"{backend}_clients_per_s"] = n / secs
            print(f"{n:5d} clients {backend:4s}: {secs:.3f} s/round, {n / secs:.1f} clients/s")
        row["speedup"] = row["vmap_clients_per_s"] / row["loop_clients_per_s"]
        rows.append(row)
    meta = {
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        "model": "WordLM d_emb=32 hidden=64 filters=16x3, V=504, 2 local steps x 8 sentences",
        "vmap_block": args.block,
        "load_avg_at_end": os.getloadavg()[0],
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "fed.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    lines = [
        "# Federated simulation: vmap vs loop backend",
        "",
        f"Device: {meta['device']} ({meta['cpu_count']} cores, load average at the end "
        f"{meta['load_avg_at_end']:.1f}); {meta['model']}; vmap block {args.block} clients.",
        "",
        "| clients | vmap s/round | loop s/round | vmap clients/s | loop clients/s | speedup |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['vmap_s']:.3f} | {r['loop_s']:.3f} | "
            f"{r['vmap_clients_per_s']:.1f} | {r['loop_clients_per_s']:.1f} | {r['speedup']:.1f}x |"
        )
    with open(os.path.join(args.out, "fed.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

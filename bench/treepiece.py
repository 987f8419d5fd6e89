"""Benchmark: TreePiece vs token-level AR vs NAR parsing (arXiv:2303.17161, Table 1 analogue).

Trains every system with the same encoder (``configs/treepiece.py`` defaults, one seed) on the
generated TOP-style data, then reports exact match (test and compositional splits), mean decoder
steps, and per-utterance decoding latency at batch 1 and 32 (jitted, after compile,
``block_until_ready``; every batch is timed ``--rounds`` times and its fastest call kept,
because the CPU is shared). ``treepiece_atomic`` is TreePiece restricted to atomic units (one unit
per skeleton node).

Usage: python -m bench.treepiece [--steps N] [--out bench/results] [--variant paper --name NAME]
Writes bench/results/<name>.json and .md (default name ``treepiece``). ``--variant paper`` is the
paper-like regime of ``configs/treepiece.py`` (decoder much larger than the encoder, more nested
parses). The load average is printed while timing and stored in the metadata (shared CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import jax

from configs.treepiece import get_config
from parsing import experiment as E
from parsing import systems

SYSTEMS = {
    "treepiece": "model=treepiece",
    "treepiece_atomic": "model=treepiece,atomic",
    "ar": "model=ar",
    "nar": "model=nar",
}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: config)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--variant", default="", help="extra config variant, e.g. 'paper'")
    ap.add_argument("--name", default="treepiece", help="results file stem")
    ap.add_argument(
        "--merge",
        default="",
        help="comma-separated result JSONs of one-system runs (run in parallel) to merge into "
        "one table instead of training",
    )
    args = ap.parse_args(argv)
    if args.merge:
        return _merge(args)
    os.environ.setdefault("LMRL_NO_PROGRESS", "1")
    trained, rows = {}, {}
    for name in args.systems.split(","):
        c = get_config(",".join(x for x in (SYSTEMS[name], args.variant) if x))
        c.ckpt_every = 0
        if args.steps:
            c.num_steps = c.optim.total_steps = args.steps
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as wd:
            prep = E.prepare(c, wd)
            state, decode = E.train_system(c, prep, wd)
        row = {"train_seconds": time.perf_counter() - t0, "units": len(prep["tp"].units)}
        for split in ("test", "compositional"):
            row.update(E.evaluate(c, prep, state, decode, split))
        rows[name], trained[name] = row, (c, prep, state, decode)
    fns = {}
    for n, (c, prep, state, decode) in trained.items():
        enc = systems.encode_only(E.build_graphdef(c, prep))
        fns[n] = E.serving_fns(state, decode, enc)
    for b in (1, 32):
        for n, (c, prep, _, _) in trained.items():
            dec_s, enc_s = (E.latency(c, prep, f, b, args.repeats, args.rounds) for f in fns[n])
            rows[n][f"latency_ms/batch{b}"] = 1e3 * dec_s
            rows[n][f"encoder_ms/batch{b}"] = 1e3 * enc_s
            rows[n][f"decode_only_ms/batch{b}"] = 1e3 * max(dec_s - enc_s, 0.0)
    if "ar" in rows:
        _speedups(rows)
    c = get_config(args.variant or None)
    meta = {
        "variant": args.variant or "default",
        "load_1min_end": round(os.getloadavg()[0], 1),
        "device": f"{jax.devices()[0].device_kind} ({platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores, shared)",
        "steps": args.steps or c.num_steps,
        "d_model": c.model.d_model,
        "enc_layers": c.model.enc_layers,
        "dec_layers": c.model.dec_layers,
        "n_train": c.data.n_train,
        "n_test": c.data.n_test,
        "p_nest": c.data.p_nest,
        "d_ff": c.model.d_ff,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
        json.dump({"meta": meta, "systems": rows}, f, indent=2)
    md = _markdown(meta, rows)
    with open(os.path.join(args.out, f"{args.name}.md"), "w") as f:
        f.write(md)
    print(md)
    return rows


def _merge(args):
    """One table from one-system runs; their latencies were timed in separate processes."""
    rows, meta = {}, None
    for path in args.merge.split(","):
        with open(path) as f:
            part = json.load(f)
        meta = meta or part["meta"]
        rows.update(part["systems"])
        meta[f"load_1min_end/{'+'.join(part['systems'])}"] = part["meta"].get("load_1min_end")
    meta.pop("load_1min_end", None)
    meta["merged"] = "one process per system, run in parallel on the shared CPU"
    if "ar" in rows:
        _speedups(rows)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
        json.dump({"meta": meta, "systems": rows}, f, indent=2)
    md = _markdown(meta, rows)
    with open(os.path.join(args.out, f"{args.name}.md"), "w") as f:
        f.write(md)
    print(md)
    return rows


def _speedups(rows) -> None:
    """AR latency / system latency; none where a decode-only time vanished into the noise."""
    for r in rows.values():
        for b in (1, 32):
            for k, name in (("latency_ms", "speedup"), ("decode_only_ms", "decode_speedup")):
                mine, ar = r[f"{k}/batch{b}"], rows["ar"][f"{k}/batch{b}"]
                r[f"{name}_vs_ar/batch{b}"] = ar / mine if mine > 0 else None


def _markdown(meta, rows) -> str:
    cols = [
        "test/exact_match",
        "compositional/exact_match",
        "test/well_formed",
        "test/decoder_steps",
        "latency_ms/batch1",
        "speedup_vs_ar/batch1",
        "decode_only_ms/batch1",
        "decode_speedup_vs_ar/batch1",
        "latency_ms/batch32",
        "speedup_vs_ar/batch32",
        "decode_only_ms/batch32",
        "decode_speedup_vs_ar/batch32",
        "encoder_ms/batch1",
        "units",
        "train_seconds",
    ]
    lines = [
        "# TreePiece benchmark",
        "",
        "Generated TOP-style data; " + ", ".join(f"{k}={v}" for k, v in meta.items()),
        "",
        "| system | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for n, r in rows.items():
        vals = [f"{r[k]:.4g}" if r.get(k) is not None else "-" for k in cols]
        lines.append(f"| {n} | " + " | ".join(vals) + " |")
    lines += [
        "",
        "Exact match is on decoupled trees. Decoder steps: units + 1 parallel span step "
        "(TreePiece), emitted tokens (AR), 1 parallel pass (NAR). Latency is per utterance, "
        "with the weights baked into the jitted function; decode_only = full latency minus the "
        "encoder-only latency (the encoder is the same size in every system).",
    ]
    enc = [r["encoder_ms/batch1"] for r in rows.values() if "encoder_ms/batch1" in r]
    if enc:
        lines += [
            "",
            f"Noise check: the encoders are identical in size, yet their batch-1 "
            f"latencies measured {min(enc):.3g}-{max(enc):.3g} ms in this run; treat "
            "latency differences smaller than that spread as noise (shared CPU).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

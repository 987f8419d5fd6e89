"""OOV expansion table (arXiv:2305.03584, ../shared/papers/oov.md Sec. 6.3): EMR@k, OOV rate.

    .venv/bin/python -m bench.oov [--rounds 60] [--eval-clients 100]

Runs `configs/fed_oov.py` (FedAdam over the generated federated corpus), then personalises the
evaluation clients with every method: no personalisation, local fine-tuning, and OOV expansion
(random or char-encoder init) both with `expand_train=all` (whole model + adapter) and
`expand_train=adapter` (only the personal tree E_u, b_u, b_V). The central model is trained once:
the second configuration resumes it from the same workdir. Writes bench/results/oov.json and .md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from bench.common import device_info, md_table, write_results
from configs.fed_oov import get_config
from fed import experiment_oov

# Before issue 15.1 was fixed (evaluation dropped the personal vocabulary biases b_V): the table of
# configs/fed_oov.py's docstring, same configuration.
BEFORE = {
    "none": (0.3502, 0.4430),
    "local_ft": (0.3705, 0.4733),
    "oov_random/all": (0.2403, 0.3146),
    "oov_char/all": (0.3793, 0.4857),
    "oov_random/adapter": (0.3461, 0.4598),
    "oov_char/adapter": (0.3504, 0.4655),
}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=None, help="FedAvg rounds (default: config)")
    ap.add_argument("--eval-clients", type=int, default=None)
    ap.add_argument("--workdir", default=None, help="reuse a trained central model")
    args = ap.parse_args(argv)
    os.environ.setdefault("LMRL_NO_PROGRESS", "1")
    rows, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        wd = args.workdir or tmp
        for expand, methods in (("all", None), ("adapter", "oov_random+oov_char")):
            c = get_config(f"expand_train={expand}")
            if args.rounds:
                c.fed.rounds = args.rounds
            if args.eval_clients:
                c.pers.num_eval_clients = args.eval_clients
            if methods:
                c.pers.methods = methods
            out = experiment_oov.run(c, wd)
            for m in experiment_oov.METHODS:
                if f"{m}/top1" not in out:
                    continue
                name = m if not m.startswith("oov") else f"{m}/{expand}"
                r = {k: out[f"{m}/{k}"] for k in ("top1", "top3", "oov_rate", "bytes_per_client")}
                before = BEFORE.get(name, (None, None))
                rows.append(
                    {"method": name, **r, "top1_before": before[0], "top3_before": before[1]}
                )
    cfg = get_config()
    meta = {
        **device_info(),
        "rounds": args.rounds or cfg.fed.rounds,
        "clients": cfg.fed.num_clients,
        "cohort": cfg.fed.cohort,
        "eval_clients": args.eval_clients or cfg.pers.num_eval_clients,
        "pers_epochs": cfg.pers.epochs,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    cols = ["method", "top1", "top3", "oov_rate", "bytes_per_client", "top1_before", "top3_before"]
    md = "\n".join(
        [
            "# OOV expansion (fed_oov)",
            "",
            ", ".join(f"{k}={v}" for k, v in meta.items()),
            "",
            md_table(rows, cols),
            "",
            "top-k = EMR@k micro-averaged over the evaluation clients' test words (</s> excluded);",
            "`*_before` = the same configuration before the evaluation used the trained personal",
            "vocabulary biases (configs/fed_oov.py docstring); `/all` fine-tunes the whole model",
            "with the adapter, `/adapter` only the personal tree.",
        ]
    )
    print(md)
    write_results("oov", {"meta": meta, "rows": rows}, md)
    return rows


if __name__ == "__main__":
    main()

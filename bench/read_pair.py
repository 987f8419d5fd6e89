"""READ `pair` task: is it learnable, and with what budget? (arXiv:2305.15348; issue 15.13)

    python -m bench.read_pair [--runs full:2e-3:1000,read:1e-2:1000,full:5e-4:500]

Pretrains (or reuses, from `--workdir`) the `configs/read.py` backbone, then fine-tunes each
`method:lr:steps` on the generated sentence-pair task (does B have the same subject noun as A?)
and reports test and validation accuracy. Writes bench/results/read_pair.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import time

from bench.common import md_table, write_results
from configs.read import get_config
from peft.finetune import load_task, train_method
from peft.pretrain import pretrain_backbone
from train.metrics import MetricWriter


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="full:2e-3:1000,read:1e-2:1000,full:5e-4:500")
    ap.add_argument("--workdir", default="runs/bench_read_pair")
    args = ap.parse_args(argv)
    os.environ.setdefault("LMRL_NO_PROGRESS", "1")
    os.makedirs(args.workdir, exist_ok=True)
    writer = MetricWriter(args.workdir, tensorboard=False, console=False)
    rows = []
    for run in args.runs.split(","):
        method, lr, steps = run.split(":")
        c = get_config("task=pair")
        c.finetune.steps = c.finetune.optim.total_steps = int(steps)
        c.finetune.lr[method] = float(lr)
        c.ckpt_every = 0
        backbone, pre = pretrain_backbone(c, args.workdir, writer)
        data = load_task(c, backbone)
        t0 = time.perf_counter()
        wd = os.path.join(args.workdir, run.replace(":", "_"))
        r = train_method(c, wd, backbone, method, data, writer)
        rows.append(
            {
                "method": method,
                "lr": float(lr),
                "steps": int(steps),
                "test_acc": r["test_score"],
                "valid_acc": r["valid_score"],
                "train_s": time.perf_counter() - t0,
            }
        )
        print(rows[-1], flush=True)
    writer.close()
    md = "\n".join(
        [
            "# READ: the `pair` task (same subject noun in A and B?)",
            "",
            f"backbone MLM held-out accuracy {100 * pre['pretrain/heldout_acc']:.1f}%",
            "",
            md_table(rows, list(rows[0])),
        ]
    )
    print(md)
    write_results("read_pair", {"rows": rows, "pretrain": pre}, md)
    return rows


if __name__ == "__main__":
    main()

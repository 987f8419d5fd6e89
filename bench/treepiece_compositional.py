"""TreePiece on the compositional split, broken down by held-out nesting (arXiv:2303.17161).

    python -m bench.treepiece_compositional [--steps 500] [--systems treepiece,treepiece_atomic]

Trains each system (`configs/treepiece.py` defaults otherwise) and reports exact match on the test
split and on the compositional split, overall and per held-out (slot, sub-intent) pair of
`parsing.data.HELD_OUT`. The compositional trees are tokenisable only through atomic units at the
unseen junction (the atomic fallback); the atomic-only system is trained on such units, the merged
vocabulary is not. Writes bench/results/treepiece_compositional.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile

import numpy as np

from bench.common import md_table, write_results
from bench.treepiece import SYSTEMS
from configs.treepiece import get_config
from parsing import experiment as E
from parsing import features as F
from parsing.data import HELD_OUT, nestings


def evaluate_system(name: str, steps: int) -> dict:
    c = get_config(SYSTEMS[name])
    c.ckpt_every = 0
    c.num_steps = c.optim.total_steps = steps
    with tempfile.TemporaryDirectory() as wd:
        prep = E.prepare(c, wd)
        state, decode = E.train_system(c, prep, wd)
    row = {"system": name}
    for split in ("test", "compositional"):
        exs = prep["splits"][split]
        preds, _ = E.predict(c, prep, state, decode, exs)
        hits = [p == F.gold(e) for p, e in zip(preds, exs, strict=True)]
        row[f"{split}/exact_match"] = float(np.mean(hits))
        if split == "compositional":
            by = collections.defaultdict(list)
            for ok, e in zip(hits, exs, strict=True):
                pairs = sorted(nestings(e.tree) & HELD_OUT)
                by["+".join(f"{s}>{i}" for s, i in pairs)].append(ok)
            row.update({f"comp[{k}]": float(np.mean(v)) for k, v in sorted(by.items())})
    return row


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--systems", default="treepiece,treepiece_atomic")
    ap.add_argument("--name", default="treepiece_compositional", help="results file name")
    args = ap.parse_args(argv)
    os.environ.setdefault("LMRL_NO_PROGRESS", "1")
    rows = [evaluate_system(s, args.steps) for s in args.systems.split(",")]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    md = "\n".join(
        [
            "# TreePiece: compositional split by held-out nesting",
            "",
            f"steps={args.steps}; held out: {sorted(HELD_OUT)}",
            "",
            md_table(rows, cols),
        ]
    )
    print(md)
    write_results(args.name, {"steps": args.steps, "rows": rows}, md)
    return rows


if __name__ == "__main__":
    main()

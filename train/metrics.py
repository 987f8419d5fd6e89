"""Metric writers: JSONL file (always), TensorBoard event files (tensorboardX), console line.

Names are `/`-namespaced (`train/loss`, `rl/reward_mean`, `spg/eubo`). Values are pulled to the host
only here, at logging steps, so the hot loop never syncs.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from tqdm.auto import tqdm


def _to_float(v) -> float:
    return float(np.asarray(v))


class MetricWriter:
    """Writes scalar metrics to `workdir/metrics.jsonl`, `workdir/tb/` and the console.

    Args:
      workdir: run directory (created if missing).
      tensorboard: also write TensorBoard event files.
      console: also print a compact line (through tqdm so progress bars stay intact).
    """

    def __init__(self, workdir: str, *, tensorboard: bool = True, console: bool = True):
        os.makedirs(workdir, exist_ok=True)
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self.tb_dir = os.path.join(workdir, "tb")
        self._jsonl = open(self.jsonl_path, "a", buffering=1)
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(self.tb_dir)
        self._console = console

    def write(self, step: int, metrics: dict) -> dict[str, float]:
        vals = {k: _to_float(v) for k, v in metrics.items()}
        rec = {
            "step": int(step),
            **{k: (v if math.isfinite(v) else str(v)) for k, v in vals.items()},
        }
        self._jsonl.write(json.dumps(rec) + "\n")
        if self._tb is not None:
            for k, v in vals.items():
                self._tb.add_scalar(k, v, int(step))
        if self._console:
            shown = " ".join(f"{k}={v:.4g}" for k, v in list(vals.items())[:8])
            tqdm.write(f"[{int(step)}] {shown}")
        return vals

    def flush(self):
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self):
        self.flush()
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(jsonl_path: str) -> list[dict]:
    """Reads a metrics.jsonl file, keeping the last record for each (step, key) after a resume."""
    by_step: dict[int, dict] = {}
    with open(jsonl_path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            by_step.setdefault(rec["step"], {}).update(rec)
    return [by_step[s] for s in sorted(by_step)]

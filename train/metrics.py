"""Metric writers: JSONL file (always), TensorBoard event files (tensorboardX), console line.

Names are `/`-namespaced (`train/loss`, `rl/reward_mean`, `spg/eubo`). Values are pulled to the host
only here, at logging steps, so the hot loop never syncs.

metrics.jsonl survives crashes and resumes: a partial last line (a kill mid-write) is cut off when
the file is opened, checkpoints record the file's length (`offset()`), and `rewind` cuts the file
back to the restored checkpoint, so a resumed run never repeats the steps since that checkpoint.
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
        _drop_partial_line(self.jsonl_path)
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

    def text(self, step: int, tag: str, text: str) -> None:
        """Logs a text sample (e.g. completions at an evaluation): TensorBoard's text tab and
        `workdir/samples.jsonl` (one record per call)."""
        rec = {"step": int(step), "tag": tag, "text": str(text)}
        with open(os.path.join(os.path.dirname(self.jsonl_path), "samples.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self._tb is not None:
            # TensorBoard renders markdown: a fenced block keeps model text verbatim.
            self._tb.add_text(tag, "```\n" + str(text) + "\n```", int(step))

    def offset(self) -> int:
        """Bytes of metrics.jsonl written so far (always at a line boundary)."""
        self._jsonl.flush()
        return self._jsonl.tell()

    def truncate(self, offset: int) -> None:
        """Cuts metrics.jsonl back to `offset` bytes (records written after a checkpoint)."""
        self._jsonl.flush()
        if 0 <= offset < self._jsonl.tell():
            self._jsonl.truncate(offset)

    def flush(self):
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self):
        self.flush()
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _drop_partial_line(path: str) -> None:
    """Cuts a last line without its newline (the process was killed while writing it)."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def rewind(writer, ckpt, step: int, num_steps: int) -> dict[str, float]:
    """Prepares a resume at checkpoint `step`: cuts the writer's log back, returns saved metrics.

    Args:
      writer: a MetricWriter (other writers are left alone).
      ckpt: the stage's Checkpointer (or None).
      step: the restored state's step; `num_steps`: the stage's last step.

    Returns:
      The metrics saved with checkpoint `step` ({} when there are none). A finished stage
      (step >= num_steps) keeps the log untouched: later stages may have written after it.
    """
    if ckpt is None or step <= 0 or step not in ckpt.all_steps():
        return {}
    metrics, offset = ckpt.metrics_at(step)
    if step < num_steps and offset is not None and hasattr(writer, "truncate"):
        writer.truncate(offset)
    return metrics


def read_metrics(jsonl_path: str) -> list[dict]:
    """Reads a metrics.jsonl file, keeping the last record for each (step, key) after a resume.

    Lines that are not JSON records (a partial line from a killed writer) are skipped.
    """
    by_step: dict[int, dict] = {}
    with open(jsonl_path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(rec, dict) or "step" not in rec:
                continue
            by_step.setdefault(rec["step"], {}).update(rec)
    return [by_step[s] for s in sorted(by_step)]


def flat_hparams(config: dict, prefix: str = "") -> dict:
    """A nested config as TensorBoard hparams: `a.b` keys, scalars kept, the rest as strings."""
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_hparams(v, key + "."))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def write_hparams(workdir: str, config: dict, result: dict) -> str | None:
    """Writes the config as TensorBoard hparams, with the run's numeric final metrics, under
    `workdir/tb/hparams`; returns that directory (None without tensorboardX)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    metrics = {k: float(v) for k, v in result.items() if isinstance(v, float) and math.isfinite(v)}
    logdir = os.path.join(workdir, "tb", "hparams")
    with SummaryWriter(logdir) as w:
        w.add_hparams(flat_hparams(config), metrics, name=".")
        w.add_text("config", "```\n" + json.dumps(config, indent=1, sort_keys=True) + "\n```", 0)
    return logdir


def clean_result(result: dict) -> dict:
    """A run's final metrics with every value a float or, failing that, a string (JSON-safe)."""
    clean = {}
    for k, v in result.items():
        try:
            clean[k] = float(v)
        except (TypeError, ValueError):
            clean[k] = str(v)
    return clean


def write_result_file(workdir: str, result: dict) -> dict:
    """Writes `clean_result(result)` to `workdir/result.json` atomically; returns it.

    Raises:
      OSError: the workdir cannot be written.
    """
    clean = clean_result(result)
    path = os.path.join(workdir, "result.json")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(clean, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return clean

"""Run plots show the held-out result; TensorBoard gets the config and text samples (issue 20)."""

from __future__ import annotations

import json
import os

from train import metrics as m
from train.plot import heldout_from_result, plot_metrics


def test_heldout_panels_read_both_result_key_styles():
    result = {
        "before/test/accuracy": 0.5,
        "after/test/accuracy": 0.55,
        "before/x": "str",
        "change/test/accuracy/mean": 0.05,
        "change/test/accuracy/lo": 0.01,
        "change/test/accuracy/hi": 0.09,
        "change/greedy_mean": 2.0,
        "change/greedy_lo": -1.0,
        "change/greedy_hi": 5.0,
        "change/headline/mean": 0.05,
        "change/partial/mean": 1.0,
    }
    pairs, changes = heldout_from_result(result)
    assert pairs == {"test/accuracy": (0.5, 0.55)}
    assert changes == {"test/accuracy": (0.05, 0.01, 0.09), "greedy": (2.0, -1.0, 5.0)}


def test_plot_with_result_and_writer_text_and_hparams(tmp_path):
    w = m.MetricWriter(str(tmp_path), tensorboard=True, console=False)
    for s in range(3):
        w.write(s, {"rl/reward": 0.1 * s})
    w.text(2, "eval/samples", "prompt -> completion\n<answer>3</answer>")
    w.close()
    rec = json.loads((tmp_path / "samples.jsonl").read_text().splitlines()[0])
    assert rec == {
        "step": 2,
        "tag": "eval/samples",
        "text": "prompt -> completion\n<answer>3</answer>",
    }
    result = {
        "before/acc": 0.5,
        "after/acc": 0.6,
        "change/acc/mean": 0.1,
        "change/acc/lo": 0.0,
        "change/acc/hi": 0.2,
        "control": "shuffle",
    }
    png = plot_metrics(w.jsonl_path, ["rl/reward"], str(tmp_path / "plot.png"), "t", result=result)
    assert os.path.getsize(png) > 1000
    cfg = {"rl": {"lr": 1e-4, "steps": 3, "mesh": (1, 1)}, "name": "x", "flag": True}
    assert m.flat_hparams(cfg) == {
        "rl.lr": 1e-4,
        "rl.steps": 3,
        "rl.mesh": "(1, 1)",
        "name": "x",
        "flag": True,
    }
    logdir = m.write_hparams(str(tmp_path), cfg, {"after/acc": 0.6, "control": "shuffle"})
    files = [f for _, _, fs in os.walk(logdir) for f in fs]
    assert any(f.startswith("events.out.tfevents") for f in files)

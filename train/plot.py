"""End-of-run PNG plot of the main metric curves from `metrics.jsonl`."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from train.metrics import read_metrics  # noqa: E402


def plot_metrics(jsonl_path: str, keys: list[str], out_png: str, title: str | None = None) -> str:
    """Plots each metric in `keys` (those present) against step, one panel each.

    Returns:
      The PNG path.
    """
    recs = read_metrics(jsonl_path)
    keys = [k for k in keys if any(isinstance(r.get(k), (int, float)) for r in recs)]
    n = max(len(keys), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["step"], r[key]) for r in recs if isinstance(r.get(key), (int, float))]
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="." if len(xs) < 40 else None)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png

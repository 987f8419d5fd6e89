"""End-of-run PNG plot: the method's training curves from `metrics.jsonl`, and the held-out result.

When the run's final `result` carries before/after evaluations (`before/X`, `after/X`) and paired
changes with intervals (`change/X/{mean,lo,hi}` or `change/X_{mean,lo,hi}`), two more panels show
the held-out metrics at the warm start and at the end of training, and each change with its 95%
interval, so the plot answers "did it learn on held-out data", not only "did the reward rise".
A run with `control` in its result (lr0 / shuffle) names it in the held-out panel's title.
"""

from __future__ import annotations

import math
import re

from train.metrics import read_metrics

_CHANGE = re.compile(r"^change/(.+?)(?:/|_)(mean|lo|hi)$")


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def heldout_from_result(result: dict | None) -> tuple[dict, dict]:
    """({metric: (before, after)}, {metric: (mean, lo, hi)}) read from a run's result dict."""
    result = result or {}
    pairs = {}
    for k, v in result.items():
        if k.startswith("before/") and _num(v) and _num(result.get("after/" + k[7:])):
            pairs[k[7:]] = (float(v), float(result["after/" + k[7:]]))
    changes: dict[str, dict] = {}
    for k, v in result.items():
        m = _CHANGE.match(k)
        if m and m.group(1) != "headline" and _num(v):
            changes.setdefault(m.group(1), {})[m.group(2)] = float(v)
    full = {k: (c["mean"], c["lo"], c["hi"]) for k, c in changes.items() if len(c) == 3}
    return pairs, full


def plot_metrics(
    jsonl_path: str,
    keys: list[str],
    out_png: str,
    title: str | None = None,
    result: dict | None = None,
) -> str:
    """Plots each metric in `keys` (those present) against step, one panel each, plus the
    held-out panels described in the module docstring when `result` has them.

    Returns:
      The PNG path.
    """
    # matplotlib is imported here, not with the module: every runner imports this module, and
    # pyplot costs ~0.5 s of start-up that a run failing on its config should not pay.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_metrics(jsonl_path)
    keys = [k for k in keys if any(_num(r.get(k)) for r in recs)]
    pairs, changes = heldout_from_result(result)
    n = max(len(keys) + bool(pairs) + bool(changes), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    panels = iter(axes.flat)
    for key in keys:
        ax = next(panels)
        pts = [(r["step"], r[key]) for r in recs if _num(r.get(key))]
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="." if len(xs) < 40 else None)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    last = max((r["step"] for r in recs), default=1)
    if pairs:
        ax = next(panels)
        for name, (b, a) in list(pairs.items())[:6]:
            ax.plot([0, 1], [b, a], marker="o", label=name)
        control = (result or {}).get("control")
        suffix = f" (control={control})" if control not in (None, "none", "") else ""
        ax.set_title("held-out metrics" + suffix, fontsize=9)
        ax.set_xticks([0, 1], ["warm start", f"end (step {last})"], fontsize=8)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    if changes:
        ax = next(panels)
        names = list(changes)[:10]
        means = [changes[k][0] for k in names]
        err = [
            [m - changes[k][1] for k, m in zip(names, means)],
            [changes[k][2] - m for k, m in zip(names, means)],
        ]
        ax.errorbar(means, range(len(names)), xerr=err, fmt="o", capsize=3)
        ax.axvline(0.0, color="k", lw=0.8)
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set_title("held-out change, 95% interval", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in panels:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png

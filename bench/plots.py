"""Companion PNGs for `bench/results/*.md`: each table's numbers as a chart.

`write_results` calls `table_png` for every benchmark, so each `NAME.md` gets a
`NAME_table.png` (a benchmark's own figure, if it draws one, is `NAME.png`).
Columns whose cells read `value [lo, hi]` are drawn as points with their intervals (a vertical
line at 0 when the interval columns are changes); other numeric columns as bars; the rows are
labelled by the table's first text column. Several tables in one file: the first is drawn.

  python -m bench.plots            # (re)draws every bench/results/*.md
"""

from __future__ import annotations

import glob
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_INTERVAL = re.compile(rf"^\s*({_NUM})\s*[%x×]?\s*\[\s*({_NUM})\s*,\s*({_NUM})\s*\]")
_PLAIN = re.compile(rf"^\s*({_NUM})\s*[%x×]?\s*$")


def parse_table(markdown: str) -> tuple[list[str], list[list[str]]]:
    """The first pipe table in `markdown`: (header, rows of cells); ([], []) when none."""
    lines = [ln.strip() for ln in markdown.splitlines()]
    for i in range(len(lines) - 1):
        if lines[i].startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1]):
            head = [c.strip() for c in lines[i].strip("|").split("|")]
            rows = []
            for ln in lines[i + 2 :]:
                if not ln.startswith("|"):
                    break
                cells = [c.strip() for c in ln.strip("|").split("|")]
                rows.append(cells + [""] * (len(head) - len(cells)))
            return head, rows
    return [], []


def _column(rows, j):
    vals, kind = [], None
    for r in rows:
        m = _INTERVAL.match(r[j]) if j < len(r) else None
        p = _PLAIN.match(r[j]) if j < len(r) else None
        if m:
            vals.append(tuple(float(x) for x in m.groups()))
            kind = kind or "interval"
        elif p:
            vals.append((float(p.group(1)),) * 3)
            kind = kind or "number"
        else:
            vals.append(None)
    return kind, vals


def table_png(md_path: str, png_path: str | None = None, max_panels: int = 4) -> str | None:
    """Draws the first table of `md_path` to `png_path` (default: beside it); None if nothing
    numeric to draw."""
    with open(md_path) as f:
        head, rows = parse_table(f.read())
    if not rows:
        return None
    cols = [(j, *_column(rows, j)) for j in range(len(head))]
    label_j = next((j for j, kind, _ in cols if kind is None), 0)
    labels = [r[label_j][:28] for r in rows]
    interval = [c for c in cols if c[1] == "interval"]
    numbers = [c for c in cols if c[1] == "number" and c[0] != label_j]
    chosen = (interval + numbers)[:max_panels]
    chosen = [c for c in chosen if sum(v is not None for v in c[2]) >= 1]
    if not chosen:
        return None
    n = len(chosen)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 0.9 + 0.28 * len(rows)), squeeze=False)
    for ax, (j, kind, vals) in zip(axes[0], chosen):
        ys = [i for i, v in enumerate(vals) if v is not None]
        ms = [vals[i][0] for i in ys]
        if kind == "interval":
            err = [
                [m - vals[i][1] for i, m in zip(ys, ms)],
                [vals[i][2] - m for i, m in zip(ys, ms)],
            ]
            ax.errorbar(ms, ys, xerr=err, fmt="o", capsize=3)
            if min(vals[i][1] for i in ys) < 0 < max(vals[i][2] for i in ys):
                ax.axvline(0.0, color="k", lw=0.8)
        else:
            ax.barh(ys, ms)
        ax.set_yticks(
            range(len(rows)), labels if ax is axes[0][0] else [""] * len(rows), fontsize=7
        )
        ax.invert_yaxis()
        ax.set_title(head[j][:40], fontsize=8)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(os.path.basename(md_path), fontsize=9)
    fig.tight_layout()
    png_path = png_path or os.path.splitext(md_path)[0] + "_table.png"
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def main():
    from bench.common import RESULTS

    for md in sorted(glob.glob(os.path.join(RESULTS, "*.md"))):
        out = table_png(md)
        print(f"{md}: {out or 'no numeric table'}")


if __name__ == "__main__":
    main()

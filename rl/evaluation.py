"""Powered held-out evaluation and controls, shared by every RL runner and benchmark.

An RL effect is a change over a control, with an interval, on enough held-out prompts to resolve
it. This module holds the statistics and the control switch; the runners produce per-prompt
scores (greedy correctness, or sampled pass@1 = the mean correctness of several samples of one
prompt) and call these functions.

- `paired_bootstrap(before, after)`: the change of the mean per-prompt score from the warm start
  to after RL, with a percentile interval from resampling prompts (the same prompts on both
  sides, so prompt difficulty cancels).
- `seed_interval(values)`: mean and Student-t interval over seeds (e.g. each seed's change).
- `gain_over_control(method, control)`: per-seed differences (method change − control change on
  the same seed, prompts and keys) summarised by `seed_interval`.
- Controls (`CONTROLS`): `lr0` leaves the parameters bitwise unchanged (the optimizer's updates
  are replaced by zeros, so it is not merely a tiny step); `shuffle` permutes the rewards (or
  advantages) within each group, which keeps each group's reward multiset and destroys the link
  between a completion and its reward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import optax

CONTROLS = ("none", "lr0", "shuffle")


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval at `level`, from `n` units (prompts or seeds)."""

    mean: float
    lo: float
    hi: float
    n: int
    level: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        return bool(self.lo > 0 or self.hi < 0)

    def scaled(self, k: float) -> Interval:
        """The same interval in other units (e.g. `k=100` for points); k must be positive."""
        if k <= 0:
            raise ValueError(f"scale must be positive, got {k}")
        return dataclasses.replace(self, mean=self.mean * k, lo=self.lo * k, hi=self.hi * k)

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}mean": self.mean, f"{prefix}lo": self.lo, f"{prefix}hi": self.hi}

    def __str__(self) -> str:
        return f"{self.mean:+.2f} [{self.lo:+.2f}, {self.hi:+.2f}]"


def per_prompt(scores) -> np.ndarray:
    """float [N]: the mean over samples when `scores` is [N, S] (sampled pass@1), else [N]."""
    s = np.asarray(scores, np.float64)
    if s.ndim == 2:
        return s.mean(axis=1)
    if s.ndim != 1:
        raise ValueError(f"scores must be [prompts] or [prompts, samples], got shape {s.shape}")
    return s


def paired_bootstrap(
    before, after, *, num_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> Interval:
    """Change of the mean per-prompt score, `after − before`, with a paired percentile bootstrap.

    Args:
      before, after: per-prompt scores [N] (or [N, samples], averaged per prompt first) on the
        same N held-out prompts in the same order.
      num_resamples: bootstrap resamples of the N prompts (with replacement).
      level: coverage of the two-sided interval.
      seed: resampling seed (the interval is deterministic given the inputs).

    Returns:
      Interval over prompts (n = N).
    """
    b, a = per_prompt(before), per_prompt(after)
    if b.shape != a.shape:
        raise ValueError(f"paired scores need equal shapes, got {b.shape} and {a.shape}")
    if b.size == 0:
        raise ValueError("no prompts to compare")
    d = a - b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(num_resamples, d.size))
    means = d[idx].mean(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(float(d.mean()), float(lo), float(hi), int(d.size), level)


def seed_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean over seeds with a Student-t interval (NaN bounds for a single seed)."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        raise ValueError("no values")
    m = float(v.mean())
    if v.size < 2:
        return Interval(m, float("nan"), float("nan"), 1, level)
    from scipy import stats  # here, not at import: scipy.stats costs ~1 s of every run's start-up

    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return Interval(m, m - half, m + half, int(v.size), level)


def gain_over_control(
    method: Sequence[float], control: Sequence[float], level: float = 0.95
) -> Interval:
    """Per-seed `method − control` (paired by seed) summarised by `seed_interval`."""
    m, c = np.asarray(method, np.float64), np.asarray(control, np.float64)
    if m.shape != c.shape:
        raise ValueError(f"method and control need one value per seed, got {m.shape}, {c.shape}")
    return seed_interval(m - c, level)


def check_control(name: str) -> str:
    if name not in CONTROLS:
        raise ValueError(f"unknown control {name!r}; expected one of {', '.join(CONTROLS)}")
    return name


def control_optimizer(
    tx: optax.GradientTransformation, control: str
) -> optax.GradientTransformation:
    """The run's optimizer under `control`: for `lr0`, updates are exact zeros (`p + 0 == p`)."""
    return optax.set_to_zero() if check_control(control) == "lr0" else tx


def shuffle_within_groups(x, group_size: int, rng: np.random.Generator) -> np.ndarray:
    """Permutes consecutive groups of `group_size` entries of a flat array independently.

    Each group keeps its multiset of values, so group statistics (mean, std, the fraction of
    mixed groups) are unchanged while which completion got which value is random.
    """
    a = np.asarray(x)
    if a.ndim != 1 or a.size % group_size:
        raise ValueError(f"need a flat array of whole groups of {group_size}, got {a.shape}")
    g = a.reshape(-1, group_size)
    order = np.argsort(rng.random(g.shape), axis=1)
    return np.take_along_axis(g, order, axis=1).reshape(-1)


def shuffle_valid_within_groups(x_bn, valid_bn, rng: np.random.Generator) -> np.ndarray:
    """Permutes each row's valid entries of `x_bn` [groups, n] among themselves.

    Invalid entries stay where they are, so each group keeps the multiset of its valid values
    (e.g. JEPO's answer log-likelihoods, where malformed samples carry no score).
    """
    out = np.array(x_bn, copy=True)
    for b in range(out.shape[0]):
        pos = np.flatnonzero(valid_bn[b])
        out[b, pos] = out[b, rng.permutation(pos)]
    return out


def control_rng(seed: int, step: int) -> np.random.Generator:
    """The shuffle control's generator for one RL step (a pure function of seed and step, so a
    resumed run shuffles exactly as an uninterrupted one)."""
    return np.random.default_rng([seed, step, 0x5EED])


def change_rows(
    before: Mapping[str, np.ndarray],
    after: Mapping[str, np.ndarray],
    *,
    num_resamples: int = 2000,
    level: float = 0.95,
) -> list[dict]:
    """One row per metric present on both sides: before/after means and the paired interval."""
    rows = []
    for k in before:
        if k not in after:
            continue
        iv = paired_bootstrap(before[k], after[k], num_resamples=num_resamples, level=level)
        rows.append(
            {
                "metric": k,
                "before": float(per_prompt(before[k]).mean()),
                "after": float(per_prompt(after[k]).mean()),
                "n": iv.n,
                **iv.as_dict("change_"),
            }
        )
    return rows


def format_change_table(rows: Sequence[dict], *, level: float = 0.95) -> str:
    """The before/after table with each change's interval (in the metric's units)."""
    pct = int(round(level * 100))
    head = f"{'held-out metric':30s} {'before':>9s} {'after':>9s} {'change':>9s}  {pct}% CI"
    out = [head]
    for r in rows:
        out.append(
            f"{r['metric']:30s} {r['before']:9.4f} {r['after']:9.4f} {r['change_mean']:+9.4f}"
            f"  [{r['change_lo']:+.4f}, {r['change_hi']:+.4f}]  n={r['n']}"
        )
    return "\n".join(out)

"""TreePiece tokeniser: subtree units over TOP skeletons (arXiv:2303.17161, Sec. 2-3).

A *unit* is a connected fragment of a skeleton (``parsing.tree``) whose cut-off child positions
are substitution sites ``□``; slot text stays as ``◦``. Training has two stages:

1. Vocabulary (BPE over trees): start from the atomic segmentation of every training skeleton and
   repeatedly merge the most frequent (parent unit, site index, child unit) triple into a new unit.
   Atomic units (one node, every child a site; every known label at arities ``0..max_arity``) are
   always kept, so every tree over known labels is encodable.
2. The "TreePiece simplex": unigram probabilities p over units fitted by EM, where a tree's
   likelihood sums over segmentations: ``inside(v) = sum_{u at v} p(u) prod_{□ of u} inside(site)``
   (inside-outside gives the expected counts; M-step ``p ∝ counts``). Encoding is Viterbi (sum ->
   max); units are listed in pre-order of their roots, i.e. a leftmost derivation, which
   ``decode`` replays with a stack of open sites.
"""

from __future__ import annotations

import collections
import json

import numpy as np

from parsing.tree import LEAF, OPEN, skel_to_str

NEED_INTENT, NEED_SLOT = 0, 1  # site types: what may be substituted into a site


def _flat(skel: tuple):
    """Skeleton -> pre-order (labels, kids, is_text_leaf) lists."""
    labels, kids, leaf = [], [], []

    def rec(s) -> int:
        i = len(labels)
        labels.append(s[0])
        kids.append([])
        leaf.append(s[1] == (LEAF,))
        if not leaf[i]:
            kids[i] = [rec(c) for c in s[1]]
        return i

    rec(skel)
    return labels, kids, leaf


def _match(u, v, labels, kids, leaf):
    """Site node ids (unit pre-order) if unit ``u`` matches the skeleton at node ``v``."""
    label, uk = u
    if label != labels[v]:
        return None
    if leaf[v] or uk == (LEAF,):
        return [] if leaf[v] and uk == (LEAF,) else None
    if len(uk) != len(kids[v]):
        return None
    sites = []
    for a, c in zip(uk, kids[v], strict=True):
        if a == OPEN:
            sites.append(c)
        else:
            r = _match(a, c, labels, kids, leaf)
            if r is None:
                return None
            sites += r
    return sites


def _tuplify(x):
    return tuple(_tuplify(y) for y in x) if isinstance(x, list) else x


def sites_of(u) -> list[int]:
    """Site types of a unit's ``□`` positions in pre-order."""
    out = []

    def rec(s):
        for c in s[1]:
            if c == OPEN:
                out.append(NEED_SLOT if s[0].startswith("IN:") else NEED_INTENT)
            elif c != LEAF:
                rec(c)

    rec(u)
    return out


def leaves_of(u) -> list[str]:
    """Slot labels owning the unit's ``◦`` leaves in pre-order."""
    out = []

    def rec(s):
        for c in s[1]:
            if c == LEAF:
                out.append(s[0])
            elif c != OPEN:
                rec(c)

    rec(u)
    return out


class TreePiece:
    """A unit vocabulary with log-probabilities; encode/decode skeletons.

    Attributes:
      units: list of units (nested tuples); ids index this list.
      logp: float64 [V] log-probabilities used by Viterbi (floored so atomic units stay usable).
    """

    def __init__(self, units, logp=None):
        self.units = [_tuplify(u) for u in units]
        self.index = {u: i for i, u in enumerate(self.units)}
        if len(self.index) != len(self.units):
            # a repeated unit would split its probability over two ids and make encode ambiguous
            dup = next(u for u in self.units if self.units.count(u) > 1)
            raise ValueError(f"duplicate TreePiece unit {skel_to_str(dup)}")
        self.logp = np.full(len(units), -np.log(len(units))) if logp is None else np.asarray(logp)
        self._by_label = collections.defaultdict(list)
        for i, u in enumerate(self.units):
            self._by_label[u[0]].append(i)

    # -- construction ---------------------------------------------------------------------------
    @staticmethod
    def atomic_units(labels, max_arity: int) -> list:
        """Every label at every arity; slots also as a text leaf ``[SL:X ◦ ]``."""
        units = []
        for lab in sorted(labels):
            lo = 0 if lab.startswith("IN:") else 1
            units += [(lab, (OPEN,) * a) for a in range(lo, max_arity + 1)]
            if lab.startswith("SL:"):
                units.append((lab, (LEAF,)))
        return units

    @classmethod
    def train(
        cls,
        skels,
        *,
        vocab_size: int,
        max_arity: int = 6,
        em_iters: int = 5,
        labels=(),
        min_count: int = 2,
    ):
        """Two-stage training; returns the tokeniser with ``em_history`` (log-likelihood per round).

        Args:
          skels: training skeletons (duplicates allowed; they weigh the counts).
          vocab_size: target number of units including atomic ones.
          max_arity: atomic units cover arities ``0..max_arity``.
          em_iters: EM rounds of the unigram stage.
          labels: extra ontology labels to cover beyond those seen in ``skels``.
          min_count: stop merging when the best pair occurs fewer times.
        """
        counts = collections.Counter(skels)
        flats = [(_flat(s), n) for s, n in counts.items()]
        seen = set(labels) | {lab for (ls, _, _), _ in flats for lab in ls}
        units = cls.atomic_units(
            seen, max(max_arity, max(len(k) for (_, ks, _), _ in flats for k in ks))
        )
        merged = [set() for _ in flats]  # per skeleton: child node ids whose parent edge is kept

        def key(f, m, v):
            labels_, kids, leaf = f
            if leaf[v]:
                return (labels_[v], (LEAF,))
            return (labels_[v], tuple(key(f, m, c) if c in m else OPEN for c in kids[v]))

        def sites(f, m, v):
            out = []
            for c in f[1][v]:
                out += sites(f, m, c) if c in m else [c]
            return out

        def roots(f, m):
            return [v for v in range(len(f[0])) if v not in m]

        new_units = {}  # insertion-ordered set: a merge may rebuild a unit the vocabulary has
        while len(units) + len(new_units) < vocab_size:
            pairs = collections.Counter()
            for (f, n), m in zip(flats, merged, strict=True):
                for r in roots(f, m):
                    for k, c in enumerate(sites(f, m, r)):
                        pairs[(key(f, m, r), k, key(f, m, c))] += n
            if not pairs:
                break
            (pu, k, cu), best = max(pairs.items(), key=lambda kv: (kv[1], str(kv[0])))
            if best < min_count:
                break
            new_units.setdefault(_substitute(pu, k, cu))
            for (f, _), m in zip(flats, merged, strict=True):
                for r in roots(f, m):  # pre-order; keys are recomputed after each merge
                    if r in m or key(f, m, r) != pu:
                        continue
                    c = sites(f, m, r)[k]
                    if key(f, m, c) == cu:
                        m.add(c)
        atomic = set(units)
        tp = cls(units + [u for u in new_units if u not in atomic])
        tp.em_history = tp.fit_em(list(counts.items()), em_iters)
        return tp

    def fit_em(self, weighted_skels, iters: int) -> list[float]:
        """Unigram EM (inside-outside); sets ``logp`` and returns the log-likelihood per round.

        Plain maximum-likelihood EM, so the history never decreases; afterwards units with zero
        expected count get a small floor so any tree over known labels stays encodable.
        """
        tables = [(self._matches(s), n) for s, n in weighted_skels]
        history = []
        for _ in range(iters):
            expected = np.zeros(len(self.units))
            ll = 0.0
            for matches, n in tables:
                z, ec = _inside_outside(matches, self.logp)
                ll += n * z
                for u, c in ec.items():
                    expected[u] += n * c
            history.append(ll)
            with np.errstate(divide="ignore"):
                self.logp = np.log(expected / expected.sum())
        history.append(sum(n * _inside_outside(m, self.logp)[0] for m, n in tables))
        floor = np.log(1e-4 / len(self.units))
        self.logp = np.log(
            np.exp(np.maximum(self.logp, floor)) / np.exp(np.maximum(self.logp, floor)).sum()
        )
        return history

    # -- encoding -------------------------------------------------------------------------------
    def _matches(self, skel):
        f = _flat(skel)
        out = []
        for v in range(len(f[0])):
            ms = [
                (u, s)
                for u in self._by_label[f[0][v]]
                if (s := _match(self.units[u], v, *f)) is not None
            ]
            out.append(ms)
        return out

    def log_likelihood(self, skel) -> float:
        """log sum over segmentations of prod p(unit)."""
        return _inside_outside(self._matches(skel), self.logp)[0]

    def encode(self, skel) -> list[int]:
        """Viterbi segmentation as unit ids in pre-order of their roots.

        Raises:
          ValueError: if some node has no matching unit (an unknown label or arity).
        """
        matches = self._matches(skel)
        best = [(-np.inf, None)] * len(matches)
        for v in reversed(range(len(matches))):
            cands = [(self.logp[u] + sum(best[s][0] for s in ss), u, ss) for u, ss in matches[v]]
            if not cands:
                raise ValueError(f"no TreePiece unit covers node {v} of {skel_to_str(skel)}")
            sc, u, ss = max(cands, key=lambda c: c[0])
            best[v] = (sc, (u, ss))
        out = []

        def emit(v):
            u, ss = best[v][1]
            out.append(u)
            for s in ss:
                emit(s)

        emit(0)
        return out

    def decode(self, ids) -> tuple[tuple, list[int]]:
        """Replays a leftmost derivation.

        Returns:
          ``(skel, leaf_perm)``: the skeleton and, for each of its leaves in tree pre-order, the
          leaf's index in emission order (unit by unit, pre-order inside a unit).

        Raises:
          ValueError: if a unit does not fit its site or sites remain open.
        """
        counter = iter(range(10**9))
        ids = list(ids)

        def tag(s):  # replace each ◦ by a numbered marker in emission order
            if s == LEAF:
                return ("#", next(counter))
            return s if s == OPEN else (s[0], tuple(tag(c) for c in s[1]))

        def expand(need):
            if not ids:
                raise ValueError("unit sequence ended with open sites")
            u = self.units[ids.pop(0)]
            if (u[0].startswith("IN:")) != (need == NEED_INTENT):
                raise ValueError(f"unit {skel_to_str(u)} does not fit a site needing {need}")
            t = tag(u)
            return fill(t, u)

        def fill(t, u):
            if t == OPEN:
                raise AssertionError
            label, kids = t
            if label == "#":
                return t
            return (
                label,
                tuple(
                    expand(NEED_SLOT if label.startswith("IN:") else NEED_INTENT)
                    if c == OPEN
                    else fill(c, u)
                    for c in kids
                ),
            )

        tree = expand(NEED_INTENT)
        if ids:
            raise ValueError(f"{len(ids)} unit(s) left after the tree was complete")
        perm = []

        def untag(s):
            if s[0] == "#":
                perm.append(s[1])
                return LEAF
            return (s[0], tuple(untag(c) for c in s[1]))

        return untag(tree), perm

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"units": self.units, "logp": self.logp.tolist()}, f)

    @classmethod
    def load(cls, path: str) -> TreePiece:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        return cls(d["units"], d["logp"])


def _substitute(u, k, c):
    """Unit ``u`` with its k-th site (pre-order) replaced by unit ``c``."""
    count = [0]

    def rec(s):
        kids = []
        for x in s[1]:
            if x == OPEN:
                kids.append(c if count[0] == k else OPEN)
                count[0] += 1
            else:
                kids.append(x if x == LEAF else rec(x))
        return (s[0], tuple(kids))

    return rec(u)


def _inside_outside(matches, logp):
    """Log partition and expected unit counts for one skeleton's match table (pre-order nodes)."""
    n = len(matches)
    ins = np.full(n, -np.inf)
    for v in reversed(range(n)):
        terms = [logp[u] + sum(ins[s] for s in ss) for u, ss in matches[v]]
        ins[v] = np.logaddexp.reduce(terms) if terms else -np.inf
    z = ins[0]
    if not np.isfinite(z):
        return z, {}
    out = np.full(n, -np.inf)
    out[0] = 0.0
    ec = collections.defaultdict(float)
    for v in range(n):  # a site's matching ancestors precede it in pre-order
        for u, ss in matches[v]:
            score = out[v] + logp[u] + sum(ins[s] for s in ss)
            if not np.isfinite(score):
                continue
            ec[u] += np.exp(score - z)
            for s in ss:
                out[s] = np.logaddexp(out[s], score - ins[s])
    return z, ec

"""Host-side featurisation: examples -> padded arrays for the three parsers, and predictions back
to TOP strings (arXiv:2303.17161; exact match is computed on decoupled trees, Sec. 4).

Token-level targets use the action space of ``parsing.grammar.TokenGrammar``: ``0 = ']'``,
``1..n_labels = '[LABEL'``, ``n_cls + s`` = copy source token ``s``. TreePiece targets are the
Viterbi unit sequence plus each leaf's inclusive span, listed in emission order.
"""

from __future__ import annotations

import collections

import numpy as np

from parsing.grammar import TokenGrammar, unit_mask_tables
from parsing.spans import EMPTY, SITE
from parsing.tree import LEAF, OPEN, decouple, fill, find_spans, skeleton, to_top
from parsing.treepiece import NEED_INTENT, NEED_SLOT, TreePiece, leaves_of, sites_of

PAD, UNK = 0, 1


class Vocab:
    """Source words (PAD, UNK first) and the ontology labels (sorted)."""

    def __init__(self, words, labels):
        self.words = ["<pad>", "<unk>", *words]
        self.word_index = {w: i for i, w in enumerate(self.words)}
        self.labels = sorted(labels)
        self.label_index = {lab: i + 1 for i, lab in enumerate(self.labels)}  # 0 is CLOSE

    @classmethod
    def build(cls, examples, extra_labels=()):
        wc = collections.Counter(w for ex in examples for w in ex.tokens)
        labels = set(extra_labels)
        for ex in examples:
            todo = [ex.tree]
            while todo:
                n = todo.pop()
                labels.add(n.label)
                todo += [c for c in n.children if not isinstance(c, str)]
        return cls(sorted(wc), labels)

    def grammar(self, depth: int) -> TokenGrammar:
        return TokenGrammar(
            np.array([False] + [lab.startswith("IN:") for lab in self.labels]), depth
        )

    @property
    def slot_labels(self):
        return [lab for lab in self.labels if lab.startswith("SL:")]


def gold(ex) -> str:
    return to_top(decouple(ex.tree))


def source(examples, vocab: Vocab, max_src: int):
    """src [N, S] int32 word ids and mask [N, S] bool (truncated to ``max_src``)."""
    src = np.zeros((len(examples), max_src), np.int32)
    for i, ex in enumerate(examples):
        ids = [vocab.word_index.get(w, UNK) for w in ex.tokens[:max_src]]
        src[i, : len(ids)] = ids
    return src, src != PAD


def token_actions(ex, vocab: Vocab) -> list[int]:
    """Action sequence of the decoupled tree (copies point at utterance positions)."""
    skel, texts = skeleton(ex.tree)
    spans = iter(find_spans(list(ex.tokens), texts))
    n_cls = len(vocab.labels) + 1
    out = []

    def rec(s):
        out.append(vocab.label_index[s[0]])
        for c in s[1]:
            if c == LEAF:
                a, b = next(spans)
                out.extend(n_cls + p for p in range(a, b + 1))
            else:
                rec(c)
        out.append(0)

    rec(skel)
    return out


def actions_to_top(actions, tokens, vocab: Vocab) -> str:
    """Inverse of ``token_actions`` for a (grammar-constrained) prediction."""
    n_cls = len(vocab.labels) + 1
    parts = []
    for a in actions:
        a = int(a)
        if a == 0:
            parts.append("]")
        elif a < n_cls:
            parts.append("[" + vocab.labels[a - 1])
        else:
            p = a - n_cls
            parts.append(tokens[p] if p < len(tokens) else "<pad>")
    return " ".join(parts)


def token_targets(examples, vocab: Vocab, max_tgt: int):
    """Padded actions [N, T] (-1 = padding) and lengths [N]; rows longer than T are marked -1."""
    tgt = np.full((len(examples), max_tgt), -1, np.int32)
    lens = np.zeros(len(examples), np.int32)
    for i, ex in enumerate(examples):
        a = token_actions(ex, vocab)
        if len(a) <= max_tgt:
            tgt[i, : len(a)], lens[i] = a, len(a)
        else:
            lens[i] = -1
    return tgt, lens


# ------------------------------------------------------------------------------- TreePiece
def _items_of(u) -> list[int]:
    """A unit's leaves (their index in the unit) and sites (``spans.SITE``) in pre-order."""
    out, n_leaf = [], 0

    def rec(s):
        nonlocal n_leaf
        for c in s[1]:
            if c == LEAF:
                out.append(n_leaf)
                n_leaf += 1
            elif c == OPEN:
                out.append(SITE)
            else:
                rec(c)

    rec(u)
    return out


def unit_tables(tp: TreePiece, vocab: Vocab) -> dict[str, np.ndarray]:
    """Per-unit arrays for the device: grammar [2, V], n_sites, site_types, n_leaves, leaf_label,
    items [V, I] and n_items (leaves and sites in pre-order, for ``spans.leaf_tree_order``), and
    the decoder's grammar-mask lookup tables (``grammar.unit_mask_tables``)."""
    v = len(tp.units)
    sites = [sites_of(u) for u in tp.units]
    leaves = [leaves_of(u) for u in tp.units]
    items = [_items_of(u) for u in tp.units]
    k, lmax = max(1, max(map(len, sites))), max(1, max(map(len, leaves)))
    imax = max(1, max(map(len, items)))
    slot_index = {lab: i for i, lab in enumerate(vocab.slot_labels)}
    t = {
        "grammar": np.zeros((2, v), bool),
        "n_sites": np.zeros(v, np.int32),
        "site_types": np.zeros((v, k), np.int32),
        "n_leaves": np.zeros(v, np.int32),
        "leaf_label": np.zeros((v, lmax), np.int32),
        "items": np.full((v, imax), EMPTY, np.int32),
        "n_items": np.array([len(x) for x in items], np.int32),
    }
    for i, u in enumerate(tp.units):
        t["grammar"][NEED_INTENT if u[0].startswith("IN:") else NEED_SLOT, i] = True
        t["n_sites"][i], t["n_leaves"][i] = len(sites[i]), len(leaves[i])
        t["site_types"][i, : len(sites[i])] = sites[i]
        t["leaf_label"][i, : len(leaves[i])] = [slot_index.get(lab, 0) for lab in leaves[i]]
        t["items"][i, : len(items[i])] = items[i]
    t.update(unit_mask_tables(t))
    return t


def unit_targets(examples, tp: TreePiece, max_units: int, max_leaves: int):
    """units [N, U] (-1 pad), spans [N, L, 2] in emission order (-1 pad), ok [N] (fits)."""
    units = np.full((len(examples), max_units), -1, np.int32)
    spans = np.full((len(examples), max_leaves, 2), -1, np.int32)
    ok = np.ones(len(examples), bool)
    for i, ex in enumerate(examples):
        skel, texts = skeleton(ex.tree)
        ids = tp.encode(skel)
        _, perm = tp.decode(ids)
        sp = find_spans(list(ex.tokens), texts)
        if len(ids) > max_units or len(sp) > max_leaves:
            ok[i] = False
            continue
        units[i, : len(ids)] = ids
        for tree_k, emit_k in enumerate(perm):
            spans[i, emit_k] = sp[tree_k]
    return units, spans, ok


def units_to_top(unit_ids, start, end, tokens, tp: TreePiece) -> str:
    """Prediction (units with -1 padding, per-leaf start/end in emission order) -> TOP string."""
    skel, perm = tp.decode([int(u) for u in unit_ids if u >= 0])
    texts = [tuple(tokens[int(start[k]) : int(end[k]) + 1]) for k in perm]
    return to_top(fill(skel, texts))

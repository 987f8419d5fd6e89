"""TreePiece tokeniser: round trips, Viterbi vs brute force, EM monotonicity, atomic coverage."""

import itertools

import numpy as np
import pytest

from parsing.data import generate
from parsing.tree import LEAF, OPEN, skeleton
from parsing.treepiece import TreePiece, _flat


@pytest.fixture(scope="module")
def corpus():
    d = generate({"train": 1500, "compositional": 100}, seed=0)
    train = [skeleton(ex.tree)[0] for ex in d["train"]]
    comp = [skeleton(ex.tree)[0] for ex in d["compositional"]]
    tp = TreePiece.train(train, vocab_size=360, em_iters=4)
    return train, comp, tp


def _segmentations(skel):
    """Every segmentation of a skeleton as the list of its units (brute force over cut sets)."""
    labels, kids, leaf = _flat(skel)
    edges = list(range(1, len(labels)))
    for keep in itertools.product([False, True], repeat=len(edges)):
        kept = {e for e, k in zip(edges, keep, strict=True) if k}

        def key(v, kept=kept):
            if leaf[v]:
                return (labels[v], (LEAF,))
            return (labels[v], tuple(key(c) if c in kept else OPEN for c in kids[v]))

        yield [key(v) for v in range(len(labels)) if v not in kept]


def test_every_training_tree_round_trips(corpus):
    train, _, tp = corpus
    lens = []
    for s in set(train):
        ids = tp.encode(s)
        lens.append(len(ids))
        assert tp.decode(ids)[0] == s
    # Merged units must actually shorten sequences relative to one unit per node.
    assert np.mean(lens) < np.mean([len(_flat(s)[0]) for s in set(train)])


def test_viterbi_equals_brute_force_and_inside_sums_all(corpus):
    train, _, tp = corpus
    small = [s for s in set(train) if len(_flat(s)[0]) <= 6][:25]
    assert len(small) >= 10
    for s in small:
        scores = [
            sum(tp.logp[tp.index[u]] for u in seg)
            for seg in _segmentations(s)
            if all(u in tp.index for u in seg)
        ]
        best = tp.logp[tp.encode(s)].sum()
        assert best == pytest.approx(max(scores), abs=1e-9)
        assert tp.log_likelihood(s) == pytest.approx(np.logaddexp.reduce(scores), abs=1e-9)


def test_em_never_decreases_likelihood(corpus):
    train, _, _ = corpus
    tp = TreePiece.train(train[:400], vocab_size=330, em_iters=8)
    h = np.array(tp.em_history)
    assert np.all(np.diff(h) >= -1e-7 * np.abs(h[:-1])), h
    assert h[-1] > h[0]  # and it does improve on the BPE-count start


def test_unseen_trees_encodable_with_atomic_units(corpus):
    _, comp, tp = corpus
    atomic_only = TreePiece([u for u in tp.units if all(c in (OPEN, LEAF) for c in u[1])])
    handmade = ("IN:GET_WEATHER", tuple(("SL:LOCATION", (LEAF,)) for _ in range(5)))
    for s in comp + [handmade]:
        for model in (tp, atomic_only):
            ids = model.encode(s)
            assert model.decode(ids)[0] == s
        assert len(atomic_only.encode(s)) == len(_flat(s)[0])
    with pytest.raises(ValueError, match="no TreePiece unit covers"):
        tp.encode(("IN:NEVER_SEEN", ()))


def test_first_merge_and_preorder_golden():
    a = ("IN:A", (("SL:X", (LEAF,)),))
    b = ("IN:B", (("SL:X", (LEAF,)), ("SL:Y", (("IN:A", ()),))))
    tp = TreePiece.train([a, a, a, b], vocab_size=0, em_iters=1, max_arity=2)
    assert len(tp.units) == 2 * 3 + 2 * 3  # intents at arity 0..2, slots at 1..2 plus the leaf
    tp = TreePiece.train([a, a, a, b], vocab_size=16, em_iters=1, max_arity=2)
    assert tp.units[-1] == a  # most frequent pair: IN:A with SL:X◦ under its only site
    # Atomic encoding of b in pre-order of unit roots: B, X, Y, A.
    atomic = TreePiece(tp.units[:-1])
    names = [atomic.units[i][0] for i in atomic.encode(b)]
    assert names == ["IN:B", "SL:X", "SL:Y", "IN:A"]
    skel, perm = atomic.decode(atomic.encode(b))
    assert skel == b and perm == [0]


def test_vocabulary_has_no_duplicate_units(corpus):
    """A unit listed twice would split its probability and make encoding ambiguous (issue 15.8)."""
    _, _, tp = corpus
    assert len(set(tp.units)) == len(tp.units)
    with pytest.raises(ValueError, match="duplicate TreePiece unit"):
        TreePiece(tp.units + [tp.units[-1]])


def test_save_load(tmp_path, corpus):
    train, _, tp = corpus
    tp.save(str(tmp_path / "v.json"))
    tp2 = TreePiece.load(str(tmp_path / "v.json"))
    assert tp2.units == tp.units and np.allclose(tp2.logp, tp.logp)
    assert all(tp2.encode(s) == tp.encode(s) for s in train[:50])


def test_decode_rejects_ill_typed_sequences(corpus):
    _, _, tp = corpus
    slot = tp.index[("SL:LOCATION", (LEAF,))]
    with pytest.raises(ValueError, match="does not fit"):
        tp.decode([slot])
    with pytest.raises(ValueError, match="open sites"):
        tp.decode([tp.index[("IN:GET_WEATHER", (OPEN,))]])

"""Ordered span decoding: leaves in tree order on device; joint argmax equals brute force."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.treepiece import get_config
from parsing import experiment as E
from parsing import features as F
from parsing.spans import leaf_tree_order, ordered_spans


@pytest.fixture(scope="module")
def prep():
    return E.prepare(get_config("tiny"))


def test_leaf_tree_order_matches_host_decode(prep):
    tables = jax.tree.map(jnp.asarray, prep["tables"])
    exs = prep["splits"]["train"][:64] + prep["splits"]["compositional"]
    units, _, _ = F.unit_targets(exs, prep["tp"], 16, 8)
    order = np.asarray(jax.jit(leaf_tree_order, static_argnums=2)(tables, jnp.asarray(units), 8))
    reordered = 0
    for row, got in zip(units, order, strict=True):
        _, perm = prep["tp"].decode([u for u in row if u >= 0])
        np.testing.assert_array_equal(got, perm + [-1] * (8 - len(perm)))
        reordered += perm != sorted(perm)
    assert reordered > 0  # the sample exercises units whose sites precede their own leaves


def _brute(st, en, n_leaves, n_words):
    """Best (start, end) per leaf over every assignment, vectorised."""
    if n_leaves == 0:
        return []
    grid = np.array(list(itertools.product(range(n_words), repeat=2 * n_leaves)))
    s_, e_ = grid[:, 0::2], grid[:, 1::2]
    ok = np.all(s_ <= e_, 1) & np.all(e_[:, :-1] < s_[:, 1:], 1)
    k = np.arange(n_leaves)
    score = np.where(ok, st[k, s_].sum(1) + en[k, e_].sum(1), -np.inf)
    best = grid[np.argmax(score)]
    return [(int(best[2 * j]), int(best[2 * j + 1])) for j in range(n_leaves)]


def test_ordered_spans_equal_brute_force():
    rng = np.random.default_rng(0)
    b, n_l, s = 24, 3, 6
    st = rng.normal(size=(b, n_l, s)) * 3
    en = rng.normal(size=(b, n_l, s)) * 3
    n_words = rng.integers(3, s + 1, size=b)
    n_leaves = rng.integers(0, n_l + 1, size=b)
    mask = np.arange(s)[None] < n_words[:, None]
    st, en = np.where(mask[:, None], st, -1e9), np.where(mask[:, None], en, -1e9)
    # a random emission order per row: tree position k holds emission leaf order[k]
    order = np.full((b, n_l), -1)
    for i in range(b):
        order[i, : n_leaves[i]] = rng.permutation(n_leaves[i])
    start, end = jax.jit(ordered_spans)(st, en, order, mask)
    lsm = lambda x: np.asarray(jax.nn.log_softmax(jnp.asarray(x), -1))  # noqa: E731
    for i in range(b):
        k = n_leaves[i]
        o = order[i, :k]
        want = _brute(lsm(st[i, o]), lsm(en[i, o]), k, n_words[i])
        got = [(int(start[i, e]), int(end[i, e])) for e in o]
        assert got == want, (i, got, want)
        assert (np.asarray(start[i, k:]) == 0).all()

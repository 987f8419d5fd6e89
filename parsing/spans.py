"""Ordered span decoding for TreePiece's parallel leaf step (arXiv:2303.17161, Sec. 3).

After the unit decoder has built the skeleton, every text placeholder ``◦`` points at its utterance
span. The spec (../shared/papers/treepiece.md, Sec. 4) requires the spans to lie inside the
utterance and to follow the left-to-right order of their placeholders, as in TOP, where slot
texts never overlap or cross. Independent per-leaf argmaxes do not guarantee that, so decoding is
a joint argmax over all leaves under those constraints:

    max  sum_k  log p_start_k(s_k) + log p_end_k(e_k)
    s.t. s_k <= e_k  and  e_k < s_{k+1}   (leaves k in tree pre-order)

solved exactly by dynamic programming over (leaf, position) in ``O(L T^2)``, inside ``jit``.

Leaves come out of the unit decoder in *emission* order (unit by unit, pre-order inside a unit),
which differs from the tree's pre-order when a unit has a site before one of its own leaves;
``leaf_tree_order`` replays the leftmost derivation on device to map one to the other (the same
permutation ``TreePiece.decode`` returns on the host).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SITE, EMPTY = -2, -1  # item codes in ``tables["items"]``; leaves are coded by their index >= 0
NEG = -1e9  # finite "impossible" score: sums of several stay finite (no inf - inf)


def leaf_tree_order(tables, units_bt, n_leaves: int):
    """Emission-order leaf ids in tree pre-order.

    Args:
      tables: ``items`` [V, I] (each unit's leaves ``j`` and sites ``SITE`` in pre-order, ``EMPTY``
        padding), ``n_items`` [V] and ``n_leaves`` [V].
      units_bt: decoded unit ids, -1 after the end.
      n_leaves: L, the number of leaf slots.

    Returns:
      int32 [B, L]: entry k is the emission index of the tree's k-th leaf, -1 past the last leaf.
    """
    b = units_bt.shape[0]
    size = n_leaves + tables["items"].shape[1] * (units_bt.shape[1] + 1)
    pos = jnp.arange(size)[None, :]
    seq = jnp.full((b, size), EMPTY, jnp.int32).at[:, 0].set(SITE)

    def substitute(carry, unit_b):
        seq, base = carry
        active = unit_b >= 0
        u = jnp.maximum(unit_b, 0)
        items = tables["items"][u]  # [B, I]
        items = jnp.where(items >= 0, items + base[:, None], items)
        n = tables["n_items"][u][:, None]
        p = jnp.argmax(seq == SITE, 1)[:, None]  # leftmost open site
        inside = jnp.take_along_axis(items, jnp.clip(pos - p, 0, items.shape[1] - 1), 1)
        after = jnp.take_along_axis(seq, jnp.clip(pos - n + 1, 0, size - 1), 1)
        after = jnp.where(pos - n + 1 < size, after, EMPTY)
        new = jnp.where(pos < p, seq, jnp.where(pos < p + n, inside, after))
        seq = jnp.where(active[:, None], new, seq)
        base = base + jnp.where(active, tables["n_leaves"][u], 0)
        return (seq, base), None

    (seq, _), _ = jax.lax.scan(substitute, (seq, jnp.zeros((b,), jnp.int32)), units_bt.T)
    return seq[:, :n_leaves]


def ordered_spans(start_bls, end_bls, order_bl, src_mask_bs):
    """Joint argmax of all leaves' spans under ``s_k <= e_k < s_{k+1}`` (tree order).

    Args:
      start_bls: start-pointer logits [B, L, S] per leaf in emission order (padding ~ -1e9).
      end_bls: end-pointer logits [B, L, S], same layout.
      order_bl: ``leaf_tree_order`` output (emission index of the k-th leaf in the tree, or -1).
      src_mask_bs: bool [B, S], real utterance positions.

    Returns:
      ``(start, end)`` int32 [B, L] in emission order (0 for padded leaves), inside the utterance.
    """
    b, n_l, s = start_bls.shape
    valid = order_bl >= 0
    idx = jnp.maximum(order_bl, 0)[..., None]
    sc_s = jax.nn.log_softmax(jnp.take_along_axis(start_bls, idx, 1).astype(jnp.float32), -1)
    sc_e = jax.nn.log_softmax(jnp.take_along_axis(end_bls, idx, 1).astype(jnp.float32), -1)
    le = jnp.arange(s)[:, None] <= jnp.arange(s)[None, :]  # [s, e]: s <= e
    lt = jnp.arange(s)[None, :] < jnp.arange(s + 1)[:, None]  # [p, e]: e < p

    def forward(m_bp, xs):
        st, en, ok = xs  # [B, S], [B, S], [B]
        a = jnp.where(le[None], (st + m_bp[:, :s])[:, :, None], NEG)  # [B, s, e]
        arg_s, c = jnp.argmax(a, 1), jnp.max(a, 1)  # best start for each end
        best = en + c  # [B, e]
        cand = jnp.where(lt[None], best[:, None, :], NEG)  # [B, p, e]
        arg_e, m_new = jnp.argmax(cand, 2), jnp.max(cand, 2)
        return jnp.where(ok[:, None], m_new, m_bp), (arg_s, arg_e)

    m0 = jnp.zeros((b, s + 1), jnp.float32)
    xs = (sc_s.swapaxes(0, 1), sc_e.swapaxes(0, 1), valid.T)
    _, (arg_s, arg_e) = jax.lax.scan(forward, m0, xs)

    def backward(p_b, xs):
        a_s, a_e, ok = xs
        e = jnp.take_along_axis(a_e, p_b[:, None], 1)[:, 0]
        st = jnp.take_along_axis(a_s, e[:, None], 1)[:, 0]
        return jnp.where(ok, st, p_b), (jnp.where(ok, st, 0), jnp.where(ok, e, 0))

    _, (st_lb, en_lb) = jax.lax.scan(
        backward, jnp.full((b,), s, jnp.int32), (arg_s, arg_e, valid.T), reverse=True
    )
    # more leaves than words has no feasible answer: stay inside the utterance regardless
    last = jnp.maximum(jnp.sum(src_mask_bs, 1) - 1, 0)[:, None]
    en_t = jnp.minimum(en_lb.T, last)
    st_t = jnp.minimum(st_lb.T, en_t)
    rows = jnp.arange(b)[:, None]
    dest = jnp.where(valid, order_bl, n_l)  # padded leaves are dropped by the scatter
    start = jnp.zeros((b, n_l), jnp.int32).at[rows, dest].set(st_t, mode="drop")
    end = jnp.zeros((b, n_l), jnp.int32).at[rows, dest].set(en_t, mode="drop")
    return start, end

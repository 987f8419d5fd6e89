"""Device-side grammar masks that keep every decoded output a well-formed decoupled TOP tree.

TreePiece (arXiv:2303.17161, Sec. 3) decodes units by a leftmost derivation over a stack of open
sites; ``unit_allowed`` / ``unit_push`` mask units whose root type does not fit the site and units
that would leave more open sites than remaining steps. The token-level baselines use
``TokenGrammar``: a pushdown automaton over ``[CLOSE, labels..., pointers...]`` that allows only
legal brackets, labels and copies and, given the remaining budget, forces the tree to close.

Token automaton node kinds on the stack: INTENT, SLOT_EMPTY, SLOT_TEXT, SLOT_NODE.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

INTENT, SLOT_EMPTY, SLOT_TEXT, SLOT_NODE = 0, 1, 2, 3
NEED_INTENT, NEED_SLOT = 0, 1  # as in parsing.treepiece (kept here to stay import-free)


# ------------------------------------------------------------------------ TreePiece unit stack
def unit_mask_tables(tables: dict) -> dict[str, np.ndarray]:
    """Host-side lookup tables that make ``unit_allowed`` three row gathers and two ANDs.

    The legality test of a unit u (see ``unit_allowed``) is a conjunction of thresholds on
    per-unit constants, each compared with one per-row scalar ``s``:
      * root type fits the top site, and ``n_sites[u] <= s_sites`` (both the step budget with the
        open sites below the top, and the stack capacity): ``sites[top, s_sites + 1, u]``;
      * ``n_sites[u] + slot_sites[u] + n_leaves[u] <= s_cost`` (the step budget once every open
        slot without a text leaf costs two steps): ``cost[s_cost + 1, u]``;
      * ``n_leaves[u] <= s_leaves``: ``leaves[s_leaves + 1, u]``.
    Row 0 stands for any negative ``s`` (nothing fits); the last row for any ``s`` at or above the
    largest constant (everything fits), so callers clip ``s`` into the table.
    """
    n_sites = np.asarray(tables["n_sites"])
    k = np.arange(tables["site_types"].shape[1])[None, :] < n_sites[:, None]
    slot = np.sum(k & (np.asarray(tables["site_types"]) == NEED_SLOT), 1)
    n_leaves = np.asarray(tables["n_leaves"])

    def le(x):  # [max(x) + 2, V]: row s + 1 holds x[u] <= s for s in [-1, max(x)]
        s = np.arange(-1, int(x.max()) + 1)[:, None]
        return x[None, :] <= s

    sites = le(n_sites)[None] & np.asarray(tables["grammar"])[:, None, :]  # [2, S, V]
    return {
        "mask_sites": sites,
        "mask_cost": le(n_sites + slot + n_leaves),
        "mask_leaves": le(n_leaves),
    }


def _row(table, s_b):
    return table[jnp.clip(s_b + 1, 0, table.shape[-2] - 1)]


def unit_allowed(tables, stack_bk, sp_b, remaining_b, leaves_left_b):
    """[B, V] legal units at the top site.

    A unit is legal if its root type fits the site and the tree can still be completed with
    atomic units within ``remaining_b`` further steps and ``leaves_left_b`` text leaves: an intent
    site costs one step (``[IN:X ]``), a slot site one step and one leaf (``[SL:X ◦ ]``) or two
    steps without a leaf (``[SL:X □ ]`` then ``[IN:Y ]``). The condition holds after at least one
    action whenever it holds before, so decoding always ends in a complete tree.

    With the open sites below the top split into ``n_int`` intent and ``n_slot`` slot sites, the
    completion cost after u is ``n_int + u_int + slot_after + max(slot_after - leaves_after, 0)``;
    ``cost <= remaining`` is two linear thresholds, so the mask is a lookup into the precomputed
    ``unit_mask_tables`` (added to ``tables`` by ``parsing.features.unit_tables``).
    """
    k = stack_bk.shape[1]
    top = jnp.take_along_axis(stack_bk, jnp.maximum(sp_b - 1, 0)[:, None], 1)[:, 0]
    live = jnp.arange(k)[None, :] < sp_b[:, None]
    n_slot = jnp.sum(live & (stack_bk == NEED_SLOT), 1) - (top == NEED_SLOT)
    below = sp_b - 1  # open sites under the top
    s_sites = jnp.minimum(remaining_b - below, k - below)
    s_cost = remaining_b - below - n_slot + leaves_left_b
    return (
        tables["mask_sites"][top, jnp.clip(s_sites + 1, 0, tables["mask_sites"].shape[1] - 1)]
        & _row(tables["mask_cost"], s_cost)
        & _row(tables["mask_leaves"], leaves_left_b)
    )


def unit_push(tables, stack_bk, sp_b, unit_b, active_b):
    """Pops the top site and pushes the unit's sites so that its leftmost site is on top."""
    n = tables["n_sites"][unit_b]  # [B]
    base = sp_b - 1
    slot = jnp.arange(stack_bk.shape[1])[None, :]
    j = n[:, None] - 1 - (slot - base[:, None])  # which site of the unit lands in this slot
    types = jnp.take_along_axis(tables["site_types"][unit_b], jnp.clip(j, 0, None), 1)
    put = (slot >= base[:, None]) & (slot < (base + n)[:, None]) & active_b[:, None]
    return jnp.where(put, types, stack_bk), jnp.where(active_b, base + n, sp_b)


# ------------------------------------------------------------------------ token automaton
@dataclasses.dataclass(frozen=True)
class TokenGrammar:
    """Action space ``[CLOSE=0, labels 1..n_labels, pointer 0..S-1]``.

    Attributes:
      label_is_intent: bool [n_labels + 1] (index 0, CLOSE, is unused).
      depth: stack capacity.
    """

    label_is_intent: np.ndarray
    depth: int = 8

    @property
    def n_cls(self) -> int:
        return len(self.label_is_intent)

    def init(self, batch: int):
        return {
            "stack": jnp.zeros((batch, self.depth), jnp.int32),
            "sp": jnp.zeros((batch,), jnp.int32),
            "started": jnp.zeros((batch,), bool),
        }

    def done(self, st):
        return st["started"] & (st["sp"] == 0)

    def allowed(self, st, remaining_b, src_mask_bs):
        """[B, n_cls + S] legal actions leaving a tree closable within ``remaining_b`` steps."""
        sp = st["sp"]
        top = jnp.take_along_axis(st["stack"], jnp.maximum(sp - 1, 0)[:, None], 1)[:, 0]
        top = jnp.where(sp > 0, top, -1)
        r = remaining_b
        is_in = jnp.asarray(self.label_is_intent)[None, 1:]
        can_in = ((~st["started"]) | (top == SLOT_EMPTY)) & (sp + 1 <= r) & (sp < self.depth)
        can_sl = (top == INTENT) & (sp + 2 <= r) & (sp < self.depth)
        labels = jnp.where(is_in, can_in[:, None], can_sl[:, None])
        close = (sp > 0) & ((top == INTENT) | (top == SLOT_TEXT) | (top == SLOT_NODE))
        word = ((top == SLOT_EMPTY) | (top == SLOT_TEXT)) & (sp <= r)
        ptr = word[:, None] & src_mask_bs
        return jnp.concatenate([close[:, None], labels, ptr], 1)

    def step(self, st, action_b, active_b):
        """Applies one action per active row."""
        sp, stack = st["sp"], st["stack"]
        b = jnp.arange(sp.shape[0])
        top_i = jnp.maximum(sp - 1, 0)
        is_label = (action_b >= 1) & (action_b < self.n_cls)
        is_in = jnp.asarray(self.label_is_intent)[jnp.clip(action_b, 0, self.n_cls - 1)] & is_label
        is_word = action_b >= self.n_cls
        is_close = action_b == 0
        # The parent of a new intent is a slot that now holds a node; a word makes its slot text.
        parent = jnp.where(is_in & (sp > 0), SLOT_NODE, stack[b, top_i])
        parent = jnp.where(is_word, SLOT_TEXT, parent)
        stack = stack.at[b, top_i].set(jnp.where(active_b & (sp > 0), parent, stack[b, top_i]))
        push = active_b & is_label
        kind = jnp.where(is_in, INTENT, SLOT_EMPTY)
        slot = jnp.minimum(sp, self.depth - 1)
        stack = stack.at[b, slot].set(jnp.where(push, kind, stack[b, slot]))
        sp = sp + push.astype(jnp.int32) - (active_b & is_close).astype(jnp.int32)
        return {"stack": stack, "sp": sp, "started": st["started"] | push}

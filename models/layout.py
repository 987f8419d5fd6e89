"""Parameter layouts of the Transformer: unscanned (`blocks/<i>/...`) and scanned (`scan_layers`).

The scanned layout stacks every block leaf on a leading `layers` axis. The two hold the same
numbers, so a checkpoint written with one converts to the other: take the pure dict of the
parameters (`nnx.to_pure_dict`), convert, and load it with `nnx.replace_by_pure_dict`.

Trees written before the Q/K/V and gate/up projections were fused (issue 19) convert with
`fuse_projections`: the fused parameters hold the same numbers, rearranged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from models.transformer import fuse_qkv, split_qkv


def to_scanned(params: dict) -> dict:
    """Unscanned -> scanned parameters: `blocks/<i>/...` leaves stacked on a leading axis.

    Args:
      params: a pure dict (`nnx.to_pure_dict` of the model's state) in the unscanned layout.

    Returns:
      The same dict with `blocks` in the scanned layout; load it with `nnx.replace_by_pure_dict`.
    """
    blocks = params["blocks"]
    if not all(isinstance(k, int) or str(k).isdigit() for k in blocks):
        raise ValueError("parameters are already in the scanned layout (no blocks/<i>)")
    layers = [blocks[k] for k in sorted(blocks, key=int)]
    return {**params, "blocks": jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}


def to_unscanned(params: dict) -> dict:
    """Scanned -> unscanned parameters (the inverse of `to_scanned`)."""
    blocks = params["blocks"]
    if any(isinstance(k, int) or str(k).isdigit() for k in blocks):
        raise ValueError("parameters are already in the unscanned layout (blocks/<i>)")
    n = jax.tree.leaves(blocks)[0].shape[0]
    return {**params, "blocks": {i: jax.tree.map(lambda x, i=i: x[i], blocks) for i in range(n)}}


_UNFUSED_ATTN, _UNFUSED_MLP = ("wq", "wk", "wv"), ("w_gate", "w_up")


def has_unfused_projections(tree) -> bool:
    """Whether a (pure-dict or checkpoint-metadata) tree holds separate q/k/v or gate/up leaves."""
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = {str(getattr(p, "key", getattr(p, "name", p))) for p in path}
        if names & set(_UNFUSED_ATTN + _UNFUSED_MLP):
            return True
    return False


def fuse_projections(tree):
    """Separate `wq`/`wk`/`wv` and `w_gate`/`w_up` leaves -> fused `wqkv` and `w_gate_up`.

    Converts parameter trees (and any tree that mirrors them, e.g. Adam moments) written before
    the projections were fused, in either layer layout (a leading `layers` axis is kept). The
    values are only rearranged, so the converted model computes the same function.

    Args:
      tree: nested dicts (`nnx.to_pure_dict`); other nodes are returned unchanged.

    Returns:
      The same tree with every `{wq, wk, wv}` and `{w_gate, w_up}` group replaced.
    """
    if not isinstance(tree, dict):
        return tree
    out = {k: fuse_projections(v) for k, v in tree.items()}
    if all(n in out for n in _UNFUSED_ATTN):
        out["wqkv"] = fuse_qkv(*(out.pop(n) for n in _UNFUSED_ATTN))
    if all(n in out for n in _UNFUSED_MLP):
        out["w_gate_up"] = jnp.stack([out.pop(n) for n in _UNFUSED_MLP], axis=-2)
    return out


def split_projections(tree):
    """The inverse of `fuse_projections` (fused `wqkv`/`w_gate_up` -> separate leaves)."""
    if not isinstance(tree, dict):
        return tree
    out = {k: split_projections(v) for k, v in tree.items()}
    if "wqkv" in out:
        out.update(zip(_UNFUSED_ATTN, split_qkv(out.pop("wqkv")), strict=True))
    if "w_gate_up" in out:
        w = out.pop("w_gate_up")
        out["w_gate"], out["w_up"] = w[..., 0, :], w[..., 1, :]
    return out

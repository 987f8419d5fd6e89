"""Parameter layouts of the Transformer: unscanned (`blocks/<i>/...`) and scanned (`scan_layers`).

The scanned layout stacks every block leaf on a leading `layers` axis. The two hold the same
numbers, so a checkpoint written with one converts to the other: take the pure dict of the
parameters (`nnx.to_pure_dict`), convert, and load it with `nnx.replace_by_pure_dict`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


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

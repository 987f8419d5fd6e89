"""A checksum of a pytree's arrays, computed on the devices that hold them (train/checkpoint.py).

Per leaf: the wrapping uint32 sum and the position-weighted sum of the array's bits, and its count
of non-finite values. Any single flipped bit, and any swap of two different words, changes the
sums; the state is never gathered on one host, so this works for sharded and multi-host arrays.
"""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp


def _words(x):
    """The bits of an array as a flat uint32 vector (floats bit-cast, so -0.0 != 0.0)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    x = jnp.ravel(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        x = jnp.concatenate([x.real, x.imag])
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = x.dtype.itemsize
    if size == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32).ravel()
    unsigned = {4: jnp.uint32, 2: jnp.uint16, 1: jnp.uint8}[size]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


@jax.jit
def _tree_sums(tree):
    """Per leaf: [sum of words, position-weighted sum of words, non-finite count] (uint32)."""

    def one(x):
        w = _words(x)
        pos = jnp.arange(w.size, dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
        bad = jnp.sum(~jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else 0
        sums = [jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * pos, dtype=jnp.uint32)]
        return jnp.stack([*sums, jnp.asarray(bad, jnp.uint32)])

    return jax.tree.map(one, tree)


def fingerprint(tree) -> dict:
    """A checksum of a pytree's arrays, computed where they live (sharded, multi-host).

    Per leaf, the wrapping uint32 sum and position-weighted sum of its bits (any single flipped
    bit, and any swap of two different words, changes them), hashed with the leaf paths, dtypes
    and shapes. The state never has to be gathered on one host.

    Returns:
      {"sha256": hex, "nonfinite": [paths of float leaves holding inf or NaN]}.
    """
    sums = jax.device_get(_tree_sums(tree))
    h = hashlib.sha256()
    bad = []
    for (path, leaf), (_, s) in zip(
        jax.tree_util.tree_leaves_with_path(tree),
        jax.tree_util.tree_leaves_with_path(sums),
        strict=True,
    ):
        name = jax.tree_util.keystr(path)
        h.update(f"{name}|{leaf.dtype}|{tuple(leaf.shape)}|{int(s[0])}|{int(s[1])}|".encode())
        if int(s[2]):
            bad.append(name)
    return {"sha256": h.hexdigest(), "nonfinite": bad}

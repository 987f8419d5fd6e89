"""TrainState: parameters keyed by role, frozen leaves, optimizer state, step, RNG key.

Modules are split with `nnx.split` into a static graph definition (kept outside the state) and
pure pytrees, so the update step is a plain function of arrays (split/merge pattern).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct


@struct.dataclass
class TrainState:
    """Everything that changes during training; donated to the jitted update step.

    Attributes:
      params: dict role -> trainable pytree (`policy`; `policy`+`value`; ...).
      frozen: pytree of non-trainable leaves (reference policy, frozen backbone, ...).
      opt_state: optax state for `params`.
      step: number of update calls so far, skipped ones included (int32 scalar); it is also
        the data position, so a resumed run reads the batches it would have read.
      rng: PRNG key, split once per update.
      skipped: number of updates skipped because the loss or gradient was not finite.
    """

    params: Any
    frozen: Any
    opt_state: Any
    step: jax.Array
    rng: jax.Array
    skipped: jax.Array

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation, rng, frozen=None) -> TrainState:
        return cls(
            params=params,
            frozen=frozen if frozen is not None else {},
            opt_state=tx.init(params),
            step=jnp.zeros((), jnp.int32),
            rng=rng,
            skipped=jnp.zeros((), jnp.int32),
        )


def split_module(module: nnx.Module, trainable=nnx.Param):
    """Splits a module into (graphdef, trainable state, rest) for the functional update step.

    Args:
      module: an NNX module.
      trainable: an nnx filter selecting the trainable variables (default: all `nnx.Param`).

    Returns:
      (graphdef, trainable_state, frozen_state) as pure pytrees (nnx.State).
    """
    graphdef, train_state, rest = nnx.split(module, trainable, ...)
    return graphdef, train_state, rest


def count_params(tree) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))

"""Client partitioning, sampling and padding of client data into static-shape blocks.

Dirichlet non-IID partition (Hsu et al. 2019, arXiv:1909.06335): for every class k draw
p_k ~ Dir(alpha * 1_N) over the N clients and deal the class's examples out by p_k. Small alpha
gives clients dominated by few classes; alpha -> inf approaches IID.
"""

from __future__ import annotations

import jax
import numpy as np

from fed.simulation import ClientBlock


def dirichlet_partition(
    labels_n: np.ndarray, num_clients: int, alpha: float, seed: int
) -> list[np.ndarray]:
    """Splits example indices into `num_clients` non-IID shards.

    Args:
      labels_n: int class label of each example, `[N]`.
      num_clients: number of shards.
      alpha: Dirichlet concentration (> 0).
      seed: partition seed; the result is deterministic in it.

    Returns:
      A list of `num_clients` sorted index arrays that together cover every example once.
    """
    rng = np.random.default_rng(seed)
    shards: list[list[int]] = [[] for _ in range(num_clients)]
    for k in np.unique(labels_n):
        idx = rng.permutation(np.flatnonzero(labels_n == k))
        p = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
        for c, part in enumerate(np.split(idx, cuts)):
            shards[c].extend(part.tolist())
    return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]


def sample_clients(rng: np.random.Generator, num_clients: int, cohort: int) -> np.ndarray:
    """Uniformly samples a cohort of distinct client ids."""
    return np.sort(rng.choice(num_clients, size=min(cohort, num_clients), replace=False))


def make_block(
    client_arrays: list[dict[str, np.ndarray]],
    *,
    batch_size: int,
    num_steps: int,
    block_size: int | None = None,
    rng: np.random.Generator | None = None,
    extra: list | None = None,
    epochs: int = 1,
) -> ClientBlock:
    """Pads per-client example arrays into a `ClientBlock` of `[C, S, B, ...]` batches.

    Each client's examples are (optionally shuffled and) laid into `num_steps` batches of
    `batch_size`; extra examples are dropped, and a client with fewer examples than
    `num_steps * batch_size` sees each once and the rest of its slots are masked.
    Missing clients up to `block_size` are all-masked.

    Args:
      client_arrays: one dict per client of arrays with a leading example axis.
      batch_size: B.
      num_steps: S, local steps per client.
      block_size: C (defaults to the number of clients).
      rng: shuffles each client's examples when given.
      extra: optional per-client pytrees (same structure) stacked into `block.extra`.
      epochs: passes over each client's data (a fresh order per pass when `rng` is given).

    Returns:
      The padded block.
    """
    num = len(client_arrays)
    block_size = block_size or num
    assert block_size >= num, (block_size, num)
    keys = list(client_arrays[0])
    slots = num_steps * batch_size
    out = {
        k: np.zeros((block_size, slots) + client_arrays[0][k].shape[1:], client_arrays[0][k].dtype)
        for k in keys
    }
    mask = np.zeros((block_size, slots), bool)
    for c, arrays in enumerate(client_arrays):
        n = len(arrays[keys[0]])
        order = np.concatenate(
            [rng.permutation(n) if rng is not None else np.arange(n) for _ in range(epochs)]
        )
        take = order[:slots]  # more examples than slots: a random subset this round
        for k in keys:
            out[k][c, : len(take)] = arrays[k][take]
        mask[c, : len(take)] = True
    batches = {
        k: v.reshape((block_size, num_steps, batch_size) + v.shape[2:]) for k, v in out.items()
    }
    mask_csb = mask.reshape(block_size, num_steps, batch_size)
    if extra is not None:
        pad = [extra[0]] * (block_size - num)  # padded clients reuse a real one's shape; weight 0
        extra = _stack(list(extra) + pad)
    return ClientBlock(batches, mask_csb, extra)


def _stack(trees: list):
    return jax.tree.map(lambda *xs: np.stack(xs), *trees)

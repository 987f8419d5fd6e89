"""Federated simulation on one machine: client work as init/step/final, `vmap` and `loop` backends.

A federated algorithm is `FedAlgorithm(init, apply)` (the fedjax shape) and the per-client work is
three pure functions (`ClientWork`): `init(shared, personal, rng) -> cstate`,
`step(cstate, batch, mask_b) -> cstate` and `final(shared, cstate, extra) -> ClientOutput`.

Backends (same numbers, different speed):
  * `vmap`: a padded block of clients `[C, S, B, ...]` is trained together, `lax.scan` over local
    steps inside `jax.vmap` over clients; padded batches have an all-False mask and padded clients
    get weight 0, so padding contributes nothing. Given a mesh, the client axis is split over its
    batch axes (logical axis `clients`), so each device trains its share of the cohort and the
    aggregation is one cross-device sum.
  * `loop`: one jitted client step per real batch, a Python loop over clients (for models too large
    to vmap); the reference for the vmap backend.

Servers: FedAvg / FedAdam (McMahan et al. 2017, arXiv:1602.05629; Reddi et al. 2021,
arXiv:2003.00295): pseudo-gradient g = -(sum_u n_u Delta_u) / (sum_u n_u), then an optax step.
DP-FedAvg (McMahan et al. 2018, arXiv:1710.06963): each Delta_u is clipped to norm S, the
unweighted sum gets N(0, sigma^2 S^2) noise and is divided by the (public) cohort size afterwards.

Shared and personal parameters are separate trees; only `ClientOutput.delta` (a shared-tree
delta) ever reaches `aggregate_block`. Personal trees go back to the caller per client.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from models.sharding import constrain

PyTree = Any


class ClientOutput(NamedTuple):
    """What one client hands back. Only `delta` and `weight` are aggregated."""

    delta: PyTree  # shared-tree update, local_shared - server_shared
    weight: jax.Array  # scalar, number of real examples seen (0 for a padded client)
    personal: PyTree  # the client's new personal tree; stays with the client
    metrics: dict  # scalar per-client metrics (summed over clients by the backends)


@dataclasses.dataclass(frozen=True)
class ClientWork:
    """Client computation as three pure functions (fedjax's client_init/step/final)."""

    init: Callable[[PyTree, PyTree, jax.Array], PyTree]
    step: Callable[[PyTree, PyTree, jax.Array], PyTree]
    final: Callable[[PyTree, PyTree, PyTree], ClientOutput]


class ClientBlock(NamedTuple):
    """A padded block of clients.

    Attributes:
      batches: pytree of arrays `[C, S, B, ...]` (C clients, S local steps, B examples).
      mask_csb: bool `[C, S, B]`, True for real examples.
      extra: pytree `[C, ...]` handed to `final` (e.g. a test split), or None.
    """

    batches: PyTree
    mask_csb: np.ndarray
    extra: PyTree = None


def make_sgd_client_work(
    loss_fn: Callable,
    client_lr: float,
    *,
    train_shared: bool = True,
    train_personal: bool = True,
    personal_lr: float | None = None,
) -> ClientWork:
    """Client SGD on `loss_fn(shared, personal, batch, mask_b) -> (loss_sum, denom)`.

    A batch with no real example leaves the state untouched (so padded batches are no-ops), and the
    gradient is of the mean loss over the batch's real examples. `personal_lr` (default
    `client_lr`) is the step size of the personal tree.
    """
    personal_lr = client_lr if personal_lr is None else personal_lr

    def init(shared, personal, rng):
        del rng
        return {
            "shared": shared,
            "personal": personal,
            "n": jnp.zeros((), jnp.float32),
            "loss_sum": jnp.zeros((), jnp.float32),
            "denom": jnp.zeros((), jnp.float32),
        }

    def step(cstate, batch, mask_b):
        def mean_loss(shared, personal):
            loss_sum, denom = loss_fn(shared, personal, batch, mask_b)
            return loss_sum / jnp.maximum(denom, 1.0), (loss_sum, denom)

        grads, (loss_sum, denom) = jax.grad(mean_loss, argnums=(0, 1), has_aux=True)(
            cstate["shared"], cstate["personal"]
        )
        real = jnp.sum(mask_b) > 0
        lr_s = jnp.where(real & train_shared, client_lr, 0.0)
        lr_p = jnp.where(real & train_personal, personal_lr, 0.0)
        return {
            "shared": jax.tree.map(lambda p, g: p - lr_s * g, cstate["shared"], grads[0]),
            "personal": jax.tree.map(lambda p, g: p - lr_p * g, cstate["personal"], grads[1]),
            "n": cstate["n"] + jnp.sum(mask_b).astype(jnp.float32),
            "loss_sum": cstate["loss_sum"] + jnp.where(real, loss_sum, 0.0),
            "denom": cstate["denom"] + jnp.where(real, denom, 0.0),
        }

    def final(shared, cstate, extra):
        del extra
        delta = jax.tree.map(jnp.subtract, cstate["shared"], shared)
        metrics = {"loss_sum": cstate["loss_sum"], "denom": cstate["denom"]}
        return ClientOutput(delta, cstate["n"], cstate["personal"], metrics)

    return ClientWork(init, step, final)


def aggregate_block(deltas_c: PyTree, weights_c: jax.Array) -> PyTree:
    """Weighted sum over the leading client axis: sum_c w_c * Delta_c (shared tree only)."""
    return jax.tree.map(lambda d: jnp.tensordot(weights_c, d, axes=1), deltas_c)


def clip_tree(tree: PyTree, clip: float) -> PyTree:
    """Scales a pytree so its global L2 norm is at most `clip` (user-level clipping)."""
    norm = optax.global_norm(tree)
    return jax.tree.map(lambda x: x * jnp.minimum(1.0, clip / jnp.maximum(norm, 1e-12)), tree)


def _prepare_output(out: ClientOutput, dp_clip: float | None) -> tuple[PyTree, jax.Array]:
    if dp_clip is None:
        return out.delta, out.weight
    # DP-FedAvg: every real client counts once, its update clipped to norm S.
    return clip_tree(out.delta, dp_clip), (out.weight > 0).astype(jnp.float32)


def _on_clients(tree):
    """Splits the leading (client) axis of every leaf over the mesh (identity without a mesh)."""
    return jax.tree.map(lambda x: constrain(x, ("clients",) + (None,) * (x.ndim - 1)), tree)


def make_vmap_runner(
    work: ClientWork,
    dp_clip: float | None = None,
    *,
    shared_first_step: bool = True,
    client_chunk: int | None = None,
    mesh=None,
) -> Callable:
    """Jitted `run(shared, personal_c, block, rngs_c) -> (wsum, wtotal, personal_c, metrics)`.

    `shared_first_step=False` keeps local step 0 inside the scan (the previous computation, same
    numbers up to float rounding; kept for the benchmark and the tests). `client_chunk=k` runs
    local steps 1.. over chunks of k clients (`lax.map` with `batch_size`) instead of the whole
    block at once: the same numbers, with per-client activations that stay in a CPU's caches.
    `mesh`: a `models.sharding` mesh: the client axis of the block, the personal trees and the
    keys is split over it (each device trains its clients); None: one device.
    """

    def one_client(shared, personal, batches, mask_sb, rng, extra):
        """All local steps (`shared_first_step=False`) or only step 0 (then `extra` is None)."""
        cstate = work.init(shared, personal, rng)
        if not shared_first_step:
            cstate, _ = jax.lax.scan(
                lambda c, xs: (work.step(c, *xs), None), cstate, (batches, mask_sb)
            )
            return work.final(shared, cstate, extra)
        # Local step 0 runs outside the scan: every client still holds the server's weights, which
        # are unbatched under the client vmap, so whatever depends on the weights alone (the char
        # CNN's vocabulary table) is computed once per block, and weight-gradients whose primal
        # input is shared become one large matmul over all clients instead of C small ones.
        first = jax.tree.map(lambda x: x[0], (batches, mask_sb))
        return work.step(cstate, *first)

    def later_steps(args):
        cstate, batches, mask_sb = args
        rest = jax.tree.map(lambda x: x[1:], (batches, mask_sb))
        cstate, _ = jax.lax.scan(lambda c, xs: (work.step(c, *xs), None), cstate, rest)
        return cstate

    def all_clients(shared, personal_c, batches, mask_csb, rngs_c, extra_c):
        if not shared_first_step:
            return jax.vmap(one_client, in_axes=(None, 0, 0, 0, 0, 0))(
                shared, personal_c, batches, mask_csb, rngs_c, extra_c
            )
        cstate = jax.vmap(one_client, in_axes=(None, 0, 0, 0, 0, None))(
            shared, personal_c, batches, mask_csb, rngs_c, None
        )
        xs = (cstate, batches, mask_csb)
        if client_chunk is None:
            cstate = jax.vmap(later_steps)(xs)
        else:
            cstate = jax.lax.map(later_steps, xs, batch_size=client_chunk)
        return jax.vmap(work.final, in_axes=(None, 0, 0))(shared, cstate, extra_c)

    @jax.jit
    def run(shared, personal_c, block, rngs_c):
        personal_c, batches, mask_csb, rngs_c, extra = _on_clients(
            (personal_c, block.batches, block.mask_csb, rngs_c, block.extra)
        )
        out = all_clients(shared, personal_c, batches, mask_csb, rngs_c, extra)
        delta_c, weight_c = jax.vmap(lambda o: _prepare_output(o, dp_clip))(out)
        metrics = jax.tree.map(lambda m: jnp.sum(m, axis=0), out.metrics)
        return aggregate_block(delta_c, weight_c), jnp.sum(weight_c), out.personal, metrics

    if mesh is None:
        return run

    def run_on_mesh(*args):
        with jax.set_mesh(mesh):
            return run(*args)

    run_on_mesh.jitted = run
    return run_on_mesh


def make_loop_runner(work: ClientWork, dp_clip: float | None = None) -> Callable:
    """Same contract as `make_vmap_runner`, one jitted step per real batch of each real client."""
    init = jax.jit(work.init)
    step = jax.jit(work.step, donate_argnums=0)

    @jax.jit
    def final(shared, cstate, extra):
        out = work.final(shared, cstate, extra)
        delta, weight = _prepare_output(out, dp_clip)
        wsum = aggregate_block(jax.tree.map(lambda d: d[None], delta), weight[None])
        return wsum, weight, out.personal, out.metrics

    def run(shared, personal_c, block, rngs_c):
        mask_csb = np.asarray(block.mask_csb)
        wsum = jax.tree.map(jnp.zeros_like, shared)
        wtotal, metrics, personal_out = jnp.zeros(()), None, []
        for c in range(mask_csb.shape[0]):
            personal = jax.tree.map(lambda x, c=c: x[c], personal_c)
            if not mask_csb[c].any():  # padded client: contributes nothing, state unchanged
                personal_out.append(personal)
                continue
            cstate = init(shared, personal, rngs_c[c])
            for s in np.flatnonzero(mask_csb[c].any(axis=-1)):
                batch = jax.tree.map(lambda x, c=c, s=s: x[c, s], block.batches)
                cstate = step(cstate, batch, jnp.asarray(mask_csb[c, s]))
            extra = jax.tree.map(lambda x, c=c: x[c], block.extra)
            ws, w, p, m = final(shared, cstate, extra)
            wsum = jax.tree.map(jnp.add, wsum, ws)
            wtotal = wtotal + w
            metrics = m if metrics is None else jax.tree.map(jnp.add, metrics, m)
            personal_out.append(p)
        personal_new = jax.tree.map(lambda *xs: jnp.stack(xs), *personal_out)
        return wsum, wtotal, personal_new, metrics

    return run


class ServerState(NamedTuple):
    shared: PyTree
    opt_state: PyTree
    round: jax.Array


@dataclasses.dataclass(frozen=True)
class FedAlgorithm:
    init: Callable[[PyTree], ServerState]
    apply: Callable[..., tuple[ServerState, PyTree, dict]]


def make_fed_avg(
    work: ClientWork,
    server_tx: optax.GradientTransformation,
    *,
    backend: str = "vmap",
    dp_clip: float | None = None,
    dp_noise_multiplier: float = 0.0,
    mesh=None,
    lift: Callable[[PyTree], PyTree] | None = None,
    vmap_options: dict | None = None,
) -> FedAlgorithm:
    """FedAvg/FedAdam (choose `server_tx`), optionally DP-FedAvg.

    `apply(state, block, personal_c, rng) -> (state, personal_c, metrics)`. With `dp_clip` set the
    sum of clipped updates gets N(0, (noise_multiplier * clip)^2) noise per coordinate and is then
    divided by the number of real clients in the block (the cohort size, public). `mesh`: the
    vmap backend splits the clients over it (see `make_vmap_runner`); the loop backend ignores it.

    `lift(shared) -> client_tree` (optional) is evaluated once per round, outside the clients, and
    the clients train `client_tree` instead of `shared`; the server maps the (noised, averaged)
    client-tree delta back to a shared-tree delta with the VJP of `lift` at the round's weights,
    i.e. to first order. Used by `share_char_encoder` (fed/oov.py), where the client tree holds
    the vocabulary table computed by the char encoder. The VJP is applied after the DP noise, so
    it is post-processing and the privacy accounting is unchanged. `vmap_options` are keyword
    arguments of `make_vmap_runner` (e.g. `client_chunk`).
    """
    if backend == "vmap":
        runner = make_vmap_runner(work, dp_clip, mesh=mesh, **(vmap_options or {}))
    elif backend == "loop":
        runner = make_loop_runner(work, dp_clip)
    else:
        raise ValueError(f"unknown backend {backend!r}; use 'vmap' or 'loop'")
    lift_jit = jax.jit(lift) if lift is not None else None

    @jax.jit
    def server_update(state, wsum, wtotal, rng):
        if dp_clip is not None:
            leaves, treedef = jax.tree.flatten(wsum)
            keys = jax.random.split(rng, len(leaves))
            std = dp_noise_multiplier * dp_clip
            leaves = [
                x + std * jax.random.normal(k, x.shape, x.dtype)
                for x, k in zip(leaves, keys, strict=True)
            ]
            wsum = jax.tree.unflatten(treedef, leaves)
        mean_delta = jax.tree.map(lambda s: s / jnp.maximum(wtotal, 1e-12), wsum)
        if lift is not None:
            _, pull = jax.vjp(lift, state.shared)
            (mean_delta,) = pull(mean_delta)
        pseudo_grad = jax.tree.map(jnp.negative, mean_delta)
        updates, opt_state = server_tx.update(pseudo_grad, state.opt_state, state.shared)
        shared = optax.apply_updates(state.shared, updates)
        return ServerState(shared, opt_state, state.round + 1)

    def init(shared):
        return ServerState(shared, server_tx.init(shared), jnp.zeros((), jnp.int32))

    def apply(state, block, personal_c, rng):
        rng_clients, rng_noise = jax.random.split(rng)
        num = block.mask_csb.shape[0]
        rngs_c = jax.random.split(rng_clients, num)
        client_tree = state.shared if lift_jit is None else lift_jit(state.shared)
        wsum, wtotal, personal_c, metrics = runner(client_tree, personal_c, block, rngs_c)
        state = server_update(state, wsum, wtotal, rng_noise)
        return state, personal_c, {**(metrics or {}), "weight": wtotal}

    return FedAlgorithm(init, apply)


def fed_avg_tx(server_lr: float = 1.0) -> optax.GradientTransformation:
    """FedAvg: plain SGD on the pseudo-gradient (lr 1 recovers the weighted mean of models)."""
    return optax.sgd(server_lr)


def fed_adam_tx(server_lr: float = 1e-2, b1=0.9, b2=0.99, eps=1e-3) -> optax.GradientTransformation:
    """FedAdam (Reddi et al. 2021): Adam on the pseudo-gradient; eps=1e-3 as in the paper."""
    return optax.adam(server_lr, b1=b1, b2=b2, eps=eps)

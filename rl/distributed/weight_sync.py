"""The weight channel: trainer shards to generator shards, device to device ("DDMA-JAX").

LlamaRL (arXiv:2505.24034) syncs weights with distributed direct memory access: every trainer
shard goes straight to the generator devices that need it, with no gather on one rank and no
host or disk hop (spec `llamarl.md` §1, §6.3). In JAX that is `jax.device_put(tree,
dst_shardings)` between two meshes, issued at top level between compiled calls (a cross-mesh
move inside jit is an error).

`sync_trainer_to_generator` moves a parameter tree in buckets of about `bucket_bytes` (peers
found per-tensor transfers 10x slower than bucketed ones), optionally casting to a lower dtype on
the trainer mesh before sending (half the bytes on the wire). When a leaf's destination layout
differs from its source layout the move is two-hop: (1) a jitted identity/cast whose
`out_shardings` put the destination's mesh shape and PartitionSpec on the trainer's own devices
(a "mirror" mesh; needs equal device counts), (2) a same-layout `device_put` to the generator
mesh, so each shard crosses once, peer to peer. (Single-process `device_put`
could reshard in one call; the two-hop form is what a multi-process run needs, so it is the one
used and tested.) Every bucket carries a checksum, the sum of squares of its values computed on
both sides; a mismatch raises. `WeightChannel` stamps each set with a version, refuses a version
that does not increase, and keeps the newest few sets on the generator (double buffering: the
generator keeps decoding with version v while v+1 arrives).
"""

from __future__ import annotations

import dataclasses
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from rl.distributed.channels import ChannelClosed, ChannelTimeout


class WeightSyncError(RuntimeError):
    """A bucket's checksum differs after the transfer, or versions went backwards."""


@dataclasses.dataclass
class SyncReport:
    """What one sync moved (the §8 weight-sync metrics)."""

    version: int
    bytes: int
    seconds: float
    buckets: int
    two_hop_leaves: int
    checksums: list  # [(source, destination)] sum of squares per bucket

    def metrics(self, prefix: str = "ws") -> dict[str, float]:
        return {
            f"{prefix}/bytes": float(self.bytes),
            f"{prefix}/seconds": self.seconds,
            f"{prefix}/gb_per_s": self.bytes / max(self.seconds, 1e-9) / 1e9,
            f"{prefix}/buckets": float(self.buckets),
            f"{prefix}/version": float(self.version),
        }


def _is_sharding(x) -> bool:
    return isinstance(x, NamedSharding)


def plan_buckets(nbytes: list[int], bucket_bytes: int) -> list[list[int]]:
    """Groups leaf indices, in order, into buckets of at most `bucket_bytes` (a larger leaf is
    a bucket of its own)."""
    buckets, cur, size = [], [], 0
    for i, n in enumerate(nbytes):
        if cur and size + n > bucket_bytes:
            buckets.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += n
    if cur:
        buckets.append(cur)
    return buckets


def same_layout(src: NamedSharding, dst: NamedSharding) -> bool:
    """Shard i of `src` is shard i of `dst` (equal mesh shapes and specs, or both replicated)."""
    if not tuple(src.spec) and not tuple(dst.spec):
        return True
    return (
        src.spec == dst.spec
        and tuple(src.mesh.devices.shape) == tuple(dst.mesh.devices.shape)
        and src.mesh.axis_names == dst.mesh.axis_names
    )


def mirror(src: NamedSharding, dst: NamedSharding) -> NamedSharding | None:
    """`dst`'s layout on `src`'s devices (hop 1 of the two-hop move), or None when the device
    counts differ (then only a single-process `device_put` can reshard)."""
    if src.mesh.size != dst.mesh.size:
        return None
    devices = np.asarray(src.mesh.devices).reshape(dst.mesh.devices.shape)
    mesh = jax.sharding.Mesh(devices, dst.mesh.axis_names, axis_types=dst.mesh.axis_types)
    return NamedSharding(mesh, dst.spec)


_JIT_CACHE: dict = {}


def _hop1(shardings: tuple, dtype):
    """Jitted per-bucket cast + re-layout on the source mesh (cached per bucket signature)."""
    key = (shardings, None if dtype is None else jnp.dtype(dtype).name)
    if key not in _JIT_CACHE:

        def fn(xs):
            return [x if dtype is None else x.astype(dtype) for x in xs]

        _JIT_CACHE[key] = jax.jit(fn, out_shardings=list(shardings))
    return _JIT_CACHE[key]


@jax.jit
def _sumsq_jit(xs):
    return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in xs)


def _sumsq_pair(xs, moved) -> tuple[float, float]:
    """Sum of squares of a bucket before and after the move.

    One process: a jitted reduction on each mesh. Several processes: each sums the shards it
    holds (one replica of each), and the partial sums are all-gathered, since a process may hold
    only the source or only the destination.
    """
    if jax.process_count() == 1:
        a, b = jax.device_get((_sumsq_jit(xs), _sumsq_jit(moved)))
        return float(a), float(b)
    from jax._src import distributed  # the coordination service's key-value store

    def local(arrs):
        return sum(
            float(np.sum(np.square(np.asarray(s.data, np.float32))))
            for x in arrs
            for s in x.addressable_shards
            if s.replica_id == 0
        )

    # Control-plane values go through the coordinator's key-value store, not an XLA collective
    # (an all-gather over gloo hung intermittently under load on 2 shared cores).
    client = distributed.global_state.client
    _SEQ[0] += 1
    key = f"lmrl/ws_checksum/{_SEQ[0]}"
    client.key_value_set(f"{key}/{jax.process_index()}", f"{local(xs)!r},{local(moved)!r}")
    a = b = 0.0
    for p in range(jax.process_count()):
        text = client.blocking_key_value_get(f"{key}/{p}", 120_000)
        pa, pb = (float(v) for v in text.split(","))
        a, b = a + pa, b + pb
    return a, b


_SEQ = [0]  # checksum exchanges so far (every process runs the same syncs in the same order)


def sync_trainer_to_generator(
    params,
    dst_shardings,
    *,
    version: int,
    bucket_bytes: int = 512 << 20,
    cast_dtype=None,
    checksum: bool = True,
    rtol: float = 1e-5,
):
    """Moves `params` (on the trainer mesh) to `dst_shardings` (on the generator mesh).

    Args:
      params: pytree of jax.Arrays committed to the trainer's devices.
      dst_shardings: pytree of NamedSharding with the same structure (generator layout).
      version: the weight version being sent (stamped on the report).
      bucket_bytes: bucket size in bytes, measured after the cast.
      cast_dtype: e.g. `jnp.bfloat16` to cast floating leaves on the trainer mesh before sending.
      checksum: compare the sum of squares of every bucket on both sides (a host sync).
      rtol: relative tolerance of the checksum (reduction order differs between layouts).

    Returns:
      (params on the generator mesh, SyncReport).

    Raises:
      WeightSyncError: a bucket's checksum differs.
    """
    t0 = time.perf_counter()
    leaves, treedef = jax.tree.flatten(params)
    dst = jax.tree.leaves(dst_shardings, is_leaf=_is_sharding)
    if len(dst) != len(leaves):
        raise ValueError(f"{len(leaves)} parameters but {len(dst)} destination shardings")

    def out_dtype(x):
        floating = jnp.issubdtype(x.dtype, jnp.floating)
        return jnp.dtype(cast_dtype) if cast_dtype is not None and floating else x.dtype

    nbytes = [int(x.size) * out_dtype(x).itemsize for x in leaves]
    out = [None] * len(leaves)
    sums, two_hop = [], 0
    for bucket in plan_buckets(nbytes, bucket_bytes):
        xs = [leaves[i] for i in bucket]
        mid = []
        for i in bucket:
            src, want = leaves[i].sharding, dst[i]
            hop = None if same_layout(src, want) else mirror(src, want)
            two_hop += hop is not None
            mid.append(src if hop is None else hop)
        casts = cast_dtype is not None and any(out_dtype(x) != x.dtype for x in xs)
        if casts or any(m is not leaves[i].sharding for m, i in zip(mid, bucket)):
            xs = _hop1(tuple(mid), cast_dtype if casts else None)(xs)
        # Never alias the trainer's buffers (same devices and layout when co-located): the next
        # update donates them, and the generator keeps this set while it decodes.
        moved = jax.device_put(xs, [dst[i] for i in bucket], may_alias=False)
        if checksum:
            a, b = _sumsq_pair(xs, moved)
            if abs(a - b) > rtol * max(abs(a), 1e-30):
                raise WeightSyncError(
                    f"weight sync v{version}: bucket checksum {b!r} != source {a!r} "
                    f"(leaves {bucket[0]}..{bucket[-1]})"
                )
            sums.append((a, b))
        for i, y in zip(bucket, moved):
            out[i] = y
    jax.block_until_ready(out)
    report = SyncReport(
        version=int(version),
        bytes=sum(nbytes),
        seconds=time.perf_counter() - t0,
        buckets=len(plan_buckets(nbytes, bucket_bytes)),
        two_hop_leaves=two_hop,
        checksums=sums,
    )
    return jax.tree.unflatten(treedef, out), report


class WeightChannel:
    """Version-stamped weight sets on the generator side, newest `keep` kept (double buffer).

    `publish` is called by the trainer's loop (it runs the sync); the generator's loop calls
    `wait_for(v)` to block until version >= v (or exactly v) is there, with a timeout.

    Args:
      dst_shardings: the generator's parameter shardings.
      keep: how many versions to keep (k + 1 for staleness k lets the generator pick any
        admissible version deterministically).
      timeout_s: default wait timeout.
      **sync_kw: passed to `sync_trainer_to_generator` (bucket_bytes, cast_dtype, checksum).
    """

    def __init__(self, dst_shardings, keep: int = 2, timeout_s: float | None = 60.0, **sync_kw):
        self.dst_shardings, self.keep, self.timeout_s = dst_shardings, max(int(keep), 1), timeout_s
        self.sync_kw = sync_kw
        self._sets: dict[int, object] = {}
        self._cv = threading.Condition()
        self._closed = False
        self.reports: list[SyncReport] = []

    @property
    def latest_version(self) -> int:
        with self._cv:
            return max(self._sets, default=-1)

    def publish(self, params, version: int) -> SyncReport:
        """Syncs `params` to the generator mesh as `version` (must exceed every earlier one)."""
        if version <= self.latest_version:
            raise WeightSyncError(
                f"weight version {version} is not newer than {self.latest_version}"
            )
        moved, report = sync_trainer_to_generator(
            params, self.dst_shardings, version=version, **self.sync_kw
        )
        with self._cv:
            self._sets[int(version)] = moved
            for v in sorted(self._sets)[: -self.keep]:
                del self._sets[v]
            self.reports.append(report)
            self._cv.notify_all()
        return report

    def host_sets(self) -> dict[int, list]:
        """{version: host leaves} of the kept sets (for a checkpoint of the training frontier)."""
        with self._cv:
            sets = dict(self._sets)
        return {
            v: [np.asarray(x) for x in jax.device_get(jax.tree.leaves(p))] for v, p in sets.items()
        }

    def install(self, version: int, leaves: list, treedef) -> None:
        """Puts a saved set back on the generator mesh as-is (no re-cast: a resume is exact)."""
        dst = jax.tree.leaves(self.dst_shardings, is_leaf=_is_sharding)
        moved = [jax.device_put(x, s) for x, s in zip(leaves, dst)]
        with self._cv:
            self._sets[int(version)] = jax.tree.unflatten(treedef, moved)
            self._cv.notify_all()

    def wait_for(self, version: int, *, exact: bool = False, timeout: float | None = None):
        """(version, params) with version >= `version` (the newest), or == it when `exact`."""
        timeout = self.timeout_s if timeout is None else timeout

        def ready():
            return (version in self._sets) if exact else self.latest_version >= version

        with self._cv:
            if not self._cv.wait_for(lambda: ready() or self._closed, timeout):
                raise ChannelTimeout(
                    f"weights: waited {timeout:.1f} s for version {version}; the trainer is not "
                    "responding"
                )
            if not ready():
                raise ChannelClosed("weight channel is closed")
            v = version if exact else max(self._sets)
            return v, self._sets[v]

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

"""The one table from logical axis names to mesh axes, mesh construction, and shardings.

Parameters and activations name their axes logically (`batch`, `length`, `embed`, `mlp`, `heads`,
`kv`, `vocab`); only this module knows the mesh axes `data`, `fsdp` and `tensor`:

- `batch` is split over `data` and `fsdp` (FSDP shards the batch too), and so is `clients`, the
  cohort axis of the federated vmap backend,
- `embed` is split over `fsdp` (parameters and optimizer state are sharded, gathered per use),
- `mlp`, `heads` and `vocab` are split over `tensor` (Megatron-style tensor parallelism).
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from models.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "clients": ("data", "fsdp"),  # federated simulation: the cohort is split like a batch
    "length": None,
    "embed": "fsdp",
    "mlp": "tensor",
    "heads": "tensor",
    "kv": None,
    "vocab": "tensor",
    "layers": None,
    "fused": None,  # the stacked q/k/v or gate/up slices of a fused projection
}


class MeshError(UserError, ValueError):
    """A mesh shape that does not fit the devices (a user error: shown as one line)."""


def mesh_shape_for(shape, num_devices: int) -> tuple[int, int, int]:
    """Resolves a (data, fsdp, tensor) shape against `num_devices`, or raises `MeshError`.

    A -1 entry takes the remaining devices; the product must equal `num_devices` exactly, so a
    shape is never silently ignored or padded.
    """
    try:
        shape = [int(s) for s in shape]
    except (TypeError, ValueError):
        msg = f"mesh_shape must be 3 integers (data, fsdp, tensor), got {shape!r}"
        raise MeshError(msg) from None
    if len(shape) != 3:
        raise MeshError(f"mesh_shape must have 3 entries (data, fsdp, tensor), got {tuple(shape)}")
    if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise MeshError(f"mesh_shape {tuple(shape)}: entries must be positive, with at most one -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if num_devices % known:
            raise MeshError(
                f"mesh_shape {tuple(shape)}: {num_devices} devices cannot be split into "
                f"groups of {known}; use a shape whose product divides {num_devices}"
            )
        shape[shape.index(-1)] = num_devices // known
    if int(np.prod(shape)) != num_devices:
        raise MeshError(
            f"mesh_shape {tuple(shape)} needs {int(np.prod(shape))} devices but this run has "
            f"{num_devices} (all processes); pass a shape whose product is {num_devices}, "
            'e.g. --config.mesh_shape="(-1,1,1)"'
        )
    return tuple(shape)


validate_mesh_shape = mesh_shape_for  # the name launch.main checks configs with


def make_mesh(shape: tuple[int, int, int] = (-1, 1, 1), devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axes over `devices` (default: all global devices).

    Raises:
      MeshError: the shape does not fit the device count (see `mesh_shape_for`).
    """
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape_for(shape, len(devices))
    # jax.make_mesh orders devices by physical topology on TPU/GPU; on CPU it is a reshape.
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def logical_to_spec(names, mesh: Mesh | None = None) -> PartitionSpec:
    """Maps a tuple of logical names to a PartitionSpec, dropping mesh axes of size 1 or reused."""
    used, out = set(), []
    for name in names or ():
        if name is not None and name not in LOGICAL_RULES:
            raise KeyError(f"logical axis {name!r} has no sharding rule; add it to LOGICAL_RULES")
        rule = LOGICAL_RULES.get(name) if name is not None else None
        axes = (rule,) if isinstance(rule, str) else tuple(rule or ())
        keep = tuple(a for a in axes if a not in used and (mesh is None or mesh.shape[a] > 1))
        used.update(keep)
        out.append(keep[0] if len(keep) == 1 else (keep or None))
    return PartitionSpec(*out)


def _fit_spec(spec: PartitionSpec, shape, mesh: Mesh) -> PartitionSpec:
    """Replicates any dimension that the mesh axes do not divide evenly."""
    out = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
        out.append(axes if names and dim % size == 0 else None)
    return PartitionSpec(*out)


def constrain(x: jax.Array, names) -> jax.Array:
    """Sharding constraint by logical names inside a mesh context; identity without one."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or mesh.size == 1 or not set(MESH_AXES) <= set(mesh.axis_names):
        return x
    spec = _fit_spec(logical_to_spec(names, mesh), x.shape, mesh)
    return jax.lax.with_sharding_constraint(x, spec)


def state_shardings(state, mesh: Mesh):
    """NamedShardings for an nnx.State (or any pytree of nnx Variables / arrays).

    Variables with `out_sharding` metadata follow the logical table; everything else is
    replicated. Works on abstract states (`nnx.eval_shape`) too.
    """

    def one(leaf):
        names = None
        if isinstance(leaf, nnx.Variable):
            names = leaf.get_metadata().get("out_sharding")
            value = leaf.get_value()
        else:
            value = leaf
        shape = getattr(value, "shape", ())
        if not names or len(names) != len(shape):
            return NamedSharding(mesh, PartitionSpec())
        return NamedSharding(mesh, _fit_spec(logical_to_spec(names, mesh), shape, mesh))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Leading axis split over (data, fsdp); the rest replicated."""
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), mesh))


def batch_shardings(batch, mesh: Mesh):
    """Per-leaf batch shardings: leading axis over (data, fsdp) where it divides, else copies."""

    def one(x):
        shape = np.shape(x)
        spec = logical_to_spec(("batch",) + (None,) * (len(shape) - 1), mesh) if shape else None
        return NamedSharding(mesh, _fit_spec(spec, shape, mesh) if shape else PartitionSpec())

    return jax.tree.map(one, batch)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())

"""The one table from logical axis names to mesh axes, mesh construction, and shardings.

Parameters and activations name their axes logically (`batch`, `length`, `embed`, `mlp`, `heads`,
`kv`, `vocab`); only this module knows the mesh axes `data`, `fsdp` and `tensor`:

- `batch` is split over `data` and `fsdp` (FSDP shards the batch too),
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
    "length": None,
    "embed": "fsdp",
    "mlp": "tensor",
    "heads": "tensor",
    "kv": None,
    "vocab": "tensor",
    "layers": None,
}


def validate_mesh_shape(shape, n_devices: int) -> tuple[int, int, int]:
    """Checks a (data, fsdp, tensor) mesh shape against the device count and resolves its -1.

    Args:
      shape: three positive ints, at most one of them -1 (takes the remaining devices).
      n_devices: number of devices the mesh must cover exactly (`jax.device_count()`).

    Returns:
      The shape with the -1 resolved.

    Raises:
      UserError: the shape is malformed or does not fit `n_devices`, with one line saying so.
    """
    try:
        dims = [int(s) for s in shape]
    except (TypeError, ValueError):
        raise UserError(
            f"mesh_shape must be 3 integers (data, fsdp, tensor), got {shape!r}"
        ) from None
    if len(dims) != 3:
        raise UserError(f"mesh_shape must have 3 entries (data, fsdp, tensor), got {tuple(dims)}")
    if dims.count(-1) > 1 or any(d == 0 or d < -1 for d in dims):
        raise UserError(f"mesh_shape {tuple(dims)}: entries must be positive, at most one -1")
    known = int(np.prod([d for d in dims if d != -1]))
    if -1 in dims:
        if n_devices % known:
            raise UserError(
                f"mesh_shape {tuple(dims)} does not fit {n_devices} devices "
                f"({n_devices} is not a multiple of {known})"
            )
        dims[dims.index(-1)] = n_devices // known
    if int(np.prod(dims)) != n_devices:
        raise UserError(
            f"mesh_shape {tuple(dims)} needs {int(np.prod(dims))} devices, have {n_devices}; "
            "set --config.mesh_shape to fit (e.g. '(-1, 1, 1)')"
        )
    return tuple(dims)


def make_mesh(shape: tuple[int, int, int] = (-1, 1, 1), devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axes; -1 in `shape` takes the remaining devices.

    Raises:
      UserError: the shape does not fit the devices (see `validate_mesh_shape`).
    """
    devices = list(devices if devices is not None else jax.devices())
    shape = validate_mesh_shape(shape, len(devices))
    arr = np.asarray(devices).reshape(shape)
    return Mesh(arr, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


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


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())

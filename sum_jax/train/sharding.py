"""Device mesh and shardings for training: parameters over `fsdp`, batches over both axes.

One mesh, `jax.make_mesh(config.sharding.mesh_shape, ('data', 'fsdp'))` (a -1 entry takes
all remaining devices). SAM's parameters carry no logical-axis annotations, so the "logical
axis" of a parameter is its '.'-joined path: `config.sharding.logical_axis_rules` is an
ordered list of `(regex, spec)` and the first regex that fully matches the path decides:

- `"fsdp"`: shard the largest dimension whose size is divisible by the `fsdp` axis over
  `fsdp` (ties: the later dimension, i.e. output features of a kernel); replicate if none is;
- `"replicated"`: replicate;
- a tuple with one mesh-axis name (or None) per dimension: that `PartitionSpec`.

Parameters with fewer than `min_shard_size` elements, and parameters no rule matches, are
replicated: sharding a bias buys nothing and costs a collective.

Optimiser-state leaves get the sharding of the parameter whose path is the longest suffix of
their own path and whose shape matches (Adam's `mu`/`nu` mirror the parameters); anything
else (step counters) is replicated. Batches are split along their leading (image) axis over
`('data', 'fsdp')` together, so every device holds whole images.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sum_jax.train.optim import map_with_paths, path_str

PyTree = Any
MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `('data', 'fsdp')` mesh; one entry of `mesh_shape` may be -1 (all other devices)."""
    devices = list(devices if devices is not None else jax.devices())
    shape = list(mesh_shape)
    if len(shape) != 2:
        raise ValueError(f"mesh_shape must have 2 entries (data, fsdp), got {mesh_shape}")
    if shape.count(-1) > 1:
        raise ValueError(f"at most one -1 in mesh_shape, got {mesh_shape}")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices do not fill mesh_shape {mesh_shape}")
        shape[shape.index(-1)] = len(devices) // known
    if math.prod(shape) != len(devices):
        raise ValueError(
            f"mesh_shape {shape} needs {math.prod(shape)} devices, have {len(devices)}"
        )
    # Auto axes: shardings are given at jit boundaries and XLA propagates them inside.
    return jax.make_mesh(tuple(shape), MESH_AXES, (AxisType.Auto,) * 2, devices=devices)


def param_spec(
    path: str,
    shape: Sequence[int],
    rules: Sequence[tuple[str, Any]],
    fsdp_size: int,
    min_shard_size: int = 0,
) -> P:
    """The `PartitionSpec` of one parameter (see the module docstring)."""
    if math.prod(shape) < min_shard_size or not shape:
        return P()
    for regex, spec in rules:
        if not re.fullmatch(regex, path):
            continue
        if spec == "replicated":
            return P()
        if spec == "fsdp":
            best = None
            for d, size in enumerate(shape):
                if size % fsdp_size == 0 and (best is None or size >= shape[best]):
                    best = d
            if best is None or fsdp_size == 1:
                return P()
            return P(*[("fsdp" if d == best else None) for d in range(len(shape))])
        spec = tuple(spec)
        if len(spec) != len(shape):
            raise ValueError(f"rule {regex!r}: spec {spec} does not fit {path} of shape {shape}")
        return P(*spec)
    return P()


def param_shardings(params: PyTree, mesh: Mesh, sharding_config) -> PyTree:
    """`NamedSharding` per parameter; `params` may hold arrays or `ShapeDtypeStruct`s."""
    rules = tuple(sharding_config.logical_axis_rules)
    fsdp = mesh.shape["fsdp"]
    min_size = int(sharding_config.get("min_shard_size", 0))
    return map_with_paths(
        lambda p, x: NamedSharding(mesh, param_spec(p, x.shape, rules, fsdp, min_size)), params
    )


def state_shardings(state: PyTree, params: PyTree, shardings: PyTree, mesh: Mesh) -> PyTree:
    """Shardings for a tree (e.g. optimiser state) whose leaves mirror `params` by path.

    A leaf gets the sharding of the parameter whose path is the longest suffix of its path
    with the same shape; otherwise it is replicated.
    """
    by_path = {}
    for (kp, x), s in zip(
        jax.tree.leaves_with_path(params), jax.tree.leaves(shardings), strict=True
    ):
        by_path[path_str(kp)] = (tuple(x.shape), s)
    replicated = NamedSharding(mesh, P())

    def one(path: str, x):
        parts = path.split(".")
        for i in range(len(parts)):
            hit = by_path.get(".".join(parts[i:]))
            if hit is not None and hit[0] == tuple(np.shape(x)):
                return hit[1]
        return replicated

    return map_with_paths(one, state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (image) axis split over `('data', 'fsdp')`, the rest unsplit."""
    return NamedSharding(mesh, P(BATCH_AXES))


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's slice of the global batch -> global arrays sharded over the mesh.

    Each process passes its own images (leading axis = its share of the global batch);
    with one process this is the whole batch.
    """
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def is_sharded(sharding: jax.sharding.Sharding) -> bool:
    """True when the array is split (not fully replicated) across devices."""
    return not sharding.is_fully_replicated

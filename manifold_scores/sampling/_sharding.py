"""Batch sharding of samplers: the samples (and their per-sample keys) split over devices.

Samples are independent (one key each), so a sampler scales past one device by sharding the
batch axis: the state, the per-sample keys and the output carry the same
``jax.sharding.Sharding`` and XLA partitions the scan (no cross-device communication inside a
step). Random draws use partitionable threefry, so a sample does not depend on the devices.
"""

from __future__ import annotations

import jax

__all__ = ["auto_mesh", "batch_sharding", "constrain", "key_sharding"]


def auto_mesh(mesh: jax.sharding.Mesh) -> jax.sharding.Mesh:
    """The same devices and axis names with Auto axes.

    ``jax.make_mesh`` makes Explicit axes, under which every array inside a traced function
    would have to carry a sharding in its type (a replicated draw next to a sharded batch is an
    error); with Auto axes XLA's partitioner propagates the batch split from one constraint.
    """
    auto = (jax.sharding.AxisType.Auto,) * len(mesh.axis_names)
    return jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=auto)


def _auto(sharding):
    if isinstance(sharding, jax.sharding.NamedSharding) and isinstance(
            sharding.mesh, jax.sharding.Mesh):
        return jax.sharding.NamedSharding(auto_mesh(sharding.mesh), sharding.spec)
    return sharding


def batch_sharding(x_init, sharding, ndim: int):
    """The sharding to impose on the batch: ``sharding`` if given, else that of ``x_init`` when
    it is a concrete ``jax.Array`` spread over several devices, else ``None`` (no constraint)."""
    if sharding is not None:
        if not isinstance(sharding, jax.sharding.Sharding):
            raise ValueError(f"sharding must be a jax.sharding.Sharding (e.g. NamedSharding(mesh, "
                             f"PartitionSpec('batch'))), got {type(sharding).__name__}")
        if isinstance(sharding, jax.sharding.NamedSharding) and len(sharding.spec) > ndim:
            raise ValueError(f"sharding spec {sharding.spec} has more axes than the samples "
                             f"(ndim {ndim})")
        return _auto(sharding)
    if isinstance(x_init, jax.Array) and not isinstance(x_init, jax.core.Tracer):
        s = x_init.sharding
        if len(s.device_set) > 1:
            return _auto(s)
    return None


def key_sharding(sharding):
    """The sharding of the ``(n,)`` per-sample keys: the batch axis of a ``NamedSharding``."""
    if isinstance(sharding, jax.sharding.NamedSharding):
        spec = sharding.spec
        batch = spec[0] if len(spec) else None
        return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(batch))
    return None


def constrain(x, sharding):
    """``jax.lax.with_sharding_constraint`` when ``sharding`` is not ``None``."""
    if sharding is None:
        return x
    return jax.lax.with_sharding_constraint(x, sharding)

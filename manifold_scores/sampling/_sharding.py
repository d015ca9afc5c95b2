"""Batch sharding of samplers: the samples (and their per-sample keys) split over devices.

Samples are independent (one key each), so a sampler scales past one device by sharding the
batch axis: the state, the per-sample keys and the output carry the same
``jax.sharding.Sharding`` and XLA partitions the scan (no cross-device communication inside a
step). Random draws use partitionable threefry, so a sample does not depend on the devices.
"""

from __future__ import annotations

import jax

__all__ = ["batch_sharding", "constrain", "key_sharding"]


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
        return sharding
    if isinstance(x_init, jax.Array) and not isinstance(x_init, jax.core.Tracer):
        s = x_init.sharding
        if len(s.device_set) > 1:
            return s
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

"""Mixture kernels with the components sharded over devices (cross-device log-sum-exp).

Each device streams its own share of the components for every query; the partial
accumulators are then combined by a cross-device log-sum-exp (``pmax`` of the running maxima,
``psum`` of the rescaled sums), so no device holds more than ``1 / devices`` of the components
or a ``(batch, N)`` array. Queries may also be split over a second mesh axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from manifold_scores import _checks
from manifold_scores._api import public_dir as _public_dir
from manifold_scores.mixtures._stream import (
    DEFAULT_CHUNK_SIZE,
    Acc,
    check_chunk_size,
    finite_or_zero,
)
from manifold_scores.mixtures.isotropic import _isotropic_inputs, isotropic_acc, isotropic_stats
from manifold_scores.mixtures.lowrank import _lowrank_inputs, lowrank_acc, lowrank_stats
from manifold_scores.mixtures.stats import MixtureStats

__all__ = ["isotropic_sharded", "lowrank_sharded"]


def _check_mesh(mesh, points_axis, batch_axis):
    if points_axis not in mesh.axis_names:
        raise ValueError(f"points_axis {points_axis!r} is not an axis of the mesh "
                         f"{mesh.axis_names}")
    if batch_axis is not None and batch_axis not in mesh.axis_names:
        raise ValueError(f"batch_axis {batch_axis!r} is not an axis of the mesh {mesh.axis_names}")


def _combine(acc: Acc, axis: str) -> Acc:
    """Cross-device log-sum-exp of per-device accumulators (leading axis: the local batch)."""
    top = jax.lax.pmax(acc.top, axis)
    ref = finite_or_zero(top)
    scale = jnp.exp(acc.top - ref)

    def rows(f):
        return jax.lax.psum(scale.reshape(scale.shape + (1,) * (f.ndim - 1)) * f, axis)

    return Acc(top, jax.tree.map(rows, acc.sums))


def _pad(arrays, values, shards):
    """Pad the leading axis to a multiple of ``shards`` (padding components are empty)."""
    pad = (-arrays[0].shape[0]) % shards
    if not pad:
        return arrays
    return tuple(jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1), constant_values=v)
                 for a, v in zip(arrays, values, strict=True))


def isotropic_sharded(xs, points, log_weights, alpha, sigma, *, mesh: jax.sharding.Mesh,
                      points_axis: str, batch_axis: str | None = None, centre=None,
                      chunk_size: int | None = DEFAULT_CHUNK_SIZE, refine: int | None = None,
                      refine_tol: float = 1e-6) -> MixtureStats:
    """:func:`~manifold_scores.mixtures.isotropic` for a batch, components sharded over devices.

    Args:
        xs: queries, shape ``(B, d)`` (a batch: this function is already vectorised).
        points, log_weights, alpha, sigma, centre, chunk_size, refine, refine_tol: as in
            :func:`~manifold_scores.mixtures.isotropic`.
        mesh: the device mesh.
        points_axis: mesh axis that splits the components.
        batch_axis: optional mesh axis that splits the queries.

    Returns:
        :class:`MixtureStats` with a leading batch axis.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jax.sharding import Mesh
        >>> mesh = Mesh(jax.devices(), ("points",))
        >>> pts = jax.random.normal(jax.random.key(0), (1000, 3))
        >>> st = isotropic_sharded(jnp.zeros((4, 3)), pts, jnp.full(1000, -jnp.log(1000.)),
        ...                        1.0, 0.5, mesh=mesh, points_axis="points")
        >>> st.score.shape
        (4, 3)
    """
    xs = jnp.asarray(xs)
    _checks.check_ndim(xs, 2, "xs", "(B, d)")
    _, points, log_weights, alpha, sigma, centre = _isotropic_inputs(
        xs[0], points, log_weights, alpha, sigma, centre)
    xs = xs.astype(points.dtype)
    check_chunk_size(chunk_size)
    _check_mesh(mesh, points_axis, batch_axis)
    points, log_weights = _pad((points, log_weights), (0.0, -jnp.inf), mesh.shape[points_axis])

    def local(xs_local, pts_local, lw_local, alpha, sigma, centre):
        acc = jax.vmap(isotropic_acc, (0,) + (None,) * 8)(
            xs_local, pts_local, lw_local, alpha, sigma, centre, chunk_size, refine, refine_tol)
        merged = _combine(acc, points_axis)
        return jax.vmap(isotropic_stats, (0, 0, None, None, None))(
            merged, xs_local, alpha, sigma, centre)

    fn = jax.shard_map(
        local, mesh=mesh,
        in_specs=(P(batch_axis), P(points_axis), P(points_axis), P(), P(), P()),
        out_specs=P(batch_axis))
    return jax.jit(fn)(xs, points, log_weights, alpha, sigma, centre)


def lowrank_sharded(xs, bases, log_weights, alpha, sigma, *, mesh: jax.sharding.Mesh,
                    components_axis: str, batch_axis: str | None = None, means=None,
                    scales=None, variances=None, noise_floor=0.0, centre=None,
                    chunk_size: int | None = DEFAULT_CHUNK_SIZE, refine: int | None = None,
                    refine_tol: float = 1e-6) -> MixtureStats:
    """:func:`~manifold_scores.mixtures.lowrank` for a batch, components sharded over devices.

    Args:
        xs: queries, shape ``(B, d)``.
        bases, log_weights, alpha, sigma: as in :func:`~manifold_scores.mixtures.lowrank`.
        means, scales, variances, noise_floor: as in :func:`~manifold_scores.mixtures.lowrank`.
        centre, chunk_size, refine, refine_tol: as in :func:`~manifold_scores.mixtures.lowrank`.
        mesh: the device mesh.
        components_axis: mesh axis that splits the ``K`` components.
        batch_axis: optional mesh axis that splits the queries.

    Returns:
        :class:`MixtureStats` with a leading batch axis.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jax.sharding import Mesh
        >>> mesh = Mesh(jax.devices(), ("k",))
        >>> u = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (3, 8, 2)))[0]
        >>> st = lowrank_sharded(jnp.ones((4, 8)), u, jnp.log(jnp.ones(3) / 3), 1.0, 0.5,
        ...                      mesh=mesh, components_axis="k")
        >>> st.score.shape
        (4, 8)
    """
    xs = jnp.asarray(xs)
    _checks.check_ndim(xs, 2, "xs", "(B, d)")
    _, u, lw, alpha, sigma, mu, v, tau2, centre = _lowrank_inputs(
        xs[0], bases, log_weights, alpha, sigma, means, scales, variances, noise_floor, centre)
    xs = xs.astype(u.dtype)
    check_chunk_size(chunk_size)
    _check_mesh(mesh, components_axis, batch_axis)
    has_means = mu is not None
    has_centre = centre is not None
    if not has_centre:  # the origin: a placeholder travels, the kernel sees None
        centre = jnp.zeros((), u.dtype)
    arrays = (u, lw, v, tau2) + ((mu,) if has_means else ())
    fill = (0.0, -jnp.inf, 1.0, 1.0) + ((0.0,) if has_means else ())
    arrays = _pad(arrays, fill, mesh.shape[components_axis])

    def local(xs_local, alpha, sigma, centre, *arrs):
        centre = centre if has_centre else None
        u, lw, v, tau2 = arrs[:4]
        mu = arrs[4] if has_means else None
        acc = jax.vmap(lowrank_acc, (0,) + (None,) * 11)(
            xs_local, u, lw, alpha, sigma, mu, v, tau2, centre, chunk_size, refine, refine_tol)
        merged = _combine(acc, components_axis)
        return jax.vmap(lowrank_stats, (0, 0, None, None, None))(
            merged, xs_local, alpha, sigma, centre)

    fn = jax.shard_map(
        local, mesh=mesh,
        in_specs=(P(batch_axis), P(), P(), P()) + (P(components_axis),) * len(arrays),
        out_specs=P(batch_axis))
    return jax.jit(fn)(xs, alpha, sigma, centre, *arrays)

__dir__ = _public_dir(__all__)

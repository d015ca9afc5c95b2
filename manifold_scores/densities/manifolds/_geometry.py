"""Shared geometry of the embedded manifolds (private): frames, centres, projectors.

Every manifold sits in ``c + span(Q)`` for an orthonormal frame ``Q`` (``d x m``) and a centre
``c``. This module builds and validates those, checks one point and its noise levels, and holds
the small numerically careful helpers (norms and square roots with finite gradients at zero,
unit vectors, complements and normal projectors) that the manifold modules share.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from manifold_scores import _checks

__all__ = [
    "HIGHEST", "LOG_2PI", "check_inputs", "complement_basis", "gauss_const", "make_centre",
    "make_frame", "nonnegative_scalar", "normal_projector_from_tangent", "positive_scalar",
    "safe_norm", "safe_sqrt", "unit_vector",
]

HIGHEST = lax.Precision.HIGHEST
LOG_2PI = math.log(2.0 * math.pi)


def make_frame(dim: int, k: int, frame, key, dtype, name: str = "frame") -> jax.Array:
    """Orthonormal ``(dim, k)`` frame: given, Haar-random from ``key``, or the first ``k`` axes."""
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if k > dim:
        raise ValueError(f"dim must be at least {k} for this manifold, got dim={dim}")
    if frame is None:
        if key is None:
            return jnp.eye(dim, k, dtype=dtype)
        q, _ = jnp.linalg.qr(jax.random.normal(key, (dim, k), dtype))
        return q
    if key is not None:
        raise ValueError("pass either frame or key, not both")
    frame = _checks.as_float_array(frame, name)
    if frame.shape != (dim, k):
        raise ValueError(f"{name} must have shape ({dim}, {k}), got {frame.shape}")
    _checks.check_orthonormal(frame, name)
    return frame


def make_centre(dim: int, centre, dtype) -> jax.Array:
    if centre is None:
        return jnp.zeros((dim,), dtype)
    centre = _checks.as_float_array(centre, "centre")
    if centre.shape != (dim,):
        raise ValueError(f"centre must have shape ({dim},), got {centre.shape}")
    return centre


def positive_scalar(value, name: str, dtype) -> jax.Array:
    value = _checks.as_float_array(value, name)
    _checks.check_scalar(value, name)
    _checks.check_positive(value, name)
    return value.astype(dtype) if _checks.is_concrete(value) else value


def nonnegative_scalar(value, name: str, dtype) -> jax.Array:
    value = _checks.as_float_array(value, name)
    _checks.check_scalar(value, name)
    _checks.check_nonnegative(value, name)
    return value.astype(dtype) if _checks.is_concrete(value) else value


def check_inputs(density, x, alpha, sigma):
    """Validate one point and the noise levels; cast to the common dtype."""
    _checks.check_point(x, density.dim)
    alpha, sigma = _checks.check_noise_levels(alpha, sigma)
    dtype = jnp.result_type(x, density.frame, float)
    return (jnp.asarray(x, dtype), jnp.asarray(alpha, dtype), jnp.asarray(sigma, dtype))


def gauss_const(d: int, sigma) -> jax.Array:
    return -0.5 * d * (LOG_2PI + 2.0 * jnp.log(sigma))


def normal_projector_from_tangent(t: jax.Array) -> jax.Array:
    d = t.shape[0]
    return jnp.eye(d, dtype=t.dtype) - jnp.dot(t, t.T, precision=HIGHEST)


def complement_basis(direction: jax.Array) -> jax.Array:
    """``(k, k-1)`` orthonormal basis of the complement of a unit vector (Householder)."""
    k = direction.shape[0]
    sign = jnp.where(direction[0] >= 0, 1.0, -1.0)
    v = direction.at[0].add(sign)
    h = jnp.eye(k, dtype=direction.dtype) - 2.0 * jnp.outer(v, v) / jnp.dot(v, v)
    return h[:, 1:]


def safe_sqrt(v: jax.Array) -> jax.Array:
    """``sqrt(v)`` with a finite gradient at ``v = 0``."""
    pos = v > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, v, 1.0)), 0.0)


def unit_vector(u: jax.Array) -> jax.Array:
    """``u / |u|``, or the first axis when ``u = 0`` (any nearest point is as good)."""
    sq, n = safe_norm(u)
    e1 = jnp.zeros_like(u).at[0].set(1.0)
    return jnp.where(sq > 0, u / jnp.where(sq > 0, n, 1.0), e1)


def safe_norm(v: jax.Array, axis: int = -1) -> tuple[jax.Array, jax.Array]:
    """``(|v|^2, |v|)`` with a finite gradient at ``v = 0`` (double-where)."""
    sq = jnp.sum(v * v, axis=axis)
    pos = sq > 0
    return sq, jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)

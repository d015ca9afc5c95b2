"""Round spheres: the uniform law on ``S^k`` (:class:`Sphere`), on a circle (:class:`Circle`),
and the von Mises law of the angle on a circle (:class:`VonMises`).

All three are exact in closed form: the noised law of a von Mises-Fisher law on a round sphere
(:mod:`._vmf`) plus the isotropic Gaussian normal to the sphere's span.

Example:
    >>> import jax, manifold_scores as ms
    >>> sph = ms.Sphere(dim=8, intrinsic_dim=2, key=jax.random.key(0))
    >>> x = sph.sample(jax.random.key(1), 3)
    >>> jax.vmap(sph.score, (0, None, None))(x, 1.0, 0.1).shape
    (3, 8)
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from manifold_scores import _checks
from manifold_scores._api import public_dir as _public_dir
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.densities.base import Density
from manifold_scores.densities.manifolds._geometry import (
    HIGHEST,
    LOG_2PI,
    check_inputs,
    complement_basis,
    gauss_const,
    make_centre,
    make_frame,
    nonnegative_scalar,
    normal_projector_from_tangent,
    positive_scalar,
    safe_norm,
    safe_sqrt,
    unit_vector,
)
from manifold_scores.densities.manifolds._special import log_vmf_normaliser
from manifold_scores.densities.manifolds._vmf import noised_vmf, sample_vmf
from manifold_scores.mixtures import MixtureStats

__all__ = ["Circle", "Sphere", "VonMises"]


class _RoundSphere(Density):
    """Shared maths of a round ``S^{k-1}`` (radius ``R``) in ``c + span(Q)``."""

    dim = None  # a static dataclass field in every subclass (shadows Density.dim)

    def _bias(self, dtype) -> jax.Array | None:
        """``b`` of the clean density ``exp(b . theta)`` w.r.t. the uniform law (None: 0)."""
        return None

    def stats(self, x, alpha, sigma) -> MixtureStats:
        """Exact ``(log p, score, E[X|x], tr Cov[X|x])`` of ``alpha X + sigma Z`` at ``x``."""
        return self._stats(*check_inputs(self, x, alpha, sigma))

    @jax.jit
    def _stats(self, x, alpha, sigma) -> MixtureStats:
        q = self.frame.astype(x.dtype)
        z = x - alpha * self.centre.astype(x.dtype)
        u = jnp.dot(q.T, z, precision=HIGHEST)
        z_perp = z - jnp.dot(q, u, precision=HIGHEST)
        radius = self.radius.astype(x.dtype)
        log_p, score_u, mean_dir, cov = noised_vmf(
            u, radius, self._bias(x.dtype), q.shape[1] - 2, alpha, sigma)
        s2 = sigma * sigma
        log_p = log_p - jnp.sum(z_perp * z_perp) / (2.0 * s2) + gauss_const(self.dim, sigma)
        score = jnp.dot(q, score_u, precision=HIGHEST) - z_perp / s2
        mean = self.centre.astype(x.dtype) + radius * jnp.dot(q, mean_dir, precision=HIGHEST)
        return MixtureStats(log_p, score, mean, cov)

    def _coords(self, x):
        z = x - self.centre
        u = jnp.dot(self.frame.T, z, precision=HIGHEST)
        return u, z - jnp.dot(self.frame, u, precision=HIGHEST)

    def project(self, x) -> jax.Array:
        """Nearest point ``c + R Q u / |u|`` (at the centre, any point; the first axis)."""
        _checks.check_point(x, self.dim)
        u, _ = self._coords(x)
        return self.centre + self.radius * jnp.dot(self.frame, unit_vector(u), precision=HIGHEST)

    def distance(self, x) -> jax.Array:
        """``dist(x, M) = sqrt(|x_perp|^2 + (|u| - R)^2)``."""
        _checks.check_point(x, self.dim)
        u, z_perp = self._coords(x)
        _, r = safe_norm(u)
        return safe_sqrt(jnp.sum(z_perp * z_perp) + (r - self.radius) ** 2)

    def tangent_basis(self, x) -> jax.Array:
        """``(d, intrinsic_dim)`` orthonormal basis of the tangent space at
        :meth:`project` ``(x)``."""
        _checks.check_point(x, self.dim)
        u, _ = self._coords(x)
        return jnp.dot(self.frame, complement_basis(unit_vector(u)), precision=HIGHEST)

    def normal_projector(self, x) -> jax.Array:
        """``(d, d)`` orthogonal projector onto the normal space at :meth:`project` ``(x)``."""
        return normal_projector_from_tangent(self.tangent_basis(x))

    def _embed(self, theta):
        return self.centre + self.radius * jnp.dot(theta, self.frame.T, precision=HIGHEST)


def _sphere_init(obj, dim, k, key, extra_dtype=()):
    dtype = _checks.float_dtype(obj.frame, obj.centre, obj.radius, *extra_dtype)
    frame = make_frame(dim, k, obj.frame, key, dtype)
    object.__setattr__(obj, "frame", frame)
    object.__setattr__(obj, "centre", make_centre(dim, obj.centre, frame.dtype))
    object.__setattr__(obj, "radius", positive_scalar(obj.radius, "radius", frame.dtype))


@pytree_dataclass
class Sphere(_RoundSphere):
    """Uniform law on a round ``k``-sphere ``S^k`` (``k = intrinsic_dim``) embedded in ``R^d``.

    ``X = c + R Q theta`` with ``theta`` uniform on the unit sphere of ``R^{k+1}``, ``Q`` a
    ``(d, k+1)`` orthonormal frame. With ``u = Q^T (x - alpha c)``, ``r = |u|``,
    ``kappa = alpha R r / sigma^2`` and ``nu = (k-1)/2``, the noised law is exactly

        log p = -(r - alpha R)^2/(2 sigma^2) - |x_perp|^2/(2 sigma^2) + log Ive(nu, kappa)
                - nu log kappa + nu log 2 + log Gamma(nu + 1) - (d/2) log(2 pi sigma^2),

    and ``score = -(x - alpha c)/sigma^2 + (alpha R/sigma^2) A(kappa) Q u / r`` with
    ``A = I_{nu+1} / I_nu``. Stable at the centre (``A / kappa -> 1/(k+1)``), at tiny sigma
    and far away, in float32 and float64.

    Args:
        dim: ambient dimension ``d`` (static).
        intrinsic_dim: ``k >= 1``; the sphere spans ``k + 1`` dimensions (static).
        radius: ``R > 0``.
        frame: ``(d, k+1)`` orthonormal columns; default: a Haar-random frame from ``key``,
            or the first ``k + 1`` coordinate axes when ``key`` is also omitted.
        centre: ``(d,)``; default the origin.
        key: PRNG key for a random frame (not stored).

    Example:
        >>> import jax, manifold_scores as ms
        >>> sph = ms.Sphere(dim=10, intrinsic_dim=2, radius=1.0, key=jax.random.key(0))
        >>> x = sph.sample(jax.random.key(1), 1)[0]
        >>> float(sph.distance(x)) < 1e-5
        True
    """

    dim: int = static_field()
    intrinsic_dim: int = static_field()
    radius: jax.Array | float = 1.0
    frame: jax.Array | None = None
    centre: jax.Array | None = None
    key: dataclasses.InitVar[jax.Array | None] = None

    def __post_init__(self, key):
        if not isinstance(self.intrinsic_dim, (int, np.integer)) or self.intrinsic_dim < 1:
            raise ValueError(
                f"intrinsic_dim must be a positive integer, got {self.intrinsic_dim!r}")
        _sphere_init(self, self.dim, self.intrinsic_dim + 1, key)

    @functools.partial(jax.jit, static_argnames="n")
    def sample(self, key, n: int) -> jax.Array:
        """``n`` uniform points; one key per sample."""
        k = self.intrinsic_dim + 1

        def one(kk):
            g = jax.random.normal(kk, (k,), self.frame.dtype)
            return g / jnp.linalg.norm(g)

        return self._embed(jax.vmap(one)(jax.random.split(key, n)))


class _CircleGeometry:
    intrinsic_dim = 1

    def angle(self, x) -> jax.Array:
        """Angle of ``x`` in the circle's plane: ``atan2(q_2 . (x - c), q_1 . (x - c))``."""
        _checks.check_point(x, self.dim)
        u = jnp.dot(self.frame.T, x - self.centre, precision=HIGHEST)
        return jnp.arctan2(u[1], u[0])

    def point(self, theta) -> jax.Array:
        """The point of the circle at angle ``theta``."""
        theta = jnp.asarray(theta, self.frame.dtype)
        return self._embed(jnp.stack([jnp.cos(theta), jnp.sin(theta)], -1))


@pytree_dataclass
class Circle(_CircleGeometry, _RoundSphere):
    """Uniform law on a circle of radius ``R`` in a plane of ``R^d`` (a 1-sphere).

    Exact: ``log p = -(r - alpha R)^2/(2 sigma^2) - |x_perp|^2/(2 sigma^2) + log i0e(kappa)
    - (d/2) log(2 pi sigma^2)`` with ``kappa = alpha R r / sigma^2``; the score's radial part is
    ``(alpha R A(kappa) - r)/sigma^2`` with ``A = I_1 / I_0``.

    Args:
        dim: ambient dimension ``d >= 2`` (static).
        radius: ``R > 0``.
        frame: ``(d, 2)`` orthonormal columns (default: random from ``key``, else the first two
            axes).
        centre: ``(d,)``; default the origin.
        key: PRNG key for a random frame (not stored).

    Example:
        >>> import jax.numpy as jnp, manifold_scores as ms
        >>> circ = ms.Circle(dim=2, radius=2.0)
        >>> circ.project(jnp.array([0.0, 3.0])).tolist()
        [0.0, 2.0]
    """

    dim: int = static_field(default=2)
    radius: jax.Array | float = 1.0
    frame: jax.Array | None = None
    centre: jax.Array | None = None
    key: dataclasses.InitVar[jax.Array | None] = None

    def __post_init__(self, key):
        _sphere_init(self, self.dim, 2, key)

    def log_prob_angle(self, theta) -> jax.Array:
        """Clean log density of the angle w.r.t. ``d theta``: ``-log(2 pi)``."""
        return jnp.full_like(jnp.asarray(theta, self.frame.dtype), -LOG_2PI)

    @functools.partial(jax.jit, static_argnames="n")
    def sample(self, key, n: int) -> jax.Array:
        """``n`` uniform points; one key per sample."""
        theta = jax.vmap(lambda kk: jax.random.uniform(
            kk, (), self.frame.dtype, 0.0, 2.0 * math.pi))(jax.random.split(key, n))
        return self.point(theta)


@pytree_dataclass
class VonMises(_CircleGeometry, _RoundSphere):
    """Von Mises law of the angle on a circle: ``exp(kappa cos(theta - mu)) / (2 pi I0(kappa))``.

    Exact in closed form: with ``u`` the in-plane coordinates of ``x - alpha c``,
    ``w = (alpha R / sigma^2) u + kappa (cos mu, sin mu)`` and ``K = |w|``, integrating the
    angle out gives ``log p = -(|u|^2 + alpha^2 R^2)/(2 sigma^2) + log I0(K) - log I0(kappa)``
    plus the Gaussian terms; ``score = -(x - alpha c)/sigma^2 + (alpha R / sigma^2) A(K) Q w/K``.
    ``kappa = 0`` is the uniform law.

    Args:
        kappa: concentration ``>= 0``.
        mu: mean angle (radians, measured from the frame's first column).
        radius: ``R > 0``.
        dim: ambient dimension ``d >= 2`` (static).
        frame, centre, key: as in :class:`Circle`.

    Example:
        >>> import jax, manifold_scores as ms
        >>> vm = ms.VonMises(kappa=4.0, mu=0.5)
        >>> angles = jax.vmap(vm.angle)(vm.sample(jax.random.key(0), 2000))
        >>> abs(float(angles.mean()) - 0.5) < 0.05
        True
    """

    kappa: jax.Array | float
    mu: jax.Array | float = 0.0
    radius: jax.Array | float = 1.0
    dim: int = static_field(default=2)
    frame: jax.Array | None = None
    centre: jax.Array | None = None
    key: dataclasses.InitVar[jax.Array | None] = None

    def __post_init__(self, key):
        _sphere_init(self, self.dim, 2, key, (self.kappa, self.mu))
        dtype = self.frame.dtype
        object.__setattr__(self, "kappa", nonnegative_scalar(self.kappa, "kappa", dtype))
        mu = _checks.as_float_array(self.mu, "mu")
        _checks.check_scalar(mu, "mu")
        object.__setattr__(self, "mu", mu.astype(dtype) if _checks.is_concrete(mu) else mu)

    def _bias(self, dtype) -> jax.Array:
        mu = jnp.asarray(self.mu, dtype)
        return jnp.asarray(self.kappa, dtype) * jnp.stack([jnp.cos(mu), jnp.sin(mu)])

    @jax.jit
    def log_prob_angle(self, theta) -> jax.Array:
        """Clean log density of the angle w.r.t. ``d theta``."""
        kappa = jnp.asarray(self.kappa)
        return kappa * jnp.cos(theta - self.mu) - LOG_2PI \
            - log_vmf_normaliser(0, kappa * kappa)

    @functools.partial(jax.jit, static_argnames="n")
    def sample(self, key, n: int) -> jax.Array:
        """``n`` points with von Mises angles; one key per sample."""
        dtype = self.frame.dtype
        mean_dir = jnp.stack([jnp.cos(self.mu), jnp.sin(self.mu)]).astype(dtype)
        theta = jax.vmap(lambda kk: sample_vmf(kk, mean_dir, jnp.asarray(self.kappa, dtype),
                                               2, dtype))(jax.random.split(key, n))
        return self._embed(theta)

__dir__ = _public_dir(__all__)

"""Tori: the flat torus (a product of circles, exact) and the ring torus in 3-D (the ring
angle in closed form, the tube angle by periodic quadrature).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp

from manifold_scores import _checks
from manifold_scores._api import public_dir as _public_dir
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.densities.base import Density
from manifold_scores.densities.manifolds._geometry import (
    HIGHEST,
    check_inputs,
    gauss_const,
    make_centre,
    make_frame,
    normal_projector_from_tangent,
    positive_scalar,
    safe_norm,
    safe_sqrt,
    unit_vector,
)
from manifold_scores.densities.manifolds._quadrature import (
    check_on_coarse,
    check_spacing,
)
from manifold_scores.densities.manifolds._vmf import noised_vmf
from manifold_scores.mixtures import MixtureStats

__all__ = ["FlatTorus", "RingTorus"]


@pytree_dataclass
class FlatTorus(Density):
    """Uniform law on a flat torus ``S^1 x ... x S^1``, circles in orthogonal planes of ``R^d``.

    ``X = c + sum_i R_i (cos t_i Q_{2i} + sin t_i Q_{2i+1})`` with independent uniform angles.
    The noised law factorises over the circles' planes, so it is exact: ``log p`` and the score
    are sums of circle terms (see :class:`Circle`) plus the Gaussian normal to all planes.

    Args:
        radii: ``(m,)`` circle radii ``R_i > 0`` (default two unit circles).
        dim: ambient dimension ``d >= 2m`` (static).
        frame: ``(d, 2m)`` orthonormal columns, circle ``i`` in columns ``2i, 2i+1`` (default:
            random from ``key``, else the first ``2m`` axes).
        centre: ``(d,)``; default the origin.
        key: PRNG key for a random frame (not stored).

    Example:
        >>> import jax, manifold_scores as ms
        >>> tor = ms.FlatTorus(radii=(1.0, 0.5), dim=6, key=jax.random.key(0))
        >>> x = tor.sample(jax.random.key(1), 2)
        >>> jax.vmap(tor.log_prob, (0, None, None))(x, 1.0, 0.1).shape
        (2,)
    """

    radii: jax.Array | tuple = (1.0, 1.0)
    dim: int = static_field(default=4)
    frame: jax.Array | None = None
    centre: jax.Array | None = None
    key: dataclasses.InitVar[jax.Array | None] = None

    def __post_init__(self, key):
        radii = _checks.as_float_array(self.radii, "radii")
        if radii.ndim != 1 or radii.shape[0] < 1:
            raise ValueError(f"radii must have shape (m,) with m >= 1, got {radii.shape}")
        _checks.check_positive(radii, "radii")
        dtype = _checks.float_dtype(self.frame, self.centre, radii)
        frame = make_frame(self.dim, 2 * radii.shape[0], self.frame, key, dtype)
        object.__setattr__(self, "frame", frame)
        object.__setattr__(self, "centre", make_centre(self.dim, self.centre, frame.dtype))
        object.__setattr__(self, "radii", radii.astype(frame.dtype))

    @property
    def intrinsic_dim(self) -> int:
        return self.frame.shape[1] // 2

    def _coords(self, x, alpha=1.0):
        z = x - alpha * self.centre.astype(x.dtype)
        q = self.frame.astype(x.dtype)
        u = jnp.dot(q.T, z, precision=HIGHEST)
        return u.reshape(-1, 2), z - jnp.dot(q, u, precision=HIGHEST)

    def stats(self, x, alpha, sigma) -> MixtureStats:
        """Exact ``(log p, score, E[X|x], tr Cov[X|x])``: a sum over the circles."""
        return self._stats(*check_inputs(self, x, alpha, sigma))

    @jax.jit
    def _stats(self, x, alpha, sigma) -> MixtureStats:
        u, z_perp = self._coords(x, alpha)
        radii = self.radii.astype(x.dtype)
        log_p, score_u, mean_dir, cov = jax.vmap(
            lambda ui, ri: noised_vmf(ui, ri, None, 0, alpha, sigma))(u, radii)
        q = self.frame.astype(x.dtype)
        s2 = sigma * sigma
        log_p = jnp.sum(log_p) - jnp.sum(z_perp * z_perp) / (2.0 * s2) \
            + gauss_const(self.dim, sigma)
        score = jnp.dot(q, score_u.reshape(-1), precision=HIGHEST) - z_perp / s2
        mean = self.centre.astype(x.dtype) + jnp.dot(
            q, (radii[:, None] * mean_dir).reshape(-1), precision=HIGHEST)
        return MixtureStats(log_p, score, mean, jnp.sum(cov))

    def point(self, angles) -> jax.Array:
        """The point with the given angles ``(m,)``."""
        angles = jnp.asarray(angles, self.frame.dtype)
        circ = self.radii[:, None] * jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)
        return self.centre + jnp.dot(self.frame, circ.reshape(-1), precision=HIGHEST)

    def angles(self, x) -> jax.Array:
        """The ``m`` angles of ``x`` (of its nearest point), one per circle."""
        _checks.check_point(x, self.dim)
        u, _ = self._coords(x)
        return jnp.arctan2(u[:, 1], u[:, 0])

    @functools.partial(jax.jit, static_argnames="n")
    def sample(self, key, n: int) -> jax.Array:
        """``n`` uniform points; one key per sample."""
        m = self.radii.shape[0]
        angles = jax.vmap(lambda kk: jax.random.uniform(
            kk, (m,), self.frame.dtype, 0.0, 2.0 * math.pi))(jax.random.split(key, n))
        return jax.vmap(self.point)(angles)

    def project(self, x) -> jax.Array:
        """Nearest point: each circle's nearest point in its own plane."""
        _checks.check_point(x, self.dim)
        u, _ = self._coords(x)
        circ = self.radii[:, None] * jax.vmap(unit_vector)(u)
        return self.centre + jnp.dot(self.frame, circ.reshape(-1), precision=HIGHEST)

    def distance(self, x) -> jax.Array:
        """``sqrt(|x_perp|^2 + sum_i (|u_i| - R_i)^2)``."""
        _checks.check_point(x, self.dim)
        u, z_perp = self._coords(x)
        r = jax.vmap(lambda v: safe_norm(v)[1])(u)
        return safe_sqrt(jnp.sum(z_perp * z_perp) + jnp.sum((r - self.radii) ** 2))

    def tangent_basis(self, x) -> jax.Array:
        """``(d, m)`` orthonormal tangent basis: one unit tangent per circle."""
        _checks.check_point(x, self.dim)
        u, _ = self._coords(x)
        e = jax.vmap(unit_vector)(u)
        m = e.shape[0]
        tangents = jnp.zeros((m, m, 2), e.dtype).at[jnp.arange(m), jnp.arange(m)].set(
            jnp.stack([-e[:, 1], e[:, 0]], -1))
        return jnp.dot(self.frame, tangents.reshape(m, 2 * m).T, precision=HIGHEST)

    def normal_projector(self, x) -> jax.Array:
        """``(d, d)`` orthogonal projector onto the normal space at :meth:`project` ``(x)``."""
        return normal_projector_from_tangent(self.tangent_basis(x))



# ---------------------------------------------------------------------------------------------
# Ring torus: the tube angle by quadrature, the ring angle in closed form
# ---------------------------------------------------------------------------------------------


@pytree_dataclass
class RingTorus(Density):
    """Uniform law on a ring torus in a 3-D subspace of ``R^d``.

    ``X = c + Q ((R + r cos psi) cos phi, (R + r cos psi) sin phi, r sin psi)``. For the area
    measure (``measure="area"``, density ``(R + r cos psi) / (4 pi^2 R r)``) and the parameter
    measure (``"parameter"``, uniform in both angles) the ring angle ``phi`` is uniform given
    ``psi``, so for each tube angle the ring is a circle of radius ``rho = R + r cos psi`` at
    height ``r sin psi`` and integrates in closed form (:class:`Circle`'s Bessel formula). The
    tube angle is integrated by the periodic trapezoid rule over ``nodes`` angles, which is
    exact to ~1e-8 while ``alpha r 2 pi / nodes <= sigma`` (checked, see ``on_coarse``).

    Args:
        major_radius: ``R > 0``, the ring's radius.
        minor_radius: ``0 < r < R``, the tube's radius.
        dim: ambient dimension ``d >= 3`` (static).
        measure: ``"area"`` (uniform w.r.t. surface area) or ``"parameter"`` (static).
        nodes: tube-angle quadrature nodes (static).
        frame, centre, key: as in :class:`Sphere` (frame ``(d, 3)``; the axis is column 3).
        on_coarse: ``"raise"``, ``"warn"`` or ``"ignore"`` a grid too coarse for sigma (static).

    Example:
        >>> import jax, manifold_scores as ms
        >>> tor = ms.RingTorus(major_radius=1.0, minor_radius=0.4)
        >>> x = tor.sample(jax.random.key(0), 2)
        >>> jax.vmap(tor.score, (0, None, None))(x, 1.0, 0.1).shape
        (2, 3)
    """

    major_radius: jax.Array | float = 1.0
    minor_radius: jax.Array | float = 0.4
    dim: int = static_field(default=3)
    measure: str = static_field(default="area")
    nodes: int = static_field(default=512)
    frame: jax.Array | None = None
    centre: jax.Array | None = None
    on_coarse: str = static_field(default="raise")
    key: dataclasses.InitVar[jax.Array | None] = None

    def __post_init__(self, key):
        if self.measure not in ("area", "parameter"):
            raise ValueError(f"measure must be 'area' or 'parameter', got {self.measure!r}")
        if not isinstance(self.nodes, (int, np.integer)) or self.nodes < 8:
            raise ValueError(f"nodes must be an integer >= 8, got {self.nodes!r}")
        check_on_coarse(self.on_coarse)
        dtype = _checks.float_dtype(self.frame, self.centre, self.major_radius, self.minor_radius)
        frame = make_frame(self.dim, 3, self.frame, key, dtype)
        big = positive_scalar(self.major_radius, "major_radius", frame.dtype)
        small = positive_scalar(self.minor_radius, "minor_radius", frame.dtype)
        if _checks.is_concrete(big) and _checks.is_concrete(small) and float(small) >= float(big):
            raise ValueError(f"minor_radius must be smaller than major_radius, got "
                             f"{float(small)} >= {float(big)}")
        object.__setattr__(self, "frame", frame)
        object.__setattr__(self, "centre", make_centre(self.dim, self.centre, frame.dtype))
        object.__setattr__(self, "major_radius", big)
        object.__setattr__(self, "minor_radius", small)

    intrinsic_dim = 2

    @property
    def spacing(self) -> jax.Array:
        """Largest distance between neighbouring quadrature circles, ``2 pi r / nodes``."""
        return 2.0 * math.pi * self.minor_radius / self.nodes

    def min_sigma(self, alpha=1.0) -> jax.Array:
        """The smallest sigma the grid resolves exactly: ``alpha * spacing``."""
        return alpha * self.spacing

    def _tube_nodes(self, dtype):
        psi = jnp.arange(self.nodes, dtype=dtype) * (2.0 * math.pi / self.nodes)
        big = self.major_radius.astype(dtype)
        small = self.minor_radius.astype(dtype)
        rho = big + small * jnp.cos(psi)
        height = small * jnp.sin(psi)
        if self.measure == "area":
            log_w = jnp.log(rho) - jnp.log(big) - math.log(self.nodes)
        else:
            log_w = jnp.full_like(psi, -math.log(self.nodes))
        return rho, height, log_w

    def stats(self, x, alpha, sigma) -> MixtureStats:
        """``(log p, score, E[X|x], tr Cov[X|x])``: closed form in phi, quadrature in psi."""
        x, alpha, sigma = check_inputs(self, x, alpha, sigma)
        check_spacing("RingTorus", self.spacing, alpha, sigma, self.nodes, 1.0,
                      self.on_coarse)
        return self._stats(x, alpha, sigma)

    @jax.jit
    def _stats(self, x, alpha, sigma) -> MixtureStats:
        q = self.frame.astype(x.dtype)
        z = x - alpha * self.centre.astype(x.dtype)
        y = jnp.dot(q.T, z, precision=HIGHEST)
        z_perp = z - jnp.dot(q, y, precision=HIGHEST)
        rho, height, log_w = self._tube_nodes(x.dtype)
        s2 = sigma * sigma
        log_c, score_c, dir_c, cov_c = jax.vmap(
            lambda r: noised_vmf(y[:2], r, None, 0, alpha, sigma))(rho)
        dh = alpha * height - y[2]
        logits = log_w + log_c - dh * dh / (2.0 * s2)
        log_p = logsumexp(logits)
        post = jnp.exp(logits - log_p)
        score_y = jnp.concatenate([post @ score_c, (post @ dh)[None] / s2])
        m_plane = rho[:, None] * dir_c
        mean_y = jnp.concatenate([post @ m_plane, (post @ height)[None]])
        second = post @ (cov_c + jnp.sum(m_plane * m_plane, -1) + height * height)
        cov = jnp.maximum(second - jnp.sum(mean_y * mean_y), 0.0)
        log_p = log_p - jnp.sum(z_perp * z_perp) / (2.0 * s2) + gauss_const(self.dim, sigma)
        score = jnp.dot(q, score_y, precision=HIGHEST) - z_perp / s2
        mean = self.centre.astype(x.dtype) + jnp.dot(q, mean_y, precision=HIGHEST)
        return MixtureStats(log_p, score, mean, cov)

    def point(self, phi, psi) -> jax.Array:
        """The point with ring angle ``phi`` and tube angle ``psi``."""
        rho = self.major_radius + self.minor_radius * jnp.cos(psi)
        y = jnp.stack([rho * jnp.cos(phi), rho * jnp.sin(phi), self.minor_radius * jnp.sin(psi)])
        return self.centre + jnp.dot(self.frame, y, precision=HIGHEST)

    @functools.partial(jax.jit, static_argnames="n")
    def sample(self, key, n: int) -> jax.Array:
        """``n`` points from the chosen measure; one key per sample."""
        big, small = self.major_radius, self.minor_radius
        dtype = self.frame.dtype

        def one(kk):
            k_phi, k_psi = jax.random.split(kk)
            phi = jax.random.uniform(k_phi, (), dtype, 0.0, 2.0 * math.pi)
            if self.measure == "parameter":
                return self.point(phi, jax.random.uniform(k_psi, (), dtype, 0.0, 2 * math.pi))

            def body(state):  # rejection: accept psi with probability (R + r cos psi)/(R + r)
                key, _, _ = state
                key, k1, k2 = jax.random.split(key, 3)
                psi = jax.random.uniform(k1, (), dtype, 0.0, 2.0 * math.pi)
                ok = jax.random.uniform(k2, (), dtype) * (big + small) <= big + small * jnp.cos(psi)
                return key, psi, ok

            _, psi, _ = lax.while_loop(lambda s: ~s[2], body,
                                       (k_psi, jnp.zeros((), dtype), jnp.array(False)))
            return self.point(phi, psi)

        return jax.vmap(one)(jax.random.split(key, n))

    def _nearest(self, x):
        y = jnp.dot(self.frame.T, x - self.centre, precision=HIGHEST)
        e = unit_vector(y[:2])
        _, rho = safe_norm(y[:2])
        tube = jnp.stack([rho - self.major_radius, y[2]])
        t = unit_vector(tube)
        return y, e, t

    def angles(self, x) -> jax.Array:
        """``(phi, psi)`` of the nearest point."""
        _checks.check_point(x, self.dim)
        _, e, t = self._nearest(x)
        return jnp.stack([jnp.arctan2(e[1], e[0]), jnp.arctan2(t[1], t[0])])

    def project(self, x) -> jax.Array:
        """Nearest point: the nearest core-circle point, then the tube circle around it."""
        _checks.check_point(x, self.dim)
        _, e, t = self._nearest(x)
        rho = self.major_radius + self.minor_radius * t[0]
        y = jnp.stack([rho * e[0], rho * e[1], self.minor_radius * t[1]])
        return self.centre + jnp.dot(self.frame, y, precision=HIGHEST)

    def distance(self, x) -> jax.Array:
        """``sqrt(|x_perp|^2 + (|(rho - R, y_3)| - r)^2)``."""
        _checks.check_point(x, self.dim)
        y, _, _ = self._nearest(x)
        z = x - self.centre
        z_perp = z - jnp.dot(self.frame, y, precision=HIGHEST)
        _, rho = safe_norm(y[:2])
        _, tube = safe_norm(jnp.stack([rho - self.major_radius, y[2]]))
        return safe_sqrt(jnp.sum(z_perp * z_perp) + (tube - self.minor_radius) ** 2)

    def tangent_basis(self, x) -> jax.Array:
        """``(d, 2)``: the ring direction and the tube direction at the nearest point."""
        _checks.check_point(x, self.dim)
        _, e, t = self._nearest(x)
        zero = jnp.zeros((), e.dtype)
        ring = jnp.stack([-e[1], e[0], zero])
        tube = jnp.stack([-t[1] * e[0], -t[1] * e[1], t[0]])
        return jnp.dot(self.frame, jnp.stack([ring, tube], 1), precision=HIGHEST)

    def normal_projector(self, x) -> jax.Array:
        """``(d, d)`` orthogonal projector onto the normal space at :meth:`project` ``(x)``."""
        return normal_projector_from_tangent(self.tangent_basis(x))

__dir__ = _public_dir(__all__)

"""Laws on curved manifolds with exact noised log-density, score and denoiser.

Every class is a data law ``X`` on a manifold ``M`` embedded in ``R^d`` by an orthonormal frame
``Q`` (``d x m``) and a centre ``c``, and gives the statistics of ``alpha X + sigma Z`` at one
point. Spheres, circles, von Mises laws and flat tori are exact in closed form (Bessel
functions); the ring torus integrates one angle in closed form and the other by periodic
quadrature; the ellipse, the swiss roll and any chart (:class:`Parametric`) are quadratures,
i.e. weighted isotropic Gaussian mixtures evaluated by :func:`manifold_scores.mixtures.isotropic`,
exact to a level set by the node spacing (checked against ``sigma``).

Each manifold also exposes its geometry: ``project(x)`` (nearest point), ``distance(x)``,
``tangent_basis(x)`` and ``normal_projector(x)`` at the nearest point.

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
from fractions import Fraction
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp

from manifold_scores import _checks
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.densities.base import Density
from manifold_scores.mixtures import MixtureStats

__all__ = [
    "Circle",
    "Sphere",
    "VonMises",
]

HIGHEST = lax.Precision.HIGHEST
_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------------
# Bessel functions of the von Mises-Fisher normaliser
# ---------------------------------------------------------------------------------------------
#
# For the uniform law U on the unit sphere S^{k-1} and nu = k/2 - 1,
#     S_nu(K) = int exp(w . theta) dU(theta) = Gamma(nu + 1) (2/K)^nu I_nu(K),   K = |w|,
# a power series in q = K^2/4 with positive terms,
#     S_nu = sum_m q^m Gamma(nu + 1) / (m! Gamma(m + nu + 1)),
# and d log S_nu / dK = A(K) = I_{nu+1}(K) / I_nu(K), the mean resultant length.
# Below a threshold T the series (log-sum-exp, no cancellation) gives log S and a backward
# continued fraction gives A/K (finite at K = 0, where it equals 1/k). Above T Hankel's
# expansion I_nu(K) = e^K / sqrt(2 pi K) P_nu(1/K) is used; T >= nu^2 keeps its terms decreasing,
# and it terminates for half-integer nu. There 1 - A = (P_nu - P_{nu+1}) / P_nu is evaluated
# from the exact coefficient differences, so the defect 1 - A ~ (k - 1)/(2K) keeps full relative
# precision at large K (tiny sigma), where the normal part of the score lives.


class _BesselTable(NamedTuple):
    nu: float
    threshold: float
    log_series: np.ndarray  # log of the power-series coefficients of S_nu in q
    hankel: np.ndarray  # coefficients of P_nu in s = T / K (scaled by T^-j)
    hankel_gap: np.ndarray  # coefficients of P_nu - P_{nu+1} in s
    fraction_terms: int


@functools.cache
def _bessel_table(two_nu: int) -> _BesselTable:
    nu = two_nu / 2.0
    threshold = max(40.0, nu * nu)
    log_q = math.log(threshold * threshold / 4.0)
    log_series, best, m = [], -math.inf, 0
    while True:  # until the terms at the largest q have fallen e^-45 below their peak
        lc = math.lgamma(nu + 1.0) - math.lgamma(m + 1.0) - math.lgamma(m + nu + 1.0)
        log_series.append(lc)
        best = max(best, lc + m * log_q)
        if m > threshold / 2 and lc + m * log_q < best - 45.0:
            break
        m += 1
    # Hankel coefficients (-1)^j prod_{i<=j} (4 nu^2 - (2i - 1)^2) / (8 i), exact rationals so
    # that the difference of the two orders keeps all its digits.
    scale = Fraction(threshold)
    p_nu, p_next = [Fraction(1)], [Fraction(1)]
    for j in range(1, 200):
        p_nu.append(-p_nu[-1] * Fraction(two_nu**2 - (2 * j - 1) ** 2, 8 * j))
        p_next.append(-p_next[-1] * Fraction((two_nu + 2) ** 2 - (2 * j - 1) ** 2, 8 * j))
    hankel = [float(c / scale**j) for j, c in enumerate(p_nu)]
    gap = [float((a - b) / scale**j) for j, (a, b) in enumerate(zip(p_nu, p_next, strict=True))]
    length = len(hankel)
    for j in range(1, len(hankel)):
        if abs(hankel[j]) < 1e-20 and abs(gap[j]) < 1e-20:
            length = j
            break
    return _BesselTable(nu, threshold, np.asarray(log_series), np.asarray(hankel[:length]),
                        np.asarray(gap[:length]), len(log_series) + 10)


class _Bessel(NamedTuple):
    """Both branches of the vMF normaliser at ``w_sq = K^2``, each evaluated at a safe input."""

    large: jax.Array  # True where the Hankel branch applies (K > T)
    log_s_small: jax.Array  # log S_nu(K), series branch
    a_over_k_small: jax.Array  # A(K) / K, series branch
    k_large: jax.Array  # K, Hankel branch (>= T)
    g_large: jax.Array  # log S_nu(K) - K, Hankel branch
    defect_large: jax.Array  # 1 - A(K), Hankel branch


def _bessel(two_nu: int, w_sq: jax.Array) -> _Bessel:
    tab = _bessel_table(two_nu)
    nu, thr = tab.nu, tab.threshold
    dtype = w_sq.dtype
    large = w_sq > thr * thr
    # Series branch: a function of q = K^2 / 4 (smooth, no square root at K = 0).
    w_small = jnp.minimum(w_sq, thr * thr)
    q = w_small / 4.0
    positive = q > 0
    log_q = jnp.log(jnp.where(positive, q, 1.0))
    m = np.arange(len(tab.log_series))
    terms = jnp.asarray(tab.log_series, dtype) + m * log_q[..., None]
    terms = jnp.where(positive[..., None], terms, jnp.where(m == 0, 0.0, -jnp.inf).astype(dtype))
    log_s_small = logsumexp(terms, axis=-1)
    n_cf = tab.fraction_terms

    def step(i, acc):  # A/K = 1 / (2(nu+1) + K^2 / (2(nu+2) + K^2 / (...)))
        return 2.0 * (nu + (n_cf - 1 - i)) + w_small / acc

    start = jnp.full_like(w_small, 2.0 * (nu + n_cf))
    a_over_k_small = 1.0 / lax.fori_loop(0, n_cf - 1, step, start)
    # Hankel branch in s = T / K <= 1.
    k_large = jnp.sqrt(jnp.maximum(w_sq, thr * thr))
    s = thr / k_large
    hankel = jnp.asarray(tab.hankel[::-1], dtype)
    p_minus_one = jnp.polyval(hankel.at[-1].set(0.0), s)
    gap = jnp.polyval(jnp.asarray(tab.hankel_gap[::-1], dtype), s)
    const = nu * math.log(2.0) + math.lgamma(nu + 1.0) - 0.5 * _LOG_2PI
    g_large = -(nu + 0.5) * jnp.log(k_large) + jnp.log1p(p_minus_one) + const
    defect_large = gap / (1.0 + p_minus_one)
    return _Bessel(large, log_s_small, a_over_k_small, k_large, g_large, defect_large)


def _log_vmf_normaliser(two_nu: int, w_sq: jax.Array) -> jax.Array:
    """``log S_nu(|w|) = log int exp(w . theta) dU(theta)`` on ``S^{k-1}``, ``two_nu = k - 2``."""
    b = _bessel(two_nu, w_sq)
    return jnp.where(b.large, b.k_large + b.g_large, b.log_s_small)


def _safe_norm(v: jax.Array, axis: int = -1) -> tuple[jax.Array, jax.Array]:
    """``(|v|^2, |v|)`` with a finite gradient at ``v = 0`` (double-where)."""
    sq = jnp.sum(v * v, axis=axis)
    pos = sq > 0
    return sq, jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def _vmf_noised(u, radius, bias, two_nu: int, alpha, sigma):
    """Noised von Mises-Fisher law on a round sphere, in the sphere's own coordinates.

    The clean law is ``X = R theta`` with ``theta`` on ``S^{k-1}`` and density
    ``exp(b . theta) / S_nu(|b|)`` w.r.t. the uniform law (``b = 0``: uniform). With
    ``a = alpha R / sigma^2`` and ``w = a u + b``, integrating ``theta`` out gives

        log p(u) = -(|u|^2 + alpha^2 R^2) / (2 sigma^2) + log S_nu(|w|) - log S_nu(|b|)

    (the Gaussian normalisation and the component normal to the sphere's span are added by the
    caller). Returns ``(log_p, score_u, mean_dir, cov_trace)`` where ``mean_dir = E[theta|u]``.

    At large ``K = |w|`` the radial score ``(alpha R A - r) / sigma^2`` is formed as
    ``(a (alpha R - r) - (K - a r)) / (K sigma^2) - a (1 - A)`` with ``K - a r`` from
    ``(K^2 - a^2 r^2) / (K + a r)``: no difference of two ``1/sigma^2``-sized terms.
    """
    s2 = sigma * sigma
    a = alpha * radius / s2
    w = a * u + bias
    w_sq = jnp.sum(w * w)
    r_sq, r = _safe_norm(u)
    b = _bessel(two_nu, w_sq)
    big_k = b.k_large
    # K - a r without cancellation; a r <= K on the Hankel branch only up to the bias.
    k_minus_ar = (2.0 * a * jnp.dot(u, bias) + jnp.sum(bias * bias)) / (big_k + a * r)
    log_small = -(r_sq + (alpha * radius) ** 2) / (2.0 * s2) + b.log_s_small
    log_large = -((r - alpha * radius) ** 2) / (2.0 * s2) + k_minus_ar + b.g_large
    log_p = jnp.where(b.large, log_large, log_small)

    score_small = -u / s2 + a * b.a_over_k_small * w
    score_large = (((a * (alpha * radius - r) - k_minus_ar) / s2) * u + a * bias) / big_k \
        - (a * b.defect_large / big_k) * w
    score_u = jnp.where(b.large, score_large, score_small)
    mean_small = b.a_over_k_small * w
    mean_large = ((1.0 - b.defect_large) / big_k) * w
    mean_dir = jnp.where(b.large, mean_large, mean_small)
    cov_small = 1.0 - w_sq * b.a_over_k_small**2
    cov_large = b.defect_large * (2.0 - b.defect_large)
    cov = radius * radius * jnp.maximum(jnp.where(b.large, cov_large, cov_small), 0.0)
    log_norm = _log_vmf_normaliser(two_nu, jnp.sum(bias * bias))
    return log_p - log_norm, score_u, mean_dir, cov


def _sample_vmf(key, mean_dir, kappa, k: int, dtype):
    """One draw from von Mises-Fisher on ``S^{k-1}`` (Wood 1994 rejection; kappa = 0: uniform)."""
    k_w, k_v = jax.random.split(key)
    km1 = k - 1.0
    # b = (k-1) / (2 kappa + sqrt(4 kappa^2 + (k-1)^2)), the rationalised form (no cancellation)
    bb = km1 / (2.0 * kappa + jnp.sqrt(4.0 * kappa * kappa + km1 * km1))
    x0 = (1.0 - bb) / (1.0 + bb)
    c = kappa * x0 + km1 * jnp.log1p(-x0 * x0)

    def cond(state):
        return ~state[2]

    def body(state):
        key, _, _ = state
        key, kz, ku = jax.random.split(key, 3)
        z = jax.random.beta(kz, km1 / 2.0, km1 / 2.0, dtype=dtype)
        w = (1.0 - (1.0 + bb) * z) / (1.0 - (1.0 - bb) * z)
        log_u = jnp.log(jax.random.uniform(ku, (), dtype, minval=jnp.finfo(dtype).tiny))
        accept = kappa * w + km1 * jnp.log1p(-x0 * w) - c >= log_u
        return key, w, accept

    _, w, _ = lax.while_loop(cond, body, (k_w, jnp.zeros((), dtype), jnp.array(False)))
    # a uniform direction orthogonal to the mean direction, in an exactly orthogonal basis
    v = jax.random.normal(k_v, (k - 1,), dtype)
    v = _complement_basis(mean_dir) @ (v / jnp.linalg.norm(v))
    return w * mean_dir + jnp.sqrt(jnp.maximum(1.0 - w * w, 0.0)) * v


# ---------------------------------------------------------------------------------------------
# Shared validation and frames
# ---------------------------------------------------------------------------------------------


def _default_dtype(*values):
    dts = [jnp.asarray(v).dtype for v in values if v is not None and _checks.is_array_like(v)]
    dts = [d for d in dts if jnp.issubdtype(d, jnp.floating)]
    return jnp.result_type(*dts) if dts else jnp.result_type(float)


def _make_frame(dim: int, k: int, frame, key, dtype, name: str = "frame") -> jax.Array:
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


def _make_centre(dim: int, centre, dtype) -> jax.Array:
    if centre is None:
        return jnp.zeros((dim,), dtype)
    centre = _checks.as_float_array(centre, "centre")
    if centre.shape != (dim,):
        raise ValueError(f"centre must have shape ({dim},), got {centre.shape}")
    return centre


def _positive_scalar(value, name: str, dtype) -> jax.Array:
    value = _checks.as_float_array(value, name)
    _checks.check_scalar(value, name)
    _checks.check_positive(value, name)
    return value.astype(dtype) if _checks.is_concrete(value) else value


def _nonnegative_scalar(value, name: str, dtype) -> jax.Array:
    value = _checks.as_float_array(value, name)
    _checks.check_scalar(value, name)
    _checks.check_nonnegative(value, name)
    return value.astype(dtype) if _checks.is_concrete(value) else value


def _inputs(density, x, alpha, sigma):
    """Validate one point and the noise levels; cast to the common dtype."""
    _checks.check_point(x, density.dim)
    _checks.check_noise_levels(alpha, sigma)
    dtype = jnp.result_type(x, density.frame, float)
    return (jnp.asarray(x, dtype), jnp.asarray(alpha, dtype), jnp.asarray(sigma, dtype))


def _gauss_const(d: int, sigma) -> jax.Array:
    return -0.5 * d * (_LOG_2PI + 2.0 * jnp.log(sigma))


def _normal_projector_from_tangent(t: jax.Array) -> jax.Array:
    d = t.shape[0]
    return jnp.eye(d, dtype=t.dtype) - jnp.dot(t, t.T, precision=HIGHEST)


def _complement_basis(direction: jax.Array) -> jax.Array:
    """``(k, k-1)`` orthonormal basis of the complement of a unit vector (Householder)."""
    k = direction.shape[0]
    sign = jnp.where(direction[0] >= 0, 1.0, -1.0)
    v = direction.at[0].add(sign)
    h = jnp.eye(k, dtype=direction.dtype) - 2.0 * jnp.outer(v, v) / jnp.dot(v, v)
    return h[:, 1:]


def _safe_sqrt(v: jax.Array) -> jax.Array:
    """``sqrt(v)`` with a finite gradient at ``v = 0``."""
    pos = v > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, v, 1.0)), 0.0)


def _unit(u: jax.Array) -> jax.Array:
    """``u / |u|``, or the first axis when ``u = 0`` (any nearest point is as good)."""
    sq, n = _safe_norm(u)
    e1 = jnp.zeros_like(u).at[0].set(1.0)
    return jnp.where(sq > 0, u / jnp.where(sq > 0, n, 1.0), e1)


# ---------------------------------------------------------------------------------------------
# Round spheres: Sphere, Circle, VonMises
# ---------------------------------------------------------------------------------------------


class _RoundSphere(Density):
    """Shared maths of a round ``S^{k-1}`` (radius ``R``) in ``c + span(Q)``."""

    dim = None  # a static dataclass field in every subclass (shadows Density.dim)

    def _bias(self, dtype) -> jax.Array:
        """``b`` of the clean density ``exp(b . theta)`` w.r.t. the uniform law."""
        return jnp.zeros((self.frame.shape[1],), dtype)

    def stats(self, x, alpha, sigma) -> MixtureStats:
        """Exact ``(log p, score, E[X|x], tr Cov[X|x])`` of ``alpha X + sigma Z`` at ``x``."""
        x, alpha, sigma = _inputs(self, x, alpha, sigma)
        q = self.frame.astype(x.dtype)
        z = x - alpha * self.centre.astype(x.dtype)
        u = jnp.dot(q.T, z, precision=HIGHEST)
        z_perp = z - jnp.dot(q, u, precision=HIGHEST)
        radius = self.radius.astype(x.dtype)
        log_p, score_u, mean_dir, cov = _vmf_noised(
            u, radius, self._bias(x.dtype), q.shape[1] - 2, alpha, sigma)
        s2 = sigma * sigma
        log_p = log_p - jnp.sum(z_perp * z_perp) / (2.0 * s2) + _gauss_const(self.dim, sigma)
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
        return self.centre + self.radius * jnp.dot(self.frame, _unit(u), precision=HIGHEST)

    def distance(self, x) -> jax.Array:
        """``dist(x, M) = sqrt(|x_perp|^2 + (|u| - R)^2)``."""
        _checks.check_point(x, self.dim)
        u, z_perp = self._coords(x)
        _, r = _safe_norm(u)
        return _safe_sqrt(jnp.sum(z_perp * z_perp) + (r - self.radius) ** 2)

    def tangent_basis(self, x) -> jax.Array:
        """``(d, k-1)`` orthonormal basis of the tangent space at :meth:`project` ``(x)``."""
        _checks.check_point(x, self.dim)
        u, _ = self._coords(x)
        return jnp.dot(self.frame, _complement_basis(_unit(u)), precision=HIGHEST)

    def normal_projector(self, x) -> jax.Array:
        """``(d, d)`` orthogonal projector onto the normal space at :meth:`project` ``(x)``."""
        return _normal_projector_from_tangent(self.tangent_basis(x))

    def _embed(self, theta):
        return self.centre + self.radius * jnp.dot(theta, self.frame.T, precision=HIGHEST)


def _is_placeholder(value) -> bool:
    """True for PyTree placeholders (tree_unflatten, tree.map to non-arrays): skip validation."""
    return value is not None and not isinstance(
        value, (np.ndarray, jax.Array, jax.core.Tracer, list))


def _sphere_init(obj, dim, k, key, extra_dtype=()):
    if _is_placeholder(obj.frame):
        return False
    dtype = _default_dtype(obj.frame, obj.centre, obj.radius, *extra_dtype)
    frame = _make_frame(dim, k, obj.frame, key, dtype)
    object.__setattr__(obj, "frame", frame)
    object.__setattr__(obj, "centre", _make_centre(dim, obj.centre, frame.dtype))
    object.__setattr__(obj, "radius", _positive_scalar(obj.radius, "radius", frame.dtype))
    return True


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
        if not _sphere_init(self, self.dim, 2, key, (self.kappa, self.mu)):
            return
        dtype = self.frame.dtype
        object.__setattr__(self, "kappa", _nonnegative_scalar(self.kappa, "kappa", dtype))
        mu = _checks.as_float_array(self.mu, "mu")
        _checks.check_scalar(mu, "mu")
        object.__setattr__(self, "mu", mu.astype(dtype) if _checks.is_concrete(mu) else mu)

    def _bias(self, dtype) -> jax.Array:
        mu = jnp.asarray(self.mu, dtype)
        return jnp.asarray(self.kappa, dtype) * jnp.stack([jnp.cos(mu), jnp.sin(mu)])

    def log_prob_angle(self, theta) -> jax.Array:
        """Clean log density of the angle w.r.t. ``d theta``."""
        kappa = jnp.asarray(self.kappa)
        return kappa * jnp.cos(theta - self.mu) - _LOG_2PI \
            - _log_vmf_normaliser(0, kappa * kappa)

    def sample(self, key, n: int) -> jax.Array:
        """``n`` points with von Mises angles; one key per sample."""
        dtype = self.frame.dtype
        mean_dir = jnp.stack([jnp.cos(self.mu), jnp.sin(self.mu)]).astype(dtype)
        theta = jax.vmap(lambda kk: _sample_vmf(kk, mean_dir, jnp.asarray(self.kappa, dtype),
                                                2, dtype))(jax.random.split(key, n))
        return self._embed(theta)

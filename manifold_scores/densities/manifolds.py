"""Laws on curved manifolds with exact noised log-density, score and denoiser.

Every class is a data law ``X`` on a manifold ``M`` embedded in ``R^d`` by an orthonormal frame
``Q`` (``d x m``) and a centre ``c``, and gives the statistics of ``alpha X + sigma Z`` at one
point. Spheres, circles, von Mises laws and flat tori are exact in closed form (Bessel
functions); the ring torus integrates one angle in closed form and the other by periodic
quadrature; the ellipse, the swiss roll and any chart (:class:`Parametric`) are quadratures,
i.e. weighted isotropic Gaussian mixtures evaluated by :func:`manifold_scores.mixtures.isotropic`,
exact to a level set by the node spacing. The spacing is checked against ``sigma`` whenever the
values are concrete (eager calls): a grid too coarse raises a ``ValueError`` that says how many
nodes, or which sigma, would do (``on_coarse="warn"`` warns instead). Under ``jit`` the values
are tracers and the check is skipped; ``min_sigma(alpha)`` gives the limit to check by hand.

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
import warnings
from collections.abc import Callable
from fractions import Fraction
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import log_ndtr, logsumexp

from manifold_scores import _checks, mixtures
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.densities.base import Density
from manifold_scores.mixtures import MixtureStats

__all__ = [
    "Circle",
    "Ellipse",
    "FlatTorus",
    "Parametric",
    "RingTorus",
    "Sphere",
    "SwissRoll",
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
    # terms relative to the largest q, log c_m + m log q_T (float64 constants), so that the
    # summands that matter stay O(K) in size and keep float32 digits
    log_q_max = math.log(thr * thr / 4.0)
    log_q = jnp.log(jnp.where(positive, q, 1.0)) - log_q_max
    m = np.arange(len(tab.log_series))
    terms = jnp.asarray(tab.log_series + m * log_q_max, dtype) + m * log_q[..., None]
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
    ``exp(b . theta) / S_nu(|b|)`` w.r.t. the uniform law (``b = None``: uniform). With
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
    w = a * u if bias is None else a * u + bias
    w_sq = jnp.sum(w * w)
    r_sq, r = _safe_norm(u)
    b = _bessel(two_nu, w_sq)
    big_k = b.k_large
    if bias is None:  # the uniform law: K = a r exactly
        k_minus_ar, a_bias, log_norm = 0.0, 0.0, 0.0
    else:  # K - a r = (K^2 - a^2 r^2) / (K + a r), without cancellation
        k_minus_ar = (2.0 * a * jnp.dot(u, bias) + jnp.sum(bias * bias)) / (big_k + a * r)
        a_bias = a * bias
        log_norm = _log_vmf_normaliser(two_nu, jnp.sum(bias * bias))
    log_small = -(r_sq + (alpha * radius) ** 2) / (2.0 * s2) + b.log_s_small
    log_large = -((r - alpha * radius) ** 2) / (2.0 * s2) + k_minus_ar + b.g_large
    log_p = jnp.where(b.large, log_large, log_small)

    score_small = -u / s2 + a * b.a_over_k_small * w
    score_large = (((a * (alpha * radius - r) - k_minus_ar) / s2) * u + a_bias) / big_k \
        - (a * b.defect_large / big_k) * w
    score_u = jnp.where(b.large, score_large, score_small)
    mean_small = b.a_over_k_small * w
    mean_large = ((1.0 - b.defect_large) / big_k) * w
    mean_dir = jnp.where(b.large, mean_large, mean_small)
    cov_small = 1.0 - w_sq * b.a_over_k_small**2
    cov_large = b.defect_large * (2.0 - b.defect_large)
    cov = radius * radius * jnp.maximum(jnp.where(b.large, cov_large, cov_small), 0.0)
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
        if k == 2:  # Beta(1/2, 1/2) is the arcsine law: sin^2(pi U / 2), no gamma sampler
            z = jnp.sin(0.5 * math.pi * jax.random.uniform(kz, (), dtype)) ** 2
        else:
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
    alpha, sigma = _checks.check_noise_levels(alpha, sigma)
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

    def _bias(self, dtype) -> jax.Array | None:
        """``b`` of the clean density ``exp(b . theta)`` w.r.t. the uniform law (None: 0)."""
        return None

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


def _sphere_init(obj, dim, k, key, extra_dtype=()):
    dtype = _checks.float_dtype(obj.frame, obj.centre, obj.radius, *extra_dtype)
    frame = _make_frame(dim, k, obj.frame, key, dtype)
    object.__setattr__(obj, "frame", frame)
    object.__setattr__(obj, "centre", _make_centre(dim, obj.centre, frame.dtype))
    object.__setattr__(obj, "radius", _positive_scalar(obj.radius, "radius", frame.dtype))


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

    def log_prob_angle(self, theta) -> jax.Array:
        """Clean log density of the angle w.r.t. ``d theta``: ``-log(2 pi)``."""
        return jnp.full_like(jnp.asarray(theta, self.frame.dtype), -_LOG_2PI)

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


# ---------------------------------------------------------------------------------------------
# Flat torus: a product of circles
# ---------------------------------------------------------------------------------------------


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
        frame = _make_frame(self.dim, 2 * radii.shape[0], self.frame, key, dtype)
        object.__setattr__(self, "frame", frame)
        object.__setattr__(self, "centre", _make_centre(self.dim, self.centre, frame.dtype))
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
        x, alpha, sigma = _inputs(self, x, alpha, sigma)
        u, z_perp = self._coords(x, alpha)
        radii = self.radii.astype(x.dtype)
        log_p, score_u, mean_dir, cov = jax.vmap(
            lambda ui, ri: _vmf_noised(ui, ri, None, 0, alpha, sigma))(u, radii)
        q = self.frame.astype(x.dtype)
        s2 = sigma * sigma
        log_p = jnp.sum(log_p) - jnp.sum(z_perp * z_perp) / (2.0 * s2) \
            + _gauss_const(self.dim, sigma)
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
        circ = self.radii[:, None] * jax.vmap(_unit)(u)
        return self.centre + jnp.dot(self.frame, circ.reshape(-1), precision=HIGHEST)

    def distance(self, x) -> jax.Array:
        """``sqrt(|x_perp|^2 + sum_i (|u_i| - R_i)^2)``."""
        _checks.check_point(x, self.dim)
        u, z_perp = self._coords(x)
        r = jax.vmap(lambda v: _safe_norm(v)[1])(u)
        return _safe_sqrt(jnp.sum(z_perp * z_perp) + jnp.sum((r - self.radii) ** 2))

    def tangent_basis(self, x) -> jax.Array:
        """``(d, m)`` orthonormal tangent basis: one unit tangent per circle."""
        _checks.check_point(x, self.dim)
        u, _ = self._coords(x)
        e = jax.vmap(_unit)(u)
        m = e.shape[0]
        tangents = jnp.zeros((m, m, 2), e.dtype).at[jnp.arange(m), jnp.arange(m)].set(
            jnp.stack([-e[:, 1], e[:, 0]], -1))
        return jnp.dot(self.frame, tangents.reshape(m, 2 * m).T, precision=HIGHEST)

    def normal_projector(self, x) -> jax.Array:
        """``(d, d)`` orthogonal projector onto the normal space at :meth:`project` ``(x)``."""
        return _normal_projector_from_tangent(self.tangent_basis(x))


# ---------------------------------------------------------------------------------------------
# Quadrature resolution checks
# ---------------------------------------------------------------------------------------------

_ON_COARSE = ("raise", "warn", "ignore")


def _check_on_coarse(on_coarse: str) -> None:
    if on_coarse not in _ON_COARSE:
        raise ValueError(f"on_coarse must be one of {_ON_COARSE}, got {on_coarse!r}")


def _check_resolution(owner: str, spacing, alpha, sigma, nodes: int, max_ratio: float,
                      on_coarse: str) -> None:
    """Refuse (or warn about) a quadrature grid too coarse for ``sigma``.

    The noised law is a Gaussian of width ``sigma`` smeared over the manifold; its nodes sit at
    ``alpha y_i``, a distance ``alpha h`` apart. Periodic trapezoid and Gauss-Legendre rules on
    such integrands lose about ``exp(-2 pi^2 (sigma / (alpha h))^2)`` relative accuracy, which is
    ~1e-8 at ``alpha h = sigma``. Only checked when the values are concrete (not under ``jit``).
    """
    if on_coarse == "ignore" or not all(_checks.is_concrete(v) for v in (spacing, alpha, sigma)):
        return
    h = float(np.max(np.asarray(spacing))) * float(alpha)
    s = float(sigma)
    if h <= max_ratio * s:
        return
    ratio = h / s
    if isinstance(nodes, tuple):
        need = tuple(int(math.ceil(n * ratio / max_ratio)) for n in nodes)
    else:
        need = int(math.ceil(nodes * ratio / max_ratio))
    msg = (f"{owner}: the quadrature is too coarse for sigma={s:.3g}: nodes are "
           f"alpha * spacing = {h:.3g} apart, {ratio:.3g} x sigma (at most {max_ratio:g} x "
           f"sigma keeps the noised law exact to ~1e-8). Increase nodes to at least {need}, or "
           f"use sigma >= {h / max_ratio:.3g}; on_coarse='warn' or 'ignore' accepts the error.")
    if on_coarse == "raise":
        raise ValueError(msg)
    warnings.warn(msg, UserWarning, stacklevel=4)


def _gauss_legendre_panels(lo: float, hi: float, nodes: int, order: int = 16):
    """Composite Gauss-Legendre: ``ceil(nodes / order)`` panels of ``order`` nodes (numpy)."""
    panels = max(1, -(-nodes // order))
    g, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(lo, hi, panels + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    t = (mid[:, None] + half[:, None] * g[None]).reshape(-1)
    wt = (half[:, None] * w[None]).reshape(-1)
    return t, wt


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
        _check_on_coarse(self.on_coarse)
        dtype = _checks.float_dtype(self.frame, self.centre, self.major_radius, self.minor_radius)
        frame = _make_frame(self.dim, 3, self.frame, key, dtype)
        big = _positive_scalar(self.major_radius, "major_radius", frame.dtype)
        small = _positive_scalar(self.minor_radius, "minor_radius", frame.dtype)
        if _checks.is_concrete(big) and _checks.is_concrete(small) and float(small) >= float(big):
            raise ValueError(f"minor_radius must be smaller than major_radius, got "
                             f"{float(small)} >= {float(big)}")
        object.__setattr__(self, "frame", frame)
        object.__setattr__(self, "centre", _make_centre(self.dim, self.centre, frame.dtype))
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
        x, alpha, sigma = _inputs(self, x, alpha, sigma)
        _check_resolution("RingTorus", self.spacing, alpha, sigma, self.nodes, 1.0,
                          self.on_coarse)
        q = self.frame.astype(x.dtype)
        z = x - alpha * self.centre.astype(x.dtype)
        y = jnp.dot(q.T, z, precision=HIGHEST)
        z_perp = z - jnp.dot(q, y, precision=HIGHEST)
        rho, height, log_w = self._tube_nodes(x.dtype)
        s2 = sigma * sigma
        log_c, score_c, dir_c, cov_c = jax.vmap(
            lambda r: _vmf_noised(y[:2], r, None, 0, alpha, sigma))(rho)
        dh = alpha * height - y[2]
        logits = log_w + log_c - dh * dh / (2.0 * s2)
        log_p = logsumexp(logits)
        post = jnp.exp(logits - log_p)
        score_y = jnp.concatenate([post @ score_c, (post @ dh)[None] / s2])
        m_plane = rho[:, None] * dir_c
        mean_y = jnp.concatenate([post @ m_plane, (post @ height)[None]])
        second = post @ (cov_c + jnp.sum(m_plane * m_plane, -1) + height * height)
        cov = jnp.maximum(second - jnp.sum(mean_y * mean_y), 0.0)
        log_p = log_p - jnp.sum(z_perp * z_perp) / (2.0 * s2) + _gauss_const(self.dim, sigma)
        score = jnp.dot(q, score_y, precision=HIGHEST) - z_perp / s2
        mean = self.centre.astype(x.dtype) + jnp.dot(q, mean_y, precision=HIGHEST)
        return MixtureStats(log_p, score, mean, cov)

    def point(self, phi, psi) -> jax.Array:
        """The point with ring angle ``phi`` and tube angle ``psi``."""
        rho = self.major_radius + self.minor_radius * jnp.cos(psi)
        y = jnp.stack([rho * jnp.cos(phi), rho * jnp.sin(phi), self.minor_radius * jnp.sin(psi)])
        return self.centre + jnp.dot(self.frame, y, precision=HIGHEST)

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
        e = _unit(y[:2])
        _, rho = _safe_norm(y[:2])
        tube = jnp.stack([rho - self.major_radius, y[2]])
        t = _unit(tube)
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
        _, rho = _safe_norm(y[:2])
        _, tube = _safe_norm(jnp.stack([rho - self.major_radius, y[2]]))
        return _safe_sqrt(jnp.sum(z_perp * z_perp) + (tube - self.minor_radius) ** 2)

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
        return _normal_projector_from_tangent(self.tangent_basis(x))


# ---------------------------------------------------------------------------------------------
# Curves by quadrature: nearest points by a grid search plus safeguarded Newton steps
# ---------------------------------------------------------------------------------------------


def _project_curve(curve, y, lo, hi, periodic: bool, grid: int, newton: int = 24):
    """Parameter of the nearest point of ``curve(t)`` (``t in [lo, hi]``) to ``y``.

    A grid search picks the basin of the global minimum; Newton steps on
    ``f(t) = (curve(t) - y) . curve'(t)``, each clipped to one grid cell (and to the domain),
    then converge quadratically inside it.
    """
    if periodic:
        ts = lo + (hi - lo) * jnp.arange(grid, dtype=y.dtype) / grid
    else:
        ts = jnp.linspace(lo, hi, grid, dtype=y.dtype)
    pts = jax.vmap(curve)(ts)
    t = ts[jnp.argmin(jnp.sum((pts - y) ** 2, -1))]
    cell = (hi - lo) / grid

    def step(_, t):
        g, dg = jax.jvp(curve, (t,), (jnp.ones_like(t),))
        _, ddg = jax.jvp(lambda s: jax.jvp(curve, (s,), (jnp.ones_like(s),))[1],
                         (t,), (jnp.ones_like(t),))
        f = jnp.dot(g - y, dg)
        fp = jnp.dot(dg, dg) + jnp.dot(g - y, ddg)
        delta = jnp.where(fp > 0, -f / jnp.where(fp > 0, fp, 1.0), -jnp.sign(f) * cell)
        t = t + jnp.clip(delta, -cell, cell)
        return t if periodic else jnp.clip(t, lo, hi)

    return lax.fori_loop(0, newton, step, t)


def _curve_tangent(curve, t):
    _, dg = jax.jvp(curve, (t,), (jnp.ones_like(t),))
    return dg / jnp.linalg.norm(dg)


@pytree_dataclass
class Ellipse(Density):
    """A law on an ellipse ``c + Q (a cos t, b sin t)`` in a plane of ``R^d``, by quadrature.

    Two laws: uniform in arc length (``kappa=None``; density of ``t`` proportional to the speed
    ``sqrt(a^2 sin^2 t + b^2 cos^2 t)``) or von Mises in the parameter angle ``t``
    (``exp(kappa cos(t - mu))``). The noised law is the isotropic mixture over ``nodes``
    equispaced angles with weights ``p(t_i) 2 pi / nodes`` (the periodic trapezoid rule,
    spectrally accurate): exact to ~1e-8 while ``alpha max(a, b) 2 pi / nodes <= sigma``; a
    coarser grid is refused or warned about (``on_coarse``).

    Args:
        axes: semi-axes ``(a, b)``, both positive.
        dim: ambient dimension ``d >= 2`` (static).
        kappa: ``None`` for the arc-length law, else the von Mises concentration ``>= 0``.
        mu: von Mises mean angle (ignored for the arc-length law).
        nodes: quadrature nodes (static).
        frame, centre, key: as in :class:`Circle`.
        on_coarse: ``"raise"``, ``"warn"`` or ``"ignore"`` a grid too coarse for sigma (static).
        chunk_size: nodes per streamed chunk of the mixture kernel (static).

    Example:
        >>> import jax, jax.numpy as jnp, manifold_scores as ms
        >>> ell = ms.Ellipse(axes=(2.0, 1.0))
        >>> float(ell.distance(jnp.array([0.0, 3.0])))
        2.0
    """

    axes: jax.Array | tuple = (2.0, 1.0)
    dim: int = static_field(default=2)
    kappa: jax.Array | float | None = None
    mu: jax.Array | float = 0.0
    nodes: int = static_field(default=4096)
    frame: jax.Array | None = None
    centre: jax.Array | None = None
    on_coarse: str = static_field(default="raise")
    chunk_size: int | None = static_field(default=mixtures.DEFAULT_CHUNK_SIZE)
    key: dataclasses.InitVar[jax.Array | None] = None

    intrinsic_dim = 1

    def __post_init__(self, key):
        if not isinstance(self.nodes, (int, np.integer)) or self.nodes < 8:
            raise ValueError(f"nodes must be an integer >= 8, got {self.nodes!r}")
        _check_on_coarse(self.on_coarse)
        axes = _checks.as_float_array(self.axes, "axes")
        if axes.shape != (2,):
            raise ValueError(f"axes must have shape (2,) (the semi-axes a, b), got {axes.shape}")
        _checks.check_positive(axes, "axes")
        dtype = _checks.float_dtype(self.frame, self.centre, axes)
        frame = _make_frame(self.dim, 2, self.frame, key, dtype)
        object.__setattr__(self, "frame", frame)
        object.__setattr__(self, "centre", _make_centre(self.dim, self.centre, frame.dtype))
        object.__setattr__(self, "axes", axes.astype(frame.dtype))
        if self.kappa is not None:
            object.__setattr__(self, "kappa", _nonnegative_scalar(self.kappa, "kappa", dtype))
        mu = _checks.as_float_array(self.mu, "mu")
        _checks.check_scalar(mu, "mu")
        object.__setattr__(self, "mu", mu.astype(frame.dtype))

    @property
    def spacing(self) -> jax.Array:
        """Largest distance between neighbouring nodes (at most ``max(a, b) 2 pi / nodes``)."""
        return jnp.max(self.axes) * (2.0 * math.pi / self.nodes)

    def min_sigma(self, alpha=1.0) -> jax.Array:
        """The smallest sigma the grid resolves exactly: ``alpha * spacing``."""
        return alpha * self.spacing

    def _plane(self, t):
        return self.axes * jnp.stack([jnp.cos(t), jnp.sin(t)], -1)

    def point(self, t) -> jax.Array:
        """The point at parameter angle ``t``."""
        t = jnp.asarray(t, self.frame.dtype)
        return self.centre + jnp.dot(self._plane(t), self.frame.T, precision=HIGHEST)

    def _log_density_unnormalised(self, t):
        if self.kappa is None:
            a, b = self.axes[0], self.axes[1]
            return 0.5 * jnp.log((a * jnp.sin(t)) ** 2 + (b * jnp.cos(t)) ** 2)
        return self.kappa * jnp.cos(t - self.mu)

    def _nodes(self, dtype):
        t = jnp.arange(self.nodes, dtype=dtype) * (2.0 * math.pi / self.nodes)
        lw = self._log_density_unnormalised(t).astype(dtype)
        return t, lw - logsumexp(lw)

    def log_prob_angle(self, t) -> jax.Array:
        """Clean log density of the parameter angle ``t`` w.r.t. ``dt`` (normalised by the rule)."""
        nodes = jnp.arange(self.nodes, dtype=self.frame.dtype) * (2.0 * math.pi / self.nodes)
        log_norm = logsumexp(self._log_density_unnormalised(nodes))
        return self._log_density_unnormalised(t) - log_norm - math.log(2.0 * math.pi / self.nodes)

    def stats(self, x, alpha, sigma) -> MixtureStats:
        """``(log p, score, E[X|x], tr Cov[X|x])`` of the quadrature mixture."""
        x, alpha, sigma = _inputs(self, x, alpha, sigma)
        _check_resolution("Ellipse", self.spacing, alpha, sigma, self.nodes, 1.0, self.on_coarse)
        t, lw = self._nodes(x.dtype)
        pts = self.centre.astype(x.dtype) + jnp.dot(
            self._plane(t).astype(x.dtype), self.frame.astype(x.dtype).T, precision=HIGHEST)
        return mixtures.isotropic(x, pts, lw, alpha, sigma, chunk_size=self.chunk_size)

    def sample(self, key, n: int) -> jax.Array:
        """``n`` exact draws; one key per sample.

        Arc length: ``t`` uniform, accepted with probability ``speed(t) / max(a, b)``; von Mises:
        the Wood (1994) sampler.
        """
        dtype = self.frame.dtype
        if self.kappa is not None:
            mean_dir = jnp.stack([jnp.cos(self.mu), jnp.sin(self.mu)]).astype(dtype)
            kappa = jnp.asarray(self.kappa, dtype)
            plane = jax.vmap(lambda kk: _sample_vmf(kk, mean_dir, kappa, 2, dtype))(
                jax.random.split(key, n))
            return self.point(jnp.arctan2(plane[:, 1], plane[:, 0]))
        a, b = self.axes[0], self.axes[1]
        top = jnp.maximum(a, b)

        def one(kk):
            def body(state):
                key, _, _ = state
                key, k1, k2 = jax.random.split(key, 3)
                t = jax.random.uniform(k1, (), dtype, 0.0, 2.0 * math.pi)
                speed = jnp.sqrt((a * jnp.sin(t)) ** 2 + (b * jnp.cos(t)) ** 2)
                return key, t, jax.random.uniform(k2, (), dtype) * top <= speed

            init = (kk, jnp.zeros((), dtype), jnp.array(False))
            return lax.while_loop(lambda st: ~st[2], body, init)[1]

        return self.point(jax.vmap(one)(jax.random.split(key, n)))

    def angle(self, x) -> jax.Array:
        """Parameter angle ``t`` of the nearest point of ``x`` (in ``[-pi, pi)``)."""
        _checks.check_point(x, self.dim)
        y = jnp.dot(self.frame.T, x - self.centre, precision=HIGHEST)
        t = _project_curve(self._plane, y, -math.pi, math.pi, True, 1024)
        return jnp.mod(t + math.pi, 2.0 * math.pi) - math.pi

    def project(self, x) -> jax.Array:
        """Nearest point (grid search plus Newton steps in the angle)."""
        return self.point(self.angle(x))

    def distance(self, x) -> jax.Array:
        """``|x - project(x)|``."""
        diff = x - self.project(x)
        return _safe_norm(diff)[1]

    def tangent_basis(self, x) -> jax.Array:
        """``(d, 1)`` unit tangent at the nearest point."""
        tan = _curve_tangent(self._plane, self.angle(x))
        return jnp.dot(self.frame, tan, precision=HIGHEST)[:, None]

    def normal_projector(self, x) -> jax.Array:
        """``(d, d)`` orthogonal projector onto the normal space at :meth:`project` ``(x)``."""
        return _normal_projector_from_tangent(self.tangent_basis(x))


# ---------------------------------------------------------------------------------------------
# Swiss roll: the height in closed form, the roll parameter by quadrature
# ---------------------------------------------------------------------------------------------


def _log_ndtr_diff(a, b):
    """``log(Phi(b) - Phi(a))`` for ``a < b``, from the tail where both are small."""
    upper = a + b > 0  # use Phi(-a) - Phi(-b) there
    hi = jnp.where(upper, -a, b)
    lo = jnp.where(upper, -b, a)
    l_hi, l_lo = log_ndtr(hi), log_ndtr(lo)
    return l_hi + jnp.log(-jnp.expm1(l_lo - l_hi))


_SEGMENT_GL = np.polynomial.legendre.leggauss(24)


def _segment(y, alpha, sigma, length):
    """Noised uniform law on a segment ``[0, L]``: ``alpha V + sigma Z`` with ``V ~ U(0, L)``.

    Returns ``(log p(y), d log p / dy, E[V|y], Var[V|y])``. When ``alpha L >= sigma`` the
    density is ``(Phi(b) - Phi(a)) / (alpha L)`` with ``a = -y/sigma``, ``b = (alpha L - y)/sigma``
    (log space, stable tails); below that the Gaussian is wider than the segment and a 24-node
    Gauss-Legendre rule in ``V`` is exact to rounding (it also covers ``alpha = 0``).
    """
    s2 = sigma * sigma
    wide = alpha * length >= sigma
    # closed form, at a safe alpha where it does not apply
    al = jnp.where(wide, alpha, sigma / length)
    a = -y / sigma
    b = (al * length - y) / sigma
    log_diff = _log_ndtr_diff(a, b)
    log_w = log_diff - jnp.log(al * length)
    half_log_2pi = 0.5 * _LOG_2PI
    pa = jnp.exp(-0.5 * a * a - half_log_2pi - log_diff)  # phi(a) / (Phi(b) - Phi(a))
    pb = jnp.exp(-0.5 * b * b - half_log_2pi - log_diff)
    d_w = (pa - pb) / sigma
    dd_w = (a * pa - b * pb) / s2 - d_w * d_w
    mean_w = (y + s2 * d_w) / al
    var_w = jnp.maximum((s2 + s2 * s2 * dd_w) / (al * al), 0.0)
    # Gauss-Legendre in V
    g, gw = (jnp.asarray(v, y.dtype) for v in _SEGMENT_GL)
    v = 0.5 * length * (g + 1.0)
    diff = alpha * v - y
    logits = jnp.log(0.5 * gw) - diff * diff / (2.0 * s2) - 0.5 * jnp.log(2.0 * math.pi * s2)
    log_n = logsumexp(logits)
    post = jnp.exp(logits - log_n)
    mean_n = post @ v
    var_n = jnp.maximum(post @ (v * v) - mean_n * mean_n, 0.0)
    return (jnp.where(wide, log_w, log_n), jnp.where(wide, d_w, post @ diff / s2),
            jnp.where(wide, mean_w, mean_n), jnp.where(wide, var_w, var_n))


_GL16 = np.polynomial.legendre.leggauss(16)


@functools.cache
def _panel_rule(nodes: int):
    """Composite 16-point Gauss-Legendre on ``[0, 1]``: nodes, weights, largest node gap."""
    t, w = _gauss_legendre_panels(0.0, 1.0, nodes)
    return t, w, float(np.max(np.diff(t)))


@pytree_dataclass
class SwissRoll(Density):
    """The swiss roll of scikit-learn's ``make_swiss_roll``, embedded in ``R^d``.

    ``X = c + s Q (t cos t, h, t sin t)`` with ``t in [t_min, t_max]`` (default
    ``[1.5 pi, 4.5 pi]``) and height ``h in [0, height]`` (default 21), ``s`` the ``scale``.
    Two laws: ``measure="parameter"`` (uniform in ``(t, h)``, as scikit-learn samples it) and
    ``measure="area"`` (uniform w.r.t. surface area, density in ``t`` proportional to
    ``sqrt(1 + t^2)``). The height is integrated in closed form (a difference of normal CDFs,
    in log space); ``t`` by composite Gauss-Legendre quadrature with ``nodes`` nodes, exact to
    ~1e-8 while ``alpha * spacing <= sigma`` (checked, see ``on_coarse``).

    Args:
        dim: ambient dimension ``d >= 3`` (static).
        scale: ``s > 0``, multiplies all coordinates.
        height: ``> 0``, the height range before scaling.
        t_min, t_max: the roll parameter's range, ``0 <= t_min < t_max``.
        measure: ``"parameter"`` or ``"area"`` (static).
        nodes: quadrature nodes in ``t`` (static).
        frame, centre, key: as in :class:`Sphere` (frame ``(d, 3)``; column 2 is the height).
        on_coarse: ``"raise"``, ``"warn"`` or ``"ignore"`` a grid too coarse for sigma (static).
        chunk_size: nodes per streamed chunk of the mixture kernel (static).

    Example:
        >>> import jax, manifold_scores as ms
        >>> roll = ms.SwissRoll(scale=0.1, measure="area")
        >>> x = roll.sample(jax.random.key(0), 2)
        >>> jax.vmap(roll.score, (0, None, None))(x, 1.0, 0.1).shape
        (2, 3)
    """

    dim: int = static_field(default=3)
    scale: jax.Array | float = 1.0
    height: jax.Array | float = 21.0
    t_min: jax.Array | float = 1.5 * math.pi
    t_max: jax.Array | float = 4.5 * math.pi
    measure: str = static_field(default="parameter")
    nodes: int = static_field(default=8192)
    frame: jax.Array | None = None
    centre: jax.Array | None = None
    on_coarse: str = static_field(default="raise")
    chunk_size: int | None = static_field(default=mixtures.DEFAULT_CHUNK_SIZE)
    key: dataclasses.InitVar[jax.Array | None] = None

    intrinsic_dim = 2

    def __post_init__(self, key):
        if self.measure not in ("area", "parameter"):
            raise ValueError(f"measure must be 'area' or 'parameter', got {self.measure!r}")
        if not isinstance(self.nodes, (int, np.integer)) or self.nodes < 16:
            raise ValueError(f"nodes must be an integer >= 16, got {self.nodes!r}")
        _check_on_coarse(self.on_coarse)
        dtype = _checks.float_dtype(self.frame, self.centre, self.scale, self.height)
        frame = _make_frame(self.dim, 3, self.frame, key, dtype)
        object.__setattr__(self, "frame", frame)
        object.__setattr__(self, "centre", _make_centre(self.dim, self.centre, frame.dtype))
        for name in ("scale", "height"):
            object.__setattr__(self, name, _positive_scalar(getattr(self, name), name, dtype))
        t_min = _nonnegative_scalar(self.t_min, "t_min", dtype)
        t_max = _positive_scalar(self.t_max, "t_max", dtype)
        if _checks.is_concrete(t_min) and _checks.is_concrete(t_max) and t_max <= t_min:
            raise ValueError(f"t_max must exceed t_min, got t_min={t_min}, t_max={t_max}")
        object.__setattr__(self, "t_min", t_min)
        object.__setattr__(self, "t_max", t_max)

    @property
    def spacing(self) -> jax.Array:
        """Largest distance between neighbouring nodes: top speed times the largest ``t`` gap."""
        gap = _panel_rule(self.nodes)[2] * (self.t_max - self.t_min)
        return self.scale * jnp.sqrt(1.0 + self.t_max**2) * gap

    def min_sigma(self, alpha=1.0) -> jax.Array:
        """The smallest sigma the grid resolves exactly: ``alpha * spacing``."""
        return alpha * self.spacing

    def _roll(self, t):
        """In-frame coordinates ``s (t cos t, 0, t sin t)``."""
        zero = jnp.zeros_like(t)
        return self.scale * jnp.stack([t * jnp.cos(t), zero, t * jnp.sin(t)], -1)

    def _log_density_t(self, t):
        if self.measure == "area":
            return 0.5 * jnp.log1p(t * t)
        return jnp.zeros_like(t)

    def _nodes(self, dtype):
        u, w, _ = _panel_rule(self.nodes)
        t_min, t_max = jnp.asarray(self.t_min, dtype), jnp.asarray(self.t_max, dtype)
        t = t_min + (t_max - t_min) * jnp.asarray(u, dtype)
        lw = jnp.log(jnp.asarray(w, dtype)) + self._log_density_t(t)
        return t, lw - logsumexp(lw)

    def point(self, t, h) -> jax.Array:
        """The point at roll parameter ``t`` and height ``h`` (before scaling)."""
        y = self._roll(jnp.asarray(t, self.frame.dtype)) + jnp.stack(
            [0.0, self.scale * h, 0.0]).astype(self.frame.dtype)
        return self.centre + jnp.dot(self.frame, y, precision=HIGHEST)

    def stats(self, x, alpha, sigma) -> MixtureStats:
        """``(log p, score, E[X|x], tr Cov[X|x])``: height closed form, quadrature in ``t``."""
        x, alpha, sigma = _inputs(self, x, alpha, sigma)
        _check_resolution("SwissRoll", self.spacing, alpha, sigma, self.nodes, 1.0,
                          self.on_coarse)
        q = self.frame.astype(x.dtype)
        z = x - alpha * self.centre.astype(x.dtype)
        axis = q[:, 1]
        y_h = jnp.dot(axis, z, precision=HIGHEST)
        z_roll = z - y_h * axis  # nodes have no height component, so it separates
        t, lw = self._nodes(x.dtype)
        pts = jnp.dot(self._roll(t).astype(x.dtype), q.T, precision=HIGHEST)
        mix = mixtures.isotropic(z_roll, pts, lw, alpha, sigma, chunk_size=self.chunk_size)
        length = (self.scale * self.height).astype(x.dtype)
        log_h, d_h, mean_h, var_h = _segment(y_h, alpha, sigma, length)
        # the mixture counted the height direction as N(0; 0, sigma^2); swap in the segment law
        log_p = mix.log_prob + 0.5 * (_LOG_2PI + 2.0 * jnp.log(sigma)) + log_h
        score = mix.score + d_h * axis
        mean = self.centre.astype(x.dtype) + mix.mean + mean_h * axis
        return MixtureStats(log_p, score, mean, mix.cov_trace + var_h)

    def sample(self, key, n: int) -> jax.Array:
        """``n`` exact draws: ``h`` uniform; ``t`` uniform, for the area law accepted with
        probability ``sqrt(1 + t^2) / sqrt(1 + t_max^2)``."""
        dtype = self.frame.dtype
        t_min, t_max = jnp.asarray(self.t_min, dtype), jnp.asarray(self.t_max, dtype)

        def uniform_t(kk):
            return jax.random.uniform(kk, (), dtype, t_min, t_max)

        if self.measure == "parameter":
            draw_t = uniform_t
        else:
            def draw_t(kk):
                def body(state):
                    key, _, _ = state
                    key, k1, k2 = jax.random.split(key, 3)
                    t = uniform_t(k1)
                    u = jax.random.uniform(k2, (), dtype)
                    return key, t, u * jnp.sqrt(1.0 + t_max**2) <= jnp.sqrt(1.0 + t * t)

                init = (kk, jnp.zeros((), dtype), jnp.array(False))
                return lax.while_loop(lambda st: ~st[2], body, init)[1]

        def one(kk):
            k1, k2 = jax.random.split(kk)
            return self.point(draw_t(k1), jax.random.uniform(k2, (), dtype) * self.height)

        return jax.vmap(one)(jax.random.split(key, n))

    def coordinates(self, x) -> jax.Array:
        """``(t, h)`` of the nearest point."""
        _checks.check_point(x, self.dim)
        y = jnp.dot(self.frame.T, x - self.centre, precision=HIGHEST)
        h = jnp.clip(y[1] / self.scale, 0.0, self.height)
        plane = jnp.stack([y[0], y[2]])

        def curve(t):
            r = self._roll(t)
            return jnp.stack([r[0], r[2]])

        t = _project_curve(curve, plane, self.t_min, self.t_max, False, 4096)
        return jnp.stack([t, h])

    def project(self, x) -> jax.Array:
        """Nearest point: ``h`` clipped, ``t`` by grid search plus Newton steps."""
        th = self.coordinates(x)
        return self.point(th[0], th[1])

    def distance(self, x) -> jax.Array:
        """``|x - project(x)|``."""
        return _safe_norm(x - self.project(x))[1]

    def tangent_basis(self, x) -> jax.Array:
        """``(d, 2)``: the roll direction and the height direction at the nearest point."""
        t = self.coordinates(x)[0]
        tan = _curve_tangent(self._roll, t)
        e_h = jnp.zeros((3,), tan.dtype).at[1].set(1.0)
        return jnp.dot(self.frame, jnp.stack([tan, e_h], 1), precision=HIGHEST)

    def normal_projector(self, x) -> jax.Array:
        """``(d, d)`` orthogonal projector onto the normal space at :meth:`project` ``(x)``."""
        return _normal_projector_from_tangent(self.tangent_basis(x))


# ---------------------------------------------------------------------------------------------
# Any chart by quadrature
# ---------------------------------------------------------------------------------------------


def _axis_rule(lo: float, hi: float, n: int, periodic: bool):
    if periodic:  # the trapezoid rule, spectrally accurate for periodic integrands
        return lo + (hi - lo) * np.arange(n) / n, np.full(n, (hi - lo) / n)
    return _gauss_legendre_panels(lo, hi, n)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _chart_nodes(chart, log_density, area: bool, params, log_w):
    """Embedded nodes and normalised log-weights ``log(density * sqrt(det J^T J) * w)``."""
    points = jax.vmap(chart)(params)
    if area:
        jac = jax.vmap(jax.jacfwd(chart))(params)
        gram = jnp.einsum("ndi,ndj->nij", jac, jac, precision=HIGHEST)
        log_w = log_w + 0.5 * jnp.linalg.slogdet(gram)[1]
    if log_density is not None:
        log_w = log_w + jax.vmap(log_density)(params).astype(log_w.dtype)
    return points, log_w - logsumexp(log_w)


@pytree_dataclass
class Parametric(Density):
    """Any manifold given by a chart, by quadrature over a box of parameters.

    ``X = chart(theta)``, ``theta`` in the box ``domain`` with density ``exp(log_density)``
    w.r.t. the surface measure (``measure="area"``; ``log_density=None`` is the uniform law on
    the surface) or w.r.t. Lebesgue measure on the box (``measure="parameter"``). The noised
    law is the isotropic mixture over a product grid: per axis the periodic trapezoid rule
    (``periodic``) or composite 16-point Gauss-Legendre, with log-weights
    ``log(density * sqrt(det(J^T J)) * cell weight)`` normalised to sum to one. Nodes are
    fixed at construction; the noised law is exact to ~1e-8 while
    ``alpha * spacing <= max_spacing_ratio * sigma`` (``spacing``: the largest distance between
    neighbouring embedded nodes). A coarser grid raises a ``ValueError`` (or warns, per
    ``on_coarse``) that says how many nodes or which sigma would do; the check needs concrete
    values, so under ``jit`` call :meth:`check_resolution` yourself.

    Args:
        chart: ``theta (m,) -> point (d,)``, differentiable (static; hashable).
        domain: ``(m, 2)`` box ``[[lo_1, hi_1], ...]`` (concrete).
        log_density: optional ``theta -> log density`` (unnormalised is fine; static).
        nodes: nodes per axis, an int or an ``m``-tuple (static). Gauss-Legendre axes round up
            to a multiple of 16.
        periodic: bool or ``m``-tuple: whether the chart is periodic along each axis (static).
        measure: ``"area"`` or ``"parameter"`` (static).
        on_coarse: ``"raise"``, ``"warn"`` or ``"ignore"`` (static).
        max_spacing_ratio: the largest ``alpha * spacing / sigma`` accepted (static).
        chunk_size: nodes per streamed chunk of the mixture kernel (static).

    Example:
        >>> import jax.numpy as jnp, manifold_scores as ms
        >>> circle = lambda th: jnp.stack([jnp.cos(th[0]), jnp.sin(th[0])])
        >>> m = ms.Parametric(circle, [[0.0, 2 * jnp.pi]], nodes=256, periodic=True)
        >>> bool(jnp.isfinite(m.log_prob(jnp.array([1.0, 0.0]), 1.0, 0.1)))
        True
    """

    chart: Callable = static_field()
    domain: jax.Array
    log_density: Callable | None = static_field(default=None)
    nodes: int | tuple = static_field(default=256)
    periodic: bool | tuple = static_field(default=False)
    measure: str = static_field(default="area")
    on_coarse: str = static_field(default="raise")
    max_spacing_ratio: float = static_field(default=1.0)
    chunk_size: int | None = static_field(default=mixtures.DEFAULT_CHUNK_SIZE)
    params: jax.Array | None = None  # computed: (N, m) quadrature nodes
    points: jax.Array | None = None  # computed: (N, d) embedded nodes
    log_weights: jax.Array | None = None  # computed: (N,) normalised log-weights
    spacing: jax.Array | None = None  # computed: largest neighbour distance

    def __post_init__(self):
        if self.points is not None:
            return  # rebuilt from leaves (tree_unflatten) or already computed
        if not callable(self.chart):
            raise ValueError("chart must be a callable theta (m,) -> point (d,)")
        if self.measure not in ("area", "parameter"):
            raise ValueError(f"measure must be 'area' or 'parameter', got {self.measure!r}")
        _check_on_coarse(self.on_coarse)
        if not _checks.is_concrete(jnp.asarray(self.domain)):
            raise ValueError("domain must be concrete (the nodes are built at construction)")
        domain = np.asarray(self.domain, np.float64)
        if domain.ndim != 2 or domain.shape[1] != 2 or domain.shape[0] < 1:
            raise ValueError(f"domain must have shape (m, 2), got {domain.shape}")
        if not np.all(np.isfinite(domain)) or np.any(domain[:, 1] <= domain[:, 0]):
            raise ValueError(f"domain rows must be finite [lo, hi] with lo < hi, got {domain}")
        m = domain.shape[0]
        nodes = (self.nodes,) * m if isinstance(self.nodes, (int, np.integer)) else \
            tuple(self.nodes)
        periodic = (self.periodic,) * m if isinstance(self.periodic, bool) else \
            tuple(self.periodic)
        if len(nodes) != m or any(not isinstance(n, (int, np.integer)) or n < 2 for n in nodes):
            raise ValueError(f"nodes must be an int >= 2 or a tuple of {m} of them, got "
                             f"{self.nodes!r}")
        if len(periodic) != m:
            raise ValueError(f"periodic must be a bool or a tuple of {m}, got {self.periodic!r}")
        rules = [_axis_rule(lo, hi, n, p)
                 for (lo, hi), n, p in zip(domain, nodes, periodic, strict=True)]
        shape = tuple(len(t) for t, _ in rules)
        grids = np.meshgrid(*[t for t, _ in rules], indexing="ij")
        wgrid = np.meshgrid(*[w for _, w in rules], indexing="ij")
        dtype = jnp.result_type(float)
        params = jnp.asarray(np.stack([g.reshape(-1) for g in grids], -1), dtype)
        log_w = jnp.asarray(sum(np.log(w.reshape(-1)) for w in wgrid), dtype)
        out = jax.eval_shape(jax.vmap(self.chart), params)
        if len(out.shape) != 2:
            raise ValueError(f"chart must map (m,) to (d,), got output shape {out.shape[1:]}")
        points, log_w = _chart_nodes(self.chart, self.log_density, self.measure == "area",
                                     params, log_w)
        grid_pts = np.asarray(points, np.float64).reshape(shape + (points.shape[1],))
        gaps = []
        for axis, p in enumerate(periodic):
            nxt = np.roll(grid_pts, -1, axis) if p else np.take(
                grid_pts, np.arange(1, shape[axis]), axis)
            cur = grid_pts if p else np.take(grid_pts, np.arange(shape[axis] - 1), axis)
            gaps.append(np.max(np.linalg.norm(nxt - cur, axis=-1)))
        object.__setattr__(self, "domain", jnp.asarray(domain, dtype))
        object.__setattr__(self, "nodes", shape if m > 1 else shape[0])
        object.__setattr__(self, "periodic", periodic if m > 1 else periodic[0])
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "log_weights", log_w)
        object.__setattr__(self, "spacing", jnp.asarray(max(gaps), dtype))

    @property
    def dim(self) -> int:
        return self.points.shape[1]

    @property
    def intrinsic_dim(self) -> int:
        return self.params.shape[1]

    def _periodic_tuple(self):
        m = self.intrinsic_dim
        return (self.periodic,) * m if isinstance(self.periodic, bool) else tuple(self.periodic)

    def min_sigma(self, alpha=1.0) -> jax.Array:
        """The smallest sigma the grid resolves: ``alpha * spacing / max_spacing_ratio``."""
        return alpha * self.spacing / self.max_spacing_ratio

    def check_resolution(self, alpha, sigma) -> None:
        """Raise (or warn, per ``on_coarse``) if the grid is too coarse for ``sigma``."""
        _check_resolution("Parametric", self.spacing, alpha, sigma, self.nodes,
                          self.max_spacing_ratio, self.on_coarse)

    def stats(self, x, alpha, sigma) -> MixtureStats:
        """``(log p, score, E[X|x], tr Cov[X|x])`` of the quadrature mixture."""
        _checks.check_point(x, self.dim)
        alpha, sigma = _checks.check_noise_levels(alpha, sigma)
        self.check_resolution(alpha, sigma)
        return mixtures.isotropic(x, self.points, self.log_weights, alpha, sigma,
                                  chunk_size=self.chunk_size)

    def sample(self, key, n: int) -> jax.Array:
        """``n`` points: a node drawn by weight, its parameters jittered within the cell."""
        lo, hi = self.domain[:, 0], self.domain[:, 1]
        cell = (hi - lo) / jnp.asarray(
            self.nodes if isinstance(self.nodes, tuple) else (self.nodes,), lo.dtype)

        def one(kk):
            k1, k2 = jax.random.split(kk)
            i = jax.random.categorical(k1, self.log_weights)
            jitter = (jax.random.uniform(k2, lo.shape, lo.dtype) - 0.5) * cell
            return self._wrap(self.params[i] + jitter)

        return jax.vmap(lambda kk: self.chart(one(kk)))(jax.random.split(key, n))

    def _wrap(self, theta):
        lo, hi = self.domain[:, 0], self.domain[:, 1]
        periodic = jnp.asarray(self._periodic_tuple())
        wrapped = lo + jnp.mod(theta - lo, hi - lo)
        return jnp.where(periodic, wrapped, jnp.clip(theta, lo, hi))

    def coordinates(self, x, steps: int = 30) -> jax.Array:
        """Parameters of the nearest point: nearest node, then clipped Gauss-Newton steps."""
        _checks.check_point(x, self.dim)
        diff = self.points - x
        theta = self.params[jnp.argmin(jnp.sum(diff * diff, -1))]
        lo, hi = self.domain[:, 0], self.domain[:, 1]
        cell = (hi - lo) / jnp.asarray(
            self.nodes if isinstance(self.nodes, tuple) else (self.nodes,), lo.dtype)

        def step(_, th):
            jac = jax.jacfwd(self.chart)(th)
            res = x - self.chart(th)
            gram = jnp.dot(jac.T, jac, precision=HIGHEST)
            delta = jnp.linalg.solve(gram, jnp.dot(jac.T, res, precision=HIGHEST))
            return self._wrap(th + jnp.clip(delta, -cell, cell))

        return lax.fori_loop(0, steps, step, theta)

    def project(self, x) -> jax.Array:
        """Nearest point ``chart(coordinates(x))``."""
        return self.chart(self.coordinates(x))

    def distance(self, x) -> jax.Array:
        """``|x - project(x)|``."""
        return _safe_norm(x - self.project(x))[1]

    def tangent_basis(self, x) -> jax.Array:
        """``(d, m)`` orthonormal basis of the chart's tangent space at the nearest point."""
        jac = jax.jacfwd(self.chart)(self.coordinates(x))
        return jnp.linalg.qr(jac)[0]

    def normal_projector(self, x) -> jax.Array:
        """``(d, d)`` orthogonal projector onto the normal space at :meth:`project` ``(x)``."""
        return _normal_projector_from_tangent(self.tangent_basis(x))

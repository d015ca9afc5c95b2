"""Special functions of the von Mises-Fisher normaliser on round spheres (private).

For the uniform law ``U`` on the unit sphere ``S^{k-1}`` and ``nu = k/2 - 1``,
``S_nu(K) = int exp(w . theta) dU(theta) = Gamma(nu + 1) (2/K)^nu I_nu(K)`` with ``K = |w|``, and
``d log S_nu / dK = A(K) = I_{nu+1}(K) / I_nu(K)`` (the mean resultant length). Everything is
evaluated in scaled form, so nothing overflows at huge ``K`` (tiny sigma) and the defect
``1 - A(K) ~ (k - 1) / (2K)``, where the normal part of a sphere's score lives, keeps full relative
precision. Arguments come squared (``w_sq = K^2``): smooth at ``K = 0``, no square root there.

Example:
    >>> import jax.numpy as jnp
    >>> from manifold_scores.densities.manifolds import _special
    >>> a, defect = _special.mean_resultant_length(0, jnp.float32(1e8))  # circle, K = 1e4
    >>> round(float(defect) * 2e4, 3)  # 1 - A ~ 1/(2K)
    1.0
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp

__all__ = ["BesselBranches", "bessel", "log_vmf_normaliser", "mean_resultant_length"]

_LOG_2PI = math.log(2.0 * math.pi)

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


class BesselTable(NamedTuple):
    nu: float
    threshold: float
    log_series: np.ndarray  # log of the power-series coefficients of S_nu in q
    hankel: np.ndarray  # coefficients of P_nu in s = T / K (scaled by T^-j)
    hankel_gap: np.ndarray  # coefficients of P_nu - P_{nu+1} in s
    fraction_terms: int


@functools.cache
def bessel_table(two_nu: int) -> BesselTable:
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
    return BesselTable(nu, threshold, np.asarray(log_series), np.asarray(hankel[:length]),
                        np.asarray(gap[:length]), len(log_series) + 10)


class BesselBranches(NamedTuple):
    """Both branches of the vMF normaliser at ``w_sq = K^2``, each evaluated at a safe input."""

    large: jax.Array  # True where the Hankel branch applies (K > T)
    log_s_small: jax.Array  # log S_nu(K), series branch
    a_over_k_small: jax.Array  # A(K) / K, series branch
    k_large: jax.Array  # K, Hankel branch (>= T)
    g_large: jax.Array  # log S_nu(K) - K, Hankel branch
    defect_large: jax.Array  # 1 - A(K), Hankel branch


@functools.partial(jax.jit, static_argnums=0)
def bessel(two_nu: int, w_sq: jax.Array) -> BesselBranches:
    tab = bessel_table(two_nu)
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
    return BesselBranches(large, log_s_small, a_over_k_small, k_large, g_large, defect_large)


@functools.partial(jax.jit, static_argnums=0)
def log_vmf_normaliser(two_nu: int, w_sq: jax.Array) -> jax.Array:
    """``log S_nu(|w|) = log int exp(w . theta) dU(theta)`` on ``S^{k-1}``, ``two_nu = k - 2``."""
    b = bessel(two_nu, w_sq)
    return jnp.where(b.large, b.k_large + b.g_large, b.log_s_small)


@functools.partial(jax.jit, static_argnums=0)
def mean_resultant_length(two_nu: int, w_sq: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(A(K), 1 - A(K))`` with ``A = I_{nu+1}(K) / I_nu(K)``, ``two_nu = k - 2``.

    The defect ``1 - A`` comes from the exact Hankel coefficient differences at large ``K``, so
    it keeps its relative precision where ``A`` rounds to one.
    """
    b = bessel(two_nu, w_sq)
    k_small = jnp.sqrt(jnp.minimum(w_sq, bessel_table(two_nu).threshold ** 2))
    a_small = k_small * b.a_over_k_small
    a = jnp.where(b.large, 1.0 - b.defect_large, a_small)
    return a, jnp.where(b.large, b.defect_large, 1.0 - a_small)

"""The von Mises-Fisher law on a round sphere (private): its noised statistics and sampler.

``X = R theta`` with ``theta`` on ``S^{k-1}`` and density ``exp(b . theta) / S_nu(|b|)``
w.r.t. the uniform law (``b = 0``: uniform). Noising it by ``alpha X + sigma Z`` integrates
``theta`` out in closed form (:func:`noised_vmf`); draws use Wood's (1994) rejection sampler
(:func:`sample_vmf`). The spheres, the flat torus and the ring torus are built on these.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from manifold_scores.densities.manifolds._geometry import complement_basis, safe_norm
from manifold_scores.densities.manifolds._special import bessel, log_vmf_normaliser

__all__ = ["noised_vmf", "sample_vmf"]


def noised_vmf(u, radius, bias, two_nu: int, alpha, sigma):
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
    r_sq, r = safe_norm(u)
    b = bessel(two_nu, w_sq)
    big_k = b.k_large
    if bias is None:  # the uniform law: K = a r exactly
        k_minus_ar, a_bias, log_norm = 0.0, 0.0, 0.0
    else:  # K - a r = (K^2 - a^2 r^2) / (K + a r), without cancellation
        k_minus_ar = (2.0 * a * jnp.dot(u, bias) + jnp.sum(bias * bias)) / (big_k + a * r)
        a_bias = a * bias
        log_norm = log_vmf_normaliser(two_nu, jnp.sum(bias * bias))
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


def sample_vmf(key, mean_dir, kappa, k: int, dtype):
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
    v = complement_basis(mean_dir) @ (v / jnp.linalg.norm(v))
    return w * mean_dir + jnp.sqrt(jnp.maximum(1.0 - w * w, 0.0)) * v

"""Independent references for tests, the ``demo``/``verify`` command and benchmarks.

These are the slow, obvious algorithms: dense covariances through ``jnp.linalg`` and
materialised pairwise differences. They share no code with :mod:`manifold_scores.mixtures`, so
agreement between the two is evidence, and the naive isotropic kernel is the baseline that the
streamed kernel is timed against.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from manifold_scores._api import public_dir as _public_dir
from manifold_scores.mixtures import MixtureStats

__all__ = ["dense_mixture_stats", "naive_isotropic_stats", "molrg_dense_parts"]


def dense_mixture_stats(x, means, covs, log_weights, alpha, sigma) -> MixtureStats:
    """Exact statistics of ``alpha X + sigma Z`` for ``X ~ sum_k pi_k N(mu_k, Sigma_k)``.

    NumPy in float64 (no tracing, no compilation): each ``d x d`` noised covariance
    ``C_k = alpha^2 Sigma_k + sigma^2 I`` goes through ``slogdet`` and ``solve``; ``O(K d^3)``, for
    references only. Returns NumPy values, ``divergence`` included. ``sigma = 0`` is fine when
    every ``Sigma_k`` has full rank.

    Args:
        x: ``(d,)``; means: ``(K, d)``; covs: ``(K, d, d)`` clean covariances;
        log_weights: ``(K,)``; alpha, sigma: scalars.
    """
    x, means, covs, log_weights = (np.asarray(a, np.float64) for a in (x, means, covs, log_weights))
    alpha, sigma = float(alpha), float(sigma)
    d = x.shape[0]
    c = alpha**2 * covs + sigma**2 * np.eye(d)
    z = x - alpha * means  # (K, d)
    sol = np.linalg.solve(c, z[..., None])[..., 0]
    logdet = np.linalg.slogdet(c)[1]
    logps = log_weights - 0.5 * (np.sum(z * sol, -1) + logdet + d * math.log(2 * math.pi))
    post_means = means + alpha * np.einsum("kde,ke->kd", covs, sol)
    # Cov[X|x] = Sigma - alpha^2 Sigma C^-1 Sigma = sigma^2 C^-1 Sigma: no cancellation
    traces = sigma**2 * np.trace(np.linalg.solve(c, covs), axis1=-2, axis2=-1)
    top = logps.max()
    w = np.exp(logps - top)
    w /= w.sum()
    mean = w @ post_means
    spread = np.sum(w * np.sum((post_means - mean) ** 2, -1))
    log_prob = top + np.log(np.sum(np.exp(logps - top)))
    score = -(w @ sol)
    # div s = -E_w tr C_k^{-1} + E_w |s_k|^2 - |E_w s_k|^2,  s_k = -C_k^{-1} z_k
    prec_traces = np.trace(np.linalg.inv(c), axis1=-2, axis2=-1)
    div = -(w @ prec_traces) + w @ np.sum(sol * sol, -1) - score @ score
    return MixtureStats(log_prob, score, mean, w @ traces + spread, div)


def molrg_dense_parts(mix):
    """``(means, covs, log_weights)`` of a :class:`~manifold_scores.MoLRG` (dense reference)."""
    means = jnp.zeros((mix.num_components, mix.dim), mix.bases.dtype) if mix.means is None \
        else mix.means
    return means, mix.covariance(), mix.log_weights


def naive_isotropic_stats(x, points, log_weights, alpha, sigma) -> MixtureStats:
    """Isotropic mixture statistics from materialised differences ``alpha y_i - x`` (``O(N d)``).

    Two-pass and exact in any dtype, but under ``vmap`` it forms a ``(batch, N, d)`` array: this
    is the baseline the streamed kernel is compared with.
    """
    d = x.shape[0]
    diff = alpha * points - x
    logits = log_weights - jnp.sum(diff * diff, -1) / (2 * sigma**2)
    w = jax.nn.softmax(logits)
    delta = w @ diff
    mean = w @ points
    spread = jnp.sum(w * jnp.sum((points - mean) ** 2, -1))
    log_prob = jax.scipy.special.logsumexp(logits) - 0.5 * d * jnp.log(2 * math.pi * sigma**2)
    return MixtureStats(log_prob, delta / sigma**2, mean, spread)

__dir__ = _public_dir(__all__)

"""The result of every mixture kernel: :class:`MixtureStats`, and the score's divergence."""

from __future__ import annotations

from typing import NamedTuple

import jax

from manifold_scores._api import public_dir as _public_dir

__all__ = ["MixtureStats", "divergence"]


class MixtureStats(NamedTuple):
    """Posterior statistics at one point ``x`` of ``Y = alpha X + sigma Z``.

    Attributes:
        log_prob: ``log p(x)``, shape ``()``.
        score: ``grad_x log p(x)``, shape ``(d,)``.
        mean: ``E[X | Y = x]`` (the denoiser), shape ``(d,)``.
        cov_trace: ``tr Cov[X | Y = x]``, shape ``()``.
        divergence: ``div_x score = Laplacian log p(x)``, shape ``()``, where the kernel
            computes it directly (the mixture kernels do; ``None`` otherwise: then
            :func:`divergence` derives it from ``cov_trace``).
    """

    log_prob: jax.Array
    score: jax.Array
    mean: jax.Array
    cov_trace: jax.Array
    divergence: jax.Array | None = None


def divergence(stats: MixtureStats, alpha, sigma):
    """Divergence of the score without autodiff.

    ``stats.divergence`` when the kernel filled it (valid at ``sigma = 0`` for the low-rank
    kernel with a noise floor), else ``-d/sigma^2 + alpha^2 tr Cov[X|x] / sigma^4``.
    """
    if stats.divergence is not None:
        return stats.divergence
    d = stats.score.shape[-1]
    s2 = sigma * sigma
    return -d / s2 + alpha * alpha * stats.cov_trace / (s2 * s2)

__dir__ = _public_dir(__all__)

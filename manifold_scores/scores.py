"""Score parameterisations: conversions between score, eps, x0 and v, and scores as functions of t.

Under ``x = alpha x0 + sigma eps`` the four targets a network may predict are

    score = -eps / sigma,     x0 = (x - sigma eps) / alpha,     v = alpha eps - sigma x0,

and they determine each other given ``(x, alpha, sigma)``. Tweedie's formula is the
``x0 <-> score`` pair: ``E[X0 | x] = (x + sigma^2 score) / alpha``.

Example:
    >>> import jax.numpy as jnp
    >>> from manifold_scores import scores
    >>> x, eps = jnp.ones(2), jnp.array([0.5, -1.0])
    >>> s = scores.convert(eps, x, 1.0, 0.5, source="eps", target="score")
    >>> bool(jnp.allclose(s, -eps / 0.5))
    True
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from manifold_scores._api import public_dir as _public_dir
from manifold_scores._pytree import pytree_dataclass

__all__ = ["PARAMETERISATIONS", "DenoiserFn", "ScoreFn", "convert", "denoiser_fn", "score_fn",
           "tweedie"]

PARAMETERISATIONS = ("score", "eps", "x0", "v")


def _to_eps(value, x, alpha, sigma, source):
    if source == "eps":
        return value
    if source == "score":
        return -sigma * value
    if source == "x0":
        return (x - alpha * value) / sigma
    # v = alpha eps - sigma x0, x = alpha x0 + sigma eps  =>  eps = (sigma x + alpha v)/(a^2+s^2)
    return (sigma * x + alpha * value) / (alpha * alpha + sigma * sigma)


def _from_eps(eps, x, alpha, sigma, target):
    if target == "eps":
        return eps
    if target == "score":
        return -eps / sigma
    x0 = (x - sigma * eps) / alpha
    if target == "x0":
        return x0
    return alpha * eps - sigma * x0


def convert(value, x, alpha, sigma, *, source: str, target: str):
    """Convert a prediction between ``"score"``, ``"eps"``, ``"x0"`` and ``"v"``.

    Args:
        value: the prediction, shape ``(d,)``.
        x: the noisy point it was made at, shape ``(d,)``.
        alpha, sigma: noise levels at that point.
        source, target: parameterisation names from :data:`PARAMETERISATIONS`.

    The ``x0 -> score`` path never divides by ``alpha``; the ``x0`` and ``v`` targets do when
    converting from eps or score (they are undefined at ``alpha = 0``).
    """
    for name, p in (("source", source), ("target", target)):
        if p not in PARAMETERISATIONS:
            raise ValueError(f"{name} must be one of {PARAMETERISATIONS}, got {p!r}")
    if jnp.shape(value) != jnp.shape(x):
        raise ValueError(f"value and x must have the same shape, got {jnp.shape(value)} and "
                         f"{jnp.shape(x)}")
    if source == target:
        return value
    if source == "x0" and target == "score":  # Tweedie, without the 1/sigma round trip
        return (alpha * value - x) / (sigma * sigma)
    if source == "score" and target == "x0":
        return tweedie(value, x, alpha, sigma)
    return _from_eps(_to_eps(value, x, alpha, sigma, source), x, alpha, sigma, target)


def tweedie(score, x, alpha, sigma):
    """Posterior mean from the score: ``E[X0 | x] = (x + sigma^2 score(x)) / alpha``."""
    return (x + sigma * sigma * score) / alpha


@pytree_dataclass
class ScoreFn:
    """``score(x, t) = density.score(x, alpha(t), sigma(t))``: the exact score along a process.

    A callable PyTree: the density and the process are its children, so samplers take it as a
    traced ``jit`` argument (a fresh ``score_fn(mix, proc)`` of the same structure reuses the
    compiled sampler) and ``jax.grad`` reaches the density's arrays. Hashed and compared by
    identity, so ``jax.jit(score)`` also works.
    """

    density: Any
    process: Any

    def __call__(self, x, t):
        return self.density.score(x, self.process.alpha(t), self.process.sigma(t))

    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other


@pytree_dataclass
class DenoiserFn:
    """``denoise(x, t) = E[X0 | x_t = x]`` along a process; a callable PyTree like
    :class:`ScoreFn`."""

    density: Any
    process: Any

    def __call__(self, x, t):
        return self.density.denoise(x, self.process.alpha(t), self.process.sigma(t))

    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other


def score_fn(density, process) -> ScoreFn:
    """``(x, t) -> density.score(x, alpha(t), sigma(t))``: the exact score along a process.

    Returns a callable PyTree (:class:`ScoreFn`), an ordinary ``jit`` argument.

    Example:
        >>> import jax, manifold_scores as ms
        >>> mix, proc = ms.MoLRG.random(jax.random.key(0), 4, 1, 2), ms.VP()
        >>> score = ms.score_fn(mix, proc)
        >>> score(jax.numpy.ones(4), 0.5).shape, len(jax.tree.leaves(score)) > 0
        ((4,), True)
    """
    return ScoreFn(density, process)


def denoiser_fn(density, process) -> DenoiserFn:
    """``(x, t) -> E[X0 | x_t = x]`` along a process, as a callable PyTree (:class:`DenoiserFn`).
    """
    return DenoiserFn(density, process)

__dir__ = _public_dir(__all__)

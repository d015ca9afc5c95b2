"""The density protocol shared by every data law.

A density is a frozen PyTree dataclass with

    sample(key, n)                 -> (n, d) clean samples
    log_prob(x, alpha, sigma)      -> ()    log density of alpha X + sigma Z at x
    score(x, alpha, sigma)         -> (d,)  grad_x log_prob
    denoise(x, alpha, sigma)       -> (d,)  E[X | alpha X + sigma Z = x]

on one point ``x`` of shape ``(d,)``; batches come from ``jax.vmap``. Mixture-backed densities
implement :meth:`Density.stats` once (one streamed pass gives all four statistics) and inherit
the rest; the unused outputs are removed by XLA's dead-code elimination under ``jit``.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp

from manifold_scores import _checks
from manifold_scores._api import public_dir as _public_dir
from manifold_scores.mixtures import MixtureStats, divergence

__all__ = ["Density", "PrecisionWarning"]


def _checked_sample(sample):
    """Wrap a subclass's ``sample(key, n)``: ``n`` is validated, then the sampler is compiled.

    Compiled once per density structure and ``n`` (``n`` static): run eagerly, the vmapped
    sampler would dispatch (and compile) every primitive on its own, seconds per new ``n``.
    """
    compiled = jax.jit(sample, static_argnums=(2,))

    @functools.wraps(sample)
    def wrapper(self, key, n, *args, **kwargs):
        n = _checks.check_sample_count(n)
        if args or kwargs:
            return sample(self, key, n, *args, **kwargs)
        return compiled(self, key, n)

    return wrapper


class PrecisionWarning(UserWarning):
    """A float64 input met a density whose parameters are float32 (built before
    ``jax.config.update("jax_enable_x64", True)``): its results carry float32 errors."""


def _warn_if_float32_params(self, x) -> None:
    """At trace time (dtypes are static): float64 ``x`` against float32 parameters."""
    if getattr(x, "dtype", None) != jnp.float64:
        return
    low = [leaf.dtype for leaf in jax.tree.leaves(self)
           if hasattr(leaf, "dtype") and leaf.dtype in (jnp.float32, jnp.float16, jnp.bfloat16)]
    if low:
        warnings.warn(
            f"{type(self).__name__} holds {low[0]} parameters and was called with float64 "
            "input: its results keep float32 errors (about 1e-7 relative, not 1e-15). Build "
            "the density after jax.config.update('jax_enable_x64', True), or inside "
            "jax.enable_x64(True), to get float64 throughout.", PrecisionWarning, stacklevel=3)


def _checked_call(method):
    """Wrap ``log_prob`` / ``score`` / ``denoise`` / ``stats``: warn on a float32 density
    called in float64 (once per call site, at trace time under ``jit``)."""

    @functools.wraps(method)
    def wrapper(self, x, *args, **kwargs):
        _warn_if_float32_params(self, x)
        return method(self, x, *args, **kwargs)

    return wrapper


class Density:
    """Base class: subclasses define ``dim`` and either :meth:`stats` or all four methods.

    Every subclass's ``sample(key, n)`` is wrapped so that ``n`` must be a non-negative integer
    (a ``ValueError`` naming ``n``, instead of a shape error deep inside XLA) and runs compiled
    (``jax.jit`` with ``n`` static; the density is a PyTree argument).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in ("sample", "sample_with_labels"):
            if name in cls.__dict__:
                setattr(cls, name, _checked_sample(cls.__dict__[name]))
        for name in ("log_prob", "score", "denoise", "stats"):
            if name in cls.__dict__:
                setattr(cls, name, _checked_call(cls.__dict__[name]))

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        raise NotImplementedError

    def stats(self, x, alpha, sigma) -> MixtureStats:
        raise NotImplementedError(f"{type(self).__name__} does not expose mixture statistics")

    def log_prob(self, x, alpha, sigma) -> jax.Array:
        """``log p_{alpha,sigma}(x)`` of ``alpha X + sigma Z``."""
        return self.stats(x, alpha, sigma).log_prob

    def score(self, x, alpha, sigma) -> jax.Array:
        """``grad_x log p_{alpha,sigma}(x)``."""
        return self.stats(x, alpha, sigma).score

    def denoise(self, x, alpha, sigma) -> jax.Array:
        """Posterior mean ``E[X | alpha X + sigma Z = x]`` (Tweedie)."""
        return self.stats(x, alpha, sigma).mean

    def score_divergence(self, x, alpha, sigma) -> jax.Array:
        """``div_x score`` in closed form: ``-d/sigma^2 + alpha^2 tr Cov[X|x] / sigma^4``."""
        return divergence(self.stats(x, alpha, sigma), alpha, sigma)

__dir__ = _public_dir(__all__)

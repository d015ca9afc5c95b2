"""Isotropic mixtures: point masses ``y_i`` noised to ``N(alpha y_i, sigma^2 I)``.

Empirical laws, quadrature nodes of a manifold and kernel centres are all this mixture. With
log-weights ``l_i``: ``w_i = softmax_i(l_i - |x - alpha y_i|^2 / (2 sigma^2))``,
``E[X|x] = sum_i w_i y_i``, ``score = sum_i w_i (alpha y_i - x) / sigma^2``,
``div score = -d / sigma^2 + alpha^2 tr Cov[X|x] / sigma^4``.

Distances use the matmul expansion ``|x'|^2 - 2 alpha x'.y' + alpha^2 |y'|^2`` of the shifted
``x' = x - alpha c``, ``y' = y - c`` (HIGHEST precision: TF32 would ruin it). Any centre ``c``
gives the same exact answer; the weighted mean of the points makes the expansion's round-off
independent of where the origin is (``eps |x'|^2 / sigma^2`` nats per logit instead of
``eps |x|^2 / sigma^2``). In low precision the best candidates of each chunk then get their
distances recomputed directly as ``|x' - alpha y'|^2`` (*refinement*): the expansion's error
matters only for the components that carry the posterior mass, and those are the shortlisted
ones. The score is accumulated from exact differences, never as ``alpha E[X|x] - x``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from manifold_scores import mixtures
    >>> pts = jax.random.normal(jax.random.key(0), (1000, 3))
    >>> st = mixtures.isotropic(jnp.zeros(3), pts, jnp.full(1000, -jnp.log(1000.)), 1.0, 0.5)
    >>> st.score.shape, st.mean.shape
    ((3,), (3,))
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from manifold_scores import _checks
from manifold_scores._api import public_dir as _public_dir
from manifold_scores.mixtures._stream import (
    DEFAULT_CHUNK_SIZE,
    HIGHEST,
    Acc,
    check_chunk_size,
    finite_or_zero,
    reduce_chunk,
    stream,
)
from manifold_scores.mixtures.stats import MixtureStats

__all__ = ["isotropic", "isotropic_logits", "weighted_centre"]

# Candidates per chunk whose distances are recomputed exactly below 64-bit precision.
DEFAULT_REFINE = 32


class _Sums(NamedTuple):
    """Weighted sums of one query (``w_i`` unnormalised posterior weights, ``y' = y - c``)."""

    total: jax.Array  # sum w
    mean: jax.Array  # sum w y'
    delta: jax.Array  # sum w (alpha y' - x')            = sum w (alpha y - x)
    delta_sq: jax.Array  # sum w |alpha y' - x'|^2
    mean_sq: jax.Array  # sum w |y'|^2                   (used when alpha = 0)


def weighted_centre(points, log_weights) -> jax.Array:
    """``c = sum_i pi_i y_i``: the centre that makes :func:`isotropic` translation invariant."""
    w = jax.nn.softmax(jnp.asarray(log_weights))
    return jnp.dot(w, jnp.asarray(points), precision=HIGHEST)


def _isotropic_inputs(x, points, log_weights, alpha, sigma, centre):
    points = jnp.asarray(points)
    log_weights = jnp.asarray(log_weights)
    _checks.check_ndim(points, 2, "points", "(N, d)")
    _checks.check_nonempty(points, "points")
    n, d = points.shape
    _checks.check_point(x, d)
    if jnp.shape(log_weights) != (n,):
        raise ValueError(f"log_weights must have shape ({n},), got {jnp.shape(log_weights)}")
    if centre is not None and jnp.shape(centre) != (d,):
        raise ValueError(f"centre must have shape ({d},), got {jnp.shape(centre)}")
    alpha, sigma = _checks.check_noise_levels(alpha, sigma)
    dtype = _checks.float_dtype(x, points, log_weights)
    cast = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    centre = jnp.zeros((d,), dtype) if centre is None else cast(centre)
    return tuple(cast(a) for a in (x, points, log_weights, alpha, sigma)) + (centre,)


def isotropic_logits(x, points, log_weights, alpha, sigma, *, centre=None) -> jax.Array:
    """``log pi_i - |x - alpha y_i|^2 / (2 sigma^2)``, shape ``(N,)``; ``softmax`` gives ``P(i|x)``.

    Materialises all ``N`` logits with exact differences (no streaming): for inspection and
    small ``N``. Arguments as in :func:`isotropic`.
    """
    x, points, log_weights, alpha, sigma, c = _isotropic_inputs(
        x, points, log_weights, alpha, sigma, centre)
    diff = alpha * (points - c) - (x - alpha * c)
    return log_weights - jnp.sum(diff * diff, -1) / (2.0 * sigma * sigma)


def isotropic(x, points, log_weights, alpha, sigma, *, centre=None,
              chunk_size: int | None = DEFAULT_CHUNK_SIZE, refine: int | None = None,
              refine_tol: float = 1e-6) -> MixtureStats:
    """Statistics of ``sum_i exp(log_weights_i) N(alpha y_i, sigma^2 I)`` at one point.

    Posterior weights ``w_i = softmax_i(l_i - |x - alpha y_i|^2 / (2 sigma^2))``;
    ``E[X|x] = sum_i w_i y_i``; ``score = sum_i w_i (alpha y_i - x) / sigma^2``.

    Accuracy (tested): with ``centre`` the weighted mean (:func:`weighted_centre`; what
    :class:`~manifold_scores.Empirical` passes), results do not depend on a common offset of
    points and query: unit-spread data offset by ``1e3`` agree with the same data at the origin
    to ``1e-5`` relative in float32 (``sigma`` in ``[0.3, 3]``) and to ``1e-6`` nats in float64
    at ``sigma = 1e-4``. In float32 at ``sigma = 1e-3`` (refinement on) scores of unit-scale
    data are within ``1e-5`` relative of a float64 evaluation.

    Args:
        x: query point, shape ``(d,)``.
        points: component locations ``y_i`` of the clean law, shape ``(N, d)``.
        log_weights: ``log pi_i``, shape ``(N,)`` (normalised for a probability law; ``-inf``
            allowed for empty components).
        alpha, sigma: noise levels (scalars, ``sigma > 0``).
        centre: optional ``c``, shape ``(d,)``: distances are evaluated between
            ``x - alpha c`` and ``alpha (y_i - c)`` (same exact value, smaller round-off when
            ``c`` is near the points). Default: the origin.
        chunk_size: components per streamed chunk (static). ``None`` means one chunk.
        refine: per chunk, how many best candidates get exact distances (static). ``None``
            chooses 32 below 64-bit precision and 0 in float64, where the expansion's logit
            error ``eps |x - alpha c|^2 / sigma^2`` is about ``2e-7`` nats at ``sigma = 1e-4``
            for unit-spread data in ``d = 16`` (tested below ``1e-6``).
        refine_tol: refinement runs only when the expansion's logit error bound
            ``eps * 2 alpha^2 max|y - c|^2 / (2 sigma^2)`` exceeds this many nats (a
            ``lax.cond`` on unbatched values, so large-sigma calls skip the shortlist).

    Returns:
        :class:`MixtureStats` (``divergence`` filled).
    """
    x, points, log_weights, alpha, sigma, centre = _isotropic_inputs(
        x, points, log_weights, alpha, sigma, centre)
    check_chunk_size(chunk_size)
    return _isotropic(x, points, log_weights, alpha, sigma, centre, chunk_size, refine,
                      refine_tol)


@functools.partial(jax.jit, static_argnums=(6, 7, 8))
def _isotropic(x, points, log_weights, alpha, sigma, centre, chunk_size, refine, refine_tol):
    # jit so that eager calls reuse one compiled program instead of re-tracing the scan body
    acc = isotropic_acc(x, points, log_weights, alpha, sigma, centre, chunk_size, refine,
                        refine_tol)
    return isotropic_stats(acc, x, alpha, sigma, centre)


def isotropic_stats(acc: Acc, x, alpha, sigma, centre) -> MixtureStats:
    """Normalise an accumulator of :func:`isotropic_acc` into :class:`MixtureStats`."""
    s = acc.sums
    total = s.total
    mean = s.mean / total
    delta = s.delta / total
    a2 = alpha * alpha
    sig2 = sigma * sigma
    # alpha^2 tr Cov[X|x] = E|alpha y - x|^2 - |E(alpha y - x)|^2  (point masses: no spread)
    noised_var = jnp.maximum(s.delta_sq / total - jnp.sum(delta * delta), 0.0)
    prior_var = jnp.maximum(s.mean_sq / total - jnp.sum(mean * mean), 0.0)
    safe_a2 = jnp.where(a2 > 0, a2, 1.0)
    cov_trace = jnp.where(a2 > 0, noised_var / safe_a2, prior_var)
    d = x.shape[0]
    return MixtureStats(
        log_prob=acc.top + jnp.log(total) - 0.5 * d * jnp.log(2.0 * math.pi * sig2),
        score=delta / sig2,
        mean=centre + mean,
        cov_trace=cov_trace,
        divergence=-d / sig2 + noised_var / (sig2 * sig2),
    )


def isotropic_acc(x, points, log_weights, alpha, sigma, centre, chunk_size, refine,
                  refine_tol) -> Acc:
    """The streamed accumulator of one query (before normalisation); inputs validated."""
    eps = float(jnp.finfo(x.dtype).eps)
    if refine is None:
        refine = 0 if jnp.finfo(x.dtype).bits >= 64 else DEFAULT_REFINE
    inv_two_var = 0.5 / (sigma * sigma)
    xc = x - alpha * centre
    x_sq = jnp.sum(xc * xc)
    # |x'|^2 / (2 sigma^2) is common to every logit of this query: the plain pass leaves it
    # out (fewer operations on the (B, chunk) block) and subtracts it from the maximum at the end.
    shift = x_sq * inv_two_var

    if refine > 0:
        # Decided from unbatched values, so under vmap over x this stays a real branch.
        y_max_sq = jnp.max(jnp.sum(jnp.square(points - centre), axis=-1))
        needs_refine = eps * alpha * alpha * y_max_sq * inv_two_var * 2.0 > refine_tol

    def expand(chunk):
        y_orig, lw_c = chunk
        y = y_orig - centre
        y_sq = jnp.sum(y * y, axis=-1)
        # x' y'^T rather than y' x': under vmap the batch axis then leads the (B, chunk) block,
        # the layout that the shortlist's reductions and top_k read without a transpose.
        xy = jnp.dot(xc, y.T, precision=HIGHEST)
        part = alpha * alpha * y_sq - 2.0 * alpha * xy  # |x' - alpha y'|^2 - |x'|^2
        return y, y_sq, part, jnp.maximum(x_sq + part, 0.0)

    def plain_chunk(chunk):
        y, y_sq, part, dist_sq = expand(chunk)

        def sums(w):
            total = jnp.sum(w)
            mean = jnp.dot(w, y, precision=HIGHEST)
            return _Sums(total, mean, alpha * mean - total * xc, w @ dist_sq, w @ y_sq)

        return reduce_chunk(chunk[1] - part * inv_two_var, sums)

    def refined_chunk(chunk):
        y_orig, lw_c = chunk
        y, y_sq, _, dist_sq = expand(chunk)
        logits = lw_c - dist_sq * inv_two_var
        sel = _top_k_indices(logits, int(refine))
        size = logits.shape[0]
        valid = (sel < size) & (logits[jnp.minimum(sel, size - 1)] > -jnp.inf)
        sel_in = jnp.where(valid, sel, 0)
        # exact differences from the unshifted points (exact for nearby points at alpha = 1,
        # where y - c would round)
        y_top_orig = y_orig[sel_in]
        diff_top = alpha * y_top_orig - x
        y_top = y_top_orig - centre
        dist_top = jnp.sum(diff_top * diff_top, axis=-1)
        l_top = jnp.where(valid, lw_c[sel_in] - dist_top * inv_two_var, -jnp.inf)
        # the shortlisted leave the expansion's sums (padding indices past the end are dropped)
        rest = logits.at[sel].set(-jnp.inf, mode="drop")
        top = jnp.maximum(jnp.max(logits), jnp.max(l_top))
        ref = finite_or_zero(top)
        w, w_top = jnp.exp(rest - ref), jnp.exp(l_top - ref)
        total_rest = jnp.sum(w)
        mean_rest = jnp.dot(w, y, precision=HIGHEST)
        return Acc(top, _Sums(
            total_rest + jnp.sum(w_top),
            mean_rest + jnp.dot(w_top, y_top, precision=HIGHEST),
            alpha * mean_rest - total_rest * xc + jnp.dot(w_top, diff_top, precision=HIGHEST),
            w @ dist_sq + w_top @ dist_top,
            w @ y_sq + w_top @ jnp.sum(y_top * y_top, axis=-1)))

    def plain(arrays):
        acc = stream(plain_chunk, arrays, chunk_size)
        return Acc(acc.top - shift, acc.sums)

    arrays = (points, log_weights)
    if refine == 0:
        return plain(arrays)
    # One cond around the whole stream: large-sigma calls run the plain scan, untouched.
    return lax.cond(needs_refine, lambda a: stream(refined_chunk, a, chunk_size), plain, arrays)


def _top_k_indices(logits, k):
    """Indices of the ``k`` largest logits of a chunk (exact), without a ``top_k`` over it.

    The chunk is dealt into ``g = 8 k`` strided groups (group ``j`` holds entries ``j, j + g,
    ...``). A group holding one of the ``k`` largest entries has its maximum among the ``k``
    largest, so those entries all lie in the ``k`` groups with the largest maxima: one max
    reduction, a ``top_k`` over ``g`` maxima and one over ``k size / g`` members replace a
    ``top_k`` over ``size`` entries (several times slower on CPU). Only indices are taken:
    when its values are used too, XLA:CPU lowers ``top_k`` to a full sort. Indices past
    ``size`` (padding) can appear only when fewer than ``k`` entries are finite.
    """
    size = logits.shape[0]
    k = min(k, size)
    g = 8 * k
    if size <= 4 * g:
        return lax.top_k(logits, k)[1]
    rows = -(-size // g)
    grid = jnp.pad(logits, (0, rows * g - size), constant_values=-jnp.inf).reshape(rows, g)
    _, groups = lax.top_k(jnp.max(grid, axis=0), k)
    _, pos = lax.top_k(grid[:, groups].reshape(-1), k)
    return (pos // k) * g + groups[pos % k]

__dir__ = _public_dir(__all__)

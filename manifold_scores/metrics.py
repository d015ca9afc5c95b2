"""Metrics: how close samples, scores and learned subspaces are to the truth.

Every large-sample metric streams over chunks (``chunk_size`` rows by ``chunk_size`` columns at a
time), so ``1e5 x 1e5`` pairs fit in the memory of a small CPU; ``chunk_size=None`` computes in
one block (the reference the tests compare the chunked path with). Definitions:

- distance to a manifold: ``dist(x, M)`` per sample (a union of subspaces for a MoLRG); NaN
  for a NaN sample;
- subspace recovery: ``min over permutations pi of max_k |U_hat_k U_hat_k^T - U_pi(k) U_pi(k)^T|_F``
  (bottleneck assignment), and the mean under the sum-optimal assignment
  (:func:`scipy.optimize.linear_sum_assignment`);
- memorisation fraction: share of samples with ``d1 / d2 < 1/3`` (nearest and second-nearest
  distinct training distances; NaN if a sample is not finite); generalisation score ``1 -``
  that;
- MMD^2: unbiased, sum of RBF kernels ``exp(-|a - b|^2 / (2 h^2))`` over bandwidths ``h``;
- sliced Wasserstein: ``(mean over directions of W_p^p)^(1/p)`` (``p = inf``: the max
  over directions of ``W_inf``);
- score error profile: ``E |s_hat - s|^2 / E |s|^2`` at each noise level;
- Jacobian rank: smallest ``r`` with ``sqrt(sum_{i<=r} s_i^2) > 0.99 |J|_F`` (NaN for a
  non-finite Jacobian);
- angle total variation: ``(1/2) sum_bins |p_hat - p|`` between angle histograms.

Example:
    >>> import jax, manifold_scores as ms
    >>> x = jax.random.normal(jax.random.key(0), (64, 2))
    >>> float(ms.metrics.mmd(x, x + 5.0)) > 0.5
    True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from manifold_scores._api import public_dir as _public_dir

__all__ = [
    "SubspaceRecovery",
    "angle_histogram",
    "angle_tv",
    "angle_tv_laws",
    "distance_to_manifold",
    "generalization_score",
    "jacobian_rank",
    "memorization_fraction",
    "mmd",
    "nearest_distances",
    "score_error_profile",
    "sliced_wasserstein",
    "subspace_recovery",
]

HIGHEST = jax.lax.Precision.HIGHEST
DEFAULT_CHUNK = 2048


# ---------------------------------------------------------------------------------------------
# Chunking helpers
# ---------------------------------------------------------------------------------------------


def _as_batch(x, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (n, d) with n >= 1, got {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _chunks(x, chunk: int | None):
    """``(num_chunks, chunk, d)`` zero-padded blocks and a ``(num_chunks, chunk)`` validity mask."""
    n = x.shape[0]
    c = n if chunk is None else max(1, min(int(chunk), n))
    m = -(-n // c) * c
    xp = jnp.concatenate([x, jnp.zeros((m - n,) + x.shape[1:], x.dtype)], 0)
    mask = jnp.arange(m) < n
    return xp.reshape(m // c, c, *x.shape[1:]), mask.reshape(m // c, c)


def _sq_dists(a, b):
    """``|a_i - b_j|^2`` by the matmul expansion (HIGHEST precision), clipped at 0."""
    aa = jnp.sum(a * a, -1)[:, None]
    bb = jnp.sum(b * b, -1)[None, :]
    return jnp.maximum(aa + bb - 2.0 * jnp.dot(a, b.T, precision=HIGHEST), 0.0)


def _map_rows(fn, x, chunk: int | None):
    """Apply ``fn(block) -> (chunk, ...)`` over row blocks; results trimmed to ``n`` rows."""
    blocks, _ = _chunks(x, chunk)
    out = jax.lax.map(fn, blocks)
    return jax.tree.map(lambda o: o.reshape(-1, *o.shape[2:])[: x.shape[0]], out)


# ---------------------------------------------------------------------------------------------
# Distance to a manifold
# ---------------------------------------------------------------------------------------------


def _union_of_subspaces_distance(bases):
    def dist(x):
        coef = jnp.einsum("kdr,d->kr", bases, x, precision=HIGHEST)
        resid = x[None, :] - jnp.einsum("kdr,kr->kd", bases, coef, precision=HIGHEST)
        return jnp.sqrt(jnp.min(jnp.sum(resid * resid, -1)))

    return dist


def distance_to_manifold(manifold, x, *, chunk_size: int | None = DEFAULT_CHUNK) -> jax.Array:
    """``dist(x_i, M)`` for a batch ``x`` ``(n, d)``, streamed over row chunks.

    Args:
        manifold: any density with a per-point ``distance(x)`` (spheres, tori, curves, charts),
            or a :class:`~manifold_scores.MoLRG` (``bases`` ``(K, d, r)``), whose support is the
            union of its subspaces: ``min_k |x - U_k U_k^T x|``.
        x: ``(n, d)`` points.
        chunk_size: rows per block (``None``: one block).

    Returns:
        ``(n,)`` distances: NaN for a sample with a NaN coordinate, ``inf`` for one with an
        infinite coordinate (a diverged sampler never looks close to the manifold).

    Example:
        >>> import jax.numpy as jnp, manifold_scores as ms
        >>> ms.metrics.distance_to_manifold(ms.Circle(dim=2), jnp.array([[0.0, 3.0]])).tolist()
        [2.0]
    """
    x = _as_batch(x, "x")
    if hasattr(manifold, "distance"):
        fn = manifold.distance
    elif hasattr(manifold, "bases"):
        fn = _union_of_subspaces_distance(jnp.asarray(manifold.bases, x.dtype))
    else:
        raise ValueError("manifold must have a distance(x) method or subspace bases (a MoLRG)")

    def checked(xi):
        # Curved manifolds project through angles and clipped ratios, which map NaN and inf
        # onto a point of the manifold (distance 0): decide on the raw coordinates instead.
        dist = fn(xi)
        dist = jnp.where(jnp.any(jnp.isinf(xi)), jnp.asarray(jnp.inf, dist.dtype), dist)
        return jnp.where(jnp.any(jnp.isnan(xi)), jnp.asarray(jnp.nan, dist.dtype), dist)

    return _map_rows(jax.vmap(checked), x, chunk_size)


# ---------------------------------------------------------------------------------------------
# Subspace recovery
# ---------------------------------------------------------------------------------------------


class SubspaceRecovery(NamedTuple):
    """``max_error``: bottleneck-optimal ``max_k |P_hat_k - P_pi(k)|_F``; ``mean_error``: the
    mean under the sum-optimal assignment; ``assignment[k]``: the true component matched to
    estimated component ``k`` (sum-optimal); ``costs``: the ``(K, K)`` projector distances."""

    max_error: float
    mean_error: float
    assignment: np.ndarray
    costs: np.ndarray


def _projector_distances(bases_hat, bases):
    """``|U_hat_i U_hat_i^T - U_j U_j^T|_F`` without forming ``d x d`` matrices."""
    bh = np.asarray(bases_hat, np.float64)
    b = np.asarray(bases, np.float64)
    gram_h = np.einsum("kdr,kds->krs", bh, bh)
    gram = np.einsum("kdr,kds->krs", b, b)
    cross = np.einsum("idr,jds->ijrs", bh, b)
    # |P - Q|_F^2 = |P|_F^2 + |Q|_F^2 - 2 |U^T V|_F^2 for P = U (U^T U)^{-1} U^T; orthonormal
    # columns make |P|_F^2 = r, but estimated bases may be slightly off: use the Gram matrices.
    ph = np.einsum("krs,krs->k", gram_h, gram_h)
    p = np.einsum("krs,krs->k", gram, gram)
    sq = ph[:, None] + p[None, :] - 2.0 * np.einsum("ijrs,ijrs->ij", cross, cross)
    return np.sqrt(np.maximum(sq, 0.0))


def subspace_recovery(bases_hat, bases) -> SubspaceRecovery:
    """Permutation-matched distances between estimated and true subspaces.

    ``max_error = min_pi max_k |U_hat_k U_hat_k^T - U_pi(k) U_pi(k)^T|_F`` (a bottleneck
    assignment: the smallest threshold under which :func:`scipy.optimize.linear_sum_assignment`
    finds a perfect matching of admissible pairs), and ``mean_error``, the mean distance under
    the sum-optimal assignment. Invariant to permuting the components and to rotations inside
    each subspace; zero for the truth. Columns are taken as orthonormal.

    Args:
        bases_hat: ``(K, d, r_hat)`` estimated bases.
        bases: ``(K, d, r)`` true bases.

    Example:
        >>> import jax, manifold_scores as ms
        >>> mix = ms.MoLRG.random(jax.random.key(0), dim=8, rank=2, num_components=3)
        >>> ms.metrics.subspace_recovery(mix.bases[::-1], mix.bases).max_error < 1e-6
        True
    """
    from scipy.optimize import linear_sum_assignment

    bh, b = np.asarray(bases_hat), np.asarray(bases)
    if bh.ndim != 3 or b.ndim != 3:
        raise ValueError(f"bases_hat and bases must have shape (K, d, r), got {bh.shape} and "
                         f"{b.shape}")
    if bh.shape[:2] != b.shape[:2]:
        raise ValueError(f"bases_hat and bases must agree in (K, d), got {bh.shape[:2]} and "
                         f"{b.shape[:2]}")
    costs = _projector_distances(bh, b)
    rows, cols = linear_sum_assignment(costs)
    assignment = np.empty(costs.shape[0], int)
    assignment[rows] = cols
    mean_error = float(costs[rows, cols].mean())
    # Bottleneck: the smallest threshold t with a perfect matching inside {costs <= t}.
    levels = np.unique(costs)
    lo, hi = 0, len(levels) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        bad = (costs > levels[mid]).astype(float)
        r, c = linear_sum_assignment(bad)
        if bad[r, c].sum() == 0:
            hi = mid
        else:
            lo = mid + 1
    return SubspaceRecovery(float(levels[lo]), mean_error, assignment, costs)


# ---------------------------------------------------------------------------------------------
# Nearest neighbours: memorisation and generalisation
# ---------------------------------------------------------------------------------------------


def _mix32(h):
    """MurmurHash3's 32-bit finaliser: every input bit affects every output bit."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


@jax.jit
def _first_copies(points) -> jax.Array:
    """``(m,)`` booleans: True for one row of every group of identical rows.

    Rows are sorted by two 32-bit hashes of their bit patterns (integer arithmetic: identical
    rows hash identically whatever the reduction order) and compared exactly with their sorted
    neighbour, so distinct rows are never merged; ``O(m d)`` plus a two-key sort, where a
    lexicographic sort over ``d`` keys compiles in time growing with ``d``. NaN rows are never
    copies of anything; ``-0.0`` and ``0.0`` are the same value.
    """
    m = points.shape[0]
    points = jnp.where(points == 0, jnp.zeros_like(points), points)
    uint = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[points.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(points, uint).reshape(m, -1).astype(jnp.uint32)
    seeds = jax.random.bits(jax.random.key(0), (2, bits.shape[1]), jnp.uint32)
    h1, h2 = (jnp.sum(_mix32(bits ^ seeds[i]), axis=1, dtype=jnp.uint32) for i in range(2))
    order = jnp.lexsort((h2, h1))
    rows = points[order]
    repeat = jnp.concatenate([jnp.zeros((1,), bool), jnp.all(rows[1:] == rows[:-1], axis=1)])
    return jnp.zeros((m,), bool).at[order].set(~repeat)


def nearest_distances(x, train, *, chunk_size: int | None = DEFAULT_CHUNK) -> jax.Array:
    """Distances from each ``x_i`` to its nearest and second-nearest *distinct* training points,
    ``(n, 2)``.

    Exact copies in ``train`` count once (the training set is deduplicated first), so a sample
    equal to a duplicated training point has distances ``(0, d2 > 0)``, not ``(0, 0)``. Streams
    over chunks of both sets (running top-2), then recomputes the two winners as exact
    differences (the matmul expansion loses digits for near-duplicates). A sample with a NaN
    coordinate gets NaN distances; ``inf`` where no second distinct point exists (under
    ``jit``; eagerly, ``train`` must hold at least two distinct points).
    """
    x, train = _as_batch(x, "x"), _as_batch(train, "train")
    if x.shape[1] != train.shape[1]:
        raise ValueError(f"x and train dimensions differ: {x.shape[1]} vs {train.shape[1]}")
    keep = _first_copies(train)
    if train.shape[0] < 2 or (not isinstance(keep, jax.core.Tracer) and int(jnp.sum(keep)) < 2):
        raise ValueError("train must hold at least 2 distinct points")
    return _nearest_distinct(x, train, keep, chunk_size)


@functools.partial(jax.jit, static_argnums=(3,))
def _nearest_distinct(x, train, keep, chunk_size):
    tb, tmask = _chunks(train, chunk_size)
    kb, _ = _chunks(keep[:, None], chunk_size)
    tmask = tmask & kb[..., 0]
    tc = tb.shape[1]
    inf = jnp.asarray(jnp.inf, x.dtype)

    def rows(xb):
        def body(carry, inp):
            vals, idx = carry
            block, mask, start = inp
            d2 = jnp.where(mask[None, :], _sq_dists(xb, block), inf)
            v = jnp.concatenate([vals, d2], 1)
            cols = start + jnp.arange(tc, dtype=jnp.int32)
            i = jnp.concatenate([idx, jnp.broadcast_to(cols, d2.shape)], 1)
            neg, pos = jax.lax.top_k(-v, 2)
            return (-neg, jnp.take_along_axis(i, pos, 1)), None

        init = (jnp.full((xb.shape[0], 2), inf), jnp.zeros((xb.shape[0], 2), jnp.int32))
        starts = jnp.arange(tb.shape[0], dtype=jnp.int32) * tc
        (vals, idx), _ = jax.lax.scan(body, init, (tb, tmask, starts))
        diff = xb[:, None, :] - train[idx]
        exact = jnp.sqrt(jnp.sum(diff * diff, -1))
        # no candidate left (one distinct point under jit): not the sentinel index's distance
        exact = jnp.where(jnp.isposinf(vals), inf, exact)
        return jnp.sort(exact, axis=1)

    return _map_rows(rows, x, chunk_size)


def memorization_fraction(samples, train, *, threshold: float = 1.0 / 3.0,
                          chunk_size: int | None = DEFAULT_CHUNK) -> jax.Array:
    """Share of samples whose nearest / second-nearest training distance is below ``1/3``.

    Distances are to *distinct* training points (:func:`nearest_distances` deduplicates
    ``train``): an exact copy of a training point counts as memorised even when that point is
    duplicated. A non-finite sample (or distance) makes the fraction NaN: a diverged sampler
    is neither memorising nor generalising.

    Example:
        >>> import jax, manifold_scores as ms
        >>> train = jax.random.normal(jax.random.key(0), (50, 3))
        >>> float(ms.metrics.memorization_fraction(train[:10] + 1e-4, train))
        1.0
    """
    _check_threshold(threshold)
    d = nearest_distances(samples, train, chunk_size=chunk_size)
    hit = (d[:, 0] < threshold * d[:, 1]).astype(d.dtype)
    return jnp.mean(jnp.where(jnp.all(jnp.isfinite(d), axis=1), hit, jnp.nan))


def _check_threshold(threshold) -> None:
    if isinstance(threshold, jax.core.Tracer):
        return
    value = float(threshold)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1], got {value}")


def generalization_score(samples, train, *, threshold: float = 1.0 / 3.0,
                         chunk_size: int | None = DEFAULT_CHUNK) -> jax.Array:
    """``1 - memorization_fraction`` (the share of samples that are not near-copies)."""
    return 1.0 - memorization_fraction(samples, train, threshold=threshold,
                                       chunk_size=chunk_size)


# ---------------------------------------------------------------------------------------------
# Two-sample distances: MMD and sliced Wasserstein
# ---------------------------------------------------------------------------------------------


def _kernel_sum(a, b, inv_two_h2, chunk):
    """``sum_{i,j} sum_h exp(-|a_i - b_j|^2 / (2 h^2))``, streamed over blocks of both sets."""
    ab, amask = _chunks(a, chunk)
    bb, bmask = _chunks(b, chunk)

    def row(inp):
        block, mask = inp

        def body(acc, inp2):
            block2, mask2 = inp2
            d2 = _sq_dists(block, block2)
            k = jnp.sum(jnp.exp(-d2[..., None] * inv_two_h2), -1)
            w = (mask[:, None] & mask2[None, :]).astype(k.dtype)
            return acc + jnp.sum(k * w), None

        return jax.lax.scan(body, jnp.zeros((), a.dtype), (bb, bmask))[0]

    return jnp.sum(jax.lax.map(row, (ab, amask)))


def _median_bandwidth(x, y, max_points: int = 1000):
    z = np.concatenate([np.asarray(x[:max_points]), np.asarray(y[:max_points])], 0)
    d2 = np.asarray(_sq_dists(jnp.asarray(z), jnp.asarray(z)))
    med = float(np.median(d2[np.triu_indices(len(z), 1)]))
    return math.sqrt(max(med, 1e-12) / 2.0)


def mmd(x, y, bandwidths=None, *, chunk_size: int | None = DEFAULT_CHUNK) -> jax.Array:
    """Unbiased ``MMD^2`` with a sum of RBF kernels ``k(a, b) = sum_h exp(-|a-b|^2 / (2 h^2))``.

    ``MMD^2 = sum_{i != j} k(x_i, x_j) / (n(n-1)) + sum_{i != j} k(y_i, y_j) / (m(m-1))
    - 2 sum_{i,j} k(x_i, y_j) / (n m)``. Default bandwidths: the median heuristic ``h_0``
    (from up to 1000 points of each set) times ``(0.5, 1, 2)``.

    Args:
        x: ``(n, d)``, ``n >= 2``.
        y: ``(m, d)``, ``m >= 2``.
        bandwidths: sequence of ``h > 0`` (default: median heuristic times ``(0.5, 1, 2)``).
        chunk_size: block size of the streamed double sums (``None``: one block).
    """
    x, y = _as_batch(x, "x"), _as_batch(y, "y")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("x and y need at least 2 points each for the unbiased MMD")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    dtype = jnp.result_type(x, y)
    x, y = x.astype(dtype), y.astype(dtype)
    if bandwidths is None:
        h0 = _median_bandwidth(x, y)
        bandwidths = (0.5 * h0, h0, 2.0 * h0)
    h = jnp.asarray(bandwidths, dtype).reshape(-1)
    if h.size == 0 or not bool(jnp.all(h > 0)):
        raise ValueError(f"bandwidths must be positive, got {bandwidths!r}")
    inv = 1.0 / (2.0 * h * h)
    n, m, nb = x.shape[0], y.shape[0], h.shape[0]
    kxx = (_kernel_sum(x, x, inv, chunk_size) - n * nb) / (n * (n - 1))
    kyy = (_kernel_sum(y, y, inv, chunk_size) - m * nb) / (m * (m - 1))
    kxy = _kernel_sum(x, y, inv, chunk_size) / (n * m)
    return kxx + kyy - 2.0 * kxy


def _step_quantile_indices(n: int, m: int):
    """Indices into two sorted samples of sizes ``n`` and ``m`` on every piece of the merged
    step quantile functions: ``F^-1(u) = x_(floor(u n))`` is constant between multiples of
    ``1/n``, so the pieces are cut at every ``i/n`` and ``j/m`` (in exact integer units of
    ``1/(n m)``: float ratios would leave slivers at equal cuts such as 1/3 and 2/6)."""
    cuts = np.union1d(np.arange(n + 1, dtype=np.int64) * m, np.arange(m + 1, dtype=np.int64) * n)
    mid2 = cuts[:-1] + cuts[1:]  # twice the midpoint of each piece
    return mid2 // (2 * m), mid2 // (2 * n)


def sliced_wasserstein(key, x, y, num_projections: int = 128, p: float = 2.0, *,
                       directions=None, chunk_size: int | None = 32) -> jax.Array:
    """Sliced Wasserstein distance ``(mean over directions of W_p^p)^(1/p)``.

    Each 1-D ``W_p`` compares sorted projections; unequal sizes compare the two quantile
    functions on ``max(n, m)`` midpoint levels. ``p = inf`` gives the max-sliced
    ``max over directions of W_inf``, with ``W_inf`` the largest gap between the two step
    quantile functions (exact for unequal sizes too).

    Args:
        key: PRNG key for uniform random directions (ignored with ``directions``).
        x: ``(n, d)``; y: ``(m, d)``.
        num_projections: number of random directions, ``>= 1``.
        p: order ``>= 1``, or ``inf``.
        directions: optional ``(P, d)`` directions (normalised here), e.g. coordinate axes.
        chunk_size: directions per block.

    Example:
        >>> import jax, jax.numpy as jnp, manifold_scores as ms
        >>> x = jnp.zeros((4, 1)); y = jnp.full((4, 1), 2.0)
        >>> float(ms.metrics.sliced_wasserstein(None, x, y, directions=jnp.ones((1, 1))))
        2.0
    """
    x, y = _as_batch(x, "x"), _as_batch(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    p = float(p)
    if not p >= 1:
        raise ValueError(f"p must be >= 1 (or inf), got {p}")
    dtype = jnp.result_type(x, y)
    if directions is None:
        if isinstance(num_projections, bool) or not isinstance(num_projections,
                                                                (int, np.integer)) \
                or num_projections < 1:
            raise ValueError(f"num_projections must be a positive integer, got "
                             f"{num_projections!r}")
        directions = jax.random.normal(key, (int(num_projections), x.shape[1]), dtype)
    directions = jnp.asarray(directions, dtype)
    if directions.ndim != 2 or directions.shape[1] != x.shape[1] or directions.shape[0] < 1:
        raise ValueError(f"directions must have shape (P, {x.shape[1]}) with P >= 1, got "
                         f"{directions.shape}")
    directions = directions / jnp.linalg.norm(directions, axis=1, keepdims=True)
    n, m = x.shape[0], y.shape[0]

    if math.isinf(p):
        ix, iy = _step_quantile_indices(n, m)

        def one(v):
            px = jnp.sort(jnp.dot(x, v, precision=HIGHEST))
            py = jnp.sort(jnp.dot(y, v, precision=HIGHEST))
            return jnp.max(jnp.abs(px[ix] - py[iy]))

        return jnp.max(_map_rows(jax.vmap(one), directions, chunk_size))

    k = max(n, m)
    levels = (jnp.arange(k, dtype=dtype) + 0.5) / k

    def quantiles(sorted_vals, size):
        if size == k:
            return sorted_vals
        pos = levels * size - 0.5
        return jnp.interp(pos, jnp.arange(size, dtype=dtype), sorted_vals)

    def one(v):
        px = quantiles(jnp.sort(jnp.dot(x, v, precision=HIGHEST)), n)
        py = quantiles(jnp.sort(jnp.dot(y, v, precision=HIGHEST)), m)
        return jnp.mean(jnp.abs(px - py) ** p)

    wp = _map_rows(jax.vmap(one), directions, chunk_size)
    return jnp.mean(wp) ** (1.0 / p)


# ---------------------------------------------------------------------------------------------
# Scores and Jacobians
# ---------------------------------------------------------------------------------------------


def score_error_profile(key, learned: Callable, exact: Callable, data, levels, process=None,
                        *, relative: bool = True) -> jax.Array:
    """Score error at each noise level, on noised data ``x = alpha x0 + sigma z``.

    Args:
        key: PRNG key for the noise ``z`` (one draw per level and point).
        learned, exact: per-point ``score(x, level)``.
        data: ``(n, d)`` clean points ``x0``.
        levels: ``(L,)`` noise levels: sigmas (``alpha = 1``) when ``process`` is None, else
            times ``t`` of ``process`` (the scores are called with ``t``).
        process: optional process turning ``t`` into ``(alpha, sigma)``.
        relative: return ``E|s_hat - s|^2 / E|s|^2`` (else the mean squared error).

    Returns:
        ``(L,)`` errors.

    Example:
        >>> import jax, jax.numpy as jnp, manifold_scores as ms
        >>> exact = lambda x, s: -x / (1 + s**2)
        >>> learned = lambda x, s: -x
        >>> x0 = jax.random.normal(jax.random.key(0), (256, 2))
        >>> err = ms.metrics.score_error_profile(jax.random.key(1), learned, exact, x0,
        ...                                      jnp.array([0.01, 1.0]))
        >>> bool(err[0] < 1e-3 < err[1])
        True
    """
    data = _as_batch(data, "data")
    levels = jnp.asarray(levels, data.dtype).reshape(-1)

    def at(level, k):
        if process is None:
            alpha, sigma = jnp.ones((), data.dtype), level
        else:
            alpha, sigma = process.alpha(level), process.sigma(level)
        z = jax.random.normal(k, data.shape, data.dtype)
        x = alpha * data + sigma * z
        sh = jax.vmap(learned, (0, None))(x, level)
        s = jax.vmap(exact, (0, None))(x, level)
        err = jnp.mean(jnp.sum((sh - s) ** 2, -1))
        return err / jnp.mean(jnp.sum(s * s, -1)) if relative else err

    keys = jax.random.split(key, levels.shape[0])
    return jnp.stack([at(levels[i], keys[i]) for i in range(levels.shape[0])])


def jacobian_rank(jac, energy: float = 0.99) -> jax.Array:
    """Numerical rank: smallest ``r`` with ``sqrt(sum_{i<=r} s_i^2) > energy |J|_F``.

    Batched over leading axes of ``jac`` ``(..., m, n)``; a zero matrix has rank 0, and
    ``energy = 1`` counts the non-zero singular values. Returns floats (whole numbers) so that
    a Jacobian with a NaN or infinite entry has rank NaN instead of a plausible count;
    ``energy`` must lie in ``(0, 1]``.

    Example:
        >>> import jax.numpy as jnp, manifold_scores as ms
        >>> int(ms.metrics.jacobian_rank(jnp.diag(jnp.array([1.0, 1.0, 1e-3]))))
        2
    """
    jac = jnp.asarray(jac)
    if jac.ndim < 2:
        raise ValueError(f"jac must have shape (..., m, n), got {jac.shape}")
    if not isinstance(energy, jax.core.Tracer) and not 0.0 < float(energy) <= 1.0:
        raise ValueError(f"energy must lie in (0, 1], got {float(energy)}")
    if not jnp.issubdtype(jac.dtype, jnp.floating):
        jac = jac.astype(jnp.result_type(float))
    return _jacobian_rank(jac, energy)


@jax.jit
def _jacobian_rank(jac, energy):
    finite = jnp.all(jnp.isfinite(jac), axis=(-2, -1))
    # the SVD of a non-finite matrix is garbage (LAPACK may return zeros): feed it zeros
    s2 = jnp.linalg.svd(jnp.where(finite[..., None, None], jac, 0.0), compute_uv=False) ** 2
    total = jnp.sum(s2, -1, keepdims=True)
    frac = jnp.cumsum(s2, -1) / jnp.where(total > 0, total, 1.0)
    # Never more than the non-zero singular values: that caps the count at energy = 1 (where
    # the rule's strict ">" can only be met by rounding) and gives rank 0 for a zero matrix.
    rank = jnp.minimum(jnp.sum(frac <= energy**2, -1) + 1, jnp.sum(s2 > 0, -1))
    return jnp.where(finite, rank.astype(jac.dtype), jnp.nan)


# ---------------------------------------------------------------------------------------------
# Angle laws on a circle or an ellipse
# ---------------------------------------------------------------------------------------------


def angle_histogram(angles, bins: int = 64) -> np.ndarray:
    """Bin probabilities of angles on ``[-pi, pi)`` (wrapped), ``(bins,)``.

    Non-finite angles (diverged samples) count in the total but in no bin, so the
    probabilities then sum to less than 1 and the missing mass shows up in :func:`angle_tv`.
    """
    a = np.asarray(angles, np.float64).reshape(-1)
    finite = a[np.isfinite(a)]
    a = np.mod(finite + np.pi, 2.0 * np.pi) - np.pi
    counts, _ = np.histogram(a, bins=bins, range=(-np.pi, np.pi))
    return counts / max(len(np.asarray(angles).reshape(-1)), 1)


def _reference_bins(reference, bins: int, sub: int = 32) -> np.ndarray:
    if callable(reference):
        edges = np.linspace(-np.pi, np.pi, bins + 1)
        t = edges[:-1, None] + (np.arange(sub) + 0.5)[None, :] * (2.0 * np.pi / bins / sub)
        logp = np.asarray(reference(jnp.asarray(t.reshape(-1))), np.float64).reshape(bins, sub)
        p = np.exp(logp - logp.max()).sum(1)
        return p / p.sum()
    return angle_histogram(reference, bins)


def angle_tv(angles, reference, bins: int = 64) -> float:
    """Total variation ``(1/2) sum |p_hat_b - p_b|`` between angle histograms on a circle.

    Args:
        angles: ``(n,)`` sampled angles (radians; wrapped to ``[-pi, pi)``).
        reference: reference angles ``(m,)``, or a callable log-density of the angle (e.g.
            ``VonMises.log_prob_angle``, ``Ellipse.log_prob_angle``), integrated over each bin.
        bins: number of equal bins. With ``n`` samples the TV of the exact law is about
            ``sqrt(bins / (2 pi n))`` (the sampling floor).

    Example:
        >>> import jax, jax.numpy as jnp, manifold_scores as ms
        >>> theta = jax.random.uniform(jax.random.key(0), (20000,), minval=-3.14159, maxval=3.14159)
        >>> ms.metrics.angle_tv(theta, lambda t: jnp.zeros_like(t), bins=16) < 0.03
        True
    """
    p = angle_histogram(angles, bins)
    # Mass lost to non-finite samples counts fully: TV = (sum |p - q| + (1 - sum p)) / 2.
    return float(0.5 * (np.abs(p - _reference_bins(reference, bins)).sum() + (1.0 - p.sum())))


def angle_tv_laws(log_p, log_q, bins: int = 64) -> float:
    """Total variation between two angle laws given as log-densities, on the same bins as
    :func:`angle_tv` (so that it is the limit of ``angle_tv`` for many samples)."""
    return float(0.5 * np.abs(_reference_bins(log_p, bins) - _reference_bins(log_q, bins)).sum())

__dir__ = _public_dir(__all__)

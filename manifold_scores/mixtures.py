"""The one fast kernel: exact statistics of a noised Gaussian mixture at one point.

A clean law ``X ~ sum_k pi_k N(mu_k, Sigma_k)`` noised as ``Y = alpha X + sigma Z`` is again a
mixture. At a point ``x`` this module returns, in one pass over the components,

    log p(x),   score(x) = grad log p(x),   E[X | Y = x],   tr Cov[X | Y = x],

for two families of components:

* :func:`isotropic`: point masses ``mu_i = y_i`` (empirical laws, quadrature nodes of a manifold,
  kernel centres). Component ``i`` of ``Y`` is ``N(alpha y_i, sigma^2 I)``.
* :func:`lowrank`: ``N(mu_k, U_k diag(s_k^2) U_k^T + tau^2 I)`` with ``U_k`` orthonormal (MoLRG).
  Cost ``O(K r d)`` per point; no ``d x d`` matrix is formed.

Components are streamed in chunks with an online log-sum-exp (running maximum, rescaled sums),
so memory is ``O(chunk)`` per point and ``O(batch * chunk)`` under ``jax.vmap``, never
``O(batch * N)``. The score is accumulated as ``sum_i w_i (alpha mu_i - x) / sigma^2`` from exact
differences, never as ``alpha E[X|x] - x`` (two nearly equal numbers at small sigma).

Isotropic distances use the matmul expansion ``|x|^2 - 2 alpha x.y + alpha^2 |y|^2`` (HIGHEST
precision, since TF32 would ruin it) and then *refine*: the ``refine`` best candidates of each
chunk get their distances recomputed as ``|x - alpha y|^2`` directly. The expansion loses about
``eps |x|^2 / sigma^2`` nats per logit, which matters only for the components that carry the
posterior mass, and those are exactly the shortlisted ones.

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

__all__ = [
    "MixtureStats",
    "isotropic",
    "isotropic_logits",
    "isotropic_sharded",
    "lowrank",
    "lowrank_logits",
    "divergence",
    "DEFAULT_CHUNK_SIZE",
]

HIGHEST = lax.Precision.HIGHEST
DEFAULT_CHUNK_SIZE = 4096


class MixtureStats(NamedTuple):
    """Posterior statistics at one point ``x`` of ``Y = alpha X + sigma Z``.

    Attributes:
        log_prob: ``log p(x)``, shape ``()``.
        score: ``grad_x log p(x)``, shape ``(d,)``.
        mean: ``E[X | Y = x]`` (the denoiser), shape ``(d,)``.
        cov_trace: ``tr Cov[X | Y = x]``, shape ``()``.
    """

    log_prob: jax.Array
    score: jax.Array
    mean: jax.Array
    cov_trace: jax.Array


class _Acc(NamedTuple):
    """Running sums, all scaled by ``exp(-top)``; ``w_i`` are unnormalised posterior weights."""

    top: jax.Array  # running max of the logits
    total: jax.Array  # sum w
    mean: jax.Array  # sum w m_i            (m_i = E[X | x, component i])
    delta: jax.Array  # sum w (alpha m_i - x)
    delta_sq: jax.Array  # sum w |alpha m_i - x|^2
    within: jax.Array  # sum w tr Cov[X | x, component i]
    mean_sq: jax.Array  # sum w |m_i|^2      (only used when alpha = 0)


def _finalize_chunk(logits, mean, delta, delta_sq, within, mean_sq) -> _Acc:
    """Reduce per-chunk arrays into an accumulator relative to the chunk's own maximum."""
    top = jnp.max(logits)
    w = jnp.exp(logits - jnp.where(jnp.isfinite(top), top, 0.0))
    return _Acc(top, jnp.sum(w), mean(w), delta(w), w @ delta_sq, within(w), w @ mean_sq)


def _merge(a: _Acc, b: _Acc) -> _Acc:
    top = jnp.maximum(a.top, b.top)
    ref = jnp.where(jnp.isfinite(top), top, 0.0)
    ca, cb = jnp.exp(a.top - ref), jnp.exp(b.top - ref)
    return _Acc(top, *(ca * u + cb * v for u, v in zip(a[1:], b[1:], strict=True)))


def _stream(chunk_fn, arrays, num_chunks: int) -> _Acc:
    """Fold ``chunk_fn`` over the leading chunk axis of ``arrays`` with an online log-sum-exp.

    The first chunk seeds the accumulator, so the carry inherits its types (and, inside
    ``shard_map``, its per-device variance) without a synthetic ``-inf`` start.
    """
    first = chunk_fn(jax.tree.map(lambda a: a[0], arrays))
    if num_chunks == 1:
        return first

    def body(acc, chunk):
        return _merge(acc, chunk_fn(chunk)), None

    acc, _ = lax.scan(body, first, jax.tree.map(lambda a: a[1:], arrays))
    return acc


def _to_stats(acc: _Acc, x, alpha, sigma, log_norm) -> MixtureStats:
    total = acc.total
    mean = acc.mean / total
    delta = acc.delta / total
    a2 = alpha * alpha
    # alpha^2 tr Cov[X|x] = E|alpha m - x|^2 - |E(alpha m - x)|^2 + alpha^2 E tr Cov_i
    noised_var = acc.delta_sq / total - jnp.sum(delta * delta) + a2 * acc.within / total
    prior_var = acc.mean_sq / total - jnp.sum(mean * mean) + acc.within / total
    safe_a2 = jnp.where(a2 > 0, a2, 1.0)
    cov_trace = jnp.maximum(jnp.where(a2 > 0, noised_var / safe_a2, prior_var), 0.0)
    return MixtureStats(
        log_prob=acc.top + jnp.log(total) + log_norm,
        score=delta / (sigma * sigma),
        mean=mean,
        cov_trace=cov_trace,
    )


def _pad_chunks(arrays, pad_values, n: int, chunk_size: int | None):
    """Reshape leading axis ``n`` into ``(num_chunks, chunk, ...)``, padding the last chunk."""
    size = n if chunk_size is None or chunk_size >= n else int(chunk_size)
    num_chunks = -(-n // size)
    pad = num_chunks * size - n
    out = []
    for a, v in zip(arrays, pad_values, strict=True):
        if pad:
            widths = [(0, pad)] + [(0, 0)] * (a.ndim - 1)
            a = jnp.pad(a, widths, constant_values=v)
        out.append(a.reshape((num_chunks, size) + a.shape[1:]))
    return tuple(out), num_chunks, size


def _check_chunk_size(chunk_size):
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")


def _isotropic_inputs(x, points, log_weights, alpha, sigma):
    points = jnp.asarray(points)
    log_weights = jnp.asarray(log_weights)
    _checks.check_ndim(points, 2, "points", "(N, d)")
    _checks.check_nonempty(points, "points")
    n, d = points.shape
    _checks.check_point(x, d)
    if jnp.shape(log_weights) != (n,):
        raise ValueError(f"log_weights must have shape ({n},), got {jnp.shape(log_weights)}")
    alpha, sigma = _checks.check_noise_levels(alpha, sigma)
    dtype = _checks.float_dtype(x, points, log_weights)
    return tuple(jnp.asarray(a, dtype) for a in (x, points, log_weights, alpha, sigma))


def isotropic_logits(x, points, log_weights, alpha, sigma) -> jax.Array:
    """``log pi_i - |x - alpha y_i|^2 / (2 sigma^2)``, shape ``(N,)``; ``softmax`` gives ``P(i|x)``.

    Materialises all ``N`` logits with exact differences (no streaming): for inspection and
    small ``N``. Arguments as in :func:`isotropic`.
    """
    x, points, log_weights, alpha, sigma = _isotropic_inputs(x, points, log_weights, alpha, sigma)
    diff = alpha * points - x
    return log_weights - jnp.sum(diff * diff, -1) / (2.0 * sigma * sigma)


def isotropic(x, points, log_weights, alpha, sigma, *, chunk_size: int | None = DEFAULT_CHUNK_SIZE,
              refine: int | None = None, refine_tol: float = 1e-6) -> MixtureStats:
    """Statistics of ``sum_i exp(log_weights_i) N(alpha y_i, sigma^2 I)`` at one point.

    Posterior weights ``w_i = softmax_i(l_i - |x - alpha y_i|^2 / (2 sigma^2))``;
    ``E[X|x] = sum_i w_i y_i``; ``score = sum_i w_i (alpha y_i - x) / sigma^2``.

    Args:
        x: query point, shape ``(d,)``.
        points: component locations ``y_i`` of the clean law, shape ``(N, d)``.
        log_weights: ``log pi_i``, shape ``(N,)`` (normalised for a probability law; ``-inf``
            allowed for empty components).
        alpha, sigma: noise levels (scalars, ``sigma > 0``).
        chunk_size: components per streamed chunk (static). ``None`` means one chunk.
        refine: per chunk, how many best candidates get exact distances (static). ``None``
            chooses 32 below 64-bit precision and 0 in float64, where the expansion's error
            ``eps |y|^2 / sigma^2`` stays below ``1e-8`` nats down to ``sigma = 1e-4``.
        refine_tol: refinement runs only when the expansion's logit error bound
            ``eps * 2 alpha^2 max|y|^2 / (2 sigma^2)`` exceeds this many nats (a ``lax.cond`` on
            unbatched values, so large-sigma calls skip the shortlist).

    Returns:
        :class:`MixtureStats`.
    """
    x, points, log_weights, alpha, sigma = _isotropic_inputs(x, points, log_weights, alpha, sigma)
    _check_chunk_size(chunk_size)
    return _isotropic(x, points, log_weights, alpha, sigma, chunk_size, refine, refine_tol)


@functools.partial(jax.jit, static_argnums=(5, 6, 7))
def _isotropic(x, points, log_weights, alpha, sigma, chunk_size, refine, refine_tol):
    # jit so that eager calls reuse one compiled program instead of re-tracing the scan body
    acc = _isotropic_acc(x, points, log_weights, alpha, sigma, chunk_size, refine, refine_tol)
    return _isotropic_stats(acc, x, alpha, sigma)


def _isotropic_stats(acc, x, alpha, sigma):
    log_norm = -0.5 * x.shape[0] * jnp.log(2.0 * math.pi * sigma * sigma)
    return _to_stats(acc, x, alpha, sigma, log_norm)


def _isotropic_acc(x, points, log_weights, alpha, sigma, chunk_size, refine, refine_tol) -> _Acc:
    """The streamed accumulator of the isotropic mixture (before normalisation)."""
    n, d = points.shape
    (pts, lw), num_chunks, size = _pad_chunks(
        (points, log_weights), (0.0, -jnp.inf), n, chunk_size)
    eps = float(jnp.finfo(x.dtype).eps)
    if refine is None:
        refine = 0 if jnp.finfo(x.dtype).bits >= 64 else 32
    k = min(int(refine), size)
    inv_two_var = 0.5 / (sigma * sigma)
    x_sq = jnp.sum(x * x)

    def plain(y, lw_c, y_sq, dist_sq):
        def mean(w):
            return jnp.dot(w, y, precision=HIGHEST)

        def delta(w):
            return alpha * mean(w) - jnp.sum(w) * x

        return _finalize_chunk(lw_c - dist_sq * inv_two_var, mean, delta, dist_sq, _no_within,
                               y_sq)

    def refined(y, lw_c, y_sq, dist_sq):
        _, idx = lax.top_k(lw_c - dist_sq * inv_two_var, k)
        y_top = y[idx]
        diff_top = alpha * y_top - x  # exact differences for the candidates that matter
        dist_sq = dist_sq.at[idx].set(jnp.sum(diff_top * diff_top, axis=-1))

        def mean(w):
            w_top, w_rest = w[idx], w.at[idx].set(0.0)
            return jnp.dot(w_rest, y, precision=HIGHEST) + jnp.dot(w_top, y_top, precision=HIGHEST)

        def delta(w):
            w_top, w_rest = w[idx], w.at[idx].set(0.0)
            rest = alpha * jnp.dot(w_rest, y, precision=HIGHEST) - jnp.sum(w_rest) * x
            return rest + jnp.dot(w_top, diff_top, precision=HIGHEST)

        return _finalize_chunk(lw_c - dist_sq * inv_two_var, mean, delta, dist_sq, _no_within,
                               y_sq)

    if k > 0:
        # Decided from unbatched values, so under vmap over x this stays a real branch.
        y_max_sq = jnp.max(jnp.sum(points * points, axis=-1))
        needs_refine = eps * alpha * alpha * y_max_sq * inv_two_var * 2.0 > refine_tol

    def chunk_fn(chunk):
        y, lw_c = chunk
        y_sq = jnp.sum(y * y, axis=-1)
        xy = jnp.dot(y, x, precision=HIGHEST)
        dist_sq = jnp.maximum(x_sq - 2.0 * alpha * xy + alpha * alpha * y_sq, 0.0)
        if k == 0:
            return plain(y, lw_c, y_sq, dist_sq)
        return lax.cond(needs_refine, refined, plain, y, lw_c, y_sq, dist_sq)

    return _stream(chunk_fn, (pts, lw), num_chunks)


def _no_within(w):
    # point masses have no within-component spread; derived from w so that it varies per
    # device like every other accumulator field inside shard_map
    return 0.0 * w[0]


def isotropic_sharded(xs, points, log_weights, alpha, sigma, *, mesh: jax.sharding.Mesh,
                      points_axis: str, batch_axis: str | None = None,
                      chunk_size: int | None = DEFAULT_CHUNK_SIZE, refine: int | None = None,
                      refine_tol: float = 1e-6) -> MixtureStats:
    """:func:`isotropic` for a batch, with the components sharded over devices.

    Each device streams its own share of the ``N`` components for every query; the partial
    accumulators are then combined by a cross-device log-sum-exp (``pmax`` of the running
    maxima, ``psum`` of the rescaled sums), so no device ever holds more than ``N / devices``
    components or a ``(batch, N)`` array. Queries may also be split over ``batch_axis``.

    Args:
        xs: queries, shape ``(B, d)`` (a batch: this function is already vectorised).
        points, log_weights, alpha, sigma, chunk_size, refine, refine_tol: as in
            :func:`isotropic`.
        mesh: the device mesh.
        points_axis: mesh axis that splits the components.
        batch_axis: optional mesh axis that splits the queries.

    Returns:
        :class:`MixtureStats` with a leading batch axis.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jax.sharding import Mesh
        >>> mesh = Mesh(jax.devices(), ("points",))
        >>> pts = jax.random.normal(jax.random.key(0), (1000, 3))
        >>> st = isotropic_sharded(jnp.zeros((4, 3)), pts, jnp.full(1000, -jnp.log(1000.)),
        ...                        1.0, 0.5, mesh=mesh, points_axis="points")
        >>> st.score.shape
        (4, 3)
    """
    from jax.sharding import PartitionSpec as P

    xs = jnp.asarray(xs)
    _checks.check_ndim(xs, 2, "xs", "(B, d)")
    _, points, log_weights, alpha, sigma = _isotropic_inputs(
        xs[0], points, log_weights, alpha, sigma)
    xs = xs.astype(points.dtype)
    _check_chunk_size(chunk_size)
    if points_axis not in mesh.axis_names:
        raise ValueError(f"points_axis {points_axis!r} is not an axis of the mesh "
                         f"{mesh.axis_names}")
    if batch_axis is not None and batch_axis not in mesh.axis_names:
        raise ValueError(f"batch_axis {batch_axis!r} is not an axis of the mesh {mesh.axis_names}")
    shards = mesh.shape[points_axis]
    pad = (-points.shape[0]) % shards  # empty components (log-weight -inf) fill the last shard
    if pad:
        points = jnp.pad(points, ((0, pad), (0, 0)))
        log_weights = jnp.pad(log_weights, (0, pad), constant_values=-jnp.inf)

    def local(xs_local, pts_local, lw_local, alpha, sigma):
        acc = jax.vmap(_isotropic_acc, (0, None, None, None, None, None, None, None))(
            xs_local, pts_local, lw_local, alpha, sigma, chunk_size, refine, refine_tol)
        top = jax.lax.pmax(acc.top, points_axis)
        ref = jnp.where(jnp.isfinite(top), top, 0.0)
        scale = jnp.exp(acc.top - ref)
        merged = _Acc(top, *(jax.lax.psum(_scale_rows(scale, f), points_axis) for f in acc[1:]))
        return jax.vmap(_isotropic_stats, (0, 0, None, None))(merged, xs_local, alpha, sigma)

    fn = jax.shard_map(
        local, mesh=mesh,
        in_specs=(P(batch_axis), P(points_axis), P(points_axis), P(), P()),
        out_specs=P(batch_axis))
    return jax.jit(fn)(xs, points, log_weights, alpha, sigma)


def _scale_rows(scale, field):
    return scale.reshape(scale.shape + (1,) * (field.ndim - 1)) * field


def _lowrank_terms(x, u, log_weights, mu, s, alpha, sigma, tau2):
    """Per-component logits, posterior means, ``alpha m_k - x`` and posterior-covariance traces."""
    d, r = u.shape[-2:]
    a2 = alpha * alpha
    sig2 = sigma * sigma
    e2 = a2 * tau2 + sig2  # off-subspace variance of a noised component
    # U^T x as one (batch, d) x (d, K r) matmul under vmap; U^T mu does not depend on x.
    p = (jnp.einsum("cdr,d->cr", u, x, precision=HIGHEST)
         - alpha * jnp.einsum("cdr,cd->cr", u, mu, precision=HIGHEST))
    s2 = s * s
    lam = a2 * s2 + e2  # (C, r) eigenvalues of C_k inside the subspace
    # the three in-subspace vectors U p, U (sigma^2/lam) p, U alpha (s^2 + tau^2)/lam p in one dot
    coef = jnp.stack([p, (sig2 / lam) * p, alpha * (s2 + tau2) / lam * p])
    u_coef = jnp.einsum("cdr,jcr->jcd", u, coef, precision=HIGHEST)
    z_perp = x - alpha * mu - u_coef[0]  # computed directly, never as |z|^2 - |p|^2
    quad = jnp.sum(z_perp * z_perp, -1) / e2 + jnp.sum(p * p / lam, -1)
    log_det = d * jnp.log(e2) + jnp.sum(jnp.log1p(a2 * s2 / e2), -1)
    logits = log_weights - 0.5 * (quad + log_det + d * math.log(2.0 * math.pi))
    diff = -(sig2 / e2) * z_perp - u_coef[1]
    m = mu + u_coef[2] + (alpha * tau2 / e2) * z_perp
    within = jnp.sum((s2 + tau2) * sig2 / lam, -1) + (d - r) * tau2 * sig2 / e2
    return logits, m, diff, within


def _lowrank_inputs(x, bases, log_weights, alpha, sigma, means, scales, noise_floor):
    """Validate and cast the low-rank arguments; fill default means, scales."""
    bases = jnp.asarray(bases)
    log_weights = jnp.asarray(log_weights)
    _checks.check_ndim(bases, 3, "bases", "(K, d, r)")
    _checks.check_nonempty(bases, "bases")
    kk, d, r = bases.shape
    _checks.check_point(x, d)
    if jnp.shape(log_weights) != (kk,):
        raise ValueError(f"log_weights must have shape ({kk},), got {jnp.shape(log_weights)}")
    if means is not None and jnp.shape(means) != (kk, d):
        raise ValueError(f"means must have shape ({kk}, {d}), got {jnp.shape(means)}")
    if scales is not None and jnp.shape(scales) != (kk, r):
        raise ValueError(f"scales must have shape ({kk}, {r}), got {jnp.shape(scales)}")
    _checks.check_scalar(noise_floor, "noise_floor")
    alpha, sigma = _checks.check_noise_levels(alpha, sigma)
    dtype = _checks.float_dtype(x, bases, log_weights, means, scales)
    cast = lambda a: jnp.asarray(a, dtype)
    means = jnp.zeros((kk, d), dtype) if means is None else cast(means)
    scales = jnp.ones((kk, r), dtype) if scales is None else cast(scales)
    return (cast(x), cast(bases), cast(log_weights), cast(alpha), cast(sigma), means, scales,
            jnp.square(cast(noise_floor)))


def lowrank_logits(x, bases, log_weights, alpha, sigma, *, means=None, scales=None,
                   noise_floor=0.0) -> jax.Array:
    """Log joint ``log pi_k + log N(x; alpha mu_k, C_k)`` of every component, shape ``(K,)``.

    ``softmax`` of it is the posterior ``P(k | x)``; arguments as in :func:`lowrank`.
    """
    x, u, lw, alpha, sigma, mu, s, tau2 = _lowrank_inputs(
        x, bases, log_weights, alpha, sigma, means, scales, noise_floor)
    return _lowrank_terms(x, u, lw, mu, s, alpha, sigma, tau2)[0]


def lowrank(x, bases, log_weights, alpha, sigma, *, means=None, scales=None, noise_floor=0.0,
            chunk_size: int | None = DEFAULT_CHUNK_SIZE) -> MixtureStats:
    """Statistics of a noised mixture of low-rank-plus-isotropic Gaussians at one point.

    Component ``k`` of the clean law is ``N(mu_k, U_k diag(s_k^2) U_k^T + tau^2 I)``; noised, it
    is ``N(alpha mu_k, C_k)``, ``C_k = alpha^2 U_k diag(s_k^2) U_k^T + (alpha^2 tau^2 + sigma^2)I``.
    With ``z = x - alpha mu``, ``p = U^T z``, ``e^2 = alpha^2 tau^2 + sigma^2`` and
    ``lam_j = alpha^2 s_j^2 + e^2``: ``z^T C^{-1} z = |z - U p|^2 / e^2 + sum_j p_j^2 / lam_j``
    and ``alpha m - x = -(sigma^2 / e^2)(z - U p) - U (sigma^2 / lam) p`` (no cancellation).

    Args:
        x: query point, shape ``(d,)``.
        bases: ``U_k`` with orthonormal columns, shape ``(K, d, r)``.
        log_weights: ``log pi_k``, shape ``(K,)``.
        alpha, sigma: noise levels (scalars, ``sigma > 0``).
        means: optional ``mu_k``, shape ``(K, d)``.
        scales: optional per-direction standard deviations ``s_k``, shape ``(K, r)`` (default 1).
        noise_floor: ``tau >= 0``, an isotropic clean-data noise level (default 0).
        chunk_size: components per streamed chunk (static); ``None`` means one chunk.
    """
    x, bases, log_weights, alpha, sigma, means, scales, tau2 = _lowrank_inputs(
        x, bases, log_weights, alpha, sigma, means, scales, noise_floor)
    _check_chunk_size(chunk_size)
    return _lowrank(x, bases, log_weights, alpha, sigma, means, scales, tau2, chunk_size)


@functools.partial(jax.jit, static_argnums=(8,))
def _lowrank(x, bases, log_weights, alpha, sigma, means, scales, tau2, chunk_size):
    kk = bases.shape[0]
    (u, lw, mu, s), num_chunks, _ = _pad_chunks(
        (bases, log_weights, means, scales),
        (0.0, -jnp.inf, 0.0, 1.0), kk, chunk_size)

    def chunk_fn(chunk):
        logits, m, diff, within = _lowrank_terms(x, *chunk, alpha, sigma, tau2)
        return _finalize_chunk(
            logits,
            lambda w: jnp.dot(w, m, precision=HIGHEST),
            lambda w: jnp.dot(w, diff, precision=HIGHEST),
            jnp.sum(diff * diff, -1),
            lambda w: jnp.dot(w, within),
            jnp.sum(m * m, -1),
        )

    acc = _stream(chunk_fn, (u, lw, mu, s), num_chunks)
    return _to_stats(acc, x, alpha, sigma, jnp.zeros((), x.dtype))


def divergence(stats: MixtureStats, alpha, sigma):
    """Divergence of the score without autodiff: ``-d/sigma^2 + alpha^2 tr Cov[X|x] / sigma^4``."""
    d = stats.score.shape[-1]
    s2 = sigma * sigma
    return -d / s2 + alpha * alpha * stats.cov_trace / (s2 * s2)

"""The MoLRG-parameterised denoiser and the subspace-clustering solvers it is equivalent to.

Wang, Zhang et al., "Diffusion models learn low-dimensional distributions via subspace
clustering" (arXiv 2409.02426) parameterise the denoiser as the posterior mean of a mixture of
low-rank Gaussians with trainable orthonormal bases ``U_k``:

    x0_hat(x) = sum_k w_k(x) alpha / (alpha^2 + sigma^2) U_k U_k^T x,
    w_k = softmax_k( alpha^2 |U_k^T x|^2 / (2 sigma^2 (alpha^2 + sigma^2)) ),

(equal mixture weights), evaluated here by the streamed kernel
:func:`manifold_scores.mixtures.lowrank`. Minimising DSM over the ``U_k`` is PCA for ``K = 1`` and
a subspace-clustering problem for ``K > 1``; :func:`pca`, :func:`subspace_clustering` (spectral
initialisation, K-subspaces polish, a truth-free certificate :func:`subspace_residual`) and
:func:`k_subspaces` (random restarts) solve those directly.

Bases stay orthonormal in one of two ways: the *Stiefel parameterisation*
(``orthonormalize="qr"`` or ``"polar"``: the raw ``(K, d, r)`` parameters are mapped onto the
Stiefel manifold inside :func:`apply`, so any optimiser works), or plain parameters
(``orthonormalize="none"``) with a *retraction* after every optimiser step
(:func:`retract`, passed to ``training.fit(..., post_update=...)``).

Example:
    >>> import jax, jax.numpy as jnp, manifold_scores as ms
    >>> from manifold_scores.models import lowrank
    >>> p = lowrank.init(jax.random.key(0), dim=8, rank=2, num_components=3, process=ms.VE())
    >>> lowrank.apply(p, jnp.ones(8), 0.5).shape
    (8,)
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from manifold_scores import _checks, mixtures
from manifold_scores._api import public_dir as _public_dir
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.losses import _check_count, _check_process
from manifold_scores.scores import PARAMETERISATIONS, convert

__all__ = ["LowRankParams", "init", "apply", "bases", "retract", "orthonormalize", "pca",
           "k_subspaces", "subspace_clustering", "subspace_objective", "subspace_residual"]

ORTHONORMALIZE = ("qr", "polar", "none")


def orthonormalize(raw, method: str = "qr"):
    """Map ``(..., d, r)`` matrices onto the Stiefel manifold (orthonormal columns).

    ``"qr"``: the Q factor with ``diag(R) > 0`` (a smooth map near full rank), by Gram-Schmidt
    in plain XLA (see :func:`_orthonormal_columns`: LAPACK's batched ``geqrf`` can deadlock
    XLA:CPU when models are trained under ``jax.vmap``); ``"polar"``: ``W (W^T W)^{-1/2}``, the
    nearest orthonormal matrix.
    """
    if method == "qr":
        return _orthonormal_columns(raw)
    if method == "polar":
        gram = jnp.einsum("...dr,...ds->...rs", raw, raw, precision=jax.lax.Precision.HIGHEST)
        evals, evecs = jnp.linalg.eigh(gram)
        inv_sqrt = jnp.einsum("...rs,...s,...ts->...rt", evecs, 1.0 / jnp.sqrt(evals), evecs)
        return jnp.einsum("...dr,...rs->...ds", raw, inv_sqrt,
                          precision=jax.lax.Precision.HIGHEST)
    if method == "none":
        return raw
    raise ValueError(f"orthonormalize must be one of {ORTHONORMALIZE}, got {method!r}")


@pytree_dataclass
class LowRankParams:
    """Raw bases ``(K, d, r)`` and optional log-weights ``(K,)`` (leaves); configuration static.

    ``log_weights=None`` fixes equal weights, as in the paper.
    """

    raw: jax.Array
    log_weights: jax.Array | None = None
    process: Any = static_field(default=None)
    orthonormalize: str = static_field(default="qr")
    target: str = static_field(default="x0")


def _check_dtype(dtype, name):
    # QR and eigh (the Stiefel maps, the baselines) have no float16 kernels on CPU
    if jnp.dtype(dtype) not in (jnp.float32, jnp.float64):
        raise ValueError(f"{name} must be float32 or float64 (the low-rank model's "
                         f"orthonormalisation has no kernels for others), got {jnp.dtype(dtype)}")


def init(key, dim: int, rank: int, num_components: int, process, *, orthonormalize: str = "qr",
         target: str = "x0", learn_weights: bool = False, bases=None, dtype=None) -> LowRankParams:
    """Random orthonormal bases (or the given ``bases``), equal weights.

    ``process`` turns ``t`` into ``(alpha, sigma)`` in :func:`apply`; ``dtype`` is float32 or
    float64 (default: the default float).
    """
    if orthonormalize not in ORTHONORMALIZE:
        raise ValueError(f"orthonormalize must be one of {ORTHONORMALIZE}, got {orthonormalize!r}")
    if target not in PARAMETERISATIONS:
        raise ValueError(f"target must be one of {PARAMETERISATIONS}, got {target!r}")
    _check_process(process)
    if not 1 <= rank <= dim or num_components < 1:
        raise ValueError(f"need 1 <= rank <= dim and num_components >= 1, got rank={rank}, "
                         f"dim={dim}, num_components={num_components}")
    dtype = dtype or jnp.result_type(float)
    _check_dtype(dtype, "dtype")
    if bases is None:
        g = jax.random.normal(key, (num_components, dim, rank), dtype)
        bases = _orthonormal_columns(g)
    bases = jnp.asarray(bases, dtype)
    if bases.shape != (num_components, dim, rank):
        raise ValueError(f"bases must have shape {(num_components, dim, rank)}, got {bases.shape}")
    lw = jnp.zeros((num_components,), dtype) if learn_weights else None
    return LowRankParams(bases, lw, process, orthonormalize, target)


def bases(params: LowRankParams) -> jax.Array:
    """The orthonormal bases ``U_k``, shape ``(K, d, r)``."""
    return orthonormalize(params.raw, params.orthonormalize)


def retract(params: LowRankParams, method: str = "qr") -> LowRankParams:
    """Retraction onto the Stiefel manifold after an optimiser step (for ``"none"`` params)."""
    return LowRankParams(orthonormalize(params.raw, method), params.log_weights, params.process,
                         params.orthonormalize, params.target)


def apply(params: LowRankParams, x, t):
    """The prediction (default ``x0``) at one point ``x`` and time ``t``."""
    _check_dtype(params.raw.dtype, "the model's parameters")
    # integer points would cast alpha and sigma to integers
    x = _checks.as_float_array(x, "x")
    u = bases(params)
    dtype = _checks.float_dtype(x, u)
    alpha = jnp.asarray(params.process.alpha(t), dtype)
    sigma = jnp.asarray(params.process.sigma(t), dtype)
    lw = params.log_weights
    lw = jnp.zeros(u.shape[0], dtype) if lw is None else jax.nn.log_softmax(lw)
    st = mixtures.lowrank(x, u, lw, alpha, sigma)
    if params.target == "x0":
        return st.mean
    return convert(st.mean, x, alpha, sigma, source="x0", target=params.target)


# --------------------------------------------------------------------------------------------
# Closed-form baselines
# --------------------------------------------------------------------------------------------


def pca(x, rank: int) -> jax.Array:
    """Top-``rank`` eigenvectors of the (uncentred) second moment of ``x`` (``(n, d)``):
    the DSM minimiser of the ``K = 1`` model. Returns ``(1, d, rank)``."""
    x = _checks.as_float_array(x, "x")
    _checks.check_ndim(x, 2, "x", "(n, d)")
    _check_count(rank, "rank", 1, min(x.shape))
    _, _, vt = jnp.linalg.svd(x, full_matrices=False)
    return vt[:rank].T[None]


def subspace_objective(x, u) -> jax.Array:
    """``sum_i max_k |U_k^T x_i|^2``: the hard-assignment subspace-clustering objective."""
    proj = jnp.einsum("nd,kdr->nkr", x, u, precision=jax.lax.Precision.HIGHEST)
    return jnp.sum(jnp.max(jnp.sum(proj * proj, -1), -1))


def subspace_residual(x, u) -> jax.Array:
    """``1 - subspace_objective(x, u) / |x|_F^2``: the share of the data's energy off the
    union of the subspaces ``u`` ``(K, d, r)``.

    The certificate of a subspace-clustering solution that needs no ground truth: it is 0 for
    noiseless data exactly on ``K`` subspaces of rank ``r`` when ``u`` spans them, and
    positive when the solver missed (the planted subspaces themselves score 0).
    """
    total = jnp.sum(x * x)
    return 1.0 - subspace_objective(x, u) / jnp.where(total > 0, total, 1.0)


FINAL_POWER = 16  # subspace-iteration steps on the final clusters (squared ratio per step)


def _orthonormal_columns(a):
    """Orthonormal columns spanning those of ``a`` ``(..., m, r)``, in plain XLA.

    Classical Gram-Schmidt applied twice per column (as accurate as Householder QR for the
    well-conditioned bases here); a column that depends on the previous ones is replaced by a
    fixed direction made orthogonal to them, so the result always has ``r`` orthonormal columns.
    Not LAPACK on purpose: XLA:CPU (jax 0.10) on two or more threads deadlocks when batched
    ``geqrf`` / ``syevd`` custom calls run concurrently with the rest of a graph (measured here:
    the vmapped clustering of E5 never returned, at 0% CPU; see also ``models.kernel``).
    """
    m, r = a.shape[-2], a.shape[-1]
    spare = jax.random.normal(jax.random.key(0), (m, r), a.dtype)
    hi = jax.lax.Precision.HIGHEST
    cols = []

    def project_out(v):
        if not cols:
            return v
        q = jnp.stack(cols, -1)
        for _ in range(2):
            v = v - jnp.einsum("...mr,...r->...m", q,
                               jnp.einsum("...mr,...m->...r", q, v, precision=hi), precision=hi)
        return v

    for j in range(r):  # unrolled: r is static and small, and XLA fuses straight-line code
        v = a[..., j]
        scale = jnp.linalg.norm(v, axis=-1, keepdims=True)
        v = project_out(v)
        norm = jnp.linalg.norm(v, axis=-1, keepdims=True)
        # dependent (or zero) column: take the spare direction instead
        weak = norm <= 1e-5 * jnp.maximum(scale, jnp.finfo(a.dtype).tiny)
        v = jnp.where(weak, project_out(jnp.broadcast_to(spare[:, j], v.shape)), v)
        cols.append(v / jnp.linalg.norm(v, axis=-1, keepdims=True))
    return jnp.stack(cols, -1)


def _cluster_pca(x, labels, num_components, rank, start=None, power: int = 1):
    """Top-``rank`` principal directions ``(K, d, r)`` of each cluster's rows.

    Subspace iteration ``U <- orth(X_c^T X_c U)`` in ``R^d`` (``O(n d r)``: no ``d x d`` or
    ``n x n`` eigensolver), from ``start`` (``(K, d, r)``: the previous bases, which K-subspaces
    refines) or from the randomised range ``X_c^T Omega``, exact after one step for a cluster of
    rank at most ``r``.
    """
    hi = jax.lax.Precision.HIGHEST
    onehot = jax.nn.one_hot(labels, num_components, dtype=x.dtype)  # (n, K)
    xc = x[None] * onehot.T[:, :, None]  # (K, n, d)
    if start is None:
        omega = jax.random.normal(jax.random.key(1), (num_components, x.shape[0], rank), x.dtype)
        start = jnp.einsum("knd,knr->kdr", xc, omega, precision=hi)
    u = _orthonormal_columns(start)
    for _ in range(power):
        u = _orthonormal_columns(jnp.einsum(
            "knd,knr->kdr", xc, jnp.einsum("knd,kdr->knr", xc, u, precision=hi), precision=hi))
    return u


def _k_subspaces_from(x, u0, num_components, rank, iters):
    """K-subspaces from the bases ``u0``: hard assignment by energy, then per-cluster PCA."""

    def step(u, _):
        energy = jnp.sum(jnp.einsum("nd,kdr->nkr", x, u,
                                    precision=jax.lax.Precision.HIGHEST) ** 2, -1)
        labels = jnp.argmax(energy, -1)
        new = _cluster_pca(x, labels, num_components, rank, start=u)
        # an empty cluster keeps its previous basis
        empty = jnp.sum(jax.nn.one_hot(labels, num_components, dtype=x.dtype), 0) == 0
        return jnp.where(empty[:, None, None], u, new), labels

    u, labels = jax.lax.scan(step, u0, None, length=iters)
    if iters == 0:
        return u
    # the polish's one power step per iteration tracks moving clusters; converge on the last
    return _cluster_pca(x, labels[-1], num_components, rank, start=u, power=FINAL_POWER)


def _random_bases(key, num_components, dim, rank, count, dtype):
    return _orthonormal_columns(jax.random.normal(key, (count, num_components, dim, rank), dtype))


def _clustering_args(x, num_components, rank, restarts, iters):
    """Checked ``(x, K, r, restarts, iters)``: x a non-empty ``(n, d)`` float array."""
    x = _checks.as_float_array(x, "x")
    _checks.check_ndim(x, 2, "x", "(n, d)")
    _checks.check_nonempty(x, "x")
    return (x, _check_count(num_components, "num_components"),
            _check_count(rank, "rank", 1, x.shape[1]), _check_count(restarts, "restarts"),
            _check_count(iters, "iters", 0))


@functools.partial(jax.jit, static_argnames=("num_components", "rank", "restarts", "iters"))
def _k_subspaces(key, x, num_components, rank, restarts, iters):
    u0 = _random_bases(key, num_components, x.shape[1], rank, restarts, x.dtype)
    us = jax.vmap(lambda u: _k_subspaces_from(x, u, num_components, rank, iters))(u0)
    objs = jax.vmap(lambda u: subspace_objective(x, u))(us)
    return us[jnp.argmax(objs)]


def k_subspaces(key, x, num_components: int, rank: int, *, restarts: int = 10,
                iters: int = 30) -> jax.Array:
    """K-subspaces (alternate hard assignment and per-cluster PCA) with random restarts.

    Returns the bases ``(K, d, r)`` of the restart with the largest
    :func:`subspace_objective`. ``num_components`` and ``restarts`` are at least 1,
    ``1 <= rank <= d``, ``iters >= 0``. Random restarts often miss the planted subspaces when
    clusters are small (``N_k`` near ``r``); :func:`subspace_clustering` starts from a
    spectral clustering instead.
    """
    return _k_subspaces(key, *_clustering_args(x, num_components, rank, restarts, iters))


def _spectral_labels(key, x, valid, num_components, restarts, iters=20):
    """Spectral clustering of the affinity ``|x_i . x_j|``: ``restarts`` label vectors.

    Points on a common subspace have correlated coordinates; points on mutually orthogonal
    subspaces have zero affinity, so the normalised affinity has ``K`` unit eigenvalues whose
    eigenvectors indicate the clusters (Ng, Jordan, Weiss). Rows of those eigenvectors,
    normalised, are split by k-means from farthest-point initialisations. Rows with
    ``valid = 0`` take no part.
    """
    k = num_components
    hi = jax.lax.Precision.HIGHEST
    gram = jnp.abs(jnp.einsum("nd,md->nm", x, x, precision=hi))
    deg = jnp.sum(gram, 1)
    inv = jnp.where(deg > 0, jax.lax.rsqrt(jnp.where(deg > 0, deg, 1.0)), 0.0)
    # the top-K eigenvectors by orthogonal iteration on the affinity shifted into [0, 2]
    # (plain XLA, see _orthonormal_columns), converging at rate (1 + lambda_{K+1}) / 2 per step
    shifted = inv[:, None] * gram * inv[None, :] + jnp.eye(x.shape[0], dtype=x.dtype)

    def power(v, _):
        return _orthonormal_columns(jnp.einsum("nm,mk->nk", shifted, v, precision=hi)), None

    v0 = _orthonormal_columns(jax.random.normal(jax.random.key(2), (x.shape[0], k), x.dtype))
    emb, _ = jax.lax.scan(power, v0, None, length=100)
    norm = jnp.linalg.norm(emb, axis=1, keepdims=True)
    emb = jnp.where(norm > 0, emb / jnp.where(norm > 0, norm, 1.0), 0.0)

    def kmeans(key):
        def dist2(centres):
            return jnp.sum((emb[:, None, :] - centres[None]) ** 2, -1)

        def add(centres, i):  # the valid point farthest from the centres chosen so far
            chosen = jnp.where(jnp.arange(k) < i, 0.0, jnp.inf)
            gap = jnp.min(dist2(centres) + chosen[None], -1)
            far = jnp.argmax(jnp.where(valid > 0, gap, -jnp.inf))
            return centres.at[i].set(emb[far]), None

        first = jax.random.choice(key, emb.shape[0], p=valid / jnp.sum(valid))
        centres = jnp.zeros((k, k), emb.dtype).at[0].set(emb[first])
        centres, _ = jax.lax.scan(add, centres, jnp.arange(1, k))

        def lloyd(centres, _):
            onehot = jax.nn.one_hot(jnp.argmin(dist2(centres), -1), k, dtype=emb.dtype)
            onehot = onehot * valid[:, None]
            count = jnp.sum(onehot, 0)
            mean = onehot.T @ emb / jnp.maximum(count, 1.0)[:, None]
            return jnp.where((count > 0)[:, None], mean, centres), None

        centres, _ = jax.lax.scan(lloyd, centres, None, length=iters)
        return jnp.argmin(dist2(centres), -1)

    return jax.vmap(kmeans)(jax.random.split(key, restarts))


@functools.partial(jax.jit, static_argnames=("num_components", "rank", "restarts", "iters"))
def _subspace_clustering(key, x, mask, num_components, rank, restarts, iters):
    k = num_components
    valid = jnp.ones(x.shape[0], x.dtype) if mask is None else mask.astype(x.dtype)
    x = x * valid[:, None]  # masked rows are zero: no affinity, no energy, no PCA weight
    if k == 1:
        return _cluster_pca(x, jnp.zeros(x.shape[0], jnp.int32), 1, rank)
    k_spec, k_rand = jax.random.split(key)
    labels = _spectral_labels(k_spec, x, valid, k, restarts)
    starts = jnp.concatenate([
        jax.vmap(lambda lab: _cluster_pca(x, lab, k, rank))(labels),
        _random_bases(k_rand, k, x.shape[1], rank, restarts, x.dtype)])
    us = jax.vmap(lambda u: _k_subspaces_from(x, u, k, rank, iters))(starts)
    objs = jax.vmap(lambda u: subspace_objective(x, u))(us)
    return us[jnp.argmax(objs)]


def subspace_clustering(key, x, num_components: int, rank: int, *, mask=None,
                        restarts: int = 4, iters: int = 20) -> jax.Array:
    """Subspace clustering of ``x`` ``(n, d)`` into ``K`` subspaces of rank ``r``: ``(K, d, r)``.

    The DSM minimiser of the ``K > 1`` low-rank denoiser at low noise (Wang, Zhang et al.,
    arXiv 2409.02426). Candidates: ``restarts`` spectral clusterings of the affinity
    ``|x_i . x_j|`` and ``restarts`` random bases, each polished by ``iters`` K-subspaces
    iterations; the one with the largest :func:`subspace_objective` is returned (the choice
    never looks at a ground truth). :func:`subspace_residual` certifies the result: 0 for
    noiseless data on ``K`` rank-``r`` subspaces means every point lies on a returned subspace.
    ``K = 1`` is :func:`pca`. Cost ``O(n^2 d)`` per iteration: no ``d x d`` matrix.
    ``mask`` ``(n,)`` (optional) marks the rows to use, so that sets of different sizes padded
    to one shape cluster under ``jax.vmap``.

    Example:
        >>> import jax, manifold_scores as ms
        >>> from manifold_scores.models import lowrank
        >>> mix = ms.MoLRG.random(jax.random.key(0), dim=16, rank=2, num_components=3)
        >>> x = mix.sample(jax.random.key(1), 30)
        >>> u = lowrank.subspace_clustering(jax.random.key(2), x, 3, 2, restarts=1, iters=5)
        >>> bool(ms.metrics.subspace_recovery(u, mix.bases).max_error < 1e-3)
        True
        >>> bool(lowrank.subspace_residual(x, u) < 1e-5)
        True
    """
    x, num_components, rank, restarts, iters = _clustering_args(x, num_components, rank,
                                                                restarts, iters)
    if mask is not None and jnp.shape(mask) != (x.shape[0],):
        raise ValueError(f"mask must have shape ({x.shape[0]},), got {jnp.shape(mask)}")
    return _subspace_clustering(key, x, mask, num_components, rank, restarts, iters)

__dir__ = _public_dir(__all__)

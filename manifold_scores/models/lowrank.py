"""The MoLRG-parameterised denoiser and the subspace-clustering solvers it is equivalent to.

Wang, Zhang et al., "Diffusion models learn low-dimensional distributions via subspace
clustering" (arXiv 2409.02426) parameterise the denoiser as the posterior mean of a mixture of
low-rank Gaussians with trainable orthonormal bases ``U_k``:

    x0_hat(x) = sum_k w_k(x) alpha / (alpha^2 + sigma^2) U_k U_k^T x,
    w_k = softmax_k( alpha^2 |U_k^T x|^2 / (2 sigma^2 (alpha^2 + sigma^2)) ),

(equal mixture weights), evaluated here by the streamed kernel
:func:`manifold_scores.mixtures.lowrank`. Minimising DSM over the ``U_k`` is PCA for ``K = 1`` and
a subspace-clustering problem for ``K > 1``; :func:`pca` and :func:`k_subspaces` solve those
directly and serve as baselines.

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
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.losses import _check_count, _check_process
from manifold_scores.scores import PARAMETERISATIONS, convert

__all__ = ["LowRankParams", "init", "apply", "bases", "retract", "orthonormalize", "pca",
           "k_subspaces", "subspace_objective"]

ORTHONORMALIZE = ("qr", "polar", "none")


def orthonormalize(raw, method: str = "qr"):
    """Map ``(..., d, r)`` matrices onto the Stiefel manifold (orthonormal columns).

    ``"qr"``: the Q factor with signs fixed so that ``diag(R) > 0`` (a smooth map near full
    rank); ``"polar"``: ``W (W^T W)^{-1/2}``, the nearest orthonormal matrix.
    """
    if method == "qr":
        q, r = jnp.linalg.qr(raw)
        sign = jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))
        sign = jnp.where(sign == 0, 1.0, sign)
        return q * sign[..., None, :]
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
        bases = jnp.linalg.qr(g)[0]
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


def _k_subspaces_once(key, x, num_components, rank, iters):
    n, d = x.shape
    u0 = jnp.linalg.qr(jax.random.normal(key, (num_components, d, rank), x.dtype))[0]

    def step(u, _):
        energy = jnp.sum(jnp.einsum("nd,kdr->nkr", x, u,
                                    precision=jax.lax.Precision.HIGHEST) ** 2, -1)
        labels = jnp.argmax(energy, -1)
        onehot = jax.nn.one_hot(labels, num_components, dtype=x.dtype)
        cov = jnp.einsum("nk,nd,ne->kde", onehot, x, x, precision=jax.lax.Precision.HIGHEST)
        _, evecs = jnp.linalg.eigh(cov)
        new = evecs[..., ::-1][..., :rank]
        # an empty cluster keeps its previous basis
        empty = jnp.sum(onehot, 0) == 0
        return jnp.where(empty[:, None, None], u, new), None

    u, _ = jax.lax.scan(step, u0, None, length=iters)
    return u, subspace_objective(x, u)


def k_subspaces(key, x, num_components: int, rank: int, *, restarts: int = 10,
                iters: int = 30) -> jax.Array:
    """K-subspaces (alternate hard assignment and per-cluster PCA) with random restarts.

    Returns the bases ``(K, d, r)`` of the restart with the largest
    :func:`subspace_objective`. ``num_components`` and ``restarts`` are at least 1,
    ``1 <= rank <= d``, ``iters >= 0``.
    """
    x = _checks.as_float_array(x, "x")
    _checks.check_ndim(x, 2, "x", "(n, d)")
    _checks.check_nonempty(x, "x")
    return _k_subspaces(key, x, _check_count(num_components, "num_components"),
                        _check_count(rank, "rank", 1, x.shape[1]),
                        _check_count(restarts, "restarts"), _check_count(iters, "iters", 0))


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _k_subspaces(key, x, num_components, rank, restarts, iters):
    keys = jax.random.split(key, restarts)
    us, objs = jax.vmap(lambda k: _k_subspaces_once(k, x, num_components, rank, iters))(keys)
    return us[jnp.argmax(objs)]

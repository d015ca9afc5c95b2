"""The WPO-informed kernel model: a Gaussian mixture with learned local precisions.

Zhang, Liu, Li, Katsoulakis, Osher, "Wasserstein proximal operators describe score-based
generative models and resolve memorization" (arXiv 2402.06162):

    pi(x) = (1/N) sum_i N(x; z_i, Gamma_i^{-1}),   Gamma_i = L_i L_i^T + eps I,

with ``L_i = L(z_i)`` from a small MLP of the centre (depth 5, width 64 in the official code) or
free per-centre parameters. ``L_i`` is ``(d, q)``: ``q = d`` lower-triangular (``full=True``, the
official Cholesky factor) or ``q << d`` (the scalable variant: isotropic plus rank ``q``). Under
the heat flow ``Y = alpha X + sigma Z`` it stays a mixture, with means ``alpha z_i`` and
``C_i = alpha^2 Gamma_i^{-1} + sigma^2 I``, so the score is closed form at every
``(alpha, sigma)``, ``sigma = 0`` (the terminal condition the model is trained at) included.

Everything is computed from ``q x q`` matrices, never ``d x d``: with ``G = L^T L``,
``M = eps I + G``, ``h = alpha^2 + sigma^2 eps``, ``K = h I + sigma^2 G`` and ``u = x - alpha z``,

    C^{-1} = Gamma W,   W u = (h I + sigma^2 L L^T)^{-1} u = (u - sigma^2 L K^{-1} L^T u) / h,
    log det C = (d - q) log(h / eps) + log det K - log det M,
    tr C^{-1} = (tr M + eps (d - q) - sigma^2 tr(K^{-1} G M)) / h,

and the component score ``s_i = -C_i^{-1} u = -(eps / h) u - L b`` with ``b`` in ``R^q``. The
mixture is streamed over chunks of centres with an online log-sum-exp; vectors in ``R^d`` enter
only through matmuls with ``x`` and with the stacked factors, so under ``vmap`` over a batch no
``(batch, centres, d)`` array is formed. The divergence of the score needs no autodiff:

    div s = sum_i w_i (|s_i|^2 - tr C_i^{-1}) - |s|^2,

so implicit score matching (the training objective, at ``alpha = 1, sigma = 0``) costs one pass.
Distances are formed relative to a centre ``c`` (``x - alpha c`` and ``z_i - c``), so data far
from the origin lose no digits to ``|x|^2 - 2 alpha x.z + alpha^2 |z|^2``. The divergence is a
difference of second moments, ``|s|^2`` times the rounding unit: in float32 it keeps its digits
near the data, not where ``|s|`` reaches ``1e3`` or more (far from every centre); use float64
there.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from manifold_scores.models import kernel
    >>> z = jax.random.normal(jax.random.key(0), (50, 2))
    >>> p = kernel.init(jax.random.key(1), z, width=8, depth=2)
    >>> st = kernel.stats(p, jnp.zeros(2), 1.0, 0.0)
    >>> st.score.shape, st.divergence.shape
    ((2,), ())
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from manifold_scores import _checks
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.losses import _check_count, _check_process
from manifold_scores.mixtures._stream import Acc, check_chunk_size, reduce_chunk, stream

__all__ = ["KernelParams", "KernelStats", "FactorNet", "init", "factors", "stats", "apply",
           "score_and_divergence", "ism_loss", "sample"]

HIGHEST = lax.Precision.HIGHEST


class FactorNet(nn.Module):
    """``z -> L(z)``, flattened ``(d q,)``: ``depth`` tanh layers of ``width``."""

    out: int
    width: int = 64
    depth: int = 5
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, z):
        h = z
        for _ in range(self.depth - 1):
            h = jnp.tanh(nn.Dense(self.width, param_dtype=z.dtype)(h))
        return nn.Dense(self.out, param_dtype=z.dtype, bias_init=self.bias_init,
                        kernel_init=nn.initializers.normal(1e-2))(h)


@pytree_dataclass
class KernelParams:
    """Centres ``(N, d)`` and the factor parameters (MLP variables or ``(N, d, q)``): the leaves.

    Static: ``rank`` (``q``), ``full`` (lower-triangular ``d x d``), ``kind`` (``"mlp"`` or
    ``"free"``), ``eps``, ``learn_centres``, MLP ``width``/``depth``, ``process`` (for
    :func:`apply`) and ``chunk_size`` (centres per streamed chunk).
    """

    centres: jax.Array
    factor: Any
    rank: int = static_field()
    full: bool = static_field(default=True)
    kind: str = static_field(default="mlp")
    eps: float = static_field(default=1.0)
    learn_centres: bool = static_field(default=False)
    width: int = static_field(default=64)
    depth: int = static_field(default=5)
    process: Any = static_field(default=None)
    chunk_size: int | None = static_field(default=1024)
    target: str = static_field(default="score")
    scale: float = static_field(default=1.0)

    @property
    def dim(self) -> int:
        return self.centres.shape[1]

    @property
    def num_centres(self) -> int:
        return self.centres.shape[0]

    def net(self) -> FactorNet:
        return FactorNet(self.dim * self.rank, self.width, self.depth)


def init(key, centres, *, rank: int | None = None, kind: str = "mlp", eps: float = 1.0,
         init_scale: float = 1.0, width: int = 64, depth: int = 5, learn_centres: bool = False,
         process=None, chunk_size: int | None = 1024) -> KernelParams:
    """Kernel model on ``centres`` ``(N, d)``; initially ``L_i = init_scale [I_q; 0]``.

    Args:
        key: PRNG key (MLP weights; free factors get a small random perturbation).
        centres: ``(N, d)`` kernel centres (training points or any other set).
        rank: ``q``; ``None`` gives the full lower-triangular ``d x d`` factor.
        kind: ``"mlp"`` (``L = MLP(z)``) or ``"free"`` (one ``(d, q)`` matrix per centre).
        eps: the isotropic precision floor (``Gamma >= eps I``), static.
        init_scale: initial ``L`` is ``init_scale`` times the first ``q`` columns of ``I``, so
            the initial kernel has standard deviation ``1 / sqrt(init_scale^2 + eps)`` there.
            The MLP's output is multiplied by it (``L = init_scale * MLP(z)``, the MLP starting
            near ``[I_q; 0]``), so that training learns relative changes whatever the scale;
            a good value is the inverse of the best isotropic KDE bandwidth.
        width, depth: the MLP's, both at least 1 (depth counts the output layer).
        learn_centres: let gradients move the centres (otherwise they are held fixed).
        process: turns ``t`` into ``(alpha, sigma)`` in :func:`apply`.
        chunk_size: centres per streamed chunk (a positive integer, or ``None``: one chunk).
    """
    centres = _checks.as_float_array(centres, "centres")
    _checks.check_ndim(centres, 2, "centres", "(N, d)")
    _checks.check_nonempty(centres, "centres")
    n, d = centres.shape
    full = rank is None
    q = d if full else int(rank)
    if not 1 <= q <= d:
        raise ValueError(f"rank must be in [1, {d}], got {rank}")
    if kind not in ("mlp", "free"):
        raise ValueError(f"kind must be 'mlp' or 'free', got {kind!r}")
    _checks.check_positive(eps, "eps")
    width = _check_count(width, "width")
    depth = _check_count(depth, "depth")  # counts the output layer
    check_chunk_size(chunk_size)
    if process is not None:
        _check_process(process)
    dtype = centres.dtype
    base = init_scale * jnp.eye(d, q, dtype=dtype)
    if kind == "mlp":
        eye = jnp.eye(d, q, dtype=dtype).reshape(-1)
        net = FactorNet(d * q, width, depth, bias_init=lambda *_: eye)
        factor = net.init(key, centres[0])
    else:
        factor = base + 1e-2 * init_scale * jax.random.normal(key, (n, d, q), dtype)
        if full:
            factor = jnp.tril(factor)
    return KernelParams(centres, factor, q, full, kind, float(eps), learn_centres, width, depth,
                        process, chunk_size, "score", float(init_scale) if kind == "mlp" else 1.0)


def _mask(params, lmat):
    return jnp.tril(lmat) if params.full else lmat


def _factors_of(params: KernelParams, factor, z):
    """``L`` for the centres ``z`` (``(c, d)``) given the factor leaf (or its chunk)."""
    d, q = params.dim, params.rank
    if params.kind == "mlp":
        lmat = params.scale * jax.vmap(lambda zi: params.net().apply(factor, zi))(z).reshape(
            -1, d, q)
    else:
        lmat = factor
    return _mask(params, lmat)


def factors(params: KernelParams) -> jax.Array:
    """All factors ``L_i``, shape ``(N, d, q)`` (materialised: for inspection and references)."""
    return _factors_of(params, params.factor, params.centres)


class KernelStats(NamedTuple):
    """Statistics of the noised kernel mixture at one point (see the module docstring)."""

    log_prob: jax.Array
    score: jax.Array
    mean: jax.Array
    cov_trace: jax.Array
    divergence: jax.Array


class _Sums(NamedTuple):
    """Weighted sums of one query over centres (``w_i`` unnormalised posterior weights)."""

    total: jax.Array
    score: jax.Array  # sum w s_i
    mean: jax.Array  # sum w m_i
    sq_minus_tr: jax.Array  # sum w (|s_i|^2 - tr C_i^{-1})
    within: jax.Array  # sum w tr Cov[X | x, i]
    mean_sq: jax.Array  # sum w |m_i|^2


def _cholesky(a: jax.Array) -> jax.Array:
    """Lower Cholesky factors of a batch of small SPD matrices ``(..., q, q)``, in plain XLA.

    Column by column (``q`` steps of ``O(q^2)`` batched work); agrees with
    ``jnp.linalg.cholesky`` in value and gradient (tested). Not LAPACK on purpose: with two
    or more CPU threads, XLA:CPU (jax 0.10) deadlocks when the batched ``potrf`` custom call
    is scheduled concurrently with the rest of this graph (measured: an ISM step with 500
    centres in ``d = 256`` never returns, at 0% CPU; on one core, or with this routine, it
    does).
    """
    q = a.shape[-1]
    idx = jnp.arange(q)
    a = 0.5 * (a + jnp.swapaxes(a, -1, -2))  # as jnp.linalg.cholesky: symmetric gradients

    def column(j, chol):
        row_j = jnp.where(idx < j, lax.dynamic_index_in_dim(chol, j, -2, keepdims=False), 0.0)
        a_col = lax.dynamic_index_in_dim(a, j, -1, keepdims=False)  # (..., q)
        pivot = jnp.sqrt(lax.dynamic_index_in_dim(a_col, j, -1, keepdims=False)
                         - jnp.sum(row_j * row_j, -1))
        below = (a_col - jnp.einsum("...ik,...k->...i", chol, row_j, precision=HIGHEST)) \
            / pivot[..., None]
        col = jnp.where(idx > j, below, jnp.where(idx == j, pivot[..., None], 0.0))
        return lax.dynamic_update_index_in_dim(chol, col[..., None], j, -1)

    return lax.fori_loop(0, q, column, jnp.zeros_like(a))


def _spd_inverse(chol: jax.Array) -> jax.Array:
    """``A^{-1} = L^{-T} L^{-1}`` from the Cholesky factor ``L`` of a batch ``(..., q, q)``.

    Forward substitution row by row in plain XLA, for the reason given in :func:`_cholesky`
    (LAPACK's ``trsm`` custom call deadlocks the same way in the gradient of the ISM step).
    """
    q = chol.shape[-1]
    idx = jnp.arange(q)
    eye = jnp.eye(q, dtype=chol.dtype)

    def row(i, inv):  # inv = L^{-1}, rows < i done: row i = (e_i - L[i, :i] inv[:i]) / L[i, i]
        l_row = jnp.where(idx < i, lax.dynamic_index_in_dim(chol, i, -2, keepdims=False), 0.0)
        l_ii = lax.dynamic_index_in_dim(lax.dynamic_index_in_dim(chol, i, -2, keepdims=False), i,
                                        -1, keepdims=False)
        new = (lax.dynamic_index_in_dim(eye, i, 0, keepdims=False)
               - jnp.einsum("...k,...kj->...j", l_row, inv, precision=HIGHEST)) / l_ii[..., None]
        return lax.dynamic_update_index_in_dim(inv, new[..., None, :], i, -2)

    inv_l = lax.fori_loop(0, q, row, jnp.zeros_like(chol))
    return jnp.einsum("...ki,...kj->...ij", inv_l, inv_l, precision=HIGHEST)


@jax.custom_jvp
def _spd_logdet_inv(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log det A, A^{-1})`` for a batch of SPD matrices ``(..., q, q)``, in plain XLA.

    Differentiated by its closed form, ``d log det A = tr(A^{-1} dA)`` and
    ``d A^{-1} = -A^{-1} dA A^{-1}`` (matmuls only), not through the ``q``-step loops of
    :func:`_cholesky` and :func:`_spd_inverse`: reverse mode through those loops costs about
    20x their forward time (measured at ``q = 64``).
    """
    chol = _cholesky(a)
    return (2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1),
            _spd_inverse(chol))


@_spd_logdet_inv.defjvp
def _spd_logdet_inv_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    logdet, inv = _spd_logdet_inv(a)
    da = 0.5 * (da + jnp.swapaxes(da, -1, -2))  # the primal reads only the symmetric part
    d_logdet = jnp.einsum("...ij,...ji->...", inv, da, precision=HIGHEST)
    d_inv = -jnp.einsum("...ij,...jk,...kl->...il", inv, da, inv, precision=HIGHEST)
    return (logdet, inv), (d_logdet, d_inv)


def _chunk(x, z, lmat, lw, alpha, sigma, eps, noiseless) -> Acc:
    """Accumulator of one chunk of centres ``z`` ``(c, d)``, factors ``(c, d, q)``.

    ``noiseless`` (static): ``sigma`` is known to be 0 (the terminal time, where the model is
    trained), so the covariance is ``alpha^2 Gamma^{-1}`` and the ``K`` algebra drops out.
    """
    c, d, q = lmat.shape
    dtype = x.dtype
    a2, s2 = alpha * alpha, sigma * sigma
    h = a2 + s2 * eps
    # x-independent q x q algebra (unbatched under vmap over x)
    gram = jnp.einsum("cdq,cdp->cqp", lmat, lmat, precision=HIGHEST)
    eye = jnp.eye(q, dtype=dtype)
    m_mat = eps * eye + gram
    logdet_m, _ = _spd_logdet_inv(m_mat)
    tr_cinv = (jnp.trace(m_mat, axis1=-2, axis2=-1) + eps * (d - q)) / h
    if noiseless:  # K = h I: no q x q solve, no spread within a component
        log_det = (d - q) * jnp.log(h / eps) + q * jnp.log(h) - logdet_m
        within = jnp.zeros((c,), dtype)
    else:
        logdet_k, k_inv = _spd_logdet_inv(h * eye + s2 * gram)
        log_det = (d - q) * jnp.log(h / eps) + logdet_k - logdet_m
        kg = jnp.einsum("cqp,cpr->cqr", k_inv, gram, precision=HIGHEST)
        tr_cinv = tr_cinv - s2 * jnp.einsum("cqr,crq->c", kg, m_mat, precision=HIGHEST) / h
        within = (s2 / h) * (d - s2 * jnp.trace(kg, axis1=-2, axis2=-1))
    lz = jnp.einsum("cdq,cd->cq", lmat, z, precision=HIGHEST)
    z_sq = jnp.sum(z * z, -1)
    # x-dependent parts: only (c,) and (c, q) arrays
    lflat = lmat.transpose(0, 2, 1).reshape(c * q, d)
    lx = jnp.dot(lflat, x, precision=HIGHEST).reshape(c, q)
    xz = jnp.dot(z, x, precision=HIGHEST)
    x_sq = jnp.sum(x * x)
    lu = lx - alpha * lz
    u_sq = jnp.maximum(x_sq - 2.0 * alpha * xz + a2 * z_sq, 0.0)
    if noiseless:  # c = g = b = lu / h: one q x q product per pair instead of three
        cc = g = b = lu / h
        gc = gb = jnp.einsum("cqp,cp->cq", gram, cc, precision=HIGHEST)
    else:
        cc = jnp.einsum("cqp,cp->cq", k_inv, lu, precision=HIGHEST)
        gc = jnp.einsum("cqp,cp->cq", gram, cc, precision=HIGHEST)
        g = (lu - s2 * gc) / h  # L^T W u
        b = g - (eps * s2 / h) * cc
        gb = jnp.einsum("cqp,cp->cq", gram, b, precision=HIGHEST)
    e_h = eps / h
    quad = jnp.sum(lu * g, -1) + e_h * (u_sq - s2 * jnp.sum(lu * cc, -1))
    logits = lw - 0.5 * (quad + log_det + d * math.log(2.0 * math.pi))
    s_sq = e_h * e_h * u_sq + 2.0 * e_h * jnp.sum(lu * b, -1) + jnp.sum(b * gb, -1)
    # posterior mean m_i = (1 - a2/h) z + (alpha/h) x - (alpha s2/h) L c
    ca, cb, cl = 1.0 - a2 / h, alpha / h, alpha * s2 / h
    lc_sq = jnp.sum(cc * gc, -1)
    m_sq = (ca * ca * z_sq + cb * cb * x_sq + cl * cl * lc_sq + 2.0 * ca * cb * xz
            - 2.0 * ca * cl * jnp.sum(lz * cc, -1) - 2.0 * cb * cl * jnp.sum(lx * cc, -1))

    def sums(w):
        total = jnp.sum(w)
        wz = jnp.dot(w, z, precision=HIGHEST)
        lb = jnp.dot((w[:, None] * b).reshape(-1), lflat, precision=HIGHEST)
        lcw = jnp.dot((w[:, None] * cc).reshape(-1), lflat, precision=HIGHEST)
        score = -e_h * (total * x - alpha * wz) - lb
        mean = ca * wz + cb * total * x - cl * lcw
        return _Sums(total, score, mean, jnp.dot(w, s_sq - tr_cinv), jnp.dot(w, within),
                     jnp.dot(w, m_sq))

    return reduce_chunk(logits, sums)


def _check_levels(alpha, sigma):
    """``alpha >= 0``, ``sigma >= 0``, finite, not both zero; returns ``(alpha, sigma)``.

    ``sigma = 0`` is valid here, unlike for the densities: the model itself is the law at
    ``sigma = 0`` (the terminal condition it is trained at), with covariances
    ``alpha^2 Gamma^{-1}``. Concrete values raise now; traced ones come back wrapped in one
    run-time check, as :func:`manifold_scores._checks.check_noise_levels` does.
    """
    _checks.check_scalar(alpha, "alpha")
    _checks.check_scalar(sigma, "sigma")
    _checks.check_nonnegative(alpha, "alpha")
    _checks.check_nonnegative(sigma, "sigma")
    alpha_known, sigma_known = _checks.is_concrete(alpha), _checks.is_concrete(sigma)
    if alpha_known and sigma_known:
        if float(alpha) == 0 and float(sigma) == 0:
            raise ValueError("alpha and sigma must not both be zero")
        return alpha, sigma
    if sigma_known:
        bad = ~(jnp.isfinite(alpha) & (alpha >= 0))
        msg = "alpha must be non-negative and finite"
        if float(sigma) == 0:
            bad, msg = bad | (alpha == 0), msg + " (and positive when sigma = 0)"
        return _checks.runtime_check(alpha, bad, msg), sigma
    if alpha_known:
        bad = ~(jnp.isfinite(sigma) & (sigma >= 0))
        msg = "sigma must be non-negative and finite"
        if float(alpha) == 0:
            bad, msg = bad | (sigma == 0), msg + " (and positive when alpha = 0)"
        return alpha, _checks.runtime_check(sigma, bad, msg)
    bad = ~(jnp.isfinite(alpha) & (alpha >= 0) & jnp.isfinite(sigma) & (sigma >= 0)) \
        | ((alpha == 0) & (sigma == 0))
    return _checks.runtime_check((alpha, sigma), bad, "alpha and sigma must be non-negative "
                                 "and finite, and not both zero")


def stats(params: KernelParams, x, alpha, sigma) -> KernelStats:
    """Log-density, score, posterior mean, posterior-covariance trace and score divergence of
    ``alpha X + sigma Z`` (``X`` the kernel mixture) at one point ``x``; ``sigma = 0`` allowed."""
    _checks.check_point(x, params.dim)
    check_chunk_size(params.chunk_size)
    alpha, sigma = _check_levels(alpha, sigma)
    centres = params.centres
    if not params.learn_centres:
        centres = lax.stop_gradient(centres)
    dtype = centres.dtype
    # sigma known to be zero (the terminal time: ism_loss's default) takes the cheaper algebra
    noiseless = _checks.is_concrete(sigma) and float(sigma) == 0.0
    x = jnp.asarray(x, dtype)
    alpha, sigma = jnp.asarray(alpha, dtype), jnp.asarray(sigma, dtype)
    # |u|^2 = |x|^2 - 2 alpha x.z + alpha^2 |z|^2 cancels catastrophically when the data sit
    # far from the origin (float32 at |x| ~ 1e4 gave divergences of the wrong sign): the
    # algebra runs on x - alpha c and z - c instead, which leaves u = x - alpha z unchanged.
    # c is a centre, not their mean: XLA recomputes a mean inside each fusion that reads it,
    # rounded differently (a fused multiply-add), and z - c and x - c must see the same c.
    # Every output but the mean is exactly invariant to c, so c needs no gradient.
    c = lax.stop_gradient(centres[0])
    xc = x - alpha * c
    n = centres.shape[0]
    lw = jnp.full((n,), -math.log(n), dtype)
    arrays = (centres, lw) + ((params.factor,) if params.kind == "free" else ())

    def chunk_fn(chunk):
        z, lw_c = chunk[0], chunk[1]
        lmat = _factors_of(params, chunk[2] if params.kind == "free" else params.factor, z)
        return _chunk(xc, z - c, lmat, lw_c, alpha, sigma, params.eps, noiseless)

    acc = stream(chunk_fn, arrays, params.chunk_size)
    s = acc.sums
    score = s.score / s.total
    mean = s.mean / s.total  # relative to c
    cov_trace = jnp.maximum(s.within / s.total + s.mean_sq / s.total - jnp.sum(mean * mean), 0.0)
    div = s.sq_minus_tr / s.total - jnp.sum(score * score)
    return KernelStats(acc.top + jnp.log(s.total), score, mean + c, cov_trace, div)


def _levels(params, t, dtype):
    if params.process is None:
        raise ValueError("this kernel model has no process: pass process= to init, or call "
                         "stats(params, x, alpha, sigma)")
    return (jnp.asarray(params.process.alpha(t), dtype),
            jnp.asarray(params.process.sigma(t), dtype))


def apply(params: KernelParams, x, t):
    """The score of the noised model at ``(x, t)`` (``alpha, sigma`` from ``params.process``)."""
    alpha, sigma = _levels(params, t, params.centres.dtype)
    return stats(params, x, alpha, sigma).score


def score_and_divergence(params: KernelParams, x, t):
    """``(score, div score)`` at ``(x, t)`` in one pass (for :func:`manifold_scores.losses.ism`)."""
    alpha, sigma = _levels(params, t, params.centres.dtype)
    st = stats(params, x, alpha, sigma)
    return st.score, st.divergence


def ism_loss(params: KernelParams, x, alpha=1.0, sigma=0.0):
    """Implicit score matching ``mean_x |s|^2 / 2 + div s`` of the model at ``(alpha, sigma)``
    (default: the terminal condition ``alpha = 1, sigma = 0``, where the model is trained)."""
    x = jnp.asarray(x)
    _checks.check_ndim(x, 2, "x", "(n, d)")
    st = jax.vmap(stats, (None, 0, None, None))(params, x, alpha, sigma)
    return jnp.mean(0.5 * jnp.sum(st.score * st.score, -1) + st.divergence)


def sample(key, params: KernelParams, n: int, alpha=1.0, sigma=0.0) -> jax.Array:
    """``n`` draws of ``alpha X + sigma Z`` from the mixture directly (one key per draw).

    ``N(z, Gamma^{-1})`` is drawn as ``xi / sqrt(eps) + V ((s^2 + eps)^{-1/2} - eps^{-1/2}) V^T xi``
    with ``L = V S W^T`` the thin SVD of the chosen centre's factor (``O(d q)`` per draw).
    """
    n = _checks.check_sample_count(n)
    _checks.check_nonnegative(alpha, "alpha")
    _checks.check_nonnegative(sigma, "sigma")
    keys = jax.random.split(key, n)
    dtype = params.centres.dtype
    eps = params.eps

    def one(k):
        k_i, k_x, k_z = jax.random.split(k, 3)
        i = jax.random.randint(k_i, (), 0, params.num_centres)
        z = params.centres[i]
        fac = params.factor[i] if params.kind == "free" else params.factor
        lmat = _factors_of(params, fac[None] if params.kind == "free" else fac, z[None])[0]
        v, s, _ = jnp.linalg.svd(lmat, full_matrices=False)
        xi = jax.random.normal(k_x, (params.dim,), dtype)
        coef = (1.0 / jnp.sqrt(s * s + eps) - 1.0 / math.sqrt(eps)) * (v.T @ xi)
        y = z + xi / math.sqrt(eps) + v @ coef
        return alpha * y + sigma * jax.random.normal(k_z, (params.dim,), dtype)

    return jax.vmap(one)(keys)

"""Low-rank-plus-isotropic Gaussian mixtures (MoLRG and the WPO kernel model), in ``O(K r d)``.

Component ``k`` of the clean law is ``N(mu_k, U_k diag(v_k) U_k^T + tau_k^2 I)`` with ``U_k``
``(d, r)`` orthonormal and per-direction variances ``v_k`` (``s_k^2`` from ``scales``, or signed
``variances`` with ``v_k + tau_k^2 > 0``). Noised, it is ``N(alpha mu_k, C_k)`` with
``C_k = e_k^2 I + U_k diag(lam_k - e_k^2) U_k^T``, ``e_k^2 = alpha^2 tau_k^2 + sigma^2``,
``lam_k = alpha^2 (v_k + tau_k^2) + sigma^2``. With ``z = x - alpha mu``, ``p = U^T z``,
``z_perp = z - U p``:

    z^T C^{-1} z = |z_perp|^2 / e^2 + sum_j p_j^2 / lam_j,
    score_k = -C^{-1} z = -z_perp / e^2 - U (p / lam)
            = -z / e^2 + U (alpha^2 v p / (e^2 lam)),
    E[X | x, k] = (sigma^2/e^2) mu + (alpha tau^2/e^2) x + U (alpha sigma^2 v p / (e^2 lam)).

The kernel works in ``r``-dimensional coordinates: ``P = x [U_1 .. U_K]`` is one matmul under
``vmap`` (``(B, d) x (d, K r)``; means ride along as an extra column per component), logits come
from ``|z_perp|^2 = |z|^2 - |p|^2``, and the posterior-weighted coefficients go back through one
matmul. No ``(B, K, d)`` array is formed. Close to a subspace the expansion cancels: the logit
``|z|^2 - |p|^2`` and the score ``-z / e^2 + U (...)`` both lose about ``eps |z| / |z_perp|`` of
their size, which is also the relative perturbation of ``x`` that the expansion's result is
exact for. Where that estimate exceeds a tolerance (in low precision, decided by ``lax.cond``
on unbatched values), the best component of each chunk gets ``z_perp`` recomputed directly:
the back-projection ``U_t p_t`` is split so that its large part is exact (fixed-point halves
whose products sum exactly), ``x - alpha mu_t`` is carried as a double-word sum, and a second
orthogonalisation pass removes the in-subspace round-off. That fixes the best component's logit
and score term, the ones that carry the posterior mass. Float32 scores stay within about
``1e-6`` relative of float64 down to ``sigma = 1e-4`` (tested).

``sigma = 0`` is allowed when every ``alpha tau_k > 0`` (a law with an isotropic floor and no
added noise, e.g. the terminal law of the WPO kernel model): everything is computed from
``C_k^{-1}`` directly, never through a division by ``sigma^2``. The divergence of the score is
returned without autodiff: ``div s = -E_w tr C_k^{-1} + E_w |s_k|^2 - |E_w s_k|^2``.

Positions are shifted by a centre ``c`` (default: the weighted mean of the means):
``x - alpha c`` and ``mu_k - c``, so accuracy does not depend on where the origin is.

Example (WPO component ``Gamma = L L^T + eps I``, ``L = V S W^T``: isotropic plus signed rank):
    >>> import jax, jax.numpy as jnp
    >>> from manifold_scores import mixtures
    >>> V = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (6, 2)))[0][None]  # (K=1, d, q)
    >>> s2, eps = jnp.array([[4.0, 1.0]]), 0.5
    >>> st = mixtures.lowrank(jnp.ones(6), V, jnp.zeros(1), 1.0, 0.0, means=jnp.zeros((1, 6)),
    ...                       variances=1 / (s2 + eps) - 1 / eps, noise_floor=eps ** -0.5)
    >>> st.score.shape, st.divergence.shape
    ((6,), ())
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
    reduce_chunk,
    stream,
)
from manifold_scores.mixtures.stats import MixtureStats

__all__ = ["lowrank", "lowrank_logits"]


class _Sums(NamedTuple):
    """Weighted sums of one query over components (``w_k`` unnormalised posterior weights)."""

    total: jax.Array  # sum w
    score: jax.Array  # sum w s_k                   s_k = -C_k^{-1} z_k
    score_sq: jax.Array  # sum w |s_k|^2
    prec_trace: jax.Array  # sum w tr C_k^{-1}
    mean: jax.Array  # sum w (m_k - c)              m_k = E[X | x, k]
    within: jax.Array  # sum w tr Cov[X | x, k]
    mean_sq: jax.Array  # sum w |mu_k - c|^2        (used when alpha = 0)


def _check_noise(alpha, sigma, tau2):
    """``alpha >= 0``, ``sigma >= 0`` and ``alpha^2 tau_k^2 + sigma^2 > 0`` for every k.

    Returns ``(alpha, sigma, tau2)``, with a run-time check threaded through where traced.
    """
    _checks.check_scalar(alpha, "alpha")
    _checks.check_scalar(sigma, "sigma")
    _checks.check_nonnegative(alpha, "alpha")
    _checks.check_nonnegative(sigma, "sigma")
    msg = ("sigma must be positive and finite (sigma = 0 only when alpha * noise_floor > 0 "
           "for every component: a law with an isotropic floor)")
    concrete = [_checks.is_concrete(a) for a in (alpha, sigma, tau2)]
    if all(concrete):
        a, s = float(alpha), float(sigma)
        if s == 0 and (a == 0 or float(jnp.min(tau2)) <= 0):
            raise ValueError(msg)
        return alpha, sigma, tau2
    if not concrete[0]:
        alpha = _checks.runtime_check(alpha, ~(jnp.isfinite(alpha) & (alpha >= 0)),
                                      "alpha must be non-negative and finite")
    if concrete[0] and concrete[1] and float(sigma) > 0:
        return alpha, sigma, tau2
    bad = ~(jnp.isfinite(sigma) & (sigma >= 0))
    bad = bad | (jnp.min(alpha * alpha * tau2) + sigma * sigma <= 0)
    if not concrete[1]:
        sigma = _checks.runtime_check(sigma, bad, msg)
    else:
        tau2 = _checks.runtime_check(tau2, bad, msg)
    return alpha, sigma, tau2


def _round_to_bits(a, bits: int, scale=1.0):
    """``a`` rounded to the grid ``scale 2^-bits`` (``scale`` a power of two: exact scaling)."""
    step = scale * 2.0 ** -bits
    return jnp.round(a / step) * step


def _pow2_above(mag):
    """The smallest power of two ``>= mag`` (1 where ``mag = 0``)."""
    return jnp.exp2(jnp.ceil(jnp.log2(jnp.where(mag > 0, mag, 1.0))))


def _split_backprojection(u, p):
    """``U p`` as ``hi + lo`` with ``hi`` exact and ``lo`` ``~2^-b |U p|``.

    ``|U_ij| <= 1``: ``U_hi`` on the grid ``2^-b``, ``p_hi`` on ``2^(e-b)`` with ``2^e >=
    max|p|``. Every product is then an integer multiple of ``2^(e-2b)``, at most ``2^e`` in
    magnitude, so ``r`` of them sum exactly when ``2b + log2 r`` bits fit the mantissa, in
    whatever order the matmul adds them. The remainder ``U_hi p_lo + U_lo p`` rounds only
    relative to its own, ``2^-b`` smaller, size.
    """
    r = u.shape[-1]
    bits = (jnp.finfo(u.dtype).nmant - max(r - 1, 0).bit_length()) // 2
    u_hi = _round_to_bits(u, bits)  # unbatched under vmap over x: computed once
    p_hi = _round_to_bits(p, bits, _pow2_above(jnp.max(jnp.abs(p))))
    hi = jnp.einsum("cdr,cr->d", u_hi, p_hi, precision=HIGHEST)
    lo = jnp.einsum("cdr,cr->d", jnp.concatenate([u_hi, u - u_hi], axis=2),
                    jnp.concatenate([p - p_hi, p], axis=1), precision=HIGHEST)
    return hi, lo


def _two_diff_scaled(x, alpha, mu):
    """``x - alpha mu`` as an unevaluated sum ``hi + lo`` (Dekker's split product, TwoSum).

    No rounded product enters a subtraction: a compiler may fuse ``x - alpha mu`` into one
    multiply-add, which would break the classical ``TwoSum(x, -fl(alpha mu))``. The halves
    come from rounding to a power-of-two grid, for the same reason (Veltkamp's
    ``(2^s + 1) a`` split is also a multiply-add candidate).
    """
    half = (jnp.finfo(x.dtype).nmant + 2) // 2

    def split(a):
        hi = _round_to_bits(a, half, _pow2_above(jnp.abs(a)))
        return hi, a - hi

    a_hi, a_lo = split(alpha)
    m_hi, m_lo = split(mu)
    # a_hi m_hi is exact, so a fused multiply-add of it rounds the same as the plain ops would
    lead = a_hi * m_hi
    rest = (a_hi * m_lo + a_lo * m_hi) + a_lo * m_lo  # 2^-half of the product: its rounding
    diff = x - lead  # TwoSum(x, -lead)
    bv = diff - x
    sum_err = (x - (diff - bv)) + (-lead - bv)
    return diff, sum_err - rest


def _lowrank_inputs(x, bases, log_weights, alpha, sigma, means, scales, variances, noise_floor,
                    centre):
    """Validate and cast; returns x, U, log w, alpha, sigma, means|None, v, tau^2 (K,), c."""
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
    if scales is not None and variances is not None:
        raise ValueError("pass scales or variances, not both")
    for name, val in (("scales", scales), ("variances", variances)):
        if val is not None and jnp.shape(val) != (kk, r):
            raise ValueError(f"{name} must have shape ({kk}, {r}), got {jnp.shape(val)}")
    if jnp.ndim(noise_floor) not in (0, 1) or (jnp.ndim(noise_floor) == 1
                                               and jnp.shape(noise_floor) != (kk,)):
        raise ValueError(f"noise_floor must be a scalar or have shape ({kk},), got "
                         f"{jnp.shape(noise_floor)}")
    if centre is not None and jnp.shape(centre) != (d,):
        raise ValueError(f"centre must have shape ({d},), got {jnp.shape(centre)}")
    _checks.check_nonnegative(noise_floor, "noise_floor")
    dtype = _checks.float_dtype(x, bases, log_weights, means, scales, variances)
    cast = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    tau2 = jnp.broadcast_to(jnp.square(cast(noise_floor)), (kk,))
    if variances is not None:
        v = cast(variances)
        if _checks.is_concrete(v) and _checks.is_concrete(tau2):
            if not bool(jnp.all(jnp.isfinite(v))) or bool(jnp.any(v + tau2[:, None] <= 0)):
                raise ValueError("variances + noise_floor^2 must be positive and finite")
    elif scales is not None:
        v = jnp.square(cast(scales))
    else:
        v = jnp.ones((kk, r), dtype)
    alpha, sigma, tau2 = _check_noise(alpha, sigma, tau2)
    means = None if means is None else cast(means)
    if centre is None and means is not None:
        centre = jnp.dot(jax.nn.softmax(cast(log_weights)), means, precision=HIGHEST)
    if centre is None:  # the origin, known statically (no shift is traced)
        return (cast(x), cast(bases), cast(log_weights), cast(alpha), cast(sigma), means, v, tau2,
                None)
    return (cast(x), cast(bases), cast(log_weights), cast(alpha), cast(sigma), means, v, tau2,
            cast(centre))


def lowrank_logits(x, bases, log_weights, alpha, sigma, *, means=None, scales=None,
                   variances=None, noise_floor=0.0, centre=None) -> jax.Array:
    """Log joint ``log pi_k + log N(x; alpha mu_k, C_k)`` of every component, shape ``(K,)``.

    ``softmax`` of it is the posterior ``P(k | x)``; arguments as in :func:`lowrank`. Forms
    ``z_perp`` for every component directly (``O(K d)`` per point): for inspection.
    """
    x, u, lw, alpha, sigma, mu, v, tau2, c = _lowrank_inputs(
        x, bases, log_weights, alpha, sigma, means, scales, variances, noise_floor, centre)
    d = x.shape[0]
    a2, sig2 = alpha * alpha, sigma * sigma
    if c is None:
        c = jnp.zeros_like(x)
    z = jnp.broadcast_to(x - alpha * c, u.shape[:2])
    if mu is not None:
        z = z - alpha * (mu - c)
    p = jnp.einsum("kdr,kd->kr", u, z, precision=HIGHEST)
    z_perp = z - jnp.einsum("kdr,kr->kd", u, p, precision=HIGHEST)
    e2 = a2 * tau2 + sig2
    lam = a2 * (v + tau2[:, None]) + sig2
    quad = jnp.sum(z_perp * z_perp, -1) / e2 + jnp.sum(p * p / lam, -1)
    log_det = d * jnp.log(e2) + jnp.sum(jnp.log(lam / e2[:, None]), -1)
    return lw - 0.5 * (quad + log_det + d * math.log(2.0 * math.pi))


def lowrank(x, bases, log_weights, alpha, sigma, *, means=None, scales=None, variances=None,
            noise_floor=0.0, centre=None, chunk_size: int | None = DEFAULT_CHUNK_SIZE,
            refine: int | None = None, refine_tol: float = 1e-6) -> MixtureStats:
    """Statistics of a noised mixture of low-rank-plus-isotropic Gaussians at one point.

    Component ``k``: clean ``N(mu_k, U_k diag(v_k) U_k^T + tau_k^2 I)``, noised
    ``N(alpha mu_k, C_k)``; see the module docstring for the formulas.

    Args:
        x: query point, shape ``(d,)``.
        bases: ``U_k`` with orthonormal columns, shape ``(K, d, r)``.
        log_weights: ``log pi_k``, shape ``(K,)``.
        alpha, sigma: noise levels (scalars, ``alpha >= 0``, ``sigma >= 0``; ``sigma = 0``
            needs ``alpha * noise_floor > 0`` for every component).
        means: optional ``mu_k``, shape ``(K, d)``.
        scales: optional per-direction standard deviations ``s_k`` (``v = s^2``), ``(K, r)``.
        variances: alternative to ``scales``: per-direction variances ``v_k``, ``(K, r)``,
            possibly negative as long as ``v_k + tau_k^2 > 0`` (default: all ones).
        noise_floor: ``tau >= 0``, isotropic clean-data standard deviation: a scalar or one per
            component ``(K,)`` (default 0).
        centre: optional ``c``, shape ``(d,)``: positions are shifted by it (the exact result
            does not change). Default: the weighted mean of ``means`` (the origin without means).
        chunk_size: components per streamed chunk (static); ``None`` means one chunk.
        refine: per chunk, 1 recomputes ``z_perp`` directly for the best component when the
            estimate below exceeds ``refine_tol``, 2 always, 0 never (static). ``None``: 1 below
            64-bit precision, 0 in float64.
        refine_tol: relative score accuracy. Refinement runs (``lax.cond`` on unbatched
            values) when ``eps * max_k sqrt(alpha^2 (sum_j |v_kj| + max|mu - c|^2) / (d e_k^2))``,
            the expansion's ``eps |z| / |z_perp|`` for a query typical of the noised law,
            exceeds it. Measured, the unrefined float32 score is within about ``7x`` that
            estimate of float64.

    Returns:
        :class:`MixtureStats` with ``divergence`` (valid at ``sigma = 0``).
    """
    x, bases, log_weights, alpha, sigma, means, v, tau2, centre = _lowrank_inputs(
        x, bases, log_weights, alpha, sigma, means, scales, variances, noise_floor, centre)
    check_chunk_size(chunk_size)
    if refine is not None and refine not in (0, 1, 2):
        raise ValueError(f"refine must be 0, 1 or None, got {refine!r}")
    return _lowrank(x, bases, log_weights, alpha, sigma, means, v, tau2, centre, chunk_size,
                    refine, refine_tol)


@functools.partial(jax.jit, static_argnums=(9, 10, 11))
def _lowrank(x, bases, log_weights, alpha, sigma, means, v, tau2, centre, chunk_size, refine,
             refine_tol):
    acc = lowrank_acc(x, bases, log_weights, alpha, sigma, means, v, tau2, centre, chunk_size,
                      refine, refine_tol)
    return lowrank_stats(acc, x, alpha, sigma, centre)


def lowrank_stats(acc: Acc, x, alpha, sigma, centre) -> MixtureStats:
    """Normalise an accumulator of :func:`lowrank_acc` into :class:`MixtureStats`."""
    s = acc.sums
    total = s.total
    score = s.score / total
    mean = s.mean / total
    a2 = alpha * alpha
    sig2 = sigma * sigma
    score_var = jnp.maximum(s.score_sq / total - jnp.sum(score * score), 0.0)
    within = s.within / total
    # alpha m_k - x = -sigma^2 s_k, so alpha^2 tr Cov = sigma^4 Var_w(s_k) + alpha^2 E_w tr Cov_k
    safe_a2 = jnp.where(a2 > 0, a2, 1.0)
    noised = sig2 * sig2 * score_var / safe_a2 + within
    prior = jnp.maximum(s.mean_sq / total - jnp.sum(mean * mean), 0.0) + within
    return MixtureStats(
        log_prob=acc.top + jnp.log(total),
        score=score,
        mean=mean if centre is None else centre + mean,
        cov_trace=jnp.where(a2 > 0, noised, prior),
        divergence=-s.prec_trace / total + score_var,
    )


def lowrank_acc(x, bases, log_weights, alpha, sigma, means, v, tau2, centre, chunk_size, refine,
                refine_tol) -> Acc:
    """The streamed accumulator of one query (before normalisation); inputs validated."""
    d, r = bases.shape[1:]
    dtype = x.dtype
    if refine is None:
        refine = 0 if jnp.finfo(dtype).bits >= 64 else 1
    refine = int(refine)
    a2 = alpha * alpha
    sig2 = sigma * sigma
    xc = x if centre is None else x - alpha * centre
    x_sq = jnp.sum(xc * xc)
    has_means = means is not None
    log_2pi = d * math.log(2.0 * math.pi)

    if refine:
        # Unbatched estimate of |z|^2 / |z_perp|^2 for a typical query: the in-subspace spread
        # and the means against the noise's d e^2. A direct z_perp without the exact split would
        # fix the logit alone; measured, that never improves the score, since the logit's
        # cancellation and the score's are the same eps |z| / |z_perp|.
        e2_all = a2 * tau2 + sig2
        z_scale = a2 * jnp.sum(jnp.abs(v), -1)
        if has_means:
            z_scale = z_scale + a2 * jnp.max(jnp.sum(jnp.square(means - centre), -1))
        needs_refine = jnp.finfo(dtype).eps * jnp.sqrt(jnp.max(z_scale / (d * e2_all))) > refine_tol

    def chunk_fn(chunk):
        if has_means:
            u, lw, v_c, t2, mu = chunk
            mup = mu - centre
            # the centred mean rides along as an extra column of each basis
            ua = jnp.concatenate([u, mup[:, :, None]], axis=2)  # (C, d, r + 1)
        else:
            u, lw, v_c, t2 = chunk
            ua = u
        e2 = a2 * t2 + sig2  # (C,)
        lam = a2 * (v_c + t2[:, None]) + sig2  # (C, r)
        proj = jnp.einsum("d,cdr->cr", xc, ua, precision=HIGHEST)  # one matmul under vmap
        if has_means:
            q = jnp.einsum("cd,cdr->cr", mup, u, precision=HIGHEST)  # U^T mu', unbatched
            p = proj[:, :r] - alpha * q
            mu_sq = jnp.sum(mup * mup, -1)
            z_sq = x_sq - 2.0 * alpha * proj[:, r] + a2 * mu_sq
        else:
            p = proj
            z_sq = jnp.broadcast_to(x_sq, e2.shape)
        p2 = p * p
        perp_sq = jnp.maximum(z_sq - jnp.sum(p2, -1), 0.0)
        in_quad = jnp.sum(p2 / lam, -1)
        log_det = d * jnp.log(e2) + jnp.sum(jnp.log(lam / e2[:, None]), -1)
        base_logits = lw - 0.5 * (in_quad + log_det + log_2pi)
        prec_tr = (d - r) / e2 + jnp.sum(1.0 / lam, -1)
        within = sig2 * ((d - r) * t2 / e2 + jnp.sum((v_c + t2[:, None]) / lam, -1))
        in_sq = jnp.sum(p2 / (lam * lam), -1)  # |U p / lam|^2
        # coefficient of U in score_k: alpha^2 v p / (e^2 lam)   (= p/e^2 - p/lam, no cancellation)
        c_score = a2 * v_c * p / (e2[:, None] * lam)
        c_mean = alpha * sig2 * v_c * p / (e2[:, None] * lam)

        def back(coef, mu_coef):
            if has_means:
                coef = jnp.concatenate([coef, mu_coef[:, None]], axis=1)
            return jnp.einsum("cdr,cr->d", ua, coef, precision=HIGHEST)  # one matmul under vmap

        logits = base_logits - 0.5 * perp_sq / e2
        if refine:
            # The cond holds only the refinement's extra work, so that the outputs a caller
            # does not use (the mean, say) are still removed by XLA: nothing else is inside.
            onehot = jnp.arange(logits.shape[0]) == jnp.argmax(logits)
            if refine == 1:
                onehot = onehot & needs_refine

            def fit_top(p):
                # z_t = x - alpha mu_t from the unshifted mean (no rounding of mu - c), then
                # z_perp_t = z_t - U_t p_t directly for the best component t.
                p_top = jnp.where(onehot[:, None], p, 0.0)
                mu_top = (jnp.dot(onehot.astype(dtype), mu, precision=HIGHEST) if has_means
                          else None)

                # Rounding U p and alpha mu to the working precision costs eps |z| out of the
                # subspace, which is eps |z| / |z_perp| of the score; split so that the large
                # part is exact and only a 2^-b smaller remainder rounds. Then once more
                # orthogonalised: q = U_t^T z_perp_t removes the in-subspace round-off
                # (Gram-Schmidt twice); the exact residual is z_perp_t - U_t q.
                fit_hi, fit_lo = _split_backprojection(u, p_top)
                if has_means:
                    z_hi, z_lo = _two_diff_scaled(x, alpha, mu_top)
                else:
                    z_hi, z_lo = xc, 0.0
                z_perp = (z_hi - fit_hi) + (z_lo - fit_lo)
                q = jnp.einsum("d,cdr->cr", z_perp, u, precision=HIGHEST)
                return z_perp, jnp.where(onehot[:, None], q, 0.0)

            def skip(p):
                # zeros derived from p so that, inside shard_map, they vary like fit_top's
                return 0.0 * p[0, 0] * xc, 0.0 * p

            z_perp_top, q_top = (lax.cond(needs_refine, fit_top, skip, p) if refine == 1
                                 else fit_top(p))
            exact_sq = jnp.sum(z_perp_top * z_perp_top) - jnp.sum(q_top * q_top)
            perp_sq = jnp.where(onehot, jnp.maximum(exact_sq, 0.0), perp_sq)
            logits = base_logits - 0.5 * perp_sq / e2

        def sums(w):
            we = w / e2
            mean = back(w[:, None] * c_mean, w * sig2 / e2) + jnp.sum(we * alpha * t2) * xc
            if refine:
                # the best component's score term -(z_perp_t - U q)/e^2 - U p/lam, exact
                rest = jnp.where(onehot, 0.0, w)
                coef = jnp.where(onehot[:, None], q_top / e2[:, None] - p / lam, c_score)
                w_top = jnp.sum(jnp.where(onehot, we, 0.0))
                score = (back(w[:, None] * coef, alpha * rest / e2) - jnp.sum(rest / e2) * xc
                         - w_top * z_perp_top)
            else:
                score = back(w[:, None] * c_score, alpha * we) - jnp.sum(we) * xc
            score_sq = w @ (perp_sq / (e2 * e2) + in_sq)
            mean_sq = w @ mu_sq if has_means else 0.0 * jnp.sum(w)
            return _Sums(jnp.sum(w), score, score_sq, w @ prec_tr, mean, w @ within, mean_sq)

        return reduce_chunk(logits, sums)

    arrays = (bases, log_weights, v, tau2) + ((means,) if has_means else ())
    return stream(chunk_fn, arrays, chunk_size)

__dir__ = _public_dir(__all__)

"""Baselines the kernels are timed against: naive, floors, dense solves, PyTorch.

Every baseline computes the same quantity as the kernel it is compared with (the batched score),
so each benchmark also reports the relative error of its output against the kernel's.

* Isotropic mixture ``sum_i pi_i N(alpha y_i, sigma^2 I)`` at a batch ``X`` (B, d):
  - :func:`iso_naive`: broadcasts the ``(B, N, d)`` differences (in query blocks when the whole
    array would not fit: ``block`` queries at a time through ``lax.map``);
  - :func:`iso_streamed_floor`: the hand-written streamed two-matmul kernel, the floor on CPU:
    per chunk of points one ``X Y_c^T`` for the logits and one ``W_c Y_c`` for the mean, with an
    online log-sum-exp; no refinement, nothing else;
  - :func:`iso_bare_matmuls`: the two one-shot matmuls ``G = X Y^T`` and ``G Y`` alone (no
    softmax, not a score): the arithmetic floor, where ``(B, N)`` fits in memory;
  - :func:`torch_iso_score`: PyTorch as the official code of the empirical denoiser computes it,
    ``torch.cdist`` then ``softmax`` then a matmul.
* MoLRG (zero means, unit scales, no noise floor) at a batch:
  - :func:`molrg_floor`: two matmuls, ``P = X U_all`` (B, K r) and the back-projection
    ``(w * c * P) U_all^T``, with the softmax over components in between;
  - :func:`molrg_dense`: dense ``d x d`` covariances ``alpha^2 U U^T + sigma^2 I``, a Cholesky
    factor per component and triangular solves with the whole batch as right-hand side.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

HIGHEST = lax.Precision.HIGHEST


# ---------------------------------------------------------------------------------------------
# Isotropic mixtures (empirical score)
# ---------------------------------------------------------------------------------------------


def iso_naive(xs, pts, lw, alpha, sigma, *, block: int | None = None):
    """Naive score: ``(B, N, d)`` differences, softmax over ``N`` (``block`` queries at a time)."""

    def scores(x):  # x: (b, d)
        diff = alpha * pts[None, :, :] - x[:, None, :]            # (b, N, d)
        logits = lw[None, :] - jnp.sum(diff * diff, -1) / (2 * sigma * sigma)
        w = jax.nn.softmax(logits, axis=-1)
        return jnp.einsum("bn,bnd->bd", w, diff, precision=HIGHEST) / (sigma * sigma)

    if block is None or block >= xs.shape[0]:
        return scores(xs)
    b = xs.shape[0]
    nb = -(-b // block)
    pad = nb * block - b
    xp = jnp.pad(xs, ((0, pad), (0, 0)))
    out = lax.map(scores, xp.reshape(nb, block, -1))
    return out.reshape(nb * block, -1)[:b]


def iso_streamed_floor(xs, pts, lw, alpha, sigma, *, chunk: int = 4096):
    """Streamed two-matmul score with an online log-sum-exp over chunks of points.

    Chunks are read in place (``lax.dynamic_slice`` inside the scan; the ragged tail is one more
    step), so no ``O(N d)`` copy of the points is made: temporaries are ``O(B * chunk)``.
    """
    n, d = pts.shape
    chunk = min(chunk, n)
    nc, tail = divmod(n, chunk)
    inv = 1.0 / (2 * sigma * sigma)
    b = xs.shape[0]

    def step(carry, yc, lc):
        m, s, acc = carry
        ysq = jnp.sum(yc * yc, -1)
        logits = lc + (2 * alpha * jnp.dot(xs, yc.T, precision=HIGHEST)
                       - alpha * alpha * ysq) * inv                  # (B, chunk)
        m_new = jnp.maximum(m, jnp.max(logits, -1))
        scale = jnp.exp(m - m_new)
        p = jnp.exp(logits - m_new[:, None])
        s = s * scale + jnp.sum(p, -1)
        acc = acc * scale[:, None] + jnp.dot(p, yc, precision=HIGHEST)
        return m_new, s, acc

    def body(carry, i):
        yc = lax.dynamic_slice_in_dim(pts, i * chunk, chunk)
        lc = lax.dynamic_slice_in_dim(lw, i * chunk, chunk)
        return step(carry, yc, lc), None

    init = (jnp.full((b,), -jnp.inf, xs.dtype), jnp.zeros((b,), xs.dtype),
            jnp.zeros_like(xs))
    carry, _ = lax.scan(body, init, jnp.arange(nc))
    if tail:
        carry = step(carry, pts[nc * chunk:], lw[nc * chunk:])
    m, s, acc = carry
    mean = acc / s[:, None]
    return (alpha * mean - xs) / (sigma * sigma)


def iso_bare_matmuls(xs, pts):
    """The two one-shot matmuls ``(X Y^T) Y`` alone: arithmetic floor, not a score."""
    g = jnp.dot(xs, pts.T, precision=HIGHEST)
    return jnp.dot(g, pts, precision=HIGHEST)


def torch_iso_score(torch, x, pts, lw, alpha, sigma):
    """PyTorch empirical score as the papers' code computes it: cdist, softmax, matmul."""
    with torch.no_grad():
        d2 = torch.cdist(x, alpha * pts) ** 2
        w = torch.softmax(lw[None, :] - d2 / (2 * sigma * sigma), dim=1)
        mean = w @ pts
        return (alpha * mean - x) / (sigma * sigma)


# ---------------------------------------------------------------------------------------------
# MoLRG
# ---------------------------------------------------------------------------------------------


def molrg_floor(xs, bases, lw, alpha, sigma):
    """MoLRG score with two matmuls: ``P = X U_all`` and one back-projection."""
    k, d, r = bases.shape
    u_all = jnp.transpose(bases, (1, 0, 2)).reshape(d, k * r)
    p = jnp.dot(xs, u_all, precision=HIGHEST).reshape(-1, k, r)       # (B, K, r)
    v = alpha * alpha + sigma * sigma
    logits = lw + alpha * alpha * jnp.sum(p * p, -1) / (2 * sigma * sigma * v) \
        - 0.5 * r * jnp.log(v / (sigma * sigma))
    w = jax.nn.softmax(logits, -1)                                    # (B, K)
    coeff = (w[..., None] * p).reshape(-1, k * r)
    proj = jnp.dot(coeff, u_all.T, precision=HIGHEST)                 # sum_k w_k U_k U_k^T x
    # E[X|x] = alpha / v * proj;  score = (alpha E - x) / sigma^2
    return (alpha * alpha / v * proj - xs) / (sigma * sigma)


def molrg_dense(xs, bases, lw, alpha, sigma):
    """MoLRG score from dense covariances: Cholesky per component, batch as right-hand side."""
    k, d, r = bases.shape
    covs = alpha * alpha * jnp.einsum("kdr,ker->kde", bases, bases, precision=HIGHEST) \
        + sigma * sigma * jnp.eye(d, dtype=xs.dtype)
    chol = jnp.linalg.cholesky(covs)                                  # (K, d, d)
    sol = jax.vmap(lambda c: jax.scipy.linalg.cho_solve((c, True), xs.T))(chol)  # (K, d, B)
    logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
    quad = jnp.einsum("kdb,bd->bk", sol, xs, precision=HIGHEST)
    w = jax.nn.softmax(lw - 0.5 * (quad + logdet), -1)                # (B, K)
    return -jnp.einsum("bk,kdb->bd", w, sol, precision=HIGHEST)


def molrg_flops(batch, k, r, d):
    """Arithmetic of the two-matmul floor: ``2 * 2 B d K r``."""
    return 4.0 * batch * d * k * r


def dense_flops(batch, k, d):
    """Arithmetic of the dense baseline: ``K (d^3 / 3 + 2 * 2 d^2 B)``."""
    return k * (d**3 / 3 + 4.0 * d * d * batch)


def iso_flops(batch, n, d):
    """Arithmetic of the two matmuls: ``2 * 2 B N d``."""
    return 4.0 * batch * n * d


__all__ = [
    "iso_naive", "iso_streamed_floor", "iso_bare_matmuls", "torch_iso_score",
    "molrg_floor", "molrg_dense", "molrg_flops", "dense_flops", "iso_flops",
]

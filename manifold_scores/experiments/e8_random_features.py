"""E8: random-feature score learning on linear and curved manifolds.

Claim (George and Macris, arXiv 2603.22962; only a summary of the paper is available, not its
body): for denoising score matching with a random-feature model, the number of samples needed
to learn the score on a *linear* manifold grows linearly with the intrinsic dimension, not with
the ambient one; on non-linear (curved) manifolds this advantage fades. This experiment is
designed in the spirit of that claim, not as a reproduction of the paper's setting or theorems.

What we do: ambient ``d = 64``, intrinsic dimension ``n`` in ``{2, 4, 8, 16}``, one noise level
``sigma = 0.3`` (``alpha = 1``), three families of laws with ``E|x|^2 = n``:

- linear: ``N(0, U U^T)`` on a random ``n``-dimensional subspace (a one-component MoLRG);
- spheres: the uniform law on ``S^n`` of radius ``sqrt(n)`` in a random ``(n+1)``-plane;
- a random non-linear embedding: ``x = Q_1 z + Q_2 tanh(W z)``, ``z ~ N(0, I_n)``, ``W`` Gaussian
  with variance ``4 / n`` (a curved graph over an ``n``-plane; ``[Q_1, Q_2]`` orthonormal).

The model is :mod:`manifold_scores.models.random_features` (ReLU, ``p`` fixed random features,
no time input) fitted in closed form (the ``sigma^2``-weighted loss of
:func:`~manifold_scores.models.random_features.fit_ridge`, with a scale-free ridge: ``1e-3``
times the mean eigenvalue of the feature Gram matrix of each fit) to the fixed-sigma DSM targets
``-eps / sigma`` of ``N`` training points (one noise draw each). Training sets are nested
prefixes of one draw, so every ``N`` reuses the feature Gram of the smaller ones. Two test
errors on fresh noisy points:

- *estimation error* ``E|s_N - s_ref|^2 / E|s_ref|^2`` against the same model fitted on
  ``4 N_max`` points: how far ``N`` samples are from the model's large-sample limit (defined for
  every manifold, including the embedding, whose exact score we do not have);
- *true error* ``E|s_N - s*|^2 / E|s*|^2`` against the exact score (linear and spheres only).

``N*`` is the smallest ``N`` (log-linear interpolation) with estimation error ``<= 0.05``; the
growth exponent is the least-squares slope of ``log N*`` against ``log n`` (asserted: ``1 +- 0.3``
on the linear manifolds, fixed before the first run). An affine fit ``N* = a + b n`` is
reported next to it: an ``n``-independent offset ``a`` (set by the number of features) pulls the
log-log slope below 1 even when the growth in ``n`` is linear.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

import manifold_scores as ms
from manifold_scores.experiments._registry import register
from manifold_scores.experiments._table import Row, Table, check_size
from manifold_scores.models import random_features as rf

DIM, SIGMA, RIDGE, TARGET = 64, 0.3, 1e-3, 0.05
INTRINSIC = (2, 4, 8, 16)
FAMILIES = ("linear", "sphere", "embedding")


def _sizes(size):
    if size == "quick":
        return dict(features=256, grid=tuple(2**k for k in range(5, 12)), n_test=1024)
    return dict(features=512, grid=tuple(2**k for k in range(5, 14)), n_test=4096)


class _Embedding:
    """``x = Q_1 z + Q_2 tanh(W z)``: a random curved ``n``-manifold in ``R^d``."""

    def __init__(self, key, dim, n):
        k_q, k_w = jax.random.split(key)
        q = jnp.linalg.qr(jax.random.normal(k_q, (dim, 2 * n)))[0]
        self.q1, self.q2 = q[:, :n], q[:, n:]
        self.w = jax.random.normal(k_w, (n, n)) * (2.0 / math.sqrt(n))
        self.n = n

    def sample(self, key, num):
        z = jax.random.normal(key, (num, self.n))
        return z @ self.q1.T + jnp.tanh(z @ self.w.T) @ self.q2.T


def _law(family, key, n):
    if family == "linear":
        return ms.MoLRG.random(key, dim=DIM, rank=n, num_components=1)
    if family == "sphere":
        return ms.Sphere(dim=DIM, intrinsic_dim=n, radius=math.sqrt(n), key=key)
    return _Embedding(key, DIM, n)


def ridge_path(params, x0, eps, sigma, sizes, ridge):
    """Closed-form readouts ``A_N`` for the nested prefixes ``x0[:N]``, ``N`` in ``sizes``.

    ``ridge`` is a number, or a function of the weighted Gram matrix ``sigma^2 F^T F / N``
    returning one (a scale-free penalty, as :func:`relative_ridge`).

    Each ``A_N`` minimises ``(1/N) sum_{i<N} sigma^2 |A f_i + eps_i / sigma|^2 + ridge |A|_F^2``
    with ``f_i`` the features of ``x0_i + sigma eps_i``: the objective of
    :func:`manifold_scores.models.random_features.fit_ridge` (``weighting="sigma2"``) on those
    draws. Returns ``(len(sizes), d, p)``.
    """
    hi = jax.lax.Precision.HIGHEST
    if not callable(ridge):
        ridge = (lambda value: lambda g: value)(ridge)
    f = jax.vmap(rf.features, (None, 0, None))(params, x0 + sigma * eps, sigma)
    y = -eps / sigma
    p = f.shape[1]
    gram = jnp.zeros((p, p), f.dtype)
    rhs = jnp.zeros((p, y.shape[1]), f.dtype)
    out, start = [], 0
    for n in sizes:
        fb, yb = f[start:n], y[start:n]
        gram = gram + jnp.dot(fb.T, fb, precision=hi)
        rhs = rhs + jnp.dot(fb.T, yb, precision=hi)
        start = n
        w = sigma * sigma / n
        g = w * gram + ridge(w * gram) * jnp.eye(p, dtype=f.dtype)
        out.append(jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(g, lower=True),
                                              w * rhs).T)
    return jnp.stack(out)


def relative_ridge(scale=RIDGE):
    """Ridge ``scale * tr(G) / p``: relative to the mean eigenvalue of the Gram matrix ``G``."""
    return lambda g: scale * jnp.trace(g) / g.shape[0]


@functools.partial(jax.jit, static_argnames=("sizes",))
def _curves(params, x0, eps, x_test, s_true, *, sizes):
    """Estimation and true relative errors on ``x_test`` for each training size."""
    readouts = ridge_path(params, x0, eps, SIGMA, sizes, relative_ridge())
    f_test = jax.vmap(rf.features, (None, 0, None))(params, x_test, SIGMA)
    preds = jnp.einsum("np,kdp->knd", f_test, readouts, precision=jax.lax.Precision.HIGHEST)
    ref = preds[-1]
    est = jnp.sum((preds[:-1] - ref) ** 2, (1, 2)) / jnp.sum(ref**2)
    true = jnp.sum((preds[:-1] - s_true) ** 2, (1, 2)) / jnp.sum(s_true**2)
    return est, true


def _n_star(grid, err, target=TARGET):
    grid, err = np.asarray(grid, float), np.asarray(err, float)
    if err[0] <= target:
        return float(grid[0])
    for i in range(1, len(err)):
        if err[i] <= target:
            f = (np.log(err[i - 1]) - np.log(target)) / (np.log(err[i - 1]) - np.log(err[i]))
            return float(np.exp(np.log(grid[i - 1]) + f * np.log(grid[i] / grid[i - 1])))
    return math.inf


def _slope(ns, vals):
    ns, vals = np.asarray(ns, float), np.asarray(vals, float)
    ok = np.isfinite(vals)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(ns[ok]), np.log(vals[ok]), 1)[0])


def _affine(ns, vals):
    """Least-squares ``N* = a + b n`` over the finite values: ``(a, b, max relative residual)``.
    """
    ns, vals = np.asarray(ns, float), np.asarray(vals, float)
    ok = np.isfinite(vals)
    if ok.sum() < 2:
        return math.nan, math.nan, math.nan
    b, a = np.polyfit(ns[ok], vals[ok], 1)
    return float(a), float(b), float(np.max(np.abs(a + b * ns[ok] - vals[ok]) / vals[ok]))


def run(size: str = "quick", *, seed: int = 0) -> Table:
    """Estimation / true error against ``N`` for every family and intrinsic dimension."""
    check_size(size)
    cfg = _sizes(size)
    grid = cfg["grid"]
    sizes = grid + (4 * grid[-1],)
    key = jax.random.key(seed)
    params = rf.init(jax.random.fold_in(key, 0), DIM, cfg["features"], ms.EDM())
    est, true, n_star = {}, {}, {}
    for fi, family in enumerate(FAMILIES):
        for n in INTRINSIC:
            k = jax.random.fold_in(key, 100 * fi + n)
            k_law, k_x, k_e, k_t, k_z = jax.random.split(k, 5)
            law = _law(family, k_law, n)
            x0 = law.sample(k_x, sizes[-1])
            eps = jax.random.normal(k_e, x0.shape)
            xt = law.sample(k_t, cfg["n_test"]) + SIGMA * jax.random.normal(
                k_z, (cfg["n_test"], DIM))
            if family == "embedding":
                s_true = jnp.zeros_like(xt)
            else:
                s_true = jax.vmap(law.score, (0, None, None))(xt, 1.0, SIGMA)
            e, t = _curves(params, x0, eps, xt, s_true, sizes=sizes)
            est[(family, n)] = np.asarray(e)
            true[(family, n)] = None if family == "embedding" else np.asarray(t)
            n_star[(family, n)] = _n_star(grid, est[(family, n)])
    rows = []
    for family in FAMILIES:
        stars = [n_star[(family, n)] for n in INTRINSIC]
        slope = _slope(INTRINSIC, stars)
        text = ", ".join(f"{s:.0f}" if math.isfinite(s) else f">{grid[-1]}" for s in stars)
        if family == "linear":
            rows.append(Row(f"linear: growth exponent of N* in n (N* = {text} for n = "
                            f"{', '.join(map(str, INTRINSIC))})", slope,
                            "1 +- 0.3 (linear growth)", bool(abs(slope - 1.0) <= 0.3)))
        else:
            rows.append(Row(f"{family}: growth exponent of N* in n (N* = {text})", slope,
                            "reported (advantage fades)", None))
    for family in FAMILIES:
        a, b, res = _affine(INTRINSIC, [n_star[(family, n)] for n in INTRINSIC])
        rows.append(Row(f"{family}: affine fit N* = a + b n (a, b, largest relative residual)",
                        f"{a:.0f}, {b:.0f}, {res:.3f}", "reported", None))
    for family in ("linear", "sphere"):
        floors = [float(true[(family, n)][-1]) for n in INTRINSIC]
        rows.append(Row(f"{family}: true relative score error at N = {grid[-1]} "
                        f"(n = {', '.join(map(str, INTRINSIC))})",
                        ", ".join(f"{v:.3f}" for v in floors), "reported (approximation floor)",
                        None))
    data = {"grid": np.asarray(grid), "intrinsic": np.asarray(INTRINSIC),
            "estimation": {f"{f}|{n}": v for (f, n), v in est.items()},
            "true": {f"{f}|{n}": v for (f, n), v in true.items() if v is not None},
            "n_star": {f"{f}|{n}": v for (f, n), v in n_star.items()},
            "target": TARGET, "features": cfg["features"]}
    return Table("E8", size, tuple(rows), data)


def plot(table: Table):
    """Top: estimation error against N per family; bottom left: N* against n; bottom right:
    true error (linear, spheres)."""
    import matplotlib.pyplot as plt

    d = table.data
    grid, ns = np.asarray(d["grid"]), np.asarray(d["intrinsic"])
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    colours = plt.cm.viridis(np.linspace(0, 0.85, len(ns)))
    for j, family in enumerate(FAMILIES):
        ax = axes[0, j]
        for n, c in zip(ns, colours, strict=True):
            ax.loglog(grid, d["estimation"][f"{family}|{n}"], "o-", ms=3, color=c,
                      label=f"n = {n}")
        ax.axhline(d["target"], color="k", ls=":", lw=1)
        ax.set(title=f"{family}: estimation error", xlabel="N", ylabel="E|s_N - s_ref|^2 / "
               "E|s_ref|^2")
        ax.legend(fontsize=7)
    ax = axes[1, 0]
    for family, m in zip(FAMILIES, "os^", strict=True):
        stars = np.array([d["n_star"][f"{family}|{n}"] for n in ns], float)
        ax.loglog(ns, stars, m + "-", label=family)
    ax.loglog(ns, ns / ns[0] * np.nanmin(np.where(np.isfinite(stars), stars, np.nan)), "k--",
              lw=1, label="slope 1")
    ax.set(xlabel="intrinsic dimension n", ylabel=f"N* (estimation error {d['target']})",
           title="samples needed")
    ax.legend(fontsize=7)
    for j, family in enumerate(("linear", "sphere")):
        ax = axes[1, 1 + j]
        for n, c in zip(ns, colours, strict=True):
            ax.loglog(grid, d["true"][f"{family}|{n}"], "o-", ms=3, color=c, label=f"n = {n}")
        ax.set(title=f"{family}: true error", xlabel="N", ylabel="E|s_N - s*|^2 / E|s*|^2")
        ax.legend(fontsize=7)
    fig.suptitle(f"E8: random features (p = {d['features']}), d = {DIM}, sigma = {SIGMA}")
    fig.tight_layout()
    return fig


register("E8", "Random features: linear against curved manifolds", "arXiv 2603.22962 (summary)",
         run, plot)

"""E5: the subspace-recovery phase transition of the MoLRG denoiser.

Claim (Wang, Zhang, Zhang, Chen, Ma, Qu, "Diffusion models learn low-dimensional distributions
via subspace clustering", arXiv 2409.02426): with the denoiser parameterised as the posterior
mean of a mixture of low-rank Gaussians, minimising the DSM loss is PCA (``K = 1``) or subspace
clustering (``K > 1``), and the subspaces are recovered once the number of samples per component
``N_k`` reaches the intrinsic dimension ``r``: a phase transition at ``N_k ~ r``, the same for
every ambient dimension ``d``.

What we do: noiseless MoLRG data with mutually orthogonal subspaces and exactly ``N_k`` points
per component; the low-rank denoiser (:mod:`manifold_scores.models.lowrank`, QR-parameterised
Stiefel bases) trained by x0-MSE DSM with ``sigma`` uniform in ``[0.05, 1]``, Adam, 300 steps,
from 4 random initialisations of which the one with the lowest final training loss is kept;
as baselines on the same data, PCA for ``K = 1`` and K-subspaces (10 restarts, 20 iterations)
for ``K > 1``, and PCA on each component with its true labels (an oracle that separates the
sample-size effect from the clustering). Error: the permutation-matched
``max_k |U_hat_k U_hat_k^T - U_k U_k^T|_F / sqrt(2 r)`` (0 = exact, 1 = orthogonal), mean over
seeds. All sample sizes, seeds and initialisations of one ``(r, d, K)`` train together under
``jax.vmap`` (training sets padded with zero rows, which change neither PCA nor K-subspaces nor
the masked DSM draws). The transition is the smallest ``N_k / r`` with error ``<= 0.1``; the
collapse is the largest spread of the error across ``d`` at fixed ``(r, K, N_k / r)``.

Sizes: quick sweeps ``(r, d) in {(2, 32), (2, 128), (4, 32)}``, ``K in {1, 2}``,
``N_k / r in {0.5, 1, 2, 4}``; full sweeps ``(r, d) in {(2, 32), (2, 512), (4, 32), (4, 512),
(8, 32)}``, ``K in {1, 2, 3}``, ``N_k / r`` from 0.25 to 8, one seed: the issue's full grid
(``d = 128`` and ``r = 8`` at every ``d``, several seeds) did not fit the notebook's time
budget on a 2-core CPU. ``N_k = ceil(ratio r)``, so small ratios at ``r = 2`` round up.

Note: for ``K > 1`` and ``N_k = r`` the clustering is not identifiable: any split of the
``K r`` points into groups of ``r`` fits ``K`` subspaces exactly, so subspace clustering can only
be expected to succeed from ``N_k = r + 1`` on.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

import manifold_scores as ms
from manifold_scores import losses
from manifold_scores.experiments._batched import batch_rows
from manifold_scores.experiments._registry import register
from manifold_scores.experiments._table import Row, Table, check_size
from manifold_scores.models import lowrank

RECOVERED = 0.1  # normalised error below which a subspace counts as recovered
SPREAD = 0.15  # allowed spread of the error across d (collapse)
SIGMA_RANGE = (0.05, 1.0)
HIGHEST = jax.lax.Precision.HIGHEST


def _sizes(size):
    """``configs``: the ``(r, d, K)`` triples swept."""
    if size == "quick":
        return dict(configs=tuple(itertools.product(((2, 32), (2, 128), (4, 32)), (1, 2))),
                    ratios=(0.5, 1.0, 2.0, 4.0), seeds=1, steps=300, restarts=4)
    return dict(configs=tuple(itertools.product(((2, 32), (2, 512), (4, 32), (4, 512),
                                                 (8, 32)), (1, 2, 3))),
                ratios=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0), seeds=1, steps=300,
                restarts=4)


def _x0_mse(t, alpha, sigma, process):
    """Unit weight on the x0 error (``lambda c_x0 = 1``)."""
    return sigma**4 / (alpha * alpha)


def _time_sampler(key, n):
    lo, hi = SIGMA_RANGE
    return jax.random.uniform(key, (n,), minval=lo, maxval=hi)


@functools.partial(jax.jit, static_argnames=("rank", "comps", "steps", "batch", "restarts"))
def _train(keys, data, counts, *, rank, comps, steps, batch, restarts):
    """DSM-trained low-rank denoisers, one per row of ``data`` ``(M, N_max, d)``: ``restarts``
    random initialisations each, the one with the lowest final training loss (on a fixed draw
    of 16 noises per training point) kept."""
    proc = ms.EDM()
    m, n_max, d = data.shape
    keys = jax.vmap(lambda k: jax.random.split(k, restarts))(keys).reshape(m * restarts)
    data_r = jnp.repeat(data, restarts, axis=0)
    counts_r = jnp.repeat(counts, restarts)
    params = jax.vmap(lambda k: lowrank.init(k, d, rank, comps, proc, dtype=data.dtype))(keys)
    opt = optax.adam(optax.cosine_decay_schedule(0.05, steps, alpha=0.1))
    state = jax.vmap(opt.init)(params)

    def loss_fn(p, key, x0, reduction="mean"):
        return losses.dsm(key, lowrank.apply, p, x0, proc, target="x0", weighting=_x0_mse,
                          time_sampler=_time_sampler, reduction=reduction)

    def one(p, s, key, x, n):
        k_b, k_l = jax.random.split(key)
        g = jax.grad(loss_fn)(p, k_l, batch_rows(k_b, x, n, batch))
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s

    def step(carry, i):
        p, s = carry
        ks = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
        return jax.vmap(one)(p, s, ks, data_r, counts_r), None

    (params, _), _ = jax.lax.scan(step, (params, state), jnp.arange(steps))

    def final_loss(p, x, n):
        xs = jnp.tile(x, (16, 1))
        mask = jnp.tile(jnp.arange(n_max) < n, 16)
        vals = loss_fn(p, jax.random.key(12345), xs, "none")
        return jnp.sum(jnp.where(mask, vals, 0.0)) / jnp.sum(mask)

    fl = jax.vmap(final_loss)(params, data_r, counts_r).reshape(m, restarts)
    bases = jax.vmap(lowrank.bases)(params).reshape(m, restarts, comps, d, rank)
    return bases[jnp.arange(m), jnp.argmin(fl, 1)]


def _top_right(x, rank):
    """Top-``rank`` right singular vectors of ``x`` ``(n, d)``: ``(d, rank)`` (thin SVD,
    ``O(n^2 d)``)."""
    return jnp.linalg.svd(x, full_matrices=False)[2][:rank].T


def _k_subspaces(key, x, comps, rank, restarts, iters):
    """K-subspaces (hard assignment, then per-cluster PCA) with random restarts; the best
    restart by ``sum_i max_k |U_k^T x_i|^2``. Same algorithm as
    :func:`manifold_scores.models.lowrank.k_subspaces`, but each cluster's PCA is a thin SVD of
    its (masked) points, ``O(N^2 d)`` instead of an eigendecomposition of a ``d x d`` matrix."""
    d = x.shape[1]

    def once(k):
        u0 = jnp.linalg.qr(jax.random.normal(k, (comps, d, rank), x.dtype))[0]

        def step(u, _):
            energy = jnp.sum(jnp.einsum("nd,kdr->nkr", x, u, precision=HIGHEST) ** 2, -1)
            lab = jnp.argmax(energy, -1)
            new = jnp.stack([_top_right(jnp.where((lab == c)[:, None], x, 0.0), rank)
                             for c in range(comps)])
            return new, None

        u, _ = jax.lax.scan(step, u0, None, length=iters)
        return u, lowrank.subspace_objective(x, u)

    us, objs = jax.vmap(once)(jax.random.split(key, restarts))
    return us[jnp.argmax(objs)]


@functools.partial(jax.jit, static_argnames=("rank", "comps"))
def _baselines(keys, data, labels, *, rank, comps):
    """K-subspaces (``K > 1``) or PCA (``K = 1``), and the labelled per-component PCA."""
    if comps == 1:
        clus = jax.vmap(lambda x: lowrank.pca(x, rank))(data)
    else:
        clus = jax.vmap(lambda k, x: _k_subspaces(k, x, comps, rank, 10, 20))(keys, data)

    def oracle(x, lab):
        return jnp.concatenate([lowrank.pca(jnp.where((lab == k)[:, None], x, 0.0), rank)
                                for k in range(comps)])

    return clus, jax.vmap(oracle)(data, labels)


def _data(key, bases, n_k):
    """``n_k`` noiseless points on each subspace, and their labels."""
    k_num, d, r = bases.shape
    coef = jax.random.normal(key, (k_num, n_k, r), bases.dtype)
    x = jnp.einsum("kdr,knr->knd", bases, coef).reshape(k_num * n_k, d)
    return np.asarray(x), np.repeat(np.arange(k_num), n_k)


def _errors(bases_hat, bases, rank):
    return np.array([ms.metrics.subspace_recovery(b, bases).max_error
                     for b in np.asarray(bases_hat)]) / math.sqrt(2 * rank)


def _transition(ratios, err):
    ok = np.nonzero(np.asarray(err) <= RECOVERED)[0]
    return float(ratios[ok[0]]) if ok.size else math.inf


def run(size: str = "quick", *, seed: int = 0) -> Table:
    """Recovery error against ``N_k / r`` for the DSM-trained denoiser and the baselines."""
    check_size(size)
    cfg = _sizes(size)
    key = jax.random.key(seed)
    curves = {}  # (method, r, d, K) -> (ratios, mean errors)
    for (r, d), kc in cfg["configs"]:
        ck = jax.random.fold_in(key, 1000 * r + 10 * kc + d)
        mix = ms.MoLRG.random(ck, dim=d, rank=r, num_components=kc)
        n_ks = sorted({max(1, math.ceil(q * r)) for q in cfg["ratios"]})
        sets, labs, meta = [], [], []
        for n_k, s in itertools.product(n_ks, range(cfg["seeds"])):
            x, lab = _data(jax.random.fold_in(ck, 7919 * n_k + s), mix.bases, n_k)
            sets.append(x)
            labs.append(lab)
            meta.append(n_k)
        n_max = max(len(x) for x in sets)
        data = np.zeros((len(sets), n_max, d), np.float32)
        labels = np.full((len(sets), n_max), -1, np.int32)
        for i, (x, lab) in enumerate(zip(sets, labs, strict=True)):
            data[i, : len(x)], labels[i, : len(x)] = x, lab
        counts = jnp.asarray([len(x) for x in sets], jnp.int32)
        keys = jax.random.split(jax.random.fold_in(ck, 1), len(sets))
        trained = _train(keys, jnp.asarray(data), counts, rank=r, comps=kc,
                         steps=cfg["steps"], batch=256, restarts=cfg["restarts"])
        clus, oracle = _baselines(keys, jnp.asarray(data), jnp.asarray(labels), rank=r,
                                  comps=kc)
        meta = np.asarray(meta)
        ratios = np.asarray(n_ks) / r
        for name, est in (("DSM low-rank", trained),
                          ("PCA" if kc == 1 else "K-subspaces", clus),
                          ("labelled PCA", oracle)):
            if name == "labelled PCA" and kc == 1:
                continue
            err = _errors(est, mix.bases, r)
            curves[(name, r, d, kc)] = (ratios, np.array([err[meta == n].mean()
                                                          for n in n_ks]))
    return _table(size, cfg, curves)


def _table(size, cfg, curves) -> Table:
    rows = []
    methods = sorted({m for m, *_ in curves}, key=["DSM low-rank", "PCA", "K-subspaces",
                                                    "labelled PCA"].index)
    trans = {k: _transition(*v) for k, v in curves.items()}
    for m in methods:
        vals = np.array([t for k, t in trans.items() if k[0] == m])
        fin = vals[np.isfinite(vals)]
        med = float(np.median(vals))
        holds = bool(np.all((vals >= 0.5) & (vals <= 2.0)))
        rng = f"[{fin.min():.2g}, {fin.max():.2g}]" if fin.size else "none"
        rows.append(Row(f"{m}: transition N_k/r (median over {len(vals)} (r,d,K) curves; "
                        f"range {rng}, {len(vals) - fin.size} never recover)", med,
                        "every curve in [0.5, 2] (N_k ~ r)", holds))
    # collapse against N_k / r: spread across d at fixed (method, r, K, ratio)
    for m in methods:
        spread = 0.0
        for r, kc in sorted({(r, kc) for (r, _), kc in cfg["configs"]}):
            group = [v for k, v in curves.items() if k[0] == m and k[1] == r and k[3] == kc]
            if len(group) > 1:
                errs = np.stack([g[1] for g in group])
                spread = max(spread, float(np.max(errs.max(0) - errs.min(0))))
        rows.append(Row(f"{m}: largest spread of the error across d at fixed (r, K, N_k/r)",
                        spread, f"<= {SPREAD} (independent of d)", spread <= SPREAD))
    data = {"curves": {"|".join(map(str, k)): {"ratios": v[0], "error": v[1]}
                       for k, v in curves.items()},
            "transitions": {"|".join(map(str, k)): v for k, v in trans.items()},
            "threshold": RECOVERED}
    return Table("E5", size, tuple(rows), data)


def plot(table: Table):
    """Phase diagrams: error against N_k / r, one panel per (method, K); colour r, marker d."""
    import matplotlib.pyplot as plt

    curves = {tuple(k.split("|")): v for k, v in table.data["curves"].items()}
    panels = sorted({(m, int(kc)) for m, _, _, kc in curves},
                    key=lambda p: (p[1], ["DSM low-rank", "PCA", "K-subspaces",
                                          "labelled PCA"].index(p[0])))
    comps = sorted({p[1] for p in panels})
    cols = max(sum(1 for p in panels if p[1] == k) for k in comps)
    fig, axes = plt.subplots(len(comps), cols, figsize=(4 * cols, 3.2 * len(comps)),
                             squeeze=False)
    ranks = sorted({int(r) for _, r, _, _ in curves})
    dims = sorted({int(d) for _, _, d, _ in curves})
    colours = dict(zip(ranks, plt.cm.viridis(np.linspace(0, 0.85, len(ranks))), strict=True))
    markers = dict(zip(dims, "os^v", strict=False))
    for i, kc in enumerate(comps):
        row = [p for p in panels if p[1] == kc]
        for j, (m, _) in enumerate(row):
            ax = axes[i, j]
            for (mm, r, d, k), v in curves.items():
                if mm == m and int(k) == kc:
                    ax.semilogx(v["ratios"], v["error"], marker=markers[int(d)], ms=4,
                                color=colours[int(r)], label=f"r={r}, d={d}")
            ax.axvline(1.0, color="k", ls="--", lw=0.8)
            ax.set(title=f"{m}, K={kc}", xlabel="N_k / r", ylabel="recovery error",
                   ylim=(-0.05, 1.05))
        for j in range(len(row), cols):
            axes[i, j].axis("off")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle("E5: subspace recovery against N_k / r (dashed: N_k = r)")
    fig.tight_layout()
    return fig


register("E5", "Subspace-recovery phase transition of the MoLRG denoiser",
         "arXiv 2409.02426", run, plot)

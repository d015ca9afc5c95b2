"""E6: the numerical rank of the denoiser Jacobian against the signal-to-noise ratio.

Claim (Wang, Zhang, Zhang, Chen, Ma, Qu, "Diffusion models learn low-dimensional distributions
via subspace clustering", arXiv 2409.02426, their Figure 3): the Jacobian ``d E[X | x] / dx`` of
the MoLRG denoiser is low-rank: rank ``r`` at high SNR (the posterior picks one subspace, and the
denoiser is the projection onto it) and ``K r`` at low SNR (uniform posterior weights: the sum
of all ``K`` projectors).

What we do: a MoLRG with ``K = 3`` orthogonal subspaces of rank ``r = 3`` in ``d = 32``; PF-ODE
trajectories of the exact score under the EDM process (``alpha = 1, sigma = t``, Heun on the
EDM grid from ``sigma = 80`` to ``0.002``); at every state, the Jacobian of the exact denoiser
(``jax.jacfwd``) and of a trained network's denoiser, both at the same points; the numerical
rank is the smallest ``k`` with ``sqrt(sum_{i<=k} s_i^2) > 0.99 |J|_F``
(:func:`manifold_scores.metrics.jacobian_rank`), median over trajectories. The network is the
MLP of :mod:`manifold_scores.models.mlp` trained by EDM-weighted DSM on ``N`` samples. The paper
measures U-Nets on images; our network is an MLP, so its rows are reported, not asserted.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import manifold_scores as ms
from manifold_scores.experiments._batched import train_mlps
from manifold_scores.experiments._registry import register
from manifold_scores.experiments._table import Row, Table, check_size
from manifold_scores.models import mlp

DIM, RANK, COMPS = 32, 3, 3


def _sizes(size):
    if size == "quick":
        return dict(n_traj=8, steps=24, n_train=1000, train_steps=1500, width=128)
    return dict(n_traj=32, steps=48, n_train=4000, train_steps=4000, width=128)


@functools.partial(jax.jit, static_argnames=())
def _ranks(mix, params, xs, sigmas):
    """Ranks of the exact and network denoiser Jacobians at states ``xs`` ``(S, n, d)``."""

    def at(x, s):
        je = jax.jacfwd(lambda y: mix.denoise(y, 1.0, s))(x)
        jn = jax.jacfwd(lambda y: mlp.apply(params, y, s))(x)
        return ms.metrics.jacobian_rank(je), ms.metrics.jacobian_rank(jn)

    return jax.vmap(lambda xb, s: jax.vmap(at, (0, None))(xb, s))(xs, sigmas)


def run(size: str = "quick", *, seed: int = 0) -> Table:
    """Median Jacobian ranks along EDM trajectories, exact denoiser and trained MLP."""
    check_size(size)
    cfg = _sizes(size)
    key = jax.random.key(seed)
    k_mix, k_train, k_fit, k_traj = jax.random.split(key, 4)
    mix = ms.MoLRG.random(k_mix, dim=DIM, rank=RANK, num_components=COMPS)
    proc = ms.EDM()
    train = mix.sample(k_train, cfg["n_train"])
    sd = float(jnp.sqrt(jnp.mean(train**2)))
    params, hist = train_mlps(k_fit, train[None], jnp.asarray([cfg["n_train"]]),
                              width=cfg["width"], depth=3, steps=cfg["train_steps"],
                              batch_size=256, sigma_data=sd)
    net = jax.tree.map(lambda a: a[0], params)
    _, traj = ms.sampling.sample_ode(k_traj, ms.score_fn(mix, proc), proc,
                                     (cfg["n_traj"], DIM), steps=cfg["steps"], kind="edm",
                                     save_at="all")
    sigmas = np.asarray(traj.ts)
    exact, network = (np.asarray(v) for v in _ranks(mix, net, traj.xs, traj.ts))
    med_e, med_n = np.median(exact, 1), np.median(network, 1)
    hi, lo = int(np.argmin(sigmas)), int(np.argmax(sigmas))
    rows = [
        Row(f"exact denoiser, rank at high SNR (sigma = {sigmas[hi]:.3g})", med_e[hi],
            f"r = {RANK}", bool(med_e[hi] == RANK)),
        Row(f"exact denoiser, rank at low SNR (sigma = {sigmas[lo]:.3g})", med_e[lo],
            f"K r = {COMPS * RANK}", bool(med_e[lo] == COMPS * RANK)),
        Row("exact denoiser, largest rank on the trajectory", float(med_e.max()),
            f"<= K r = {COMPS * RANK}", bool(med_e.max() <= COMPS * RANK)),
        Row(f"MLP denoiser (N = {cfg['n_train']}), rank at high SNR", med_n[hi],
            f"reported (exact: {RANK})", None),
        Row("MLP denoiser, rank at low SNR", med_n[lo], f"reported (exact: {COMPS * RANK})",
            None),
        Row("MLP denoiser, largest rank on the trajectory", float(med_n.max()),
            f"reported (exact: <= {COMPS * RANK}; ambient d = {DIM})", None),
        Row(f"MLP denoiser, smallest rank on the trajectory (at sigma = "
            f"{sigmas[int(np.argmin(med_n))]:.3g})", float(med_n.min()),
            f"reported (exact there: {med_e[int(np.argmin(med_n))]:.0f})", None),
    ]
    data = {"sigmas": sigmas, "exact": med_e, "network": med_n,
            "exact_q": np.percentile(exact, [25, 75], 1),
            "network_q": np.percentile(network, [25, 75], 1),
            "loss": np.asarray(hist[:, 0]), "rank": RANK, "comps": COMPS, "dim": DIM}
    return Table("E6", size, tuple(rows), data)


def plot(table: Table):
    """Median rank (with quartiles) against SNR = 1 / sigma^2 (log axis)."""
    import matplotlib.pyplot as plt

    d = table.data
    snr = 1.0 / np.asarray(d["sigmas"]) ** 2
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, key, m in (("exact MoLRG denoiser", "exact", "o-"),
                         ("trained MLP", "network", "s-")):
        q = np.asarray(d[f"{key}_q"])
        ax.semilogx(snr, d[key], m, ms=3, label=name)
        ax.fill_between(snr, q[0], q[1], alpha=0.2)
    ax.axhline(d["rank"], color="k", ls=":", lw=1, label="r")
    ax.axhline(d["rank"] * d["comps"], color="k", ls="--", lw=1, label="K r")
    ax.set(xlabel="SNR = 1 / sigma^2", ylabel="numerical rank (0.99 Frobenius)",
           title=f"E6: Jacobian rank along EDM trajectories (d = {d['dim']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


register("E6", "Denoiser Jacobian rank against SNR", "arXiv 2409.02426, Figure 3", run, plot)

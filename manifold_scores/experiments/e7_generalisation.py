"""E7: generalisation of a trained score network against ``N_k / r``.

Claim (Wang, Zhang, Zhang, Chen, Ma, Qu, "Diffusion models learn low-dimensional distributions
via subspace clustering", arXiv 2409.02426): a network trained on MoLRG data moves from
memorising its training set to generalising as the number of samples per component ``N_k``
grows, the curves for different intrinsic dimensions ``r`` collapse when plotted against
``N_k / r`` (the sample complexity is linear in ``r``), and for their U-Net the transition sits
at ``N_k`` of about 50-60 ``r``.

What we do: MoLRG with ``K = 2`` orthogonal subspaces in ``d = 16`` (quick) or ``d = 32``
(full), ``N_k`` from ``r`` to ``100 r`` points per component; one MLP denoiser
(:mod:`manifold_scores.models.mlp`, EDM preconditioning, EDM-weighted DSM, Adam, the same number
of steps for every ``N``) per ``(r, N_k, seed)``, all trained together under ``jax.vmap``;
512 PF-ODE samples each (Heun, EDM grid, 32 steps). Generalisation score: ``1 -`` the
memorisation fraction (share of samples whose nearest / second-nearest training distance is
below 1/3); mean distance of the samples to the union of subspaces, divided by the data's RMS
norm ``sqrt(r)``. The transition is where the generalisation score crosses 1/2 (log-linear
interpolation in ``N_k / r``); the collapse is the largest spread of the score across ``r`` at
the same ``N_k / r``. Ours is an MLP with a fixed training budget, so its transition is
reported, not compared with the U-Net's. Sizes: quick ``d = 16``, ``r in {2, 4}``,
``N_k / r in {1, 4, 16, 64}``, 1500 steps; full ``d = 32``, ``r in {2, 4, 8}``,
``N_k / r in {1, 2, 5, 10, 20, 50, 100}``, 3000 steps, one seed (width-64, depth-2 MLPs: a
larger network or several seeds did not fit the notebook's time budget on a 2-core CPU).
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

import manifold_scores as ms
from manifold_scores.experiments._batched import pad_sets, sample_edm, train_mlps
from manifold_scores.experiments._registry import register
from manifold_scores.experiments._table import Row, Table, check_size

COMPS = 2
SPREAD = 0.25  # allowed spread of the generalisation score across r at fixed N_k / r


def _sizes(size):
    if size == "quick":
        return dict(dim=16, ranks=(2, 4), ratios=(1, 4, 16, 64), seeds=1, steps=1500,
                    width=64, depth=2, n_samples=512)
    return dict(dim=32, ranks=(2, 4, 8), ratios=(1, 2, 5, 10, 20, 50, 100), seeds=1,
                steps=3000, width=64, depth=2, n_samples=512)


def _crossing(ratios, score, level=0.5):
    """First ``N_k / r`` where ``score`` reaches ``level`` (log-linear interpolation)."""
    ratios, score = np.asarray(ratios, float), np.asarray(score, float)
    if score[0] >= level:
        return float(ratios[0]) if score[0] == level else -math.inf  # below the grid
    for i in range(1, len(score)):
        if score[i] >= level:
            f = (level - score[i - 1]) / (score[i] - score[i - 1])
            return float(np.exp(np.log(ratios[i - 1]) + f * np.log(ratios[i] / ratios[i - 1])))
    return math.inf


def run(size: str = "quick", *, seed: int = 0) -> Table:
    """Generalisation score and distance to the subspaces against ``N_k / r``."""
    check_size(size)
    cfg = _sizes(size)
    key = jax.random.key(seed)
    d = cfg["dim"]
    mixes = {r: ms.MoLRG.random(jax.random.fold_in(key, r), dim=d, rank=r,
                                num_components=COMPS) for r in cfg["ranks"]}
    sets, meta = [], []
    for r, q, s in itertools.product(cfg["ranks"], cfg["ratios"], range(cfg["seeds"])):
        n_k = q * r
        x, lab = mixes[r].sample_with_labels(jax.random.fold_in(key, 10_000 * r + 100 * q + s),
                                             4 * COMPS * n_k)
        lab = np.asarray(lab)  # exactly n_k points per component
        idx = np.concatenate([np.nonzero(lab == k)[0][:n_k] for k in range(COMPS)])
        sets.append(np.asarray(x)[idx])
        meta.append((r, q, s))
    data, counts = pad_sets(sets)
    sd = float(np.sqrt(np.mean(np.concatenate(sets) ** 2)))
    params, hist = train_mlps(jax.random.fold_in(key, 1), data, counts, width=cfg["width"],
                              depth=cfg["depth"], steps=cfg["steps"], batch_size=128,
                              sigma_data=sd)
    samples = np.asarray(sample_edm(jax.random.fold_in(key, 2), params, n=cfg["n_samples"]))
    gen = np.zeros(len(sets))
    dist = np.zeros(len(sets))
    for i, (r, _, _) in enumerate(meta):
        gen[i] = float(ms.metrics.generalization_score(samples[i], sets[i]))
        dist[i] = float(jnp.mean(ms.metrics.distance_to_manifold(mixes[r], samples[i])))
        dist[i] /= math.sqrt(r)
    meta = np.asarray(meta)
    ratios = np.asarray(cfg["ratios"], float)
    curves = {}
    for r in cfg["ranks"]:
        sel = meta[:, 0] == r
        curves[r] = {"generalisation": np.array([gen[sel & (meta[:, 1] == q)].mean()
                                                 for q in cfg["ratios"]]),
                     "distance": np.array([dist[sel & (meta[:, 1] == q)].mean()
                                           for q in cfg["ratios"]])}
    trans = {r: _crossing(ratios, c["generalisation"]) for r, c in curves.items()}
    stack = np.stack([c["generalisation"] for c in curves.values()])
    spread = float(np.max(stack.max(0) - stack.min(0)))
    rows = []
    for r, t in trans.items():
        txt = (f"< {ratios[0]:g}" if t == -math.inf else
               f"> {ratios[-1]:g}" if t == math.inf else t)
        rows.append(Row(f"r = {r}: N_k / r where the generalisation score crosses 1/2", txt,
                        "reported (U-Net in the paper: 50-60)", None))
    rows.append(Row("largest spread of the generalisation score across r at fixed N_k / r",
                    spread, f"<= {SPREAD} (curves collapse against N_k / r)", spread <= SPREAD))
    rows.append(Row(f"generalisation score at N_k = r (mean over r) / at N_k = "
                    f"{cfg['ratios'][-1]} r", f"{stack[:, 0].mean():.2f} / "
                    f"{stack[:, -1].mean():.2f}", "reported (memorises at small N_k)", None))
    dstack = np.stack([c["distance"] for c in curves.values()])
    rows.append(Row("mean distance to the subspaces / sqrt(r), at N_k = r / largest N_k",
                    f"{dstack[:, 0].mean():.3f} / {dstack[:, -1].mean():.3f}", "reported",
                    None))
    data = {"ratios": ratios, "curves": {str(r): c for r, c in curves.items()},
            "transitions": {str(r): t for r, t in trans.items()}, "dim": d,
            "final_loss": np.asarray(hist[-100:]).mean(0)}
    return Table("E7", size, tuple(rows), data)


def plot(table: Table):
    """Generalisation score and distance to the subspaces against N_k / r, one curve per r."""
    import matplotlib.pyplot as plt

    d = table.data
    ratios = np.asarray(d["ratios"])
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 4))
    for r, c in d["curves"].items():
        a0.semilogx(ratios, c["generalisation"], "o-", label=f"r = {r}")
        a1.semilogx(ratios, c["distance"], "o-", label=f"r = {r}")
    a0.axhline(0.5, color="k", ls=":", lw=1)
    a0.axvspan(50, 60, color="grey", alpha=0.2, label="paper's U-Net (50-60)")
    a0.set(xlabel="N_k / r", ylabel="generalisation score (1 - memorised)", ylim=(-0.05, 1.05),
           title=f"E7: MLP on MoLRG (K = {COMPS}, d = {d['dim']})")
    a1.set(xlabel="N_k / r", ylabel="mean distance to subspaces / sqrt(r)",
           title="samples' distance to the support")
    a0.legend(fontsize=8)
    a1.legend(fontsize=8)
    fig.tight_layout()
    return fig


register("E7", "Network generalisation against N_k / r", "arXiv 2409.02426", run, plot)

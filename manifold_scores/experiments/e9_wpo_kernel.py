"""E9: the WPO-informed kernel model against the memorising empirical score and a DSM MLP.

Claim (Zhang, Liu, Li, Katsoulakis, Osher, "Wasserstein proximal operators describe score-based
generative models and resolve memorization", arXiv 2402.06162): a Gaussian-mixture score model
with learned local precisions, trained by implicit score matching at the terminal time only,
generates samples that stay near the data manifold without copying the training set, trains in
a fraction of a neural network's time, while the exact score of the empirical law (the DSM
optimum) memorises.

What we do, on four data sets (``N`` training points each): a 2-D swiss roll
``(t cos t, t sin t) / 10``, ``t ~ U[1.5 pi, 4.5 pi]``; its 6-D variant
``(x, y, 2x + 0.1 e, x + y + 0.1 e, x - 2y + 0.1 e, N(0, 1))``; a unit circle in ``R^8`` (random
plane); a MoLRG with ``K = 2`` rank-2 subspaces in ``R^8``. Three models:

- the WPO kernel model (:mod:`manifold_scores.models.kernel`, full ``d x d`` Cholesky factors
  from a 5-layer MLP of the centre, ``eps = 1``, initial kernel width 0.1), trained by Adam on
  the ISM loss at ``alpha = 1, sigma = 0``. The centres are half of the training set and the ISM
  loss is evaluated on the other half: on its own centres the ISM loss of a mixture is unbounded
  below (each kernel shrinks onto its centre), so the two roles are split. Samples are drawn from
  the mixture directly;
- the empirical score (:class:`~manifold_scores.Empirical` on all ``N`` points), sampled by the
  Heun PF-ODE on the EDM grid down to ``sigma = 0.002``;
- an MLP denoiser (:mod:`manifold_scores.models.mlp`) trained by EDM-weighted DSM on all ``N``
  points, sampled the same way.

Metrics against the full training set and fresh data: memorisation fraction (nearest /
second-nearest training distance ``< 1/3``), unbiased ``MMD^2`` (RBF, median-heuristic
bandwidths) to fresh data, mean distance to the manifold divided by the data's RMS norm (for the
6-D variant: the distance of the first five coordinates to the noiseless curve, which the data
itself sits at about ``0.1 sqrt(3)`` from; its fresh-data value is shown), and training wall time
(compiled ahead of time; compile time reported separately; the same machine, one after the
other). Budgets are fixed in advance: the kernel model trains for a fifth of the MLP's steps.
On data on a manifold the ISM loss is unbounded below (the kernels may narrow without limit
in the normal directions), so the kernel model's distance to the manifold reflects its
training budget: its loss is still falling at the end of it. Sizes: quick ``N = 300``, 300 ISM
steps, 1500 DSM steps, 32 ODE steps; full ``N = 400``, 400 ISM steps, 2000 DSM steps, 48 ODE
steps (a larger full size did not fit the notebook's time budget on a 2-core CPU).
"""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import manifold_scores as ms
from manifold_scores.experiments._batched import _train_mlps, edm_sigmas, heun_edm, sample_edm
from manifold_scores.experiments._registry import register
from manifold_scores.experiments._table import Row, Table, check_size
from manifold_scores.models import kernel

DATASETS = ("swiss roll 2-D", "swiss roll 6-D", "circle in R^8", "MoLRG in R^8")
MEM_LOW, MEM_HIGH, NEAR, TIME_FRACTION = 0.1, 0.9, 0.05, 0.25
T_RANGE = (1.5 * math.pi, 4.5 * math.pi)


def _sizes(size):
    if size == "quick":
        return dict(n_train=300, n_samples=300, kernel_steps=300, mlp_steps=1500, width=64,
                    depth=2, ode_steps=32)
    return dict(n_train=400, n_samples=400, kernel_steps=400, mlp_steps=2000, width=64,
                depth=2, ode_steps=48)


def _roll2(t):
    return jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], -1) / 10.0


def _lift6(xy, key):
    k1, k2 = jax.random.split(key)
    e = 0.1 * jax.random.normal(k1, (xy.shape[0], 3), xy.dtype)
    x, y = xy[:, 0], xy[:, 1]
    return jnp.stack([x, y, 2 * x + e[:, 0], x + y + e[:, 1], x - 2 * y + e[:, 2],
                      jax.random.normal(k2, (xy.shape[0],), xy.dtype)], -1)


class _Data:
    """A data set: ``sample(key, n)`` and ``distance(x)`` (batch) to its manifold."""

    def __init__(self, name, key):
        self.name = name
        k_law, self.k_curve = jax.random.split(key)
        if name == "circle in R^8":
            self.law = ms.Circle(dim=8, key=k_law)
        elif name == "MoLRG in R^8":
            self.law = ms.MoLRG.random(k_law, dim=8, rank=2, num_components=2)
        else:
            tt = jnp.linspace(*T_RANGE, 20_000)
            curve = _roll2(tt)
            if name == "swiss roll 6-D":
                x, y = curve[:, 0], curve[:, 1]
                curve = jnp.stack([x, y, 2 * x, x + y, x - 2 * y], -1)
            self.curve = curve

    def sample(self, key, n):
        if hasattr(self, "law"):
            return self.law.sample(key, n)
        k1, k2 = jax.random.split(key)
        t = jax.random.uniform(k1, (n,), minval=T_RANGE[0], maxval=T_RANGE[1])
        xy = _roll2(t)
        return xy if self.name == "swiss roll 2-D" else _lift6(xy, k2)

    def distance(self, x):
        if hasattr(self, "law"):
            return ms.metrics.distance_to_manifold(self.law, x)
        return ms.metrics.nearest_distances(x[:, : self.curve.shape[1]], self.curve)[:, 0]


@functools.partial(jax.jit, static_argnames=("steps",))
def _train_kernel(params, x_ism, *, steps):
    opt = optax.adam(optax.cosine_decay_schedule(3e-3, steps, alpha=0.1))
    state = opt.init(params)

    def step(carry, _):
        p, s = carry
        loss, g = jax.value_and_grad(kernel.ism_loss)(p, x_ism)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), loss

    (params, _), hist = jax.lax.scan(step, (params, state), None, length=steps)
    return params, hist


@functools.partial(jax.jit, static_argnames=("n", "steps"))
def _sample_empirical(key, emp, *, n, steps):
    sigmas = jnp.asarray(edm_sigmas(steps), emp.points.dtype)
    x = sigmas[0] * jax.random.normal(key, (n, emp.dim), emp.points.dtype)
    return heun_edm(lambda y, s: emp.denoise(y, 1.0, s), x, sigmas)


def _timed(jitted, *args, **static):
    """``(output, compile seconds, run seconds)`` of a jitted function, compiled ahead of time
    (``static`` are its static keyword arguments)."""
    start = time.perf_counter()
    compiled = jitted.lower(*args, **static).compile()
    mid = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, mid - start, time.perf_counter() - mid


def _evaluate(data, samples, train, fresh, rms):
    return {"memorisation": float(ms.metrics.memorization_fraction(samples, train)),
            "mmd": float(ms.metrics.mmd(samples, fresh)),
            "distance": float(jnp.mean(data.distance(samples))) / rms}


def run(size: str = "quick", *, seed: int = 0) -> Table:
    """Memorisation, MMD, distance to the manifold and training time of the three models."""
    check_size(size)
    cfg = _sizes(size)
    key = jax.random.key(seed)
    results, rows = {}, []
    for i, name in enumerate(DATASETS):
        k = jax.random.fold_in(key, i)
        k_d, k_tr, k_fr, k_ki, k_ks, k_es, k_mf, k_ms = jax.random.split(k, 8)
        data = _Data(name, k_d)
        train = data.sample(k_tr, cfg["n_train"])
        fresh = data.sample(k_fr, cfg["n_samples"])
        rms = float(jnp.sqrt(jnp.mean(jnp.sum(train**2, -1))))
        half = cfg["n_train"] // 2
        params = kernel.init(k_ki, train[:half], eps=1.0, init_scale=10.0, width=64, depth=5)
        (params, k_hist), c_kernel, t_kernel = _timed(_train_kernel, params, train[half:],
                                                      steps=cfg["kernel_steps"])
        s_kernel = kernel.sample(k_ks, params, cfg["n_samples"])
        s_emp = _sample_empirical(k_es, ms.Empirical(train), n=cfg["n_samples"],
                                  steps=cfg["ode_steps"])
        sd = float(jnp.sqrt(jnp.mean(train**2)))
        (mlp_params, _), c_mlp, t_mlp = _timed(
            _train_mlps, jax.random.split(k_mf, 1), train[None], jnp.asarray([cfg["n_train"]]),
            dim=train.shape[1], width=cfg["width"], depth=cfg["depth"], steps=cfg["mlp_steps"],
            batch_size=128, sigma_data=sd, lr=2e-3)
        s_mlp = sample_edm(k_ms, mlp_params, n=cfg["n_samples"], steps=cfg["ode_steps"])[0]
        res = {m: _evaluate(data, s, train, fresh, rms)
               for m, s in (("kernel", s_kernel), ("empirical", s_emp), ("MLP", s_mlp))}
        res["fresh data"] = {"distance": float(jnp.mean(data.distance(fresh))) / rms}
        res["time"] = {"kernel": t_kernel, "MLP": t_mlp, "kernel compile": c_kernel,
                       "MLP compile": c_mlp}
        res["samples"] = {"kernel": np.asarray(s_kernel), "empirical": np.asarray(s_emp),
                          "MLP": np.asarray(s_mlp), "train": np.asarray(train)}
        res["kernel_loss"] = np.asarray(k_hist)
        results[name] = res
        mem = [res[m]["memorisation"] for m in ("kernel", "empirical", "MLP")]
        rows.append(Row(f"{name}: memorisation fraction, kernel / empirical / MLP",
                        " / ".join(f"{v:.3f}" for v in mem),
                        f"kernel <= {MEM_LOW}, empirical >= {MEM_HIGH}",
                        mem[0] <= MEM_LOW and mem[1] >= MEM_HIGH))
        dist = [res[m]["distance"] for m in ("kernel", "empirical", "MLP")]
        floor = res["fresh data"]["distance"]
        rows.append(Row(f"{name}: mean distance to M / RMS norm, kernel / empirical / MLP "
                        f"(fresh data {floor:.3f})", " / ".join(f"{v:.3f}" for v in dist),
                        f"kernel <= fresh + {NEAR}", dist[0] <= floor + NEAR))
        rows.append(Row(f"{name}: MMD^2 to fresh data, kernel / empirical / MLP",
                        " / ".join(f"{res[m]['mmd']:.2e}" for m in ("kernel", "empirical",
                                                                       "MLP")),
                        "reported", None))
        ratio = t_kernel / t_mlp
        rows.append(Row(f"{name}: training time after compilation, kernel {t_kernel:.1f} s "
                        f"({cfg['kernel_steps']} ISM steps; compile {c_kernel:.1f} s) / MLP "
                        f"{t_mlp:.1f} s ({cfg['mlp_steps']} DSM steps; compile {c_mlp:.1f} s)",
                        ratio,
                        f"<= {TIME_FRACTION} (a small fraction)", ratio <= TIME_FRACTION))
    return Table("E9", size, tuple(rows), {"results": results})


def plot(table: Table):
    """Samples of the three models on each data set (first two coordinates), training set
    in grey; titles carry the memorisation fraction and the distance to the manifold."""
    import matplotlib.pyplot as plt

    res = table.data["results"]
    fig, axes = plt.subplots(len(res), 3, figsize=(11, 3.4 * len(res)), squeeze=False)
    for i, (name, r) in enumerate(res.items()):
        train = np.asarray(r["samples"]["train"])
        for j, m in enumerate(("kernel", "empirical", "MLP")):
            ax = axes[i, j]
            s = np.asarray(r["samples"][m])
            ax.scatter(train[:, 0], train[:, 1], s=4, c="0.7", label="train")
            ax.scatter(s[:, 0], s[:, 1], s=3, c="C3", alpha=0.6, label=m)
            ax.set_title(f"{name}: {m}\nmem {r[m]['memorisation']:.2f}, "
                         f"dist {r[m]['distance']:.3f}", fontsize=8)
            ax.set_aspect("equal", adjustable="datalim")
    fig.suptitle("E9: WPO kernel model, empirical score, DSM MLP (coordinates 1-2)")
    fig.tight_layout()
    return fig


register("E9", "WPO kernel model against memorisation", "arXiv 2402.06162", run, plot)

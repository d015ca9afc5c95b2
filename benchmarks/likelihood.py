"""Likelihood ``log p_{t_min}(x)`` through the PF-ODE for a batch of points, three divergences.

``ms.likelihood.log_prob`` (RK4 on the log-SNR grid) vmapped over a batch of points of a MoLRG law
and of an empirical law, with the divergence of the score

* ``closed form`` (reference): ``ms.likelihood.divergence_fn(density, proc)``, i.e.
  ``-d / sigma^2 + alpha^2 tr Cov[X|x] / sigma^4`` from the mixture kernel;
* ``exact (autodiff)``: ``divergence="exact"``, the trace of the Jacobian from ``d`` JVPs;
* ``hutchinson``: ``divergence="hutchinson"``, one Rademacher probe (an unbiased estimate).

``speedup`` = time / closed-form time; ``rel_err`` compares the log-densities with the closed
form's (the autodiff trace agrees to round-off; Hutchinson is an estimate, not a bug).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

import manifold_scores as ms
from benchmarks.common import alternate, compile_impl, drop_outputs, rel_err, summarize

# per size: rounds, steps, MoLRG (n, d, r, K), empirical (n, N, d)
SIZES = {
    "tiny": {"rounds": 3, "steps": 8, "molrg": (4, 4, 1, 2), "empirical": (4, 50, 4)},
    "quick": {"rounds": 3, "steps": 64, "molrg": (32, 16, 2, 4), "empirical": (16, 1000, 16)},
    "full": {"rounds": 3, "steps": 128, "molrg": (32, 16, 2, 4),
             "empirical": (16, 1000, 16)},
    "large": {"rounds": 5, "steps": 128, "molrg": (64, 64, 4, 8),
              "empirical": (32, 2000, 16)},
}


def run_density(name, dens, xs, steps, rounds, label):
    proc = ms.VP()
    keys = jax.random.split(jax.random.key(5), xs.shape[0])

    def closed(x, dens):
        score, div = ms.score_fn(dens, proc), ms.likelihood.divergence_fn(dens, proc)
        return jax.vmap(lambda q: ms.likelihood.log_prob(score, proc, q, divergence=div,
                                                         steps=steps))(x)

    def exact(x, dens):
        score = ms.score_fn(dens, proc)
        return jax.vmap(lambda q: ms.likelihood.log_prob(score, proc, q, divergence="exact",
                                                         steps=steps))(x)

    def hutch(x, k, dens):
        score = ms.score_fn(dens, proc)
        return jax.vmap(lambda q, kk: ms.likelihood.log_prob(
            score, proc, q, divergence="hutchinson", key=kk, steps=steps))(x, k)

    impls = [compile_impl("closed form", closed, xs, dens, note="divergence_fn(density, proc)"),
             compile_impl("exact (autodiff)", exact, xs, dens, note="d JVPs per evaluation"),
             compile_impl("hutchinson", hutch, xs, keys, dens, note="1 Rademacher probe")]
    times = alternate(impls, rounds)
    rows = summarize(impls, times, "closed form", lambda a, o: rel_err(a, np.asarray(o)))
    drop_outputs(impls)
    n, d = xs.shape
    return {"family": "likelihood", "case": "log_prob (RK4, log-SNR grid)",
            "shape": {"density": name, "n": n, "d": d, "detail": label, "steps": steps},
            "rows": rows, "notes": []}


def run(size, dtype, torch=None, log=print):
    cfg = SIZES[size]
    dt = jnp.dtype(dtype)
    n, d, r, k = cfg["molrg"]
    mix = ms.MoLRG.random(jax.random.key(0), d, r, k, dtype=dt)
    xs = mix.sample(jax.random.key(1), n)
    log(f"  likelihood MoLRG n={n} d={d}")
    out = [run_density("MoLRG", mix, xs, cfg["steps"], cfg["rounds"], f"K={k} r={r}")]
    ne, npts, de = cfg["empirical"]
    rng = np.random.default_rng(0)
    pts = jnp.asarray(rng.standard_normal((npts, de)) / math.sqrt(de), dt)
    emp = ms.Empirical(pts)
    xe = pts[:ne] + 0.1 * jnp.asarray(rng.standard_normal((ne, de)) / math.sqrt(de), dt)
    log(f"  likelihood empirical n={ne} N={npts} d={de}")
    out.append(run_density("empirical", emp, xe, cfg["steps"], cfg["rounds"], f"N={npts}"))
    return out

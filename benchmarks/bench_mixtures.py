"""The streamed mixture kernel against naive baselines, in one run.

* Empirical score (isotropic mixture of N points) for a batch of B queries: the streamed kernel
  (chunks, online log-sum-exp, shortlist refinement in float32) against the naive kernel that
  materialises the ``(B, N, d)`` differences (``manifold_scores.testing.naive_isotropic_stats``).
  Reported at a large sigma (no refinement needed) and a small one (refinement on).
* MoLRG score for a batch: the ``O(K r d)`` low-rank kernel against dense ``d x d`` covariances
  through a Cholesky solve per component.

Times are medians after compilation; compile time and XLA's temporary buffer size are reported
separately; ``ratio`` is baseline / streamed (above 1: the kernel is faster).

Usage:
    python benchmarks/bench_mixtures.py --out benchmarks/results/mixtures_cpu.json
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import compile_and_time, environment, write_json  # noqa: E402

import manifold_scores as ms  # noqa: E402
from manifold_scores.testing import naive_isotropic_stats  # noqa: E402


def bench_empirical(n, d, batch, sigma, dtype, repeats):
    rng = np.random.default_rng(0)
    pts = jnp.asarray(rng.normal(size=(n, d)) / math.sqrt(d), dtype)
    xs = jnp.asarray(rng.normal(size=(batch, d)) / math.sqrt(d), dtype)
    emp = ms.Empirical(pts)

    def streamed(e, x):
        return jax.vmap(e.score, (0, None, None))(x, 1.0, sigma)

    def naive(p, lw, x):
        return jax.vmap(lambda q: naive_isotropic_stats(q, p, lw, 1.0, sigma).score)(x)

    fast = compile_and_time(streamed, emp, xs, repeats=repeats)
    base = compile_and_time(naive, emp.points, emp.log_weights, xs, repeats=repeats)
    return {"case": "empirical_score", "n": n, "d": d, "batch": batch, "sigma": sigma,
            "streamed": fast, "naive": base, "ratio": base["median_s"] / fast["median_s"]}


def bench_molrg(d, rank, k, batch, dtype, repeats):
    mix = ms.MoLRG.random(jax.random.key(0), d, rank, k, orthogonal=False, dtype=dtype)
    xs = mix.sample(jax.random.key(1), batch)
    a, s = 0.9, 0.1

    def lowrank(m, x):
        return jax.vmap(m.score, (0, None, None))(x, a, s)

    def dense(covs, lw, x):
        chol = jnp.linalg.cholesky(a**2 * covs + s**2 * jnp.eye(d, dtype=covs.dtype))

        def one(q):
            sol = jax.vmap(lambda c: jax.scipy.linalg.cho_solve((c, True), q))(chol)
            logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
            w = jax.nn.softmax(lw - 0.5 * (jnp.sum(sol * q, -1) + logdet))
            return -(w @ sol)

        return jax.vmap(one)(x)

    fast = compile_and_time(lowrank, mix, xs, repeats=repeats)
    base = compile_and_time(dense, mix.covariance(), mix.log_weights, xs, repeats=repeats)
    return {"case": "molrg_score", "d": d, "rank": rank, "components": k, "batch": batch,
            "streamed": fast, "dense": base, "ratio": base["median_s"] / fast["median_s"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write the JSON result here")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    args = parser.parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.dtype(args.dtype)
    sizes = [(10_000, 16, 128)] if args.quick else [(10_000, 16, 256), (100_000, 16, 256)]
    rows = []
    for n, d, b in sizes:
        for sigma in (1.0, 1e-3):
            rows.append(bench_empirical(n, d, b, sigma, dtype, args.repeats))
    molrg = [(64, 4, 5, 256)] if args.quick else [(64, 4, 5, 1024), (512, 8, 10, 256)]
    for d, r, k, b in molrg:
        rows.append(bench_molrg(d, r, k, b, dtype, args.repeats))
    write_json({"benchmark": "mixtures", "environment": environment(args.dtype), "results": rows},
               args.out)


if __name__ == "__main__":
    main()

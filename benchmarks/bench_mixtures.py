"""Mixture-kernel targets, in one process with alternating rounds (issue numbers B and C).

* Low-rank (MoLRG) score, ``K=10, r=16, d=1024, B=4096``: the kernel against its two-matmul
  floor (:func:`benchmarks.baselines.molrg_floor`) and dense Cholesky solves
  (:func:`benchmarks.baselines.molrg_dense`). Targets: within 2x of the floor, >= 10x faster
  than dense solves.
* Empirical score, ``B=1024, N=1e5, d=256``: the streamed kernel against the hand-written
  streamed two-matmul floor (:func:`benchmarks.baselines.iso_streamed_floor`), at
  ``sigma = 1e-3`` (refinement on) and ``sigma = 1`` (off). Targets: 1.4x and 1.2x.
* XLA temporaries of the streamed isotropic kernel at ``N = 1e5`` and ``1e6`` (``d = 64``):
  they must not grow with ``N``.

Reports medians, quartiles of the per-round ratio (``ratio`` = kernel / baseline time: below 1
the kernel is faster), compile times and temporary bytes.

Usage:
    python benchmarks/bench_mixtures.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import manifold_scores as ms  # noqa: E402
from benchmarks import baselines as bl  # noqa: E402
from benchmarks.common import (  # noqa: E402
    alternate,
    compile_impl,
    environment,
    memory_only,
    rel_err,
    summarize,
    write_json,
)


def _rows(impls, rounds, reference):
    times = alternate(impls, rounds)
    rows = summarize(impls, times, reference, lambda a, o: rel_err(a, np.asarray(o)))
    for row in rows:
        row.pop("times_s", None)
    return rows


def molrg_case(b, k, r, d, sigma, rounds, dense=True):
    dtype = jnp.float32
    mix = ms.MoLRG.random(jax.random.key(0), d, r, k, orthogonal=False, dtype=dtype)
    clean = mix.sample(jax.random.key(1), b)
    alpha = 0.9
    xs = alpha * clean + sigma * jax.random.normal(jax.random.key(2), clean.shape, dtype)
    a, s = jnp.asarray(alpha, dtype), jnp.asarray(sigma, dtype)
    impls = [
        compile_impl("kernel", lambda m, x, a, s: jax.vmap(m.score, (0, None, None))(x, a, s),
                     mix, xs, a, s),
        compile_impl("two-matmul floor", lambda u, lw, x, a, s: bl.molrg_floor(x, u, lw, a, s),
                     mix.bases, mix.log_weights, xs, a, s),
    ]
    if dense:
        impls.append(compile_impl(
            "dense solves", lambda u, lw, x, a, s: bl.molrg_dense(x, u, lw, a, s),
            mix.bases, mix.log_weights, xs, a, s))
    return {"case": "molrg_score", "B": b, "K": k, "r": r, "d": d, "alpha": alpha,
            "sigma": sigma, "rows": _rows(impls, rounds, "kernel")}


def empirical_case(b, n, d, sigma, rounds):
    dtype = jnp.float32
    rng = np.random.default_rng(0)
    pts = jnp.asarray(rng.normal(size=(n, d)) / np.sqrt(d), dtype)
    xs = pts[:b] + jnp.asarray(sigma * rng.normal(size=(b, d)), dtype)
    emp = ms.Empirical(pts)
    s = jnp.asarray(sigma, dtype)
    impls = [
        compile_impl("kernel", lambda e, x, s: jax.vmap(e.score, (0, None, None))(x, 1.0, s),
                     emp, xs, s),
        compile_impl("streamed floor",
                     lambda p, lw, x, s: bl.iso_streamed_floor(x, p, lw, 1.0, s),
                     emp.points, emp.log_weights, xs, s),
    ]
    return {"case": "empirical_score", "B": b, "N": n, "d": d, "sigma": sigma,
            "rows": _rows(impls, rounds, "kernel")}


def memory_case(b, d, sizes):
    out = []
    for n in sizes:
        pts = jax.ShapeDtypeStruct((n, d), jnp.float32)
        lw = jax.ShapeDtypeStruct((n,), jnp.float32)
        xs = jax.ShapeDtypeStruct((b, d), jnp.float32)

        def fn(x, p, lw):
            return jax.vmap(lambda q: ms.mixtures.isotropic(q, p, lw, 1.0, 1e-3).score)(x)

        out.append({"N": n, **memory_only(fn, xs, pts, lw)})
    return {"case": "isotropic_temporaries", "B": b, "d": d, "rows": out}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--only", choices=["molrg", "empirical", "memory"], default=None)
    args = parser.parse_args(argv)
    rows = []
    if args.only in (None, "memory"):
        rows.append(memory_case(64, 64, [100_000, 1_000_000]))
    if args.only in (None, "molrg"):
        shape = (256, 10, 16, 256) if args.quick else (4096, 10, 16, 1024)
        for sigma in (0.1, 1e-3):
            rows.append(molrg_case(*shape, sigma, args.rounds, dense=sigma == 0.1))
    if args.only in (None, "empirical"):
        shape = (128, 10_000, 64) if args.quick else (1024, 100_000, 256)
        for sigma in (1e-3, 1.0):
            rows.append(empirical_case(*shape, sigma, args.rounds))
    write_json({"benchmark": "mixture kernels", "environment": environment("float32"),
                "results": rows}, args.out)


if __name__ == "__main__":
    main()

"""MoLRG score over a grid of (K, r, d) at a batch of B queries, against its baselines.

Implementations, timed in alternating rounds (``speedup`` = baseline time / kernel time):

* ``kernel``: ``jax.vmap(ms.MoLRG(...).score)``, the library's low-rank kernel;
* ``two-matmul floor``: ``P = X U_all`` and one back-projection, softmax in between
  (:func:`benchmarks.baselines.molrg_floor`);
* ``dense solves``: dense ``d x d`` covariances, a Cholesky factor per component and triangular
  solves with the batch as right-hand side; skipped above a flop budget (noted in the table).

Queries are samples of the noised law (``alpha = 0.9``, ``sigma`` per grid point), bases independent
(``orthogonal=False``), so that ``K r`` may exceed ``d``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import manifold_scores as ms
from benchmarks import baselines as bl
from benchmarks.common import alternate, compile_impl, drop_outputs, rel_err, summarize

# (B, [(K, r, d, dense?, sigma), ...], rounds) per size; dense solves cost seconds per call on a
# CPU, so they run where marked and are skipped elsewhere. sigma = 0.1 leaves the float32
# refinement off at these shapes (its estimate eps |z| / |z_perp| is 1.3e-7 at K=10, r=16,
# d=1024); sigma = 1e-3 times it on.
SIZES = {
    "tiny": (16, [(3, 2, 8, True, 0.1)], 3),
    "quick": (512, [(10, 16, 256, True, 0.1), (10, 16, 256, False, 1e-3),
                    (10, 4, 256, False, 0.1)], 3),
    "full": (4096, [(10, 16, 1024, True, 0.1), (10, 16, 1024, False, 1e-3),
                    (1, 16, 1024, False, 0.1), (10, 4, 1024, False, 0.1),
                    (10, 64, 1024, False, 0.1), (10, 16, 256, True, 0.1),
                    (100, 16, 256, False, 0.1)], 3),
    "large": (4096, [(10, 16, 1024, True, 0.1), (10, 16, 1024, False, 1e-3),
                     (1, 16, 1024, False, 0.1), (10, 4, 1024, False, 0.1),
                     (100, 4, 1024, False, 0.1), (10, 64, 1024, True, 0.1),
                     (10, 16, 256, True, 0.1), (100, 16, 256, True, 0.1),
                     (10, 16, 3072, False, 0.1)], 5),
}
DENSE_FLOPS = 4e11  # never run the dense baseline above this many flops per call


def run_case(b, k, r, d, dtype, rounds, alpha=0.9, sigma=0.1, budget_s=None, dense=True):
    mix = ms.MoLRG.random(jax.random.key(0), d, r, k, orthogonal=False, dtype=dtype)
    clean = mix.sample(jax.random.key(1), b)
    xs = alpha * clean + sigma * jax.random.normal(jax.random.key(2), clean.shape, dtype)
    notes = []
    # noise levels are jit arguments (as in a sampler), the same for every implementation
    a, s = jnp.asarray(alpha, dtype), jnp.asarray(sigma, dtype)
    impls = [
        compile_impl("kernel", lambda m, x, a, s: jax.vmap(m.score, (0, None, None))(x, a, s),
                     mix, xs, a, s, note="MoLRG.score (low-rank kernel)"),
        compile_impl("two-matmul floor", lambda u, lw, x, a, s: bl.molrg_floor(x, u, lw, a, s),
                     mix.bases, mix.log_weights, xs, a, s,
                     note="X U_all, softmax, back-projection"),
    ]
    if not dense:
        notes.append("dense solves not timed at this grid point (time budget)")
    elif bl.dense_flops(b, k, d) <= DENSE_FLOPS:
        impls.append(compile_impl(
            "dense solves", lambda u, lw, x, a, s: bl.molrg_dense(x, u, lw, a, s),
            mix.bases, mix.log_weights, xs, a, s, note="Cholesky per component, batch RHS"))
    else:
        notes.append(f"dense solves skipped: {bl.dense_flops(b, k, d):.1e} flops per call")
    times = alternate(impls, rounds, budget_s)
    rows = summarize(impls, times, "kernel", lambda a, o: rel_err(a, np.asarray(o)))
    drop_outputs(impls)
    return {"family": "molrg", "case": "MoLRG score",
            "shape": {"B": b, "K": k, "r": r, "d": d, "alpha": alpha, "sigma": sigma},
            "flops_two_matmuls": bl.molrg_flops(b, k, r, d), "rows": rows, "notes": notes}


def run(size, dtype, torch=None, log=print):
    b, grid, rounds = SIZES[size]
    results = []
    for k, r, d, dense, sigma in grid:
        log(f"  molrg B={b} K={k} r={r} d={d} sigma={sigma:g}")
        results.append(run_case(b, k, r, d, jnp.dtype(dtype), rounds, sigma=sigma, dense=dense))
    return results

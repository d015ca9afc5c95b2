"""Isotropic-mixture (empirical) score for B queries x N points x d, against its baselines.

Implementations, timed in alternating rounds (``speedup`` = baseline time / kernel time):

* ``kernel``: ``jax.vmap(ms.Empirical(points).score)``, the library's streamed kernel (chunks,
  online log-sum-exp, shortlist refinement at small sigma in float32);
* ``streamed floor``: the hand-written streamed two-matmul kernel (the floor on CPU);
* ``bare matmuls``: ``(X Y^T) Y`` one-shot, arithmetic only (not a score), where ``(B, N)`` fits;
* ``naive``: broadcast ``(B, N, d)`` differences (query blocks through ``lax.map`` when the
  whole array exceeds the memory budget; skipped when even one query does not fit);
* ``torch cdist``: PyTorch ``cdist`` + ``softmax`` + matmul, when torch is installed.

Queries are noised data points, ``x = y_j + sigma z``, so the posterior is concentrated at small
sigma (where refinement matters). A memory table compiles (without running, from shapes only) the
kernel and the floor at N = 1e5 and 1e6 and reports XLA's temporary bytes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

import manifold_scores as ms
from benchmarks import baselines as bl
from benchmarks.common import (
    Impl,
    alternate,
    compile_impl,
    drop_outputs,
    memory_only,
    python_impl,
    rel_err,
    summarize,
)

# (B, N, d, sigmas, rounds) per size; memory rows: (B, d, [N...])
SIZES = {
    "tiny": {"cases": [(8, 500, 8, (1.0, 1e-3), 3)], "memory": [(8, 8, (16_384, 163_840))]},
    "quick": {"cases": [(256, 10_000, 64, (1.0, 1e-3), 5)],
              "memory": [(1024, 256, (100_000, 1_000_000))]},
    # the Done-when shape, timed; the largest shapes compiled for memory only
    "full": {"cases": [(1024, 100_000, 256, (1.0, 1e-3), 3)],
             "memory": [(1024, 256, (100_000, 1_000_000)),
                        (4096, 3072, (100_000, 1_000_000))]},
    # corners of the range (B 4096, N 1e6, d 3072), for a quiet machine or a GPU
    "large": {"cases": [(1024, 100_000, 256, (1.0, 1e-3), 3),
                        (4096, 10_000, 256, (1.0,), 3),
                        (64, 100_000, 3072, (1.0,), 3),
                        (128, 1_000_000, 64, (1.0,), 3)],
              "memory": [(1024, 256, (100_000, 1_000_000)),
                         (4096, 3072, (100_000, 1_000_000))]},
}

NAIVE_BYTES = 2 * 2**30   # budget for one block of (b, N, d) differences (x3 for temporaries)
ONESHOT_BYTES = 2 * 2**30  # budget for the (B, N) logits of one-shot baselines
NAIVE_ELEMS = 2**31  # naive runs on a share of the batch above this many (B N d) elements


def _data(b, n, d, sigma, dtype, seed=0):
    rng = np.random.default_rng(seed)
    pts = (rng.standard_normal((n, d), dtype=np.float32) / math.sqrt(d)).astype(dtype)
    idx = rng.integers(0, n, b)
    xs = pts[idx] + sigma * rng.standard_normal((b, d)).astype(dtype) / math.sqrt(d)
    return pts, xs.astype(dtype)


def _kernel(e, xs, alpha, sigma):
    return jax.vmap(e.score, (0, None, None))(xs, alpha, sigma)


def run_case(b, n, d, sigma, dtype, rounds, torch=None, alpha=1.0, budget_s=None, bare=True):
    pts_np, xs_np = _data(b, n, d, sigma, np.dtype(dtype))
    pts, xs = jnp.asarray(pts_np), jnp.asarray(xs_np)
    emp = ms.Empirical(pts)
    lw = emp.log_weights
    notes, impls = [], []
    # noise levels are jit arguments (as in a sampler), the same for every implementation
    a, s = jnp.asarray(alpha, dtype), jnp.asarray(sigma, dtype)
    impls.append(compile_impl(
        "kernel", _kernel, emp, xs, a, s, note=f"Empirical.score, chunk {emp.chunk_size}"))
    impls.append(compile_impl(
        "streamed floor",
        lambda p, l, x, a, s: bl.iso_streamed_floor(x, p, l, a, s, chunk=emp.chunk_size or n),
        pts, lw, xs, a, s, note="two matmuls per chunk, online log-sum-exp"))
    itemsize = np.dtype(dtype).itemsize
    if bare and b * n * itemsize <= ONESHOT_BYTES:
        impls.append(compile_impl("bare matmuls", bl.iso_bare_matmuls, xs, pts,
                                  note="(X Y^T) Y one-shot, no softmax (not a score)"))
    elif bare:
        notes.append(f"bare matmuls skipped: (B, N) = {b * n * itemsize / 2**30:.1f} GiB")
    else:
        notes.append("bare matmuls timed at the first sigma only (they do not depend on it)")
    per_query = 3 * n * d * itemsize
    if per_query <= NAIVE_BYTES:
        block = max(1, min(b, NAIVE_BYTES // per_query))
        # Naive work is linear in the queries (independent blocks): on large cases time it on
        # a share of the batch and scale the time up, so that it fits the run's budget.
        bq = b if b * n * d <= NAIVE_ELEMS else min(b, max(1, NAIVE_ELEMS // (n * d)))
        block = min(block, bq)
        bq = bq // block * block
        note = "broadcast (B, N, d)" if block >= bq else f"broadcast, lax.map over {block} queries"
        if bq < b:
            note += f"; timed on {bq} of {b} queries, time x {b / bq:g}"
        im = compile_impl(
            "naive", lambda p, l, x, a, s: bl.iso_naive(x, p, l, a, s, block=block),
            pts, lw, xs[:bq], a, s, note=note)
        im.scale = b / bq
        impls.append(im)
    else:
        notes.append("naive skipped: one query's (N, d) differences exceed the memory budget")
    if torch is None:
        notes.append("torch cdist skipped: PyTorch is not installed (pip install "
                      "'manifold-scores[bench]')")
    elif 3 * b * n * itemsize <= 2 * ONESHOT_BYTES:
        tx, tp = torch.from_numpy(xs_np), torch.from_numpy(pts_np)
        tl = torch.from_numpy(np.array(lw))
        impls.append(python_impl(
            "torch cdist", lambda: bl.torch_iso_score(torch, tx, tp, tl, alpha, sigma),
            note=f"torch {torch.__version__}, {torch.get_num_threads()} threads"))
    else:
        notes.append("torch cdist skipped: its one-shot (B, N) distances exceed the budget")
    times = alternate(impls, rounds, budget_s)

    def check(ref, out):
        if out is None or getattr(out, "shape", (0,))[1:] != ref.shape[1:]:
            return float("nan")
        return rel_err(ref[: out.shape[0]], np.asarray(out))

    rows = summarize(impls, times, "kernel", check)
    for row in rows:
        if row["impl"] == "bare matmuls":
            row["rel_err"] = None  # not a score
    drop_outputs(impls)
    return {"family": "mixtures", "case": "isotropic score",
            "shape": {"B": b, "N": n, "d": d, "sigma": sigma, "alpha": alpha},
            "flops_two_matmuls": bl.iso_flops(b, n, d), "rows": rows, "notes": notes}


def memory_case(b, d, ns, dtype):
    """XLA temporaries of the kernel and the floor at several N, compiled from shapes only."""
    out = []
    for n in ns:
        pts = jax.ShapeDtypeStruct((n, d), dtype)
        lw = jax.ShapeDtypeStruct((n,), dtype)
        xs = jax.ShapeDtypeStruct((b, d), dtype)
        a = s = jax.ShapeDtypeStruct((), dtype)
        row = {"B": b, "N": n, "d": d}

        def kern(p, l, x, a, s):
            return jax.vmap(lambda q: ms.mixtures.isotropic(q, p, l, a, s).score)(x)

        row["kernel"] = memory_only(kern, pts, lw, xs, a, s)
        row["streamed floor"] = memory_only(
            lambda p, l, x, a, s: bl.iso_streamed_floor(x, p, l, a, s), pts, lw, xs, a, s)
        out.append(row)
    temps = [r["kernel"]["temp_bytes"] for r in out]
    spread = (max(temps) / min(temps) - 1) if temps and min(temps) else None
    return {"family": "mixtures", "case": "isotropic score memory",
            "shape": {"B": b, "d": d, "N": list(ns)}, "rows": out,
            "kernel_temp_spread": spread}


def run(size, dtype, torch=None, log=print):
    cfg = SIZES[size]
    results = []
    for b, n, d, sigmas, rounds in cfg["cases"]:
        for i, sigma in enumerate(sigmas):
            log(f"  isotropic B={b} N={n} d={d} sigma={sigma:g}")
            results.append(run_case(b, n, d, sigma, dtype, rounds, torch, bare=i == 0))
    for b, d, ns in cfg["memory"]:
        log(f"  isotropic memory B={b} d={d} N={ns}")
        results.append(memory_case(b, d, ns, dtype))
    return results


__all__ = ["SIZES", "run", "run_case", "memory_case", "Impl"]

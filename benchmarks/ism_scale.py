"""One ISM step of the low-rank WPO kernel model at scale: 1000 centres, q = 16, d = 3072, batch 64.

``value_and_grad(kernel.ism_loss)`` plus an Adam update, float32, compiled once and timed after
compilation (median of 5 steps). Reports compile time, XLA's temporary bytes for the step and
the process's peak resident memory. The jaxpr test in ``tests/models/test_kernel.py`` checks
that no ``(batch, centres, d)`` or ``(centres, d, d)`` array is formed.

Run: ``python -m benchmarks.ism_scale`` (writes ``benchmarks/results/ism_scale_cpu.json``).
"""

from __future__ import annotations

import pathlib
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import environment, write_json
from benchmarks.training import ism_adam_step
from manifold_scores.models import kernel


def main(n=1000, d=3072, q=16, batch=64, steps=5, chunk_size=250):
    data = np.random.default_rng(0).standard_normal((n + batch, d)).astype(np.float32)
    centres, x = jnp.asarray(data[:n]), jnp.asarray(data[n:])
    params = kernel.init(jax.random.key(0), centres, rank=q, eps=1.0, chunk_size=chunk_size)
    step, state = ism_adam_step(params)
    t0 = time.perf_counter()
    compiled = jax.jit(step).lower(params, state, x).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        params, state, loss = compiled(params, state, x)
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - t0)
    dev = jax.devices()[0]
    out = {
        "case": "ISM step, low-rank WPO kernel model",
        "environment": environment("float32"),
        "shape": {"centres": n, "d": d, "q": q, "batch": batch, "chunk_size": chunk_size},
        "compile_s": round(compile_s, 3), "step_s_median": round(float(np.median(times)), 4),
        "step_s": [round(t, 4) for t in times], "loss": float(loss),
        "xla_temp_mib": None if mem is None else round(mem.temp_size_in_bytes / 2**20, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "params_mib": round(sum(a.nbytes for a in jax.tree.leaves(params)) / 2**20, 1),
    }
    path = pathlib.Path(__file__).parent / "results" / f"ism_scale_{dev.platform}.json"
    write_json(out, str(path))
    return out


if __name__ == "__main__":
    main()

"""Sampler overhead: a 1000-step sampler against 1000 evaluations of the score alone.

The score is the exact MoLRG score (cheap: a few small matmuls per point) or, with
``--score mlp``, a network-sized random MLP, on a batch of ``n`` points. Each sampler is
compiled once (``jax.jit(...).lower(...).compile()``, timed separately), then timed with
``jax.block_until_ready``, interleaved with the baselines so that other load hits both alike;
we report medians and the median of the paired ratios.

Baseline ("score alone"): one ``lax.scan`` over the same 1000 grid times whose body only calls
the batched score and feeds ``-sigma(t) * score`` (the noise prediction, of unit scale) back as
the next input, so XLA can neither hoist nor drop the calls. The ratio sampler / baseline is the
sampler's overhead per score evaluation (Heun is compared with twice the baseline). Stochastic
samplers are also compared with "score and noise": the same scan plus the per-sample Gaussian
draws that any SDE step needs. 1000 dispatches of the jitted score from Python are reported but
not used for a ratio. "compiles once" is checked by calling the public sampler twice: the score
is traced on the first call only and the second call costs about one run.

Usage:
    python benchmarks/bench_sampling.py                       # small default sizes
    python benchmarks/bench_sampling.py --out benchmarks/results/sampling.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import manifold_scores as ms
from manifold_scores import sampling

SAMPLERS = (
    ("sample_ode", "euler", 1, False),
    ("sample_ode", "dpm_solver_2m", 1, False),
    ("sample_ode", "heun", 2, False),
    ("sample_sde", "euler_maruyama", 1, True),
    ("sample_sde", "ddpm", 1, True),
)


def _once(fn, *args):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def _compiled(fn, *args):
    t0 = time.perf_counter()
    exe = jax.jit(fn).lower(*args).compile()
    return exe, time.perf_counter() - t0


def _mlp_score(key, dim, hidden, dtype):
    """A network-sized score: a random two-hidden-layer tanh MLP of ``(x, t)``."""
    k1, k2, k3 = jax.random.split(key, 3)
    w1 = jax.random.normal(k1, (dim + 1, hidden), dtype) / jnp.sqrt(dim + 1.0).astype(dtype)
    w2 = jax.random.normal(k2, (hidden, hidden), dtype) / jnp.sqrt(1.0 * hidden).astype(dtype)
    w3 = jax.random.normal(k3, (hidden, dim), dtype) / jnp.sqrt(1.0 * hidden).astype(dtype)

    def score(x, t):
        h = jnp.tanh(jnp.concatenate([x, jnp.reshape(t, (1,)).astype(x.dtype)]) @ w1)
        return jnp.tanh(h @ w2) @ w3 - x

    return score


def run(n=128, dim=64, rank=4, components=8, steps=1000, repeats=5, dtype="float32",
        methods=SAMPLERS, score_kind="molrg", hidden=256):
    """Time each sampler against the baselines, interleaved; returns a JSON-ready dict."""
    dt = jnp.dtype(dtype)
    proc = ms.VP()
    traces = []
    if score_kind == "molrg":
        mix = ms.MoLRG.random(jax.random.key(0), dim, rank, components, dtype=dt)

        def exact(x, t):
            return mix.score(x, proc.alpha(t), proc.sigma(t))

        base_score = exact
    elif score_kind == "mlp":
        base_score = _mlp_score(jax.random.key(0), dim, hidden, dt)
    else:
        raise ValueError(f"score_kind must be 'molrg' or 'mlp', got {score_kind!r}")

    def score(x, t):
        traces.append(1)  # Python side effect: runs only when JAX traces the score
        return base_score(x, t)

    ts = sampling.time_grid(proc, steps, "edm", dtype=dt)
    x0 = sampling.prior_sample(jax.random.key(2), proc, (n, dim), dtype=dt)
    keys = jax.random.split(jax.random.key(3), n)
    batched = jax.vmap(score, in_axes=(0, None))

    def score_alone(x, ts):
        def body(x, t):
            return -proc.sigma(t) * batched(x, t), None

        return jax.lax.scan(body, x, ts[:-1])[0]

    def score_and_noise(x, ts):
        # The score plus the per-sample Gaussian draws that any SDE step needs.
        def body(x, it):
            i, t = it
            z = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, i), x.shape[1:],
                                                     x.dtype))(keys)
            return -proc.sigma(t) * batched(x, t) + 1e-3 * z, None

        return jax.lax.scan(body, x, (jnp.arange(steps), ts[:-1]))[0]

    base_exe, base_compile = _compiled(score_alone, x0, ts)
    noise_exe, _ = _compiled(score_and_noise, x0, ts)
    _once(base_exe, x0, ts)
    _once(noise_exe, x0, ts)

    score_jit = jax.jit(batched)
    jax.block_until_ready(score_jit(x0, ts[0]))

    def dispatched(x):
        for t in ts[:-1]:
            x = -proc.sigma(t) * score_jit(x, t)
        return x

    dispatch_s = _once(dispatched, x0)

    rows, base_times = [], []
    for fn_name, method, evals, stochastic in methods:
        fn = getattr(sampling, fn_name)

        def sampler(key, fn=fn, method=method):
            return fn(key, score, proc, (n, dim), steps=steps, method=method, dtype=dt)

        # Compiles once: a first and a second call of the public function; the second must
        # neither trace the score again nor pay the compile time.
        traces.clear()
        first = _once(sampler, jax.random.key(5))
        traces_first = len(traces)
        second = _once(sampler, jax.random.key(6))
        key = jax.random.key(1)
        exe, compile_s = _compiled(sampler, key)
        _once(exe, key)
        # Interleave sampler and baselines so that load from other processes hits both alike.
        t_s, t_b, t_n = [], [], []
        for _ in range(repeats):
            t_b.append(_once(base_exe, x0, ts))
            t_s.append(_once(exe, key))
            if stochastic:
                t_n.append(_once(noise_exe, x0, ts))
        base_times += t_b
        row = {
            "sampler": f"{fn_name}:{method}",
            "score_evals_per_step": evals,
            "compile_s": compile_s,
            "median_s": statistics.median(t_s),
            "times_s": t_s,
            "baseline_times_s": t_b,
            "ratio_to_score_alone": statistics.median(
                [s / (evals * b) for s, b in zip(t_s, t_b, strict=True)]),
            "public_call_first_s": first,
            "public_call_second_s": second,
            "score_traces_first_call": traces_first,
            "score_traces_second_call": len(traces) - traces_first,
        }
        if stochastic:
            row["ratio_to_score_and_noise"] = statistics.median(
                [s / b for s, b in zip(t_s, t_n, strict=True)])
            row["score_and_noise_times_s"] = t_n
        rows.append(row)

    return {
        "benchmark": "sampling_overhead",
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
        "jax_version": jax.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "dtype": dtype,
        "score": ("exact MoLRG score" if score_kind == "molrg" else
                  f"random tanh MLP, 2 hidden layers of {hidden}") + ", VP process, EDM grid",
        "sizes": {"n": n, "dim": dim, "rank": rank, "components": components, "steps": steps,
                  "repeats": repeats},
        "baseline": {
            "what": f"one lax.scan of {steps} batched score calls, x <- -sigma(t) score(x, t)",
            "compile_s": base_compile, "median_s": statistics.median(base_times)},
        "python_dispatch_score_calls_s": dispatch_s,
        "samplers": rows,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--score", default="molrg", choices=["molrg", "mlp"],
                        help="the exact MoLRG score (cheap) or a network-sized MLP")
    parser.add_argument("--hidden", type=int, default=256, help="MLP width")
    parser.add_argument("--out", default=None, help="write the JSON result to this file")
    args = parser.parse_args(argv)
    with jax.enable_x64(args.dtype == "float64"):
        result = run(args.n, args.dim, args.rank, args.components, args.steps, args.repeats,
                     args.dtype, score_kind=args.score, hidden=args.hidden)
    base = result["baseline"]
    print(f"device {result['device']}, jax {result['jax_version']}, {args.dtype}, "
          f"n={args.n}, d={args.dim}, steps={args.steps}; score: {result['score']}")
    print(f"score alone (scan): {base['median_s'] * 1e3:8.1f} ms   "
          f"(python dispatch: {result['python_dispatch_score_calls_s'] * 1e3:.1f} ms)")
    for row in result["samplers"]:
        extra = (f" (to score+noise {row['ratio_to_score_and_noise']:.3f})"
                 if "ratio_to_score_and_noise" in row else "")
        print(f"{row['sampler']:28s} {row['median_s'] * 1e3:8.1f} ms  ratio per evaluation "
              f"{row['ratio_to_score_alone']:.3f}{extra}  compile {row['compile_s']:.2f} s  "
              f"call 1/2 {row['public_call_first_s']:.2f}/{row['public_call_second_s']:.2f} s  "
              f"score traces {row['score_traces_first_call']}/{row['score_traces_second_call']}")
    if args.out:
        import pathlib

        path = pathlib.Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()

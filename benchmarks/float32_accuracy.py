"""Float32 accuracy of every density's score, against a float64 evaluation at the same points.

For each density and each ``sigma`` in ``1e-1 .. 1e-4`` (``alpha = 1``), points are drawn near
the data as ``x = X + sigma Z`` and rounded to float32; the score is evaluated in float32 and in
float64 *at those same float32-representable points*, with the same float32-representable
parameters, so the table measures float32 arithmetic only (no input rounding). An entry is the
worst norm-wise relative error ``max_i |s32(x_i) - s64(x_i)| / |s64(x_i)|`` over the points.
Quadrature densities refuse a ``sigma`` below their grid's resolution (``min_sigma``); those
entries read ``n/a (grid)``: a finer grid (more nodes) would make them available.

Why float32 degrades as ``sigma`` shrinks. Near the manifold the score is
``-(x - proj x) / sigma^2 + O(1)`` (X. Li, Z. Shen, Y.-P. Hsieh and N. He, "When Scores Learn
Geometry: Rate Separations under the Manifold Hypothesis", arXiv 2509.24912): its size is
``|x_perp| / sigma^2``, with ``|x_perp| ~ sigma sqrt(d - n)`` the distance to the manifold. Every
formula for the score must form that small distance out of coordinates of size ``|x|``, and
float32 arithmetic on them rounds at ``eps |x|`` (``eps = 2^-24 ~ 6e-8``), so the score's
relative error is at least about

    eps |x| / |x_perp|  ~  eps |x| / (sigma sqrt(d - n))

(the conditioning of the problem, not of an algorithm): it grows like ``1/sigma`` and reaches
one at ``sigma ~ eps |x|``. Formulas that square first lose more: the expansion
``|x - y|^2 = |x|^2 - 2 x.y + |y|^2`` (the matmul form of mixture kernels), or ``|u|^2`` of a
point far from its frame's origin, carry an absolute error ``eps |x|^2`` against a squared
distance of size ``sigma^2``: a float32 point cannot resolve its own squared distance to the
manifold below ``sigma ~ sqrt(eps) |x|`` (``2.4e-4`` for unit data), and mixture weights go wrong
by ``eps |x|^2 / sigma^2`` nats unless the components that carry the posterior mass get their
distances recomputed from exact differences (the kernels' refinement). The worst entry over
the points comes from the draws that land closest to the manifold (``|x_perp| << sigma``, most of
all in codimension one: Circle, VonMises); the median (in brackets in the table) shows the
typical error. The float64 reference carries the same law with ``eps = 1.1e-16``.

Run ``python -m benchmarks.float32_accuracy`` (CPU: about a minute). Writes
``benchmarks/results/float32_accuracy.json`` (device, versions, per density per sigma) and
``benchmarks/results/float32_accuracy.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import manifold_scores as ms
from manifold_scores import mixtures

SIGMAS = (1e-1, 1e-2, 1e-3, 1e-4)
N_POINTS = 64
NA_GRID = "n/a (grid)"
RESULTS = os.path.join(os.path.dirname(__file__), "results")


def _f32(a) -> np.ndarray:
    """Round to float32, keep as float64: the same numbers in both precisions."""
    return np.asarray(a, np.float32).astype(np.float64)


def _orthonormal(rng, d, k) -> np.ndarray:
    return _f32(np.linalg.qr(rng.standard_normal((d, k)))[0])


def _molrg_bases(rng, d=64, r=4, k=3) -> np.ndarray:
    q = np.linalg.qr(rng.standard_normal((d, k * r)))[0]
    return _f32(q.reshape(d, k, r).transpose(1, 0, 2))


def _wavy(th):
    t = th[..., 0]
    rho = 1.0 + 0.2 * jnp.cos(3 * t)
    return jnp.stack([rho * jnp.cos(t), rho * jnp.sin(t), 0.3 * jnp.sin(2 * t)], -1)


def _wavy_log_density(th):
    return jnp.cos(th[0])


def cases() -> dict[str, Callable[[], ms.Density]]:
    """name -> builder; a builder makes the density in the current precision from fixed
    float32-representable parameters (call it inside ``jax.enable_x64(...)``)."""
    rng = np.random.default_rng(0)
    bases = _molrg_bases(rng)
    k, d, r = bases.shape
    means = _f32(0.5 * rng.standard_normal((k, d)))
    scales = _f32(rng.uniform(0.5, 2.0, (k, r)))
    weights = _f32(np.array([0.5, 0.3, 0.2]))
    emp_points = _f32(rng.standard_normal((1000, 16)))
    sphere_frame = _orthonormal(rng, 10, 3)
    a = jnp.asarray  # float32 unless x64 is on
    return {
        "MoLRG (K=3, r=4, d=64)": lambda: ms.MoLRG(a(bases), a(weights)),
        "MoLRG general (means, scales, floor 0.05)": lambda: ms.MoLRG(
            a(bases), a(weights), means=a(means), scales=a(scales), noise_floor=0.05),
        "Empirical (N=1000, d=16)": lambda: ms.Empirical(a(emp_points)),
        "Sphere S^2 in R^10": lambda: ms.Sphere(dim=10, intrinsic_dim=2,
                                                frame=a(sphere_frame)),
        "Circle": lambda: ms.Circle(dim=2),
        "VonMises (kappa=4)": lambda: ms.VonMises(4.0, mu=0.5),
        "FlatTorus (1, 0.5) in R^4": lambda: ms.FlatTorus(radii=(1.0, 0.5), dim=4),
        "RingTorus (1, 0.4), 512 nodes": lambda: ms.RingTorus(),
        "Ellipse (2, 1), 4096 nodes": lambda: ms.Ellipse(axes=(2.0, 1.0)),
        "SwissRoll (scale 0.1), 8192 nodes": lambda: ms.SwissRoll(scale=0.1),
        "Parametric (wavy curve), 4096 nodes": lambda: ms.Parametric(
            _wavy, [[0.0, 2 * math.pi]], log_density=_wavy_log_density, nodes=4096,
            periodic=True),
    }


@jax.jit
def _scores(density, xs, sigma):
    if isinstance(density, ms.MoLRG) and xs.dtype == jnp.float64:
        # The float32-rounded bases are orthonormal only to 1e-7: the float64 default, the
        # expansion |z|^2 - |U^T z|^2, would carry 1e-7 |U^T z|^2 / sigma^2 of that into the
        # reference. refine=2 forms z - U U^T z directly, the law a dense covariance gives.
        def score(x):
            return mixtures.lowrank(x, density.bases, density.log_weights, 1.0, sigma,
                                    means=density.means, scales=density.scales,
                                    noise_floor=density.noise_floor, refine=2).score
        return jax.vmap(score)(xs)
    return jax.vmap(density.score, (0, None, None))(xs, 1.0, sigma)


def _refuses(density, sigma) -> bool:
    """True where a quadrature density refuses ``sigma`` at ``alpha = 1``: its eager check
    raises exactly when ``sigma < min_sigma(alpha)`` (``tests/densities`` test the refusal)."""
    min_sigma = getattr(density, "min_sigma", None)
    return min_sigma is not None and sigma < float(min_sigma(1.0))


def measure(build: Callable[[], ms.Density], sigmas=SIGMAS, n: int = N_POINTS,
            seed: int = 0, with_median: bool = False):
    """Worst norm-wise relative float32 error of the score per sigma (or ``NA_GRID``).

    With ``with_median`` also returns the median over the points (the typical error; the worst
    comes from the draws that land closest to the manifold, where ``|x_perp| << sigma``).
    """
    with jax.enable_x64(True):
        d64 = build()
        clean = np.asarray(d64.sample(jax.random.key(seed), n), np.float64)
    d32 = build()
    rng = np.random.default_rng(seed + 1)
    out: dict[str, float | str] = {}
    medians: dict[str, float | str] = {}
    for sigma in sigmas:
        xs = _f32(clean + sigma * rng.standard_normal(clean.shape))
        x32 = jnp.asarray(xs, jnp.float32)
        if _refuses(d32, np.float32(sigma)):
            out[f"{sigma:.0e}"] = medians[f"{sigma:.0e}"] = NA_GRID
            continue
        s32 = np.asarray(_scores(d32, x32, np.float32(sigma)), np.float64)
        with jax.enable_x64(True):
            s64 = np.asarray(_scores(d64, jnp.asarray(xs), sigma))
        err = np.linalg.norm(s32 - s64, axis=1) / np.linalg.norm(s64, axis=1)
        finite = np.all(np.isfinite(s32))
        out[f"{sigma:.0e}"] = float(np.max(err)) if finite else math.nan
        medians[f"{sigma:.0e}"] = float(np.median(err)) if finite else math.nan
    return (out, medians) if with_median else out


def environment() -> dict[str, object]:
    dev = jax.devices()[0]
    import jaxlib

    return {
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def markdown(result: dict) -> str:
    cols = [f"{s:.0e}" for s in result["sigmas"]]
    lines = [
        f"Float32 score accuracy: worst |s32 - s64| / |s64| over {result['n_points']} points "
        f"x = X + sigma Z (alpha = 1), float32-representable points and parameters; "
        f"{result['environment']['device']}, jax {result['environment']['jax']}. "
        f"Each cell: worst (median). {NA_GRID}: the quadrature grid is too coarse for that "
        f"sigma (refused; more nodes would allow it).",
        "",
        "| density | " + " | ".join(f"sigma = {c}" for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for name, row in result["results"].items():
        med = result["medians"][name]
        cells = [row[c] if isinstance(row[c], str) else f"{row[c]:.1e} ({med[c]:.0e})"
                 for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(n: int = N_POINTS) -> dict:
    both = {name: measure(build, n=n, with_median=True) for name, build in cases().items()}
    return {"benchmark": "float32_accuracy", "environment": environment(),
            "sigmas": list(SIGMAS), "alpha": 1.0, "n_points": n,
            "metric": "max_i |s32 - s64| / |s64| (norm-wise, per point)",
            "results": {name: worst for name, (worst, _) in both.items()},
            "medians": {name: med for name, (_, med) in both.items()}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=N_POINTS)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    result = run(args.points)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "float32_accuracy.json"), "w") as fh:
        json.dump(result, fh, indent=2)
        fh.write("\n")
    table = markdown(result)
    with open(os.path.join(args.out, "float32_accuracy.md"), "w") as fh:
        fh.write(table)
    print(table)


if __name__ == "__main__":
    main()

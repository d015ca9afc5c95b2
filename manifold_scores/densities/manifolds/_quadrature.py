"""Quadrature shared by the manifolds integrated numerically (private).

Rules (periodic trapezoid, composite Gauss-Legendre panels), the resolution check that refuses
a grid too coarse for ``sigma``, and nearest points on a curve by a grid search plus
safeguarded Newton steps.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from manifold_scores import _checks

__all__ = [
    "ON_COARSE", "axis_rule", "check_on_coarse", "check_spacing", "curve_tangent",
    "gauss_legendre_panels", "panel_rule", "project_curve",
]

ON_COARSE = ("raise", "warn", "ignore")


def check_on_coarse(on_coarse: str) -> None:
    if on_coarse not in ON_COARSE:
        raise ValueError(f"on_coarse must be one of {ON_COARSE}, got {on_coarse!r}")


def check_spacing(owner: str, spacing, alpha, sigma, nodes: int, max_ratio: float,
                  on_coarse: str) -> None:
    """Refuse (or warn about) a quadrature grid too coarse for ``sigma``.

    The noised law is a Gaussian of width ``sigma`` smeared over the manifold; its nodes sit at
    ``alpha y_i``, a distance ``alpha h`` apart. Periodic trapezoid and Gauss-Legendre rules on
    such integrands lose about ``exp(-2 pi^2 (sigma / (alpha h))^2)`` relative accuracy, which is
    ~1e-8 at ``alpha h = sigma``. Only checked when the values are concrete (not under ``jit``).
    """
    if on_coarse == "ignore" or not all(_checks.is_concrete(v) for v in (spacing, alpha, sigma)):
        return
    h = float(np.max(np.asarray(spacing))) * float(alpha)
    s = float(sigma)
    if h <= max_ratio * s:
        return
    ratio = h / s
    if isinstance(nodes, tuple):
        need = tuple(int(math.ceil(n * ratio / max_ratio)) for n in nodes)
    else:
        need = int(math.ceil(nodes * ratio / max_ratio))
    msg = (f"{owner}: the quadrature is too coarse for sigma={s:.3g}: nodes are "
           f"alpha * spacing = {h:.3g} apart, {ratio:.3g} x sigma (at most {max_ratio:g} x "
           f"sigma keeps the noised law exact to ~1e-8). Increase nodes to at least {need}, or "
           f"use sigma >= {h / max_ratio:.3g}; on_coarse='warn' or 'ignore' accepts the error.")
    if on_coarse == "raise":
        raise ValueError(msg)
    warnings.warn(msg, UserWarning, stacklevel=4)


def gauss_legendre_panels(lo: float, hi: float, nodes: int, order: int = 16):
    """Composite Gauss-Legendre: ``ceil(nodes / order)`` panels of ``order`` nodes (numpy)."""
    panels = max(1, -(-nodes // order))
    g, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(lo, hi, panels + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    t = (mid[:, None] + half[:, None] * g[None]).reshape(-1)
    wt = (half[:, None] * w[None]).reshape(-1)
    return t, wt


@functools.cache
def panel_rule(nodes: int):
    """Composite 16-point Gauss-Legendre on ``[0, 1]``: nodes, weights, largest node gap."""
    t, w = gauss_legendre_panels(0.0, 1.0, nodes)
    return t, w, float(np.max(np.diff(t)))


def axis_rule(lo: float, hi: float, n: int, periodic: bool):
    """One axis of a product rule: periodic trapezoid, else composite Gauss-Legendre."""
    if periodic:  # the trapezoid rule, spectrally accurate for periodic integrands
        return lo + (hi - lo) * np.arange(n) / n, np.full(n, (hi - lo) / n)
    return gauss_legendre_panels(lo, hi, n)


def project_curve(curve, y, lo, hi, periodic: bool, grid: int, newton: int = 24):
    """Parameter of the nearest point of ``curve(t)`` (``t in [lo, hi]``) to ``y``.

    A grid search picks the basin of the global minimum; Newton steps on
    ``f(t) = (curve(t) - y) . curve'(t)``, each clipped to one grid cell (and to the domain),
    then converge quadratically inside it.
    """
    if periodic:
        ts = lo + (hi - lo) * jnp.arange(grid, dtype=y.dtype) / grid
    else:
        ts = jnp.linspace(lo, hi, grid, dtype=y.dtype)
    pts = jax.vmap(curve)(ts)
    t = ts[jnp.argmin(jnp.sum((pts - y) ** 2, -1))]
    cell = (hi - lo) / grid

    def step(_, t):
        g, dg = jax.jvp(curve, (t,), (jnp.ones_like(t),))
        _, ddg = jax.jvp(lambda s: jax.jvp(curve, (s,), (jnp.ones_like(s),))[1],
                         (t,), (jnp.ones_like(t),))
        f = jnp.dot(g - y, dg)
        fp = jnp.dot(dg, dg) + jnp.dot(g - y, ddg)
        delta = jnp.where(fp > 0, -f / jnp.where(fp > 0, fp, 1.0), -jnp.sign(f) * cell)
        t = t + jnp.clip(delta, -cell, cell)
        return t if periodic else jnp.clip(t, lo, hi)

    return lax.fori_loop(0, newton, step, t)


def curve_tangent(curve, t):
    """Unit tangent ``curve'(t) / |curve'(t)|``."""
    _, dg = jax.jvp(curve, (t,), (jnp.ones_like(t),))
    return dg / jnp.linalg.norm(dg)


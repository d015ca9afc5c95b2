"""E1: geometry lives at order sigma^-2, the density at order 1.

Claim (Li, Shen, Hsieh, He, "When Scores Learn Geometry: Rate Separations under the Manifold
Hypothesis", arXiv 2509.24912, section 3): near a manifold ``M``,
``log p_sigma(x) = -dist(x, M)^2 / (2 sigma^2) + log p_data(proj x) + ...``, so
``|sigma^2 s(x) + x - proj x| = O(sigma^2)``: a log-log slope of 2 in sigma, and the score's
normal part grows like ``sigma^-2`` while its tangential part stays ``O(1)``.

What we do: exact scores (closed form or quadrature, float64) at fixed points ``x = p + delta n``
off the manifold (``p`` on ``M``, ``n`` a random unit normal, ``delta = 0.05``), on a circle,
``S^2`` in ``R^10``, a flat torus, an ellipse (arc-length law, quadrature) and a MoLRG (union of
subspaces; ``proj`` onto the nearest one), for sigma from 1e-3 to 2e-2; the slope is a least-squares
fit in log-log. The normal/tangential split uses a von Mises law (kappa = 2) on a circle in
``R^3`` (a uniform law has no tangential score). Differs from the paper: the paper proves the
expansion; here it is measured on exact scores, with no learning.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import manifold_scores as ms
from manifold_scores.experiments._registry import register
from manifold_scores.experiments._table import Row, Table, check_size

DELTA = 0.05


def _slope(sigmas, values) -> float:
    return float(np.polyfit(np.log(sigmas), np.log(values), 1)[0])


def _manifolds(key):
    ks = jax.random.split(key, 5)
    return {
        "circle": ms.Circle(dim=2),
        "sphere S^2 in R^10": ms.Sphere(dim=10, intrinsic_dim=2, key=ks[0]),
        "flat torus in R^6": ms.FlatTorus(radii=(1.0, 0.5), dim=6, key=ks[1]),
        "ellipse (2, 1) in R^3": ms.Ellipse(axes=(2.0, 1.0), dim=3, nodes=16384, key=ks[2]),
        "MoLRG d=20 r=2 K=3": ms.MoLRG.random(ks[3], dim=20, rank=2, num_components=3),
    }


@functools.partial(jax.jit, static_argnums=2)
def _offset_points(m, key, n):
    """Points ``p + delta n`` and their projections ``p``."""
    k1, k2 = jax.random.split(key)
    z = jax.random.normal(k2, (n, m.dim), jnp.float64)
    p = m.sample(k1, n)
    if isinstance(m, ms.MoLRG):
        u = m.bases  # orthogonal subspaces: remove every subspace component from the offset
        z = z - jnp.einsum("kdr,nkr->nd", u, jnp.einsum("kdr,nd->nkr", u, z))
    else:
        z = jnp.einsum("nij,nj->ni", jax.vmap(m.normal_projector)(p), z)
    nrm = z / jnp.linalg.norm(z, axis=1, keepdims=True)
    return p + DELTA * nrm, p


@jax.jit
def _residuals(m, xs, proj, sigmas):
    """Mean ``|sigma^2 s + x - proj x|`` at each sigma (the density is a jit argument)."""

    def at(sigma):
        s = jax.vmap(m.score, (0, None, None))(xs, 1.0, sigma)
        return jnp.mean(jnp.linalg.norm(sigma**2 * s + xs - proj, axis=1))

    return jax.lax.map(at, sigmas)


@jax.jit
def _parts(m, xs, pn, sigmas):
    """Mean norms of the normal and tangential parts of the score at each sigma."""

    def at(sigma):
        sc = jax.vmap(m.score, (0, None, None))(xs, 1.0, sigma)
        sn = jnp.einsum("nij,nj->ni", pn, sc)
        return (jnp.mean(jnp.linalg.norm(sn, axis=1)),
                jnp.mean(jnp.linalg.norm(sc - sn, axis=1)))

    return jax.lax.map(at, sigmas)


def run(size: str = "quick", *, seed: int = 0) -> Table:
    """Slopes of ``|sigma^2 s + x - proj x|`` and of the normal / tangential score parts."""
    check_size(size)
    n, num = (16, 7) if size == "quick" else (128, 13)
    sigmas = np.geomspace(1e-3, 2e-2, num)
    rows, curves = [], {}
    with jax.enable_x64(True):
        key = jax.random.key(seed)
        for i, (name, m) in enumerate(_manifolds(jax.random.fold_in(key, 1)).items()):
            xs, proj = _offset_points(m, jax.random.fold_in(key, 10 + i), n)
            res = np.asarray(_residuals(m, xs, proj, jnp.asarray(sigmas)))
            slope = _slope(sigmas, res)
            curves[name] = res
            rows.append(Row(f"slope of |sigma^2 s + x - proj x|, {name}", slope, "2 +- 0.2",
                            abs(slope - 2.0) <= 0.2))
        vm = ms.VonMises(kappa=2.0, mu=0.3, dim=3, key=jax.random.fold_in(key, 2))
        xs, proj = _offset_points(vm, jax.random.fold_in(key, 3), n)
        pn = jax.vmap(vm.normal_projector)(proj)
        normal, tangent = (np.asarray(v) for v in _parts(vm, xs, pn, jnp.asarray(sigmas)))
        sn_slope, st_slope = _slope(sigmas, normal), _slope(sigmas, tangent)
        rows.append(Row("slope of |normal part of s|, von Mises on a circle", sn_slope,
                        "-2 +- 0.2", abs(sn_slope + 2.0) <= 0.2))
        rows.append(Row("slope of |tangential part of s|, von Mises on a circle", st_slope,
                        "0 +- 0.2 (O(1))", abs(st_slope) <= 0.2))
    data = {"sigmas": sigmas, "residuals": curves, "normal": normal, "tangent": tangent,
            "delta": DELTA}
    return Table("E1", size, tuple(rows), data)


def plot(table: Table):
    """Left: residual vs sigma per manifold, with a sigma^2 guide; right: score parts."""
    import matplotlib.pyplot as plt

    d = table.data
    sig = np.asarray(d["sigmas"])
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 4))
    for name, res in d["residuals"].items():
        a0.loglog(sig, res, "o-", ms=3, label=name)
    ref = np.asarray(list(d["residuals"].values())[0])
    a0.loglog(sig, ref[-1] * (sig / sig[-1]) ** 2, "k--", lw=1, label="slope 2")
    a0.set(xlabel="sigma", ylabel="mean |sigma^2 s + x - proj x|",
           title=f"E1: geometry at sigma^-2 (delta = {d['delta']})")
    a0.legend(fontsize=7)
    a1.loglog(sig, d["normal"], "o-", label="|normal part|")
    a1.loglog(sig, d["tangent"], "s-", label="|tangential part|")
    a1.loglog(sig, np.asarray(d["normal"])[0] * (sig / sig[0]) ** -2, "k--", lw=1,
              label="slope -2")
    a1.set(xlabel="sigma", ylabel="mean norm", title="von Mises on a circle: score parts")
    a1.legend(fontsize=7)
    fig.tight_layout()
    return fig


register("E1", "Geometry at sigma^-2, density at O(1)", "arXiv 2509.24912, section 3", run, plot)

"""Tori (FlatTorus, RingTorus): exact noised laws against independent quadratures, geometry.

References are numpy only and share no code with the implementation: midpoint rules over both
angles (400 x 400 and 512 x 256 nodes; the implementation integrates the ring angle in closed
form and the tube angle on its own periodic grid), and zooming grid searches for nearest points
(:mod:`tests.helpers`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from tests.helpers import (
    assert_geometry_and_rate_separation,
    assert_noised_law_exact,
    assert_transformations_compose,
    hadamard_frame,
    histogram_tv,
    slow_except,
)

TWO_PI = 2 * math.pi


def _catalogue():
    """name -> (law, reference nodes, log-weights, clean points, (chart, box, periodic))."""
    rng = np.random.default_rng(5)
    out = {}

    frame, centre = hadamard_frame(13, 5, 4), np.array([0.0, 0.1, 0.2, 0.0, -0.1])
    tor = ms.FlatTorus(radii=(1.0, 0.5), dim=5, frame=frame, centre=centre)

    def flat(p):
        a, b = p[..., 0], p[..., 1]
        return centre + np.stack([np.cos(a), np.sin(a), 0.5 * np.cos(b), 0.5 * np.sin(b)],
                                 -1) @ frame.T

    a = (np.arange(400) + 0.5) * TWO_PI / 400
    grid = np.stack([v.reshape(-1) for v in np.meshgrid(a, a, indexing="ij")], -1)
    out["flat_torus"] = (tor, flat(grid), np.zeros(len(grid)),
                         flat(rng.uniform(0, 6.3, (4, 2))),
                         (flat, [[0, TWO_PI], [0, TWO_PI]], (True, True)))

    frame_r, centre_r = hadamard_frame(14, 4, 3), np.array([0.1, 0.0, -0.2, 0.3])
    ring = ms.RingTorus(1.0, 0.4, dim=4, frame=frame_r, centre=centre_r)

    def ring_chart(p):
        phi, psi = p[..., 0], p[..., 1]
        rho = 1.0 + 0.4 * np.cos(psi)
        return centre_r + np.stack([rho * np.cos(phi), rho * np.sin(phi), 0.4 * np.sin(psi)],
                                   -1) @ frame_r.T

    phi = (np.arange(512) + 0.5) * TWO_PI / 512
    psi = (np.arange(256) + 0.5) * TWO_PI / 256
    grid = np.stack([v.reshape(-1) for v in np.meshgrid(phi, psi, indexing="ij")], -1)
    out["ring_torus"] = (ring, ring_chart(grid), np.log(1.0 + 0.4 * np.cos(grid[:, 1])),
                         ring_chart(rng.uniform(0, 6.3, (4, 2))),
                         (ring_chart, [[0, TWO_PI], [0, TWO_PI]], (True, True)))
    return out


NAMES = ["flat_torus", "ring_torus"]


@pytest.fixture(scope="module")
def catalogue():
    with jax.enable_x64(True):
        yield _catalogue()


@pytest.mark.parametrize("name", NAMES)
def test_noised_law_exact(x64, catalogue, name):
    """log p against brute-force quadrature; score = grad log p; denoise through Tweedie."""
    law, nodes, log_w, clean, _ = catalogue[name]
    assert_noised_law_exact(law, nodes, log_w, clean, exact=name == "flat_torus")


@pytest.mark.parametrize("name", slow_except(NAMES, ["flat_torus"]))
def test_geometry_and_rate_separation(x64, catalogue, name):
    """project/distance against a brute-force search; |sigma^2 s + x - proj x| ~ sigma^2."""
    law, _, _, clean, (chart, box, periodic) = catalogue[name]
    assert_geometry_and_rate_separation(law, clean, chart, box, periodic)


def test_transformations_compose(x64):
    """Densities are PyTrees: jit with the density as an argument, vmap, jacfwd, unflatten."""
    ring = ms.RingTorus(dim=4, key=jax.random.key(2), nodes=64)
    assert_transformations_compose(ring, jnp.array([0.3, -1.1, 0.4, 0.2]))


def test_dtype_follows_input(dtype):
    x = jnp.array([0.3, -1.1, 0.4], dtype)

    @jax.jit
    def run(m, x):
        return m.stats(x, 1.0, 0.3), m.project(x)

    for m in (ms.FlatTorus(radii=(1.0,), dim=3), ms.RingTorus(nodes=128)):
        st, proj = run(m, x)
        for v in (*st, proj):
            if v is None:  # MixtureStats.divergence: derived from cov_trace on demand
                continue
            assert v.dtype == jnp.dtype(dtype)
            assert np.all(np.isfinite(np.asarray(v)))


def test_ring_torus_sampler_follows_the_area_law():
    """Histograms of the angles of exact draws: tube angle ~ 1 + 0.4 cos psi, ring angle flat."""
    ring = ms.RingTorus(nodes=64)
    ang = jax.jit(lambda m, k: jax.vmap(m.angles)(m.sample(k, 20_000)))(ring, jax.random.key(2))
    assert histogram_tv(ang[:, 1], -math.pi, math.pi, lambda p: 1.0 + 0.4 * np.cos(p)) < 0.03
    assert histogram_tv(ang[:, 0], -math.pi, math.pi, np.ones_like) < 0.03


def test_coarse_grid_is_refused():
    with pytest.raises(ValueError, match="Increase nodes to at least"):
        ms.RingTorus(nodes=16).score(jnp.ones(3), 1.0, 0.005)


@pytest.mark.parametrize("make, match", [
    (lambda: ms.FlatTorus(radii=(1.0, 1.0), dim=3), "dim must be at least 4"),
    (lambda: ms.RingTorus(major_radius=1.0, minor_radius=2.0), "minor_radius"),
    (lambda: ms.RingTorus(measure="volume"), "measure"),
])
def test_bad_arguments_raise_value_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()

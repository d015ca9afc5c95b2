"""Quadrature curves and surfaces (Ellipse, SwissRoll): noised laws against independent
quadratures, geometry, samplers.

References are numpy only and share no code with the implementation: a 2e5-node midpoint rule
in the ellipse's angle (the implementation uses its own periodic grid), composite 10-point
Gauss-Legendre in ``(t, h)`` for the swiss roll (a 12000 x 2000 product rule, summed as a
product of two sums; the implementation integrates ``h`` in closed form by normal CDFs and ``t``
by 16-point panels), and zooming grid searches for
nearest points.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp as _lse

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
T0, T1 = 1.5 * math.pi, 4.5 * math.pi


def _gauss_legendre_10(lo, hi, panels):
    """Composite 10-point Gauss-Legendre (the implementation uses 16-point panels in ``t`` and
    no rule at all in ``h``)."""
    g, w = np.polynomial.legendre.leggauss(10)
    edges = np.linspace(lo, hi, panels + 1)
    half, mid = 0.5 * np.diff(edges), 0.5 * (edges[1:] + edges[:-1])
    return ((mid[:, None] + half[:, None] * g).reshape(-1),
            (half[:, None] * w).reshape(-1))


def _catalogue():
    """name -> (law, reference nodes, log-weights, clean points, (chart, box, periodic))."""
    rng = np.random.default_rng(5)
    out = {}

    frame, centre = hadamard_frame(15, 3, 2), np.array([-0.2, 0.1, 0.0])

    def ell_pts(t):
        return centre + np.stack([1.5 * np.cos(t), 0.8 * np.sin(t)], -1) @ frame.T

    chart = (lambda p: ell_pts(p[..., 0]), [[0, TWO_PI]], (True,))
    t = (np.arange(200_000) + 0.5) * TWO_PI / 200_000
    speed = np.sqrt((1.5 * np.sin(t)) ** 2 + (0.8 * np.cos(t)) ** 2)
    ell = ms.Ellipse(axes=(1.5, 0.8), dim=3, frame=frame, centre=centre)
    out["ellipse"] = (ell, ell_pts(t), np.log(speed), ell_pts(rng.uniform(0, 6.3, 4)), chart)
    ell_vm = ms.Ellipse(axes=(1.5, 0.8), dim=3, kappa=2.0, mu=-0.5, frame=frame, centre=centre)
    out["ellipse_von_mises"] = (ell_vm, ell_pts(t), 2.0 * np.cos(t + 0.5),
                                ell_pts(rng.uniform(-1.5, 0.5, 4)), chart)

    frame_w, centre_w = hadamard_frame(16, 4, 3), np.array([0.0, -0.1, 0.1, 0.2])

    def roll(p):
        t, h = p[..., 0], p[..., 1]
        return centre_w + 0.1 * np.stack([t * np.cos(t), h, t * np.sin(t)], -1) @ frame_w.T

    # a product rule in (t, h): panels at most ~0.6 sigma wide in space at the smallest sigma
    # (0.03), error far below 1e-9. The squared distance to a node splits exactly into an
    # in-plane and a height part (the frame is orthonormal), so the double sum factorises.
    ts, wt = _gauss_legendre_10(T0, T1, 1200)
    hs, wh = _gauss_legendre_10(0.0, 21.0, 200)
    interior = roll(np.stack([rng.uniform(T0 + 0.5, T1 - 0.5, 4), rng.uniform(3.0, 18.0, 4)],
                             -1))
    plane = 0.1 * np.stack([ts * np.cos(ts), ts * np.sin(ts)], -1) @ frame_w[:, [0, 2]].T
    axis = frame_w[:, 1]

    def reference(extra):
        log_wt = np.log(wt) + extra
        log_wt -= _lse(log_wt)
        log_wh = np.log(wh) - _lse(np.log(wh))

        def log_prob(x, alpha, sigma):
            z = x - alpha * centre_w
            z_h = z @ axis
            in_plane = np.sum((z - z_h * axis - alpha * plane) ** 2, -1)
            height = (z_h - alpha * 0.1 * hs) ** 2
            return float(_lse(log_wt - in_plane / (2 * sigma**2))
                         + _lse(log_wh - height / (2 * sigma**2))
                         - 0.5 * len(x) * np.log(2 * np.pi * sigma**2))

        return log_prob

    for measure, extra in (("parameter", 0.0), ("area", 0.5 * np.log1p(ts**2))):
        law = ms.SwissRoll(dim=4, scale=0.1, measure=measure, frame=frame_w, centre=centre_w)
        out[f"swiss_roll_{measure}"] = (law, reference(extra), None, interior,
                                        (roll, [[T0, T1], [0, 21]], (False, False)))
    return out


NAMES = ["ellipse", "ellipse_von_mises", "swiss_roll_parameter", "swiss_roll_area"]


@pytest.fixture(scope="module")
def catalogue():
    with jax.enable_x64(True):
        yield _catalogue()


@pytest.mark.parametrize("name", slow_except(NAMES, ["ellipse", "ellipse_von_mises",
                                                   "swiss_roll_area"]))
def test_noised_law_exact(x64, catalogue, name):
    """log p against brute-force quadrature; score = grad log p; denoise through Tweedie."""
    law, nodes, log_w, clean, _ = catalogue[name]
    if callable(nodes):  # the swiss roll's factorised product rule
        assert_noised_law_exact(law, None, None, clean, exact=False, ref_log_prob=nodes)
    else:
        assert_noised_law_exact(law, nodes, log_w, clean, exact=False)


@pytest.mark.parametrize("name", slow_except(NAMES, ["ellipse"]))
def test_geometry_and_rate_separation(x64, catalogue, name):
    """project/distance against a brute-force search; |sigma^2 s + x - proj x| ~ sigma^2."""
    law, _, _, clean, (chart, box, periodic) = catalogue[name]
    assert_geometry_and_rate_separation(law, clean, chart, box, periodic)


def test_transformations_compose(x64):
    """Densities are PyTrees: jit with the density as an argument, vmap, jacfwd, unflatten."""
    ell = ms.Ellipse(axes=(1.5, 1.0), dim=4, key=jax.random.key(3), nodes=256)
    assert_transformations_compose(ell, jnp.array([0.3, -1.1, 0.4, 0.2]))


def test_dtype_follows_input(dtype):
    x = jnp.array([0.3, -1.1, 0.4], dtype)

    @jax.jit
    def run(m, x):
        return m.stats(x, 1.0, 0.3), m.project(x)

    st, proj = run(ms.SwissRoll(scale=0.1, nodes=512), x)
    for v in (*st, proj):
        if v is None:  # MixtureStats.divergence: derived from cov_trace on demand
            continue
        assert v.dtype == jnp.dtype(dtype)
        assert np.all(np.isfinite(np.asarray(v)))


def test_ellipse_sampler_follows_the_arc_length_law():
    ell = ms.Ellipse(axes=(2.0, 0.5))
    t = jax.jit(lambda m, k: jax.vmap(m.angle)(m.sample(k, 20_000)))(ell, jax.random.key(0))
    speed = lambda t: np.sqrt((2.0 * np.sin(t)) ** 2 + (0.5 * np.cos(t)) ** 2)
    assert histogram_tv(t, -math.pi, math.pi, speed) < 0.03
    assert histogram_tv(t, -math.pi, math.pi, np.ones_like) > 0.1  # the laws differ


def test_swiss_roll_sampler_follows_the_area_law():
    roll = ms.SwissRoll(scale=0.1, measure="area", nodes=512)
    th = jax.jit(lambda m, k: jax.vmap(m.coordinates)(m.sample(k, 20_000)))(
        roll, jax.random.key(1))
    assert histogram_tv(th[:, 0], T0, T1, lambda t: np.sqrt(1 + t * t)) < 0.03
    assert histogram_tv(th[:, 1], 0.0, 21.0, np.ones_like) < 0.03


def test_coarse_grids_are_refused():
    for m in (ms.Ellipse(axes=(2.0, 1.0), nodes=64), ms.SwissRoll(scale=0.1, nodes=64)):
        with pytest.raises(ValueError, match="Increase nodes to at least"):
            m.score(jnp.ones(m.dim), 1.0, 0.005)


@pytest.mark.parametrize("make, match", [
    (lambda: ms.Ellipse(axes=(1.0, -1.0)), "axes"),
    (lambda: ms.Ellipse(on_coarse="maybe"), "on_coarse"),
    (lambda: ms.SwissRoll(t_min=5.0, t_max=1.0), "t_max"),
])
def test_bad_arguments_raise_value_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_points_raise():
    with pytest.raises(ValueError, match="x must have shape"):
        ms.Ellipse().project(jnp.zeros(3))

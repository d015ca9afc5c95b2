"""Parametric charts: quadrature laws against independent quadratures, geometry, grid checks.

References are numpy only: a 2e5-node midpoint rule for a closed wavy curve (speed from finite
differences of the chart's samples), Simpson's rule (501 x 501) on a paraboloid patch with the
area element ``sqrt(1 + u^2 + v^2)`` in closed form, and zooming grid searches for nearest
points (:mod:`tests.helpers`).
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
)

TWO_PI = 2 * math.pi


def _wavy(th):
    """A closed wavy curve in R^3: radius 1 + 0.2 cos 3t, height 0.3 sin 2t."""
    t = th[..., 0]
    rho = 1.0 + 0.2 * jnp.cos(3 * t)
    return jnp.stack([rho * jnp.cos(t), rho * jnp.sin(t), 0.3 * jnp.sin(2 * t)], -1)


def _wavy_log_density(th):
    return jnp.cos(th[0])


def _paraboloid(uv):
    return jnp.stack([uv[0], uv[1], 0.5 * (uv[0] ** 2 + uv[1] ** 2)])


def _np_wavy(p):
    t = p[..., 0]
    rho = 1.0 + 0.2 * np.cos(3 * t)
    return np.stack([rho * np.cos(t), rho * np.sin(t), 0.3 * np.sin(2 * t)], -1)


def _np_paraboloid(p):
    return np.stack([p[..., 0], p[..., 1], 0.5 * (p[..., 0] ** 2 + p[..., 1] ** 2)], -1)


def _simpson(lo, hi, n):
    x = np.linspace(lo, hi, n)
    w = np.ones(n)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return x, w * (hi - lo) / (3 * (n - 1))


def _catalogue():
    """name -> (law, reference nodes, log-weights, clean points, (chart, box, periodic))."""
    rng = np.random.default_rng(5)
    out = {}
    curve = ms.Parametric(_wavy, [[0.0, TWO_PI]], log_density=_wavy_log_density, nodes=4096,
                          periodic=True)
    t = (np.arange(200_000) + 0.5) * TWO_PI / 200_000
    wav = _np_wavy(t[:, None])
    dwav = np.gradient(wav, t, axis=0)  # speed, only for the reference's weights
    out["parametric_curve"] = (curve, wav, np.cos(t) + np.log(np.linalg.norm(dwav, axis=1)),
                               _np_wavy(rng.uniform(0, 6.3, (4, 1))),
                               (_np_wavy, [[0, TWO_PI]], (True,)))
    patch = ms.Parametric(_paraboloid, [[-1.0, 1.0], [-1.0, 1.0]], nodes=(256, 256))
    us, wu = _simpson(-1.0, 1.0, 501)
    grid = np.stack([v.reshape(-1) for v in np.meshgrid(us, us, indexing="ij")], -1)
    log_w = np.log(np.outer(wu, wu).reshape(-1)) + 0.5 * np.log1p(np.sum(grid**2, -1))
    out["parametric_surface"] = (patch, _np_paraboloid(grid), log_w,
                                 _np_paraboloid(rng.uniform(-0.6, 0.6, (4, 2))),
                                 (_np_paraboloid, [[-1, 1], [-1, 1]], (False, False)))
    return out


NAMES = ["parametric_curve", "parametric_surface"]


@pytest.fixture(scope="module")
def catalogue():
    with jax.enable_x64(True):
        yield _catalogue()


@pytest.mark.parametrize("name", NAMES)
def test_noised_law_exact(x64, catalogue, name):
    """log p against brute-force quadrature; score = grad log p; denoise through Tweedie."""
    law, nodes, log_w, clean, _ = catalogue[name]
    assert_noised_law_exact(law, nodes, log_w, clean, exact=False)


@pytest.mark.parametrize("name", NAMES)
def test_geometry_and_rate_separation(x64, catalogue, name):
    """project/distance against a brute-force search; |sigma^2 s + x - proj x| ~ sigma^2."""
    law, _, _, clean, (chart, box, periodic) = catalogue[name]
    assert_geometry_and_rate_separation(law, clean, chart, box, periodic)


def _unit_circle_chart(th):
    return jnp.stack([jnp.cos(th[0]), jnp.sin(th[0])])


def test_grid_too_coarse_raises_or_warns_with_a_fix():
    par = ms.Parametric(_unit_circle_chart, [[0.0, TWO_PI]], nodes=64, periodic=True)
    x = jnp.array([1.0, 0.1])
    with pytest.raises(ValueError, match=r"Increase nodes to at least \d+, or use sigma >= "):
        par.log_prob(x, 1.0, 0.01)
    assert float(par.min_sigma()) == pytest.approx(float(par.spacing))
    par.check_resolution(1.0, 0.2)  # a resolved sigma passes
    need = int(math.ceil(64 * float(par.spacing) / 0.01))
    fine = ms.Parametric(_unit_circle_chart, [[0.0, TWO_PI]], nodes=need, periodic=True)
    fine.check_resolution(1.0, 0.01)  # the suggested node count is accepted
    warn = ms.Parametric(_unit_circle_chart, [[0.0, TWO_PI]], nodes=64, periodic=True,
                         on_coarse="warn")
    with pytest.warns(UserWarning, match="Increase nodes"):
        assert np.isfinite(warn.log_prob(x, 1.0, 0.01))


def test_matches_exact_circle_when_resolved(x64):
    par = ms.Parametric(_unit_circle_chart, [[0.0, TWO_PI]], nodes=2048, periodic=True)
    circ = ms.Circle()
    x = jnp.array([0.9, 0.3])
    log_prob = jax.jit(lambda m, s: m.log_prob(x, 1.0, s))
    for sigma in (0.01, 0.1, 1.0):
        np.testing.assert_allclose(log_prob(par, sigma), log_prob(circ, sigma), rtol=1e-9)
    # a coarse grid at a small sigma is a different law: the check is what prevents it
    coarse = ms.Parametric(_unit_circle_chart, [[0.0, TWO_PI]], nodes=64, periodic=True,
                           on_coarse="ignore")
    assert abs(float(log_prob(coarse, 0.02) - log_prob(circ, 0.02))) > 1e-3


def test_dtype_follows_input(dtype):
    x = jnp.array([0.3, -1.1, 0.4], dtype)
    m = ms.Parametric(_paraboloid, [[-1.0, 1.0], [-1.0, 1.0]], nodes=(64, 64))
    st, proj = jax.jit(lambda m, x: (m.stats(x, 1.0, 0.3), m.project(x)))(m, x)
    for v in (*st, proj):
        if v is None:  # MixtureStats.divergence where a kernel does not fill it
            continue
        assert v.dtype == jnp.dtype(dtype)
        assert np.all(np.isfinite(np.asarray(v)))


@pytest.mark.parametrize("make, match", [
    (lambda: ms.Parametric(_unit_circle_chart, [[1.0, 0.0]]), "domain"),
    (lambda: ms.Parametric(_unit_circle_chart, [[0.0, 1.0]], nodes=(4, 4)), "nodes"),
])
def test_bad_arguments_raise_value_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()

"""E8: the exact scores and tangent parts against the library's densities, the ridge path against
the library's closed-form fit on the same draws, the excess DSM loss against its definition,
the collapse spreads on curves built to collapse; the quick run in the slow suite."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores import losses
from manifold_scores.experiments import e8_random_features as e8
from manifold_scores.experiments._plotting import style_problems
from manifold_scores.models import random_features as rf
from tests.helpers import assert_rel_close


def _noisy(law, rng, n):
    x = law.sample(rng, n)
    return (e8.ALPHA * x + e8.SIGMA * rng.standard_normal(x.shape)).astype(np.float32)


@pytest.mark.parametrize("family", ["sphere", "torus"])
def test_curved_scores_and_tangents_match_the_library(family):
    rng = np.random.default_rng(0)
    law = e8.Law(family, 12, 3, rng)
    frame = jnp.asarray(law.frame)
    if family == "sphere":
        ref = ms.Sphere(dim=12, intrinsic_dim=3, radius=law.radius, frame=frame)
    else:
        ref = ms.FlatTorus(radii=(law.radius,) * 3, dim=12, frame=frame)
    xt = _noisy(law, rng, 20)
    s = np.asarray(jax.vmap(ref.score, (0, None, None))(jnp.asarray(xt), e8.ALPHA, e8.SIGMA))
    assert_rel_close(law.score(xt, e8.ALPHA, e8.SIGMA), s, 1e-4, what="score")
    e = rng.standard_normal(xt.shape).astype(np.float32)
    basis = np.asarray(jax.vmap(ref.tangent_basis)(jnp.asarray(xt)))  # (n, d, D)
    tan = np.sum(np.einsum("ndk,nd->nk", basis, e) ** 2, 1)
    assert_rel_close(law.tangent_sq(xt, e), tan, 1e-4, axis=None, what="tangent part")


def test_linear_and_isotropic_scores_are_the_gaussian_ones():
    rng = np.random.default_rng(1)
    a2, s2 = e8.ALPHA**2, e8.SIGMA**2
    for family in ("linear", "isotropic"):
        law = e8.Law(family, 10, 3, rng)
        q = law.frame if family == "linear" else np.eye(10)
        cov = a2 * q @ q.T + s2 * np.eye(10)
        xt = _noisy(law, rng, 15)
        ref = -np.linalg.solve(cov, xt.T.astype(np.float64)).T
        assert_rel_close(law.score(xt, e8.ALPHA, e8.SIGMA), ref, 1e-5, what=family)
    with pytest.raises(ValueError, match="family"):
        e8.Law("cube", 10, 3, rng)


def test_ridge_path_matches_fit_ridge():
    proc = ms.VP()
    t = float(proc.t_from_sigma(e8.SIGMA))
    d, p, n, m = 6, 24, 30, 3
    params = rf.init(jax.random.key(0), d, p, proc)
    x0 = np.asarray(jax.random.normal(jax.random.key(1), (n, d)))
    key = jax.random.key(2)
    alpha, sigma = float(proc.alpha(t)), float(proc.sigma(t))
    _, eps, _ = losses._fixed_draw(key, jnp.asarray(x0), alpha, sigma, m, False)
    eps = np.asarray(eps).reshape(n, m, d)
    w = np.asarray(params.weights)
    (_, mom, (a,)), = list(e8.ridge_path(w, x0, eps, alpha, sigma, [n], [1e-2]))
    lam = 1e-2 * sigma**2 * float(np.trace(mom["gram"])) / p
    ref = rf.fit_ridge(key, params, jnp.asarray(x0), t, ridge=lam, num_noise=m).readout
    assert_rel_close(a, np.asarray(ref), 2e-3, axis=None, what="readout")
    # the features are the model's
    xt = x0[:4] + 0.1
    assert_rel_close(e8.feature_map(w, xt),
                     np.asarray(jax.vmap(rf.features, (None, 0, None))(params, xt, t)), 1e-5,
                     what="features")


def test_quad_loss_is_the_mean_squared_residual():
    rng = np.random.default_rng(3)
    f, y = rng.standard_normal((50, 7)), rng.standard_normal((50, 4))
    a = rng.standard_normal((4, 7))
    g, r = (f.T @ f / 50).astype(np.float32), (f.T @ y / 50).astype(np.float32)
    got = e8._quad_loss(a.astype(np.float32), g, r, float(np.mean(np.sum(y**2, 1))))
    assert got == pytest.approx(np.mean(np.sum((f @ a.T - y) ** 2, 1)), rel=1e-5)


def test_excess_dsm_of_the_exact_score_is_monte_carlo_zero():
    # dsm_constant's identity on the same draws: the exact score's DSM minus the constant is
    # zero up to Monte Carlo error, the quantity curves() reports as "excess"
    rng = np.random.default_rng(4)
    law = e8.Law("sphere", 16, 3, rng)
    x = law.sample(rng, 20000)
    e = rng.standard_normal(x.shape).astype(np.float32)
    xt = e8.ALPHA * x + e8.SIGMA * e
    s = law.score(xt, e8.ALPHA, e8.SIGMA).astype(np.float64)
    s2 = e8.SIGMA**2
    dsm = s2 * np.mean(np.sum((s + e / e8.SIGMA) ** 2, 1))
    const = s2 * (16 / s2 - np.mean(np.sum(s**2, 1)))
    assert abs(dsm - const) / const < 0.02


def test_spreads_see_the_collapse_they_are_built_for():
    grid, ratios = e8.GRID, e8.RATIOS
    g = np.asarray(grid, float)
    by_nd = np.array([1.0 / (1.0 + g) for _ in ratios])  # a function of N / D only
    by_nD = np.array([1.0 / (1.0 + g * r * 16) for r in ratios])  # of N / d only
    b, s = e8.spreads(by_nd, ratios, grid)
    assert b == 0.0 and s > 0.1
    b, s = e8.spreads(by_nD, ratios, grid)
    assert s == pytest.approx(0.0, abs=1e-12) and b > 0.1


@pytest.mark.slow
def test_quick_run_matches_its_record():
    table = ms.experiments.run("E8", "quick")
    from manifold_scores.experiments._registry import review

    rev = review(table)
    assert rev.ok, (rev, table.format())
    assert style_problems(ms.experiments.plot(table)) == []
    for row in table.rows:
        if row.kind == "claim":
            assert row.evidence["seeds"] >= 3
            assert row.evidence["controls"]

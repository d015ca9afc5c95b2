"""R1: the held-out energy of a union of subspaces and of PCA against numpy brute force, the
Gaussian twin's moments, the twin's exact linear denoiser and its rank, the study's table and
figures on a tiny configuration, and the quick run against the recorded verdicts (slow)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.experiments import r1_lowrank as r1
from manifold_scores.experiments._plotting import style_problems
from manifold_scores.experiments._table import CLAIM, CONTROL, VERDICTS
from manifold_scores.models import lowrank
from tests.helpers import assert_on_protocol, assert_rel_close

TINY = dict(main=(2, 2), cells=((2, 2),), channels=(4, 8), steps=20, every=10, batch=16,
            n_eval=8, n_jac=2, networks=True)


def _brute_energy(x, bases):
    """sum_i max_k |U_k^T x_i|^2 / sum_i |x_i|^2 by explicit loops (float64)."""
    x = np.asarray(x, np.float64)
    captured = 0.0
    for row in x:
        best = 0.0
        for u in np.asarray(bases, np.float64):
            best = max(best, float(np.sum((u.T @ row) ** 2)))
        captured += best
    return captured / float(np.sum(x * x))


def test_union_energy_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 6)).astype(np.float32)
    bases = np.stack([np.linalg.qr(rng.standard_normal((6, 2)))[0] for _ in range(3)])
    assert abs(r1.energy(x, bases.astype(np.float32)) - _brute_energy(x, bases)) < 1e-5


def test_pca_energy_matches_numpy_svd():
    """Training energy of PCA-r is the top-r share of the squared singular values."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((40, 8)) * np.linspace(3, 0.2, 8)).astype(np.float32)
    x = x - x.mean(0)
    s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    u = np.asarray(lowrank.pca(jnp.asarray(x), 3))
    assert abs(r1.energy(x, u) - np.sum(s[:3] ** 2) / np.sum(s**2)) < 1e-5
    # held out: brute force with numpy's own principal directions
    y = rng.standard_normal((25, 8)).astype(np.float32)
    v = np.linalg.svd(x.astype(np.float64), full_matrices=False)[2][:3].T[None]
    assert abs(r1.energy(y, u) - _brute_energy(y, v)) < 1e-5


def test_gain_rule():
    assert r1.exceeds(np.array([0.10, 0.12, 0.11]), np.array([0.05, 0.07, 0.08]))
    assert not r1.exceeds(np.array([0.10, 0.12, 0.11]), np.array([0.05, 0.07, 0.095]))


def test_twin_has_the_data_mean_and_covariance():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((5, 5))
    data = rng.standard_normal((500, 5)) @ a.T + np.arange(5.0)
    data[:, 4] = 0.5  # a direction without variance stays without variance
    mean, cov = r1.twin_moments(data)
    np.testing.assert_allclose(mean, data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(data.T, bias=True), atol=1e-12)
    twin = r1.draw_twin(jax.random.key(0), mean, cov, 200_000).astype(np.float64)
    assert_rel_close(twin.mean(0), mean, 0.01, what="twin mean")
    got = np.cov(twin.T, bias=True)
    assert np.linalg.norm(got - cov) / np.linalg.norm(cov) < 0.02
    assert np.std(twin[:, 4]) < 1e-6
    with pytest.raises(ValueError, match="train"):
        r1.twin_moments(np.array([[np.nan, 1.0], [0.0, 1.0]]))


def test_linear_denoiser_and_its_rank():
    rng = np.random.default_rng(3)
    b = rng.standard_normal((6, 6))
    cov = (b * np.linspace(1, 1e-3, 6)) @ b.T  # positive definite, spread eigenvalues
    mean = rng.standard_normal(6)
    a, off = r1.linear_denoiser(mean, cov, 0.3)
    ref = cov @ np.linalg.inv(cov + 0.09 * np.eye(6))  # the Wiener filter
    np.testing.assert_allclose(a, ref, atol=1e-10)
    np.testing.assert_allclose(off, mean - ref @ mean, atol=1e-10)
    s = np.linalg.svd(ref, compute_uv=False)
    frac = np.sqrt(np.cumsum(s**2) / np.sum(s**2))
    assert r1.linear_rank(cov, 0.3) == int(np.argmax(frac > 0.99) + 1)


def test_molrg_jacobian_matches_the_exact_denoiser():
    mix = ms.MoLRG.random(jax.random.key(0), dim=12, rank=2, num_components=3)
    x = mix.sample(jax.random.key(1), 3) + 0.3 * jax.random.normal(jax.random.key(2), (3, 12))
    for sigma in (0.3, 1.0):
        ref = jax.vmap(jax.jacfwd(lambda y, s=sigma: mix.denoise(y, 1.0, s)))(x)
        got = np.stack([r1.molrg_jacobian(mix.bases, xi, sigma) for xi in np.asarray(x)])
        assert_rel_close(got.reshape(3, -1), np.asarray(ref).reshape(3, -1), 1e-4,
                         what=f"Jacobian at sigma={sigma}")


@pytest.mark.slow
def test_tiny_study_table_and_figures():
    import matplotlib

    matplotlib.use("Agg")
    table = r1.run("quick", _overrides=TINY)
    controls = {r.key for r in table.rows if r.kind == CONTROL}
    claims = {r.key: r for r in table.rows if r.kind == CLAIM}
    assert controls == {"union_molrg", "union_twin", "rank_exact_molrg", "rank_twin_network"}
    assert set(claims) == {"union.digits", "union.patches", "rank.digits"}
    for row in claims.values():
        assert row.verdict in VERDICTS
        assert row.evidence["seeds"] == 3
    # 20 steps of a tiny network: not plateaued
    assert claims["rank.digits"].evidence["converged"] is False
    n_sig = len(r1.SIGMAS)
    assert np.shape(table.data["rank_digits"]) == (3, n_sig)
    assert np.shape(table.data["rank_twin"]) == (3, n_sig)
    assert np.shape(table.data["monitor"]) == (2, 6, n_sig)
    assert len(table.data["energies"]) == 3 * 8  # 3 seeds x 8 data sets at one (K, r)
    for v in table.data["energies"].values():
        assert 0.0 <= v["pca_r"] <= v["pca_kr"] <= 1.0 + 1e-6
        assert np.isfinite(v["union"])
    table.to_json(with_data=True)
    for fig in (r1.plot(table), r1.pictures(table)):
        assert style_problems(fig) == []
        matplotlib.pyplot.close(fig)


@pytest.mark.slow
def test_quick_run_matches_the_recorded_verdicts():
    table = ms.experiments.run("R1", "quick")
    claims = assert_on_protocol(table, min_claims=2)
    for row in claims:
        assert len(row.evidence["controls"]) == 2, row.key
    # quick: no trained networks, the closed-form parts of (b) only
    assert "rank_digits" not in table.data
    assert np.shape(table.data["rank_exact_twin"]) == (3, len(r1.SIGMAS))

"""Metrics against brute-force references.

References: MMD^2 against an explicit NumPy double sum in float64; sliced Wasserstein against 1-D
sorting on coordinate axes; subspace recovery against a brute-force loop over permutations, with
its invariances (component permutations, rotations inside a subspace) and zero for the truth;
nearest distances against a dense NumPy search; the chunked paths against one-block runs; the
Jacobian rank against hand-made spectra; the angle TV against its closed form on histograms.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores import metrics
from tests.helpers import slow_except


def _mmd_reference(x, y, hs):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return sum(np.exp(-d2 / (2 * h * h)) for h in hs)

    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    sxx = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                sxx += kxx[i, j]
    syy = sum(kyy[i, j] for i in range(m) for j in range(m) if i != j)
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * k(x, y).mean()


@pytest.mark.parametrize("dtype", slow_except(["float32", "float64"], ["float32"]), indirect=True)
def test_mmd_matches_explicit_double_sum(dtype):
    x = jax.random.normal(jax.random.key(0), (37, 3))
    y = 0.5 + 1.3 * jax.random.normal(jax.random.key(1), (29, 3))
    hs = (0.5, 1.0, 2.0)
    ref = _mmd_reference(x, y, hs)
    tol = 1e-12 if dtype == "float64" else 2e-5
    for chunk in (None, 8):
        got = float(metrics.mmd(x, y, hs, chunk_size=chunk))
        assert abs(got - ref) <= tol, (chunk, got, ref)


def test_mmd_same_law_near_zero_and_unbiased_sign():
    x = jax.random.normal(jax.random.key(0), (400, 2))
    y = jax.random.normal(jax.random.key(1), (400, 2))
    same = float(metrics.mmd(x, y))
    apart = float(metrics.mmd(x, y + 1.0))
    assert abs(same) < 0.02 < apart


def test_sliced_wasserstein_axis_aligned_matches_sorting(dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3))
    y = rng.normal(size=(64, 3)) * np.array([1.0, 2.0, 0.5]) + np.array([0.3, -1.0, 2.0])
    axes = np.eye(3)
    for p in (1.0, 2.0):
        ref = np.mean([np.mean(np.abs(np.sort(x[:, i]) - np.sort(y[:, i])) ** p)
                       for i in range(3)]) ** (1 / p)
        for chunk in (None, 2):
            got = float(metrics.sliced_wasserstein(None, jnp.asarray(x), jnp.asarray(y), p=p,
                                                   directions=axes, chunk_size=chunk))
            assert got == pytest.approx(ref, rel=1e-5 if dtype == "float32" else 1e-12)


def test_sliced_wasserstein_shift_and_unequal_sizes():
    x = jax.random.normal(jax.random.key(0), (300, 1))
    # a pure shift of a 1-D law: W_p = |shift| for any p, also between different sizes
    got = float(metrics.sliced_wasserstein(None, x, x[:150] + 2.0, directions=jnp.ones((1, 1)),
                                           p=1.0))
    assert abs(got - 2.0) < 0.15
    rnd = float(metrics.sliced_wasserstein(jax.random.key(1), x, x))
    assert rnd == pytest.approx(0.0, abs=1e-6)


def _brute_subspace(bh, b):
    k = bh.shape[0]
    proj_h = [u @ u.T for u in bh]
    proj = [u @ u.T for u in b]
    best_max, best_mean = np.inf, np.inf
    for perm in itertools.permutations(range(k)):
        errs = [np.linalg.norm(proj_h[i] - proj[perm[i]]) for i in range(k)]
        best_max = min(best_max, max(errs))
        best_mean = min(best_mean, float(np.mean(errs)))
    return best_max, best_mean


def test_subspace_recovery_brute_force_and_invariances(x64):
    mix = ms.MoLRG.random(jax.random.key(0), dim=10, rank=2, num_components=4,
                          orthogonal=False)
    b = np.asarray(mix.bases)
    other = np.asarray(ms.MoLRG.random(jax.random.key(1), dim=10, rank=2, num_components=4,
                                       orthogonal=False).bases)
    res = metrics.subspace_recovery(other, b)
    ref_max, ref_mean = _brute_subspace(other, b)
    assert res.max_error == pytest.approx(ref_max, abs=1e-12)
    assert res.mean_error == pytest.approx(ref_mean, abs=1e-12)
    # zero for the truth, invariant to permutations and to rotations inside each subspace
    assert metrics.subspace_recovery(b, b).max_error < 1e-7
    rng = np.random.default_rng(0)
    rots = np.stack([np.linalg.qr(rng.normal(size=(2, 2)))[0] for _ in range(4)])
    rotated = np.einsum("kdr,krs->kds", b, rots)[[2, 0, 3, 1]]
    res_rot = metrics.subspace_recovery(rotated, b)
    assert res_rot.max_error < 1e-7 and res_rot.mean_error < 1e-7
    assert list(res_rot.assignment) == [2, 0, 3, 1]
    perturbed = metrics.subspace_recovery(other[[3, 1, 0, 2]], b)
    assert perturbed.max_error == pytest.approx(res.max_error, abs=1e-12)


@pytest.mark.parametrize("dtype", slow_except(["float32", "float64"], ["float64"]), indirect=True)
def test_nearest_distances_and_memorisation_chunked(dtype):
    train = jax.random.normal(jax.random.key(0), (53, 4))
    near = train[:7] + 1e-3 * jax.random.normal(jax.random.key(1), (7, 4))
    far = jax.random.normal(jax.random.key(2), (11, 4))
    xs = jnp.concatenate([near, far])
    t64, x64_ = np.asarray(train, np.float64), np.asarray(xs, np.float64)
    d = np.sort(np.linalg.norm(x64_[:, None] - t64[None], axis=-1), axis=1)[:, :2]
    for chunk in (None, 16):
        got = np.asarray(metrics.nearest_distances(xs, train, chunk_size=chunk))
        np.testing.assert_allclose(got, d, rtol=1e-5 if dtype == "float32" else 1e-12)
    ref = np.mean(d[:, 0] < d[:, 1] / 3)
    assert float(metrics.memorization_fraction(xs, train, chunk_size=6)) == pytest.approx(ref)
    assert float(metrics.generalization_score(xs, train)) == pytest.approx(1 - ref)
    assert float(metrics.memorization_fraction(near, train)) == 1.0


def test_distance_to_manifold_chunked_and_union_of_subspaces(x64):
    sph = ms.Sphere(dim=5, intrinsic_dim=2, radius=2.0, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (23, 5)) * 3
    ref = np.asarray(jax.vmap(sph.distance)(x))
    for chunk in (None, 4):
        np.testing.assert_allclose(metrics.distance_to_manifold(sph, x, chunk_size=chunk), ref,
                                   rtol=1e-12)
    mix = ms.MoLRG.random(jax.random.key(2), dim=6, rank=2, num_components=3)
    b = np.asarray(mix.bases)
    xn = np.asarray(x[:, :5] @ np.ones((5, 6)) / 5 + x[:, :1])
    ref = [min(np.linalg.norm(v - bk @ (bk.T @ v)) for bk in b) for v in xn]
    np.testing.assert_allclose(metrics.distance_to_manifold(mix, xn, chunk_size=7), ref,
                               rtol=1e-10)


def test_jacobian_rank_energy_rule():
    diag = jnp.diag(jnp.array([10.0, 2.0, 1.0, 0.01]))
    # s^2 = 100, 4, 1, 1e-4: cumulative 100/105 = 0.952 <= 0.99^2 = 0.9801 < 104/105 = 0.9905
    assert int(metrics.jacobian_rank(diag)) == 2
    # 100/102 = 0.9804 > 0.9801: one direction carries enough energy
    assert int(metrics.jacobian_rank(jnp.diag(jnp.array([10.0, 1.0, 1.0])))) == 1
    assert int(metrics.jacobian_rank(jnp.zeros((3, 3)))) == 0
    rng = np.random.default_rng(0)
    u = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    low = u[:, :3] @ rng.normal(size=(3, 8))
    assert metrics.jacobian_rank(jnp.stack([low, u])).tolist() == [3, 8]


def test_angle_tv_closed_form():
    # half the mass in each of two bins vs uniform over 4 bins: TV = 1/2
    angles = np.array([-3.0, -3.0, 0.1, 0.1])
    assert metrics.angle_tv(angles, lambda t: jnp.zeros_like(t), bins=4) == pytest.approx(0.5)
    assert metrics.angle_tv(angles, angles, bins=4) == 0.0
    # non-finite samples count as missing mass
    assert metrics.angle_tv(np.array([0.1, np.nan]), np.array([0.1, 0.2]), bins=4) == 0.5


def test_score_error_profile_zero_for_exact():
    circ = ms.Circle(dim=2)
    x0 = circ.sample(jax.random.key(0), 64)
    score = lambda x, s: circ.score(x, 1.0, s)
    err = metrics.score_error_profile(jax.random.key(1), score, score, x0, jnp.array([0.1, 1.0]))
    assert np.all(np.asarray(err) == 0.0)


def test_metrics_validate_shapes():
    with pytest.raises(ValueError, match="x"):
        metrics.mmd(jnp.zeros(3), jnp.zeros((3, 1)))
    with pytest.raises(ValueError, match="bases"):
        metrics.subspace_recovery(np.zeros((2, 3)), np.zeros((2, 3, 1)))
    with pytest.raises(ValueError, match="dimensions"):
        metrics.sliced_wasserstein(jax.random.key(0), jnp.zeros((3, 2)), jnp.zeros((3, 1)))


# ---------------------------------------------------------------------------------------------
# No silent wrong answers: non-finite samples, duplicates, out-of-range options
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sphere", "circle", "flat_torus", "ring_torus", "ellipse",
                                  "molrg"])
def test_distance_to_manifold_of_non_finite_samples_is_not_zero(name):
    key = jax.random.key(0)
    manifold = {
        "sphere": lambda: ms.Sphere(dim=4, intrinsic_dim=2, key=key),
        "circle": lambda: ms.Circle(dim=4, key=key),
        "flat_torus": lambda: ms.FlatTorus(dim=4, radii=(1.0, 0.5), key=key),
        "ring_torus": lambda: ms.RingTorus(dim=4, key=key),
        "ellipse": lambda: ms.Ellipse(dim=4, axes=(2.0, 1.0), key=key),
        "molrg": lambda: ms.MoLRG.random(key, dim=4, rank=2, num_components=2),
    }[name]()
    good = jnp.full((4,), 3.0)
    x = jnp.stack([good, good.at[1].set(jnp.nan), good.at[2].set(jnp.inf),
                   good.at[0].set(-jnp.inf).at[3].set(jnp.nan)])
    d = np.asarray(metrics.distance_to_manifold(manifold, x, chunk_size=3))
    ref = (np.asarray(metrics.distance_to_manifold(manifold, good[None]))[0]
           if name == "molrg" else float(manifold.distance(good)))
    assert d[0] == pytest.approx(ref, rel=1e-6) and d[0] > 0
    assert np.isnan(d[1]) and d[2] == np.inf and np.isnan(d[3])


def test_memorisation_counts_copies_of_duplicated_training_points(x64):
    train = jax.random.normal(jax.random.key(0), (30, 3))
    # every point twice, one three times, and a -0.0 copy of a point with a zero coordinate
    train = train.at[0, 1].set(0.0)
    dup = jnp.concatenate([train, train, train[:1].at[0, 1].set(-0.0), train[5:6]])
    xs = jnp.concatenate([train[:8], jax.random.normal(jax.random.key(1), (9, 3))])
    # distances to distinct points equal those to the deduplicated set (dense NumPy search)
    ref = np.sort(np.linalg.norm(np.asarray(xs)[:, None] - np.unique(np.asarray(dup), axis=0)[None],
                                 axis=-1), axis=1)[:, :2]
    assert np.all(ref[:8, 0] == 0) and np.all(ref[:, 1] > 0)
    np.testing.assert_allclose(metrics.nearest_distances(xs, dup, chunk_size=7), ref, rtol=1e-12)
    # the 8 copies count as memorised, also under jit (where the training set is traced)
    expected = np.mean(ref[:, 0] < ref[:, 1] / 3)
    assert expected >= 8 / 17
    assert float(metrics.memorization_fraction(xs, dup, chunk_size=7)) == expected
    assert float(metrics.generalization_score(xs, dup, chunk_size=7)) == 1 - expected
    assert float(jax.jit(metrics.memorization_fraction)(xs, dup)) == expected
    with pytest.raises(ValueError, match="train must hold at least 2 distinct points"):
        metrics.memorization_fraction(xs, jnp.ones((5, 3)))


def test_memorisation_of_non_finite_samples_is_nan():
    train = jax.random.normal(jax.random.key(0), (40, 3))
    samples = jnp.concatenate([train[:4] + 1e-4, jax.random.normal(jax.random.key(1), (4, 3))])
    assert np.isfinite(float(metrics.memorization_fraction(samples, train)))
    for bad in (jnp.nan, jnp.inf):
        diverged = samples.at[5, 0].set(bad)
        assert np.isnan(float(metrics.memorization_fraction(diverged, train)))
        assert np.isnan(float(metrics.generalization_score(diverged, train)))
    assert np.isnan(float(metrics.memorization_fraction(jnp.full((4, 3), jnp.nan), train)))
    for threshold in (0.0, -1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="threshold must lie in"):
            metrics.memorization_fraction(samples, train, threshold=threshold)


def test_jacobian_rank_of_non_finite_jacobian_is_nan_and_energy_is_checked():
    good = jnp.diag(jnp.array([10.0, 2.0, 1.0, 0.01]))
    ranks = metrics.jacobian_rank(jnp.stack([good, good.at[1, 2].set(jnp.nan),
                                             good.at[0, 0].set(jnp.inf), jnp.zeros((4, 4))]))
    r = np.asarray(ranks)
    assert r[0] == 2 and np.isnan(r[1]) and np.isnan(r[2]) and r[3] == 0
    assert np.isnan(float(metrics.jacobian_rank(jnp.full((3, 3), jnp.nan))))
    for energy in (1.5, 0.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="energy must lie in"):
            metrics.jacobian_rank(jnp.eye(3), energy)
    # energy = 1: the number of non-zero singular values, never more than min(m, n)
    assert int(metrics.jacobian_rank(jnp.eye(3), 1.0)) == 3
    assert int(metrics.jacobian_rank(jnp.diag(jnp.array([3.0, 1e-3, 0.0])), 1.0)) == 2
    assert int(metrics.jacobian_rank(jnp.zeros((2, 5)).at[0, 3].set(2.0), 1.0)) == 1


def _w_inf_reference(a, b):
    """Largest gap between two empirical quantile functions, on a fine grid of levels."""
    u = (np.arange(200_000) + 0.5) / 200_000
    qa = np.sort(a)[np.minimum((u * len(a)).astype(int), len(a) - 1)]
    qb = np.sort(b)[np.minimum((u * len(b)).astype(int), len(b) - 1)]
    return float(np.max(np.abs(qa - qb)))


def test_sliced_wasserstein_p_inf_is_the_max_over_directions_of_w_inf(x64):
    x = jax.random.normal(jax.random.key(0), (200, 1))
    # a shift of 5: W_inf = 5 for every pair of sizes
    for m in (200, 150, 7):
        got = float(metrics.sliced_wasserstein(None, x, x[:m] + 5.0,
                                               directions=jnp.ones((1, 1)), p=jnp.inf))
        ref = _w_inf_reference(np.asarray(x[:, 0]), np.asarray(x[:m, 0]) + 5.0)
        assert got == pytest.approx(ref, abs=1e-12)
    assert float(metrics.sliced_wasserstein(None, x, x + 5.0, directions=jnp.ones((1, 1)),
                                            p=float("inf"))) == pytest.approx(5.0, abs=1e-12)
    # several directions: the maximum over them of the 1-D W_inf (by sorting each axis)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 3)), rng.normal(size=(45, 3)) * np.array([1.0, 3.0, 0.5])
    got = float(metrics.sliced_wasserstein(None, jnp.asarray(a), jnp.asarray(b), p=np.inf,
                                           directions=jnp.eye(3), chunk_size=2))
    ref = max(_w_inf_reference(a[:, i], b[:, i]) for i in range(3))
    assert got == pytest.approx(ref, abs=1e-12)


def test_sliced_wasserstein_validates_its_options():
    x = jnp.zeros((5, 2))
    for n in (-3, 0, 2.5):
        with pytest.raises(ValueError, match="num_projections must be a positive integer"):
            metrics.sliced_wasserstein(jax.random.key(0), x, x + 1.0, num_projections=n)
    for p in (0.5, float("nan")):
        with pytest.raises(ValueError, match="p must be >= 1"):
            metrics.sliced_wasserstein(jax.random.key(0), x, x + 1.0, p=p)
    with pytest.raises(ValueError, match="directions must have shape"):
        metrics.sliced_wasserstein(None, x, x, directions=jnp.zeros((0, 2)))

"""E5: the clustering solver and its certificate against references; the study's pieces; the
quick run's verdicts (slow)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.experiments import e5_subspace_recovery as e5
from manifold_scores.experiments._plotting import style_problems
from manifold_scores.models import lowrank
from tests.helpers import slow_except


def _points(key, bases, n_k):
    k_num, d, r = bases.shape
    coef = jax.random.normal(key, (k_num, n_k, r))
    return jnp.einsum("kdr,knr->knd", bases, coef).reshape(k_num * n_k, d)


@pytest.mark.parametrize("dim, rank", slow_except([(48, 4), (512, 8)], fast=[(48, 4)]))
def test_clustering_recovers_orthogonal_subspaces_from_r_plus_one_points(dim, rank):
    """N_k = r + 1 points on each of 3 orthogonal rank-r subspaces (R^512, r = 8 in the slow
    suite): random restarts of K-subspaces miss them; the spectral start finds them, and its
    certificate is zero."""
    mix = ms.MoLRG.random(jax.random.key(0), dim=dim, rank=rank, num_components=3)
    x = _points(jax.random.key(1), mix.bases, rank + 1)
    u = lowrank.subspace_clustering(jax.random.key(2), x, 3, rank)
    assert ms.metrics.subspace_recovery(u, mix.bases).max_error < 1e-3
    assert float(lowrank.subspace_residual(x, u)) < 1e-5
    assert float(lowrank.subspace_residual(x, mix.bases)) < 1e-5  # the truth scores 0


def test_certificate_flags_a_miss_without_the_truth():
    mix = ms.MoLRG.random(jax.random.key(3), dim=32, rank=2, num_components=2)
    x = _points(jax.random.key(4), mix.bases, 6)
    wrong = ms.MoLRG.random(jax.random.key(5), dim=32, rank=2, num_components=2).bases
    assert float(lowrank.subspace_residual(x, wrong)) > 0.5


def test_mask_equals_dropping_the_rows():
    mix = ms.MoLRG.random(jax.random.key(6), dim=24, rank=2, num_components=3)
    x = _points(jax.random.key(7), mix.bases, 4)
    padded = jnp.concatenate([x, 5.0 * jnp.ones((5, 24))])  # garbage rows, masked out
    mask = jnp.arange(17) < 12
    u = lowrank.subspace_clustering(jax.random.key(8), padded, 3, 2, mask=mask)
    assert ms.metrics.subspace_recovery(u, mix.bases).max_error < 1e-4
    with pytest.raises(ValueError, match="mask"):
        lowrank.subspace_clustering(jax.random.key(8), padded, 3, 2, mask=mask[:5])


def test_cluster_pca_matches_svd_at_float_accuracy():
    """Each cluster: rank 3 plus noise of size 0.01; the top-3 directions against an SVD."""
    signal = jax.random.normal(jax.random.key(9), (20, 3)) @ jax.random.normal(
        jax.random.key(10), (3, 300))
    x = signal + 0.01 * jax.random.normal(jax.random.key(11), (20, 300))
    labels = jnp.asarray(np.r_[np.zeros(12), np.ones(8)].astype(np.int32))
    u = lowrank._cluster_pca(x, labels, 2, 3, power=lowrank.FINAL_POWER)
    for c in range(2):
        ref = np.linalg.svd(np.asarray(x)[np.asarray(labels) == c], full_matrices=False)[2][:3].T
        err = ms.metrics.subspace_recovery(u[c][None], jnp.asarray(ref)[None]).max_error
        assert err < 1e-4


@pytest.mark.parametrize("bad, match", [({"num_components": 0}, "num_components"),
                                        ({"restarts": 0}, "restarts"),
                                        ({"rank": 0}, "rank"), ({"rank": 40}, "rank")])
def test_clustering_argument_checks(bad, match):
    args = dict(num_components=2, rank=2, restarts=2)
    args.update(bad)
    x = jnp.ones((6, 32))
    with pytest.raises(ValueError, match=match):
        lowrank.subspace_clustering(jax.random.key(0), x, args["num_components"], args["rank"],
                                    restarts=args["restarts"])


def test_cells_are_nested_masked_and_on_the_subspaces():
    x, mask, bases, n_ks = e5._cells(jax.random.key(0), 2, 16, 3, seeds=2)
    assert x.shape == (12, 3 * 16, 16) and list(n_ks[:6]) == [1, 2, 3, 4, 8, 16]
    assert np.all(np.asarray(mask).sum(1) == 3 * n_ks)
    for i in range(len(n_ks)):
        xi = np.asarray(x[i])[np.asarray(mask[i])]
        assert float(lowrank.subspace_residual(jnp.asarray(xi), bases[i])) < 1e-5
        assert np.all(np.asarray(x[i])[~np.asarray(mask[i])] == 0)
    # the 3-point sets of a seed extend its 2-point sets (nested), new seed: new subspaces
    assert np.array_equal(np.asarray(x[1])[np.asarray(mask[1])],
                          np.asarray(x[2])[np.asarray(mask[1])])
    assert not np.allclose(bases[0], bases[6])


def test_k1_selection_loss_is_the_noise_expectation():
    """K = 1 uses the closed form; it matches a Monte Carlo average of the same loss."""
    mix = ms.MoLRG.random(jax.random.key(1), dim=8, rank=2, num_components=1)
    x = _points(jax.random.key(2), mix.bases, 5)
    mask = jnp.ones(5, bool)
    sigmas = jnp.asarray([0.05, 0.3])
    closed = e5._selection_losses(mix.bases, x, mask, None, sigmas)
    eps = jax.random.normal(jax.random.key(3), (5, 20000, 8))
    u = mix.bases[0]
    for s, ref in zip(np.asarray(sigmas), np.asarray(closed), strict=True):
        noisy = x[:, None, :] + s * eps
        den = (noisy @ u @ u.T) / (1 + s * s)
        mc = e5._edm_x0_weight(s) * np.mean(np.sum((den - x[:, None, :]) ** 2, -1))
        assert abs(mc - ref) / ref < 0.02


@pytest.mark.slow
def test_quick_run_verdicts_are_the_recorded_ones():
    table = ms.experiments.run("E5", "quick")
    review = ms.experiments.review(table)
    assert table.valid and review.ok, table.format()
    assert style_problems(ms.experiments.plot(table)) == []
    for row in table.rows:
        if row.kind == "claim":
            assert row.evidence["seeds"] >= 3


def test_transition_helper_counts_late_failures():
    rates = {1: ms.experiments.protocol.rate([0, 0, 0]),
             2: ms.experiments.protocol.rate([1, 1, 1]),
             4: ms.experiments.protocol.rate([0, 0, 1]),
             8: ms.experiments.protocol.rate([1, 1, 1])}
    assert e5._transition_ratio(rates, 2) == 4.0
    assert math.isinf(e5._transition_ratio({1: rates[1]}, 2))


def test_plain_gram_schmidt_is_the_positive_diagonal_qr():
    a = jax.random.normal(jax.random.key(12), (2, 40, 6))
    q, r = np.linalg.qr(np.asarray(a))
    q = q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
    np.testing.assert_allclose(lowrank._orthonormal_columns(a), q, atol=1e-5)
    dep = a.at[:, :, 3].set(a[:, :, 1])  # a dependent column: still orthonormal columns
    out = np.asarray(lowrank._orthonormal_columns(dep))
    np.testing.assert_allclose(np.einsum("kdr,kds->krs", out, out),
                               np.broadcast_to(np.eye(6), (2, 6, 6)), atol=1e-5)

"""E5 helpers against references; the quick run's claims in the slow suite."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.experiments import e5_subspace_recovery as e5
from manifold_scores.models import lowrank


def test_k_subspaces_recovers_orthogonal_subspaces():
    mix = ms.MoLRG.random(jax.random.key(0), dim=24, rank=2, num_components=3)
    x, _ = e5._data(jax.random.key(1), mix.bases, 12)
    u = e5._k_subspaces(jax.random.key(2), jnp.asarray(x), 3, 2, 10, 20)
    assert ms.metrics.subspace_recovery(u, mix.bases).max_error < 1e-4


@pytest.mark.slow
def test_zero_padding_leaves_pca_and_k_subspaces_unchanged():
    mix = ms.MoLRG.random(jax.random.key(3), dim=16, rank=2, num_components=2)
    x, _ = e5._data(jax.random.key(4), mix.bases, 5)
    padded = jnp.concatenate([jnp.asarray(x), jnp.zeros((7, 16))])
    err = ms.metrics.subspace_recovery(lowrank.pca(padded, 4), lowrank.pca(x, 4)).max_error
    assert err < 1e-4
    a = e5._k_subspaces(jax.random.key(5), jnp.asarray(x), 2, 2, 4, 10)
    b = e5._k_subspaces(jax.random.key(5), padded, 2, 2, 4, 10)
    assert ms.metrics.subspace_recovery(a, b).max_error < 1e-4


def test_error_below_r_samples_matches_the_span_argument():
    """With N_k < r noiseless points, PCA spans N_k true directions: |P_hat - P|_F^2 is about
    2 (r - N_k) in high d, i.e. a normalised error sqrt(1 - N_k / r). (The experiment pads
    training sets with zero rows, so the SVD returns r directions even when N_k < r.)"""
    mix = ms.MoLRG.random(jax.random.key(6), dim=256, rank=4, num_components=1)
    x, _ = e5._data(jax.random.key(7), mix.bases, 2)
    x = jnp.concatenate([jnp.asarray(x), jnp.zeros((6, 256))])
    err = e5._errors(lowrank.pca(x, 4)[None], mix.bases, 4)[0]
    assert abs(err - math.sqrt(0.5)) < 0.05


def test_transition_is_the_first_recovered_ratio():
    assert e5._transition(np.array([0.5, 1, 2]), np.array([0.7, 0.05, 0.0])) == 1.0
    assert e5._transition(np.array([0.5, 1, 2]), np.array([0.7, 0.5, 0.3])) == math.inf


# A measured disagreement with the paper, not a bug: the claim rows are computed honestly and
# do not hold at quick size. strict: the day they hold, this test fails and asks to be updated.
@pytest.mark.xfail(strict=True, reason=(
    "E5: DSM-trained low-rank model and K-subspaces do not all reach the "
    "N_k ~ r transition; see notebooks/e5_subspace_recovery.ipynb"))
@pytest.mark.slow
def test_quick_run_claims():
    table = ms.experiments.run("E5", "quick")
    assert all(r.holds is not None for r in table.rows)
    assert table.ok, table.format()

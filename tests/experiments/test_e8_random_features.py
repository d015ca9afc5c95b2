"""E8: the nested ridge path equals the library's closed-form fit on the same draws; the quick
run in the slow suite."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import pytest

import manifold_scores as ms
from manifold_scores import losses
from manifold_scores.experiments import e8_random_features as e8
from manifold_scores.models import random_features as rf
from tests.helpers import assert_rel_close


@pytest.mark.slow
def test_ridge_path_matches_fit_ridge(x64):
    proc = ms.EDM()
    params = rf.init(jax.random.key(0), 6, 32, proc)
    x0 = jax.random.normal(jax.random.key(1), (40, 6))
    sigma = 0.3
    key = jax.random.key(2)
    # the draws fit_ridge makes with this key at one time
    _, eps, _ = losses._fixed_draw(key, x0, 1.0, sigma, 1, False)
    path = e8.ridge_path(params, x0, eps, sigma, (20, 40), 1e-3)
    ref = rf.fit_ridge(key, params, x0, sigma, ridge=1e-3).readout
    assert_rel_close(path[-1], ref, 1e-8, axis=None, what="readout")
    # the first prefix is the fit on the first 20 draws
    ref20 = e8.ridge_path(params, x0[:20], eps[:20], sigma, (20,), 1e-3)[0]
    assert_rel_close(path[0], ref20, 1e-10, axis=None, what="prefix")


def test_n_star_interpolates_in_log_log():
    assert e8._n_star([100, 1000], [0.5, 0.005], 0.05) == pytest.approx(math.sqrt(1e5))
    assert e8._n_star([100, 1000], [0.5, 0.2], 0.05) == math.inf


def test_embedding_has_the_intrinsic_dimension():
    emb = e8._Embedding(jax.random.key(0), 64, 4)
    x = emb.sample(jax.random.key(1), 200)
    jac = jax.jacfwd(lambda z: z @ emb.q1.T + jnp.tanh(z @ emb.w.T) @ emb.q2.T)(jnp.ones(4))
    assert x.shape == (200, 64)
    assert int(jnp.linalg.matrix_rank(jac)) == 4


# A measured disagreement with the paper, not a bug: the claim rows are computed honestly and
# do not hold at quick size. strict: the day they hold, this test fails and asks to be updated.
@pytest.mark.xfail(strict=True, reason=(
    "E8: N* grows affinely (offset from the double-descent peak), exponent "
    "outside 1 +- 0.3; see notebooks/e8_random_features.ipynb"))
@pytest.mark.slow
def test_quick_run_claims():
    table = ms.experiments.run("E8", "quick")
    assert table.ok, table.format()

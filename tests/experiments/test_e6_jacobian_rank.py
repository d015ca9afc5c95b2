"""E6: the exact MoLRG denoiser's Jacobian rank at the two ends of the SNR range; the quick
run in the slow suite."""

from __future__ import annotations

import jax
import pytest

import manifold_scores as ms


@pytest.mark.parametrize(("sigma", "expected"), [(0.01, 3), (80.0, 9)])
def test_exact_denoiser_rank(sigma, expected):
    mix = ms.MoLRG.random(jax.random.key(0), dim=32, rank=3, num_components=3)
    x = mix.sample(jax.random.key(1), 4) + sigma * jax.random.normal(jax.random.key(2), (4, 32))
    jac = jax.vmap(jax.jacfwd(lambda y: mix.denoise(y, 1.0, sigma)))(x)
    assert ms.metrics.jacobian_rank(jac).tolist() == [expected] * 4


@pytest.mark.slow
def test_quick_run_claims():
    table = ms.experiments.run("E6", "quick")
    assert table.ok, table.format()

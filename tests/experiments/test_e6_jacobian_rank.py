"""E6: the exact MoLRG denoiser's Jacobian rank at the two ends of the SNR range, the Gaussian
control's covariance, the study's table on a tiny configuration, and the quick run against the
recorded verdicts (slow)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.experiments import e6_jacobian_rank as e6
from manifold_scores.experiments._plotting import style_problems
from manifold_scores.experiments._registry import review
from manifold_scores.experiments._table import CLAIM, CONTROL, VERDICTS

TINY = dict(min_steps=100, max_steps=100, n_train=256, n_eval=16, n_jac=3, width=8, depth=1,
            batch=16)


@pytest.mark.parametrize(("sigma", "expected"), [(0.01, 3), (80.0, 9)])
def test_exact_denoiser_rank(sigma, expected):
    mix = ms.MoLRG.random(jax.random.key(0), dim=32, rank=3, num_components=3)
    x = mix.sample(jax.random.key(1), 4) + sigma * jax.random.normal(jax.random.key(2), (4, 32))
    jac = jax.vmap(jax.jacfwd(lambda y: mix.denoise(y, 1.0, sigma)))(x)
    assert ms.metrics.jacobian_rank(jac).tolist() == [expected] * 4


def test_gaussian_twin_has_the_mixture_covariance_and_rank_kr():
    mix = ms.MoLRG.random(jax.random.key(0), dim=32, rank=3, num_components=3)
    twin = e6.gaussian_twin(mix)
    cov = jnp.mean(jnp.einsum("kdr,ker->kde", mix.bases, mix.bases), 0)
    u, s = twin.bases[0], twin.scales[0]
    np.testing.assert_allclose((u * s**2) @ u.T, cov, atol=1e-6)
    x = twin.sample(jax.random.key(1), 4) + 0.01 * jax.random.normal(jax.random.key(2), (4, 32))
    jac = jax.vmap(jax.jacfwd(lambda y: twin.denoise(y, 1.0, 0.01)))(x)
    assert ms.metrics.jacobian_rank(jac).tolist() == [9] * 4


def test_tiny_study_table_and_figure():
    table = e6.run("quick", _overrides=TINY)
    controls = [r for r in table.rows if r.kind == CONTROL]
    claims = {r.key: r for r in table.rows if r.kind == CLAIM}
    assert {c.key for c in controls} == {"exact_mixture", "exact_gaussian", "network_gaussian",
                                         "network_untrained"}
    assert set(claims) == {"network_high_snr", "network_low_snr", "network_sigma_min"}
    for row in claims.values():
        assert row.verdict in VERDICTS
        assert row.evidence["seeds"] == 3
        assert {"certificate_gap", "converged", "loss_gap", "ranks_per_seed"} <= set(row.evidence)
        # 100 steps of a width-8 network: not converged and far from the exact loss
        assert row.evidence["converged"] is False and row.verdict == "inconclusive"
    # the untrained network is c_skip x: exactly rank d, learned part zero
    assert np.all(table.data["untrained_rank"] == e6.DIM)
    n_sig = len(e6.SIGMAS)
    assert np.shape(table.data["network_rank"]) == (3, n_sig)
    assert np.shape(table.data["loss_gap"]) == (3, n_sig)
    assert np.shape(table.data["held_out"]) == (1, 6, n_sig)
    assert table.data["steps"] == 100
    table.to_json(with_data=True)

    import matplotlib

    matplotlib.use("Agg")
    fig = e6.plot(table)
    assert style_problems(fig) == []
    for ax in fig.axes:
        assert ax.get_legend() is not None
    matplotlib.pyplot.close(fig)


@pytest.mark.slow
def test_quick_run_matches_the_recorded_verdicts():
    table = ms.experiments.run("E6", "quick")
    result = review(table)
    assert table.valid, table.format()
    assert result.ok, (result, table.format())

"""E3: the quadrature of the tempered chain's stationary law against closed forms, the null
helpers, and the quick run's verdicts (slow)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.experiments import e3_tempered as e3
from manifold_scores.experiments._plotting import style_problems
from tests.helpers import assert_on_protocol


def _von_mises_bins(kappa, mu=0.0):
    return e3.law_bins(lambda t: kappa * np.cos(np.asarray(t) - mu))


@pytest.mark.parametrize("sigma", [1e-3, 1e-2])
def test_untempered_stationary_law_is_p_data_at_small_sigma(sigma):
    """w = 1 (a = 0): the angle law of p_sigma tends to the von Mises law itself; the gap is
    O(sigma^2)."""
    p = e3.stationary_bins(sigma, 1.0, kappa=4.0)
    assert e3.tv_bins(p, _von_mises_bins(4.0)) < 10 * sigma**2


def test_tempered_law_with_tilt_is_the_tilt_von_mises():
    """w -> 0 with a tilt t x_1: the angle law tends to exp(t cos theta) (closed form)."""
    p = e3.stationary_bins(1e-4, 1e-6, kappa=4.0, tilt=(0.7, 0.0))
    assert e3.tv_bins(p, _von_mises_bins(0.7)) < 5e-3
    q = e3.stationary_bins(1e-4, 1e-6, kappa=4.0, tilt=(0.0, 0.7))
    assert e3.tv_bins(q, _von_mises_bins(0.7, math.pi / 2)) < 5e-3


def test_leading_order_law_at_moderate_w():
    """sigma small, w = 0.3: the angle law is p_data^w = von Mises(kappa w) to O(sigma^2/w)."""
    p = e3.stationary_bins(1e-3, 0.3, kappa=4.0, mu=0.5)
    assert e3.tv_bins(p, _von_mises_bins(1.2, 0.5)) < 1e-3


def test_stationary_law_at_very_small_sigma_is_finite():
    p = e3.stationary_bins(1e-6, 1e-9)  # K ~ 1e12: scipy's ive alone gives NaN there
    assert np.all(np.isfinite(p)) and abs(p.sum() - 1) < 1e-12
    assert e3.tv_bins(p, np.full(e3.BINS, 1 / e3.BINS)) < 1e-6


def test_log_ive0_matches_scipy_and_the_asymptote():
    from scipy import special
    k = np.array([0.1, 3.0, 1e3, 1e5])
    np.testing.assert_allclose(e3.log_ive0(k), np.log(special.ive(0, k)), rtol=1e-10)
    assert abs(e3.log_ive0(1e12) + 0.5 * math.log(2 * math.pi * 1e12)) < 1e-9


def test_null_tv_median_is_the_sampling_floor():
    """The TV of n exact draws over B equal bins is about sqrt(B / (2 pi n))."""
    u = np.full(16, 1 / 16)
    null = e3.null_tv(u, 1000)
    assert abs(np.median(null) / math.sqrt(16 / (2 * math.pi * 1000)) - 1) < 0.1
    two = e3.null_tv(u, 1000, two_sample=True)
    assert abs(np.median(two) / np.median(null) - math.sqrt(2)) < 0.15


def test_tv_bins_counts_missing_mass():
    assert e3.tv_bins(np.array([0.5, 0.0]), np.array([0.5, 0.5])) == pytest.approx(0.5)


def test_sigma_for_gives_the_spread():
    for a in (0.0, 0.5, 1.0, 1.5):
        s = e3.sigma_for(a, 0.1)
        assert s ** (1 - a / 2) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="a must"):
        e3.sigma_for(2.0, 0.1)
    with pytest.raises(ValueError, match="eps"):
        e3.sigma_for(1.0, 0.0)


@pytest.mark.slow
def test_quick_run_verdicts_seeds_and_controls():
    table = ms.experiments.run("E3", "quick")
    controls = [r for r in table.rows if r.kind == "control"]
    assert {r.evidence["control"] for r in controls} == {"positive", "negative"}
    assert {"untempered_fails", "unrelaxed_fails"} <= {r.key for r in controls}
    assert_on_protocol(table, 9, controls_pass=True)
    import matplotlib

    matplotlib.use("Agg")
    assert style_problems(ms.experiments.plot(table)) == []

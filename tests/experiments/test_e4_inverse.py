"""E4: the exact references against closed forms, the error normalisation, and the quick run's
verdicts and controls (slow)."""

from __future__ import annotations

import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.experiments import e3_tempered as e3
from manifold_scores.experiments import e4_inverse as e4
from manifold_scores.experiments._plotting import style_problems
from tests.helpers import assert_on_protocol


@pytest.mark.parametrize("kappa, mu", [(0.0, 0.0), (2.0, 1.0)])
def test_plain_stationary_law_tends_to_the_posterior_on_the_circle(kappa, mu):
    """a = 0, sigma -> 0: exp(-v) p_sigma concentrates on the circle with angle law
    exp(-v(cos theta)) prior(theta) (closed form)."""
    p = e3.stationary_bins(1e-3, 1.0, kappa=kappa, mu=mu, potential=e4.potential)
    q = e3.law_bins(e4.posterior_log_angle(kappa, mu))
    assert e3.tv_bins(p, q) < 2e-3


def test_tempered_law_forgets_the_prior():
    """w -> 0: the von Mises prior's tempered law is the uniform prior's (control (i)'s
    mechanism), and far from the von Mises posterior."""
    s, a = 1e-8, e4.TEMPER
    lv = e3.stationary_bins(s, s**a, kappa=2.0, mu=1.0, potential=e4.potential)
    lu = e3.stationary_bins(s, s**a, kappa=0.0, potential=e4.potential)
    assert e3.tv_bins(lv, lu) < 1e-6
    assert e3.tv_bins(lv, e3.law_bins(e4.posterior_log_angle(2.0, 1.0))) > 0.3


@pytest.mark.parametrize("a, g", [(1.8, 1.0), (1.8, 2.1), (0.0, -1.0), (0.0, 1.0)])
def test_error_drift_is_c0_at_sigma_max_and_scales_as_sigma_a_minus_g(a, g):
    s_max = 0.3
    c = e4.error_scale(a, g, s_max)
    for s in (s_max, 0.01):
        drift = s**a * c * s ** (-g)
        assert drift == pytest.approx(e4.C0 * (s / s_max) ** (a - g))


def test_potential_and_its_gradient_agree():
    x = np.array([0.3, -0.8])
    eps = 1e-6
    fd = (e4.potential(x[0] + eps, x[1]) - e4.potential(x[0] - eps, x[1])) / (2 * eps)
    grad = np.asarray(e4._grad_v(x))
    assert grad[0] == pytest.approx(fd, rel=1e-5) and grad[1] == 0.0


@pytest.mark.slow
def test_quick_run_verdicts_seeds_and_controls():
    table = ms.experiments.run("E4", "quick")
    keys = {r.key for r in table.rows if r.kind == "control"}
    assert {"generic_tempered_misses", "uniform_plain_only_g_below_0"} <= keys
    assert_on_protocol(table, 9, controls_pass=True)
    import matplotlib

    matplotlib.use("Agg")
    assert style_problems(ms.experiments.plot(table)) == []

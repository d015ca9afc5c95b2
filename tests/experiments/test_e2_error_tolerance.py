"""E2 at quick size under the study protocol: every claim row carries its verdict, at least 3
seeds and its controls; the must-fail controls fail as they must (slow: about 40 s)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.experiments import _plotting
from tests.helpers import assert_on_protocol

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def table():
    return ms.experiments.run("E2", "quick")


@pytest.mark.slow
def test_every_claim_has_verdict_seeds_and_controls(table):
    claims = assert_on_protocol(table, 11)
    assert len(claims) == 11


@pytest.mark.slow
def test_slopes_follow_min_1_2_minus_g(table):
    # independent reference: the balance of a normal error c sigma^-g against the restoring
    # force sigma^-2 puts the samples c sigma^(2-g) off M; the exact law's spread is ~ sigma
    slopes = table.data["slopes"]
    for g in (1.5, 1.9, 2.0, 2.1, 2.5):
        s = np.asarray(slopes[f"dist g={g:g}"])
        assert np.max(np.abs(s - min(1.0, 2.0 - g))) < 0.05, (g, s)
    assert np.all(np.asarray(slopes["dist g=1.9"]) > 0)
    assert np.all(np.asarray(slopes["dist g=2.1"]) < 0)


@pytest.mark.slow
def test_must_fail_controls_fail_as_they_must(table):
    ctrl = {r.key: r for r in table.rows if r.kind == "control"}
    assert ctrl["must_fail.g=2"].holds and ctrl["must_fail.g=2.5"].holds
    assert ctrl["must_fail.g=2.5"].measured.hi < 0


@pytest.mark.slow
def test_figure_style(table):
    assert _plotting.style_problems(ms.experiments.plot(table)) == []

"""E7: the crossing interpolation; the quick run in the slow suite."""

from __future__ import annotations

import math

import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.experiments import e7_generalisation as e7


def test_crossing_interpolates_in_log_ratio():
    r = np.array([1.0, 10.0, 100.0])
    assert e7._crossing(r, [0.0, 0.5, 1.0]) == pytest.approx(10.0)
    assert e7._crossing(r, [0.0, 0.25, 0.75]) == pytest.approx(10 ** 1.5)
    assert e7._crossing(r, [0.6, 0.9, 1.0]) == -math.inf
    assert e7._crossing(r, [0.0, 0.1, 0.2]) == math.inf


@pytest.mark.slow
def test_quick_run_claims():
    table = ms.experiments.run("E7", "quick")
    assert table.ok, table.format()

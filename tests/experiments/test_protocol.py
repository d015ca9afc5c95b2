"""The study protocol: intervals against scipy, verdict rules, transitions, plateaus, and the
registry's review of controls and recorded verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from manifold_scores.experiments import REGISTRY, protocol, register
from manifold_scores.experiments._registry import review


@pytest.mark.parametrize("k, n", [(0, 3), (3, 3), (9, 10), (17, 40)])
def test_wilson_matches_scipy(k, n):
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = protocol.wilson(k, n)
    assert lo == pytest.approx(ref.low, abs=2e-4) and hi == pytest.approx(ref.high, abs=2e-4)


def test_rate_spread_and_null_keep_nan():
    r = protocol.rate([True, True, False])
    assert r.value == pytest.approx(2 / 3) and r.n == 3 and r.lo < 2 / 3 < r.hi
    assert math.isnan(protocol.spread([1.0, float("nan"), 2.0]).median)
    assert all(math.isnan(v) for v in protocol.null_band([0.1, float("nan")]))
    lo, hi = protocol.null_band(np.arange(1001.0))
    assert lo == pytest.approx(25.0) and hi == pytest.approx(975.0)


def test_spread_names_what_it_counts():
    values = np.array([[3.0, 1.0, 2.0], [6.0, 5.0, 4.0]])  # 2 settings x 3 seeds
    assert str(protocol.spread(values[0])) == "2 [1, 3] (3 seeds)"
    pooled = protocol.spread(values, unit="runs")
    assert (pooled.median, pooled.lo, pooled.hi, pooled.n) == (3.5, 1.0, 6.0, 6)
    assert str(pooled).endswith("(6 runs)")


def test_verdict_rules():
    v = protocol.verdict
    assert v(True) == "holds" and v(False) == "does not hold" and v(None) == "inconclusive"
    assert v(False, certificate_gap=0.05) == "inconclusive"  # the optimiser failed
    assert v(False, certificate_gap=float("nan")) == "inconclusive"
    assert v(False, certificate_gap=-0.01) == "does not hold"
    assert v(False, converged=False) == "inconclusive"
    assert v(True, certificate_gap=0.3) == "holds"
    assert v(True, controls_passed=False) == "inconclusive"


def test_transition_ignores_nothing_after_the_first_success():
    xs = [0.5, 1, 2, 4, 8]
    assert protocol.transition(xs, [0, 0.2, 0.9, 1, 1]) == 2
    assert protocol.transition(xs, [0, 0.9, 0.2, 1, 1]) == 4  # a later failure counts
    assert protocol.transition(xs, [1, 1, 1, 1, 0]) == math.inf
    assert protocol.transition(xs, [1, 1, 1, 1, 1]) == 0.5


def test_plateau_criterion():
    rng = np.random.default_rng(0)
    flat = 1.0 + np.exp(-np.arange(2000) / 50) + 0.01 * rng.standard_normal(2000)
    falling = np.linspace(2.0, 1.0, 2000) + 0.01 * rng.standard_normal(2000)
    assert protocol.plateaued(flat)
    assert not protocol.plateaued(falling)
    assert not protocol.plateaued(flat[:150])  # too short to tell
    assert not protocol.plateaued(np.r_[flat, np.nan])


def test_study_needs_seeds_and_controls():
    study = protocol.Study("X")
    study.control("big effect seen", "positive", passed=True)
    study.control("no effect where none", "negative", passed=False)
    row = study.claim("effect", key="k", measured=1.0, expected=">0", test=True, seeds=3)
    assert row.verdict == "inconclusive"
    assert row.evidence["controls"]["no effect where none"] is False
    few = study.claim("few seeds", key="f", measured=1.0, expected=">0", test=True, seeds=1,
                      controls=["big effect seen"])
    assert few.verdict == "inconclusive" and "seeds" in few.evidence["note"]
    table = study.table()
    assert not table.valid and table.verdicts == {"k": "inconclusive", "f": "inconclusive"}
    with pytest.raises(ValueError, match="kind"):
        study.control("x", "neutral", passed=True)


@pytest.fixture
def recorded_experiment():
    state = {"passed": True, "test": False}

    def run(size="quick", *, seed=0):
        study = protocol.Study("REC", size)
        study.control("must show", "positive", passed=state["passed"])
        study.claim("claim a", key="a", measured=0.0, expected="> 1", test=state["test"],
                    seeds=3)
        study.claim("claim b", key="b", measured=2.0, expected="> 1", test=True, seeds=3)
        return study.table()

    register("REC", "recorded", "tests", run,
             recorded={"a": ("does not hold", "measured: the effect is absent")})
    yield state
    REGISTRY.pop("REC")


def test_review_compares_with_the_record(recorded_experiment):
    import manifold_scores as ms

    assert review(ms.experiments.run("REC")).ok  # a finding that stays a finding is fine
    recorded_experiment["test"] = True
    rv = review(ms.experiments.run("REC"))
    assert rv.changed == (("a", "holds", "does not hold"),) and not rv.failed_controls
    recorded_experiment["test"], recorded_experiment["passed"] = False, False
    rv = review(ms.experiments.run("REC"))
    assert rv.failed_controls == ("must show",) and not rv.ok


def test_register_refuses_a_bad_record():
    with pytest.raises(ValueError, match="recorded"):
        register("BAD", "bad", "tests", lambda size="quick": None, recorded={"a": "holds"})

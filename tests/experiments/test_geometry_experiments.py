"""E1-E4 at quick size: every asserted claim holds (slow: about a minute each on 2 cores)."""

from __future__ import annotations

import pytest

import manifold_scores as ms


@pytest.mark.slow
@pytest.mark.parametrize("exp_id", ["E1", "E2", "E3", "E4"])
def test_quick_claims_hold(exp_id):
    table = ms.experiments.run(exp_id, "quick")
    assert table.rows and table.ok, table.format()
    assert all(isinstance(r.holds, bool | None) for r in table.rows)

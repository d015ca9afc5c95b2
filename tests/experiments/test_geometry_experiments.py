"""E1-E4 at quick size: every control passes and every verdict is the recorded one (slow)."""

from __future__ import annotations

import pytest

import manifold_scores as ms


@pytest.mark.slow
@pytest.mark.parametrize("exp_id", ["E1", "E2", "E3", "E4"])
def test_quick_verdicts_as_recorded(exp_id):
    table = ms.experiments.run(exp_id, "quick")
    review = ms.experiments.review(table)
    assert table.rows and table.valid and review.ok, (review, table.format())

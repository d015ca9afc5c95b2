"""The experiment registry and the Row / Table types (no experiment is run here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.experiments import REGISTRY, Row, Table, register


@pytest.fixture
def dummy():
    def run(size="quick", *, seed=0):
        ms.experiments._table.check_size(size)
        return Table("DUMMY", size, (Row("two is two", 2.0, "2", True),
                                     Row("an observation", "[1, 2]", "shown only", None)),
                     {"x": [1.0, 2.0]})

    register("DUMMY", "a test experiment", "tests", run, None)
    yield
    REGISTRY.pop("DUMMY")


def test_registry_holds_the_geometry_experiments_in_order():
    ids = list(REGISTRY)
    assert ids[:5] == ["core", "E1", "E2", "E3", "E4"]
    for exp in REGISTRY.values():
        assert callable(exp.run)
        assert exp.id == "core" or callable(exp.plot)


def test_run_times_and_titles(dummy):
    table = ms.experiments.run("dummy", "quick")  # ids are case-insensitive
    assert table.experiment == "DUMMY" and table.title == "a test experiment"
    assert table.seconds >= 0 and table.ok
    assert ms.experiments.plot(table) is None


def test_table_ok_ignores_observations_and_fails_on_false():
    t = Table("X", "quick", (Row("a", 1.0, "1", True), Row("b", "x", "y", None)))
    assert t.ok
    assert not Table("X", "quick", (Row("a", 1.0, "1", False),)).ok


def test_table_json_and_text(dummy):
    table = ms.experiments.run("DUMMY", "quick")
    payload = json.loads(table.to_json(with_data=True))
    assert payload["rows"][0] == {"claim": "two is two", "measured": 2.0, "expected": "2",
                                  "holds": True, "verdict": "holds"}
    assert payload["rows"][1]["holds"] is None and payload["data"] == {"x": [1.0, 2.0]}
    text = table.format()
    assert "claim" in text and "two is two" in text and "n/a" in text and "2.000" in text


def test_unknown_id_and_size_rejected(dummy):
    with pytest.raises(ValueError, match="unknown experiment"):
        ms.experiments.get("E99")
    with pytest.raises(ValueError, match="size"):
        ms.experiments.run("DUMMY", "medium")


def test_compact_table_fits_100_columns_and_wide_keeps_one_line_per_row():
    long = "a claim whose text is long enough to need wrapping " * 4
    rows = (Row(long, 0.123456, "an expectation that is also rather long " * 3, True),
            Row("rank", np.int64(3), "3", True),
            Row("observed", "x", "reported", None))
    table = Table("E1", "quick", rows)
    compact = table.format()
    assert max(len(line) for line in compact.splitlines()) <= 100, compact
    assert "a claim whose text" in compact and "measured 0.123" in compact
    assert "measured 3;" in compact  # an integer prints as one, not 3.000
    wide = table.format(wide=True).splitlines()
    assert len(wide) == 2 + len(rows) and max(len(line) for line in wide) > 100


def test_records_can_differ_by_size():
    def run(size="quick", *, seed=0):
        return Table("SIZED", size, (Row("budget-bound", 0.5, "1", None, verdict="inconclusive",
                                         key="k"),))

    register("SIZED", "records per size", "tests", run, None,
             recorded={"k": {"quick": ("inconclusive", "the quick budget is too small")}})
    try:
        quick, full = (ms.experiments.review(run(s)) for s in ("quick", "full"))
        assert quick.ok
        assert full.changed == (("k", "inconclusive", "holds"),)  # full expects "holds"
        with pytest.raises(ValueError, match="keyed by size"):
            register("SIZED", "bad", "tests", run, None,
                     recorded={"k": {"medium": ("holds", "no such size")}})
        with pytest.raises(ValueError, match="recorded"):
            register("SIZED", "bad", "tests", run, None, recorded={"k": ("maybe", "")})
    finally:
        REGISTRY.pop("SIZED")

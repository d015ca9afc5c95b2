"""``manifold-scores verify`` on a stand-in experiment (fast), and ``demo`` (slow)."""

from __future__ import annotations

import json

import pytest

from manifold_scores import cli
from manifold_scores.experiments import REGISTRY, Row, Table, register


@pytest.fixture
def fake():
    outcome = {"holds": True}

    def run(size="quick", *, seed=0):
        return Table("FAKE", size, (Row("the claim", 1.0, "1", outcome["holds"]),), {"y": [1, 2]})

    def plot(table):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot(table.data["y"])
        return fig

    register("FAKE", "stand-in", "tests", run, plot)
    yield outcome
    REGISTRY.pop("FAKE")


def test_verify_prints_writes_json_and_exits_zero(fake, tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert cli.main(["verify", "--quick", "--only", "FAKE", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "[1/1] FAKE" in text and "the claim" in text and "all claims hold" in text
    payload = json.loads(out.read_text())
    assert payload["size"] == "quick" and payload["ok"] is True
    assert payload["experiments"][0]["rows"][0]["holds"] is True


def test_verify_exit_code_when_a_claim_fails(fake, capsys):
    fake["holds"] = False
    assert cli.main(["verify", "--quick", "--only", "fake"]) == cli.CLAIM_FAILS == 3
    assert "SOME CLAIMS FAIL" in capsys.readouterr().out


def test_verify_writes_plots(fake, tmp_path):
    pytest.importorskip("matplotlib", reason="--plots needs matplotlib (notebooks extra)")
    assert cli.main(["verify", "--quick", "--only", "FAKE", "--plots", str(tmp_path)]) == 0
    png = tmp_path / "FAKE.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"


def test_verify_rejects_unknown_ids(fake):
    with pytest.raises(ValueError, match="unknown experiment"):
        cli.main(["verify", "--only", "E99"])


@pytest.mark.slow
def test_demo_recovers_the_weights(capsys):
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "distance to the sphere" in out and "true weight" in out

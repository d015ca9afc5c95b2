"""``manifold-scores verify`` on a stand-in experiment (fast), and ``demo`` (slow)."""

from __future__ import annotations

import json
import os

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
    assert "[1/1] FAKE" in text and "the claim" in text
    assert "every study valid, every verdict as recorded" in text
    payload = json.loads(out.read_text())
    assert payload["size"] == "quick" and payload["ok"] is True
    assert payload["experiments"][0]["rows"][0]["holds"] is True


def test_verify_exit_code_when_a_verdict_changes(fake, capsys):
    fake["holds"] = False  # recorded (by default) as holding
    assert cli.main(["verify", "--quick", "--only", "fake"]) == cli.VERDICT_CHANGED == 3
    out = capsys.readouterr().out
    assert "SOME VERDICTS CHANGED" in out and "VERDICT CHANGED FAKE the claim" in out


@pytest.fixture
def studied():
    """A protocol study whose claim does not hold, recorded as such, with one control."""
    from manifold_scores.experiments import protocol

    outcome = {"control": True, "test": False}

    def run(size="quick", *, seed=0):
        study = protocol.Study("STUDIED", size)
        study.control("shows the effect", "positive", passed=outcome["control"])
        study.claim("the effect is small", key="small", measured=2.0, expected="< 1",
                    test=outcome["test"], seeds=3)
        return study.table()

    register("STUDIED", "stand-in study", "tests", run,
             recorded={"small": ("does not hold", "a finding recorded by the library's run")})
    yield outcome
    REGISTRY.pop("STUDIED")


def test_verify_exit_status_means_the_studies_are_valid(studied, tmp_path, capsys):
    out = tmp_path / "rows.json"
    # a recorded finding is not an error: status 0, and the table says "does NOT hold"
    assert cli.main(["verify", "--quick", "--only", "STUDIED", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "does NOT hold" in text and "1 claim(s) do not hold: findings" in text
    row = json.loads(out.read_text())["experiments"][0]["rows"][1]
    assert row["verdict"] == "does not hold" and row["evidence"]["seeds"] == 3
    studied["test"] = True  # the verdict changes
    assert cli.main(["verify", "--quick", "--only", "STUDIED"]) == 3
    studied["control"] = False  # a failed control: the study is invalid
    assert cli.main(["verify", "--quick", "--only", "STUDIED"]) == cli.CONTROL_FAILED == 4
    assert "CONTROL FAILED STUDIED shows the effect" in capsys.readouterr().out


def test_verify_skips_an_experiment_whose_extra_is_missing(fake, tmp_path, capsys):
    exp = REGISTRY["FAKE"]
    register("FAKE", exp.title, exp.source, exp.run, exp.plot,
             requires=[("a_module_that_is_not_installed", "data")])
    out = tmp_path / "rows.json"
    assert cli.main(["verify", "--quick", "--only", "FAKE", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert 'skipped: needs the data extra (pip install "manifold-scores[data]")' in text
    assert "the claim" not in text
    payload = json.loads(out.read_text())
    assert payload["skipped"] == [{"experiment": "FAKE", "extra": "data"}]
    assert payload["experiments"] == []


def test_verify_writes_plots(fake, tmp_path):
    pytest.importorskip("matplotlib", reason="--plots needs matplotlib (notebooks extra)")
    assert cli.main(["verify", "--quick", "--only", "FAKE", "--plots", str(tmp_path)]) == 0
    png = tmp_path / "FAKE.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"


def _usage_error(capsys, argv) -> str:
    """Run ``main(argv)``, expect a usage error (status 2) before anything runs; its stderr."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert "[1/" not in captured.out  # no experiment started
    return captured.err


@pytest.mark.parametrize("only", ["E99", "E1,nope", ",", "", " , "])
def test_verify_rejects_empty_or_unknown_ids_before_running(fake, capsys, only):
    err = _usage_error(capsys, ["verify", "--only", only])
    assert "manifold-scores verify: error: argument --only:" in err
    assert "valid ids: core, E1" in err and "FAKE" in err
    assert ("unknown experiment id" in err) == bool(only.strip(" ,"))


def test_verify_selects_ids_case_insensitively_once_each(fake):
    assert cli.select_experiments("fake, FAKE,E1") == ["FAKE", "E1"]
    assert cli.select_experiments(None) == list(REGISTRY)
    with pytest.raises(ValueError, match="argument --only: unknown experiment id 'E99'"):
        cli.verify(only="E99")


def test_verify_rejects_unwritable_outputs_before_running(fake, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for argv, arg in [(["--json", str(blocker / "rows.json")], "--json"),
                      (["--json", str(tmp_path)], "--json"),
                      (["--plots", str(blocker)], "--plots"),
                      (["--plots", str(blocker / "figures")], "--plots")]:
        err = _usage_error(capsys, ["verify", "--only", "FAKE", *argv])
        assert f"manifold-scores verify: error: argument {arg}:" in err


def test_verify_creates_the_json_directory(fake, tmp_path):
    out = tmp_path / "new" / "dir" / "rows.json"
    assert cli.main(["verify", "--quick", "--only", "FAKE", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["ok"] is True


def test_write_json_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "rows.json"
    cli.write_json(str(out), {"run": 1})
    assert json.loads(out.read_text()) == {"run": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as open(path, "w") would make it
    # A payload that cannot be serialised, and a write that fails after the file has content:
    # the earlier file is untouched and no temporary file is left behind.
    with pytest.raises(TypeError):
        cli.write_json(str(out), {"run": object()})

    def fail(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli.os, "fsync", fail)
    with pytest.raises(OSError, match="No space left"):
        cli.write_json(str(out), {"run": 2})
    monkeypatch.undo()
    assert json.loads(out.read_text()) == {"run": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.json"]
    cli.write_json(str(out), {"run": 3})
    assert json.loads(out.read_text()) == {"run": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.json"]


def test_verify_reports_a_failed_json_write(fake, tmp_path, monkeypatch, capsys):
    def fail(path, payload):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "write_json", fail)
    out = tmp_path / "rows.json"
    assert cli.main(["verify", "--quick", "--only", "FAKE", "--json", str(out)]) == 1
    captured = capsys.readouterr()
    assert "the claim" in captured.out
    assert "could not write --json" in captured.err and "No space left" in captured.err


@pytest.mark.slow
def test_demo_recovers_the_weights(capsys):
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "distance to the sphere" in out and "true weight" in out

"""The benchmark suite (``python -m benchmarks``) at its smallest sizes.

Speed targets live in the benchmarks, never here: these tests check that every case runs, that
each baseline computes the same score as the kernel (a wrong baseline would make its ratio
meaningless), and that the report and the Done-when checks are produced.
"""

import json

import pytest

pytest.importorskip("benchmarks.common")

from benchmarks import isotropic, molrg, report  # noqa: E402
from benchmarks.__main__ import main  # noqa: E402


def _rows(case):
    return {row["impl"]: row for row in case["rows"]}


@pytest.mark.slow
def test_isotropic_baselines_agree_with_kernel(monkeypatch):
    # the naive baseline timed on half of the batch, its time scaled by 2
    monkeypatch.setattr(isotropic, "NAIVE_ELEMS", 4 * 300 * 6)
    case = isotropic.run_case(8, 300, 6, 0.05, "float32", rounds=2, torch=None)
    rows = _rows(case)
    assert "timed on 4 of 8" in rows["naive"]["note"]
    assert {"kernel", "streamed floor", "bare matmuls", "naive"} <= set(rows)
    for name in ("streamed floor", "naive"):
        assert rows[name]["rel_err"] < 1e-4, name
        assert rows[name]["speedup_q1"] <= rows[name]["speedup"] <= rows[name]["speedup_q3"]
    assert rows["kernel"]["temp_bytes"] > 0 and rows["kernel"]["compile_s"] > 0
    assert any("torch" in note for note in case["notes"])  # skipped with a message


@pytest.mark.slow
def test_molrg_baselines_agree_with_kernel():
    case = molrg.run_case(8, 3, 2, 6, "float32", rounds=2)
    rows = _rows(case)
    assert rows["two-matmul floor"]["rel_err"] < 1e-4
    assert rows["dense solves"]["rel_err"] < 1e-3


@pytest.mark.slow
def test_isotropic_memory_is_compiled_from_shapes():
    case = isotropic.memory_case(4, 4, (8192, 16384), "float32")
    assert [r["N"] for r in case["rows"]] == [8192, 16384]
    assert all(r["streamed floor"]["temp_bytes"] > 0 for r in case["rows"])


def test_done_when_and_markdown():
    row = {"impl": "two-matmul floor", "median_s": 1.0, "q1_s": 0.9, "q3_s": 1.1,
           "compile_s": 0.1, "temp_bytes": 10, "speedup": 0.6, "speedup_q1": 0.5,
           "speedup_q3": 0.7, "rel_err": 1e-7, "note": ""}
    ref = dict(row, impl="kernel")
    for k in ("speedup", "speedup_q1", "speedup_q3"):
        ref.pop(k)
    case = {"family": "molrg", "case": "MoLRG score",
            "shape": {"B": 4096, "K": 10, "r": 16, "d": 1024}, "rows": [ref, row], "notes": []}
    checks = report.done_when([case])
    floor = next(c for c in checks if "within 2x" in c["claim"])
    assert floor["holds"] is True and floor["value"] == 0.6
    dense = next(c for c in checks if "dense" in c["claim"])
    assert dense["holds"] is None  # not measured
    env = {"device": "cpu:cpu", "gpu": False, "cpu_count": 2, "dtype": "float32", "jax": "x",
           "jaxlib": "x", "numpy": "x", "torch": None, "diffrax": None, "loadavg": [1, 1, 1],
           "time": "now"}
    text = report.markdown({"size": "tiny", "environment": env, "results": [case],
                            "done_when": checks, "loadavg_end": [1, 1, 1], "total_s": 1})
    assert "| MoLRG score: B=4096 K=10 r=16 d=1024 | kernel |" in text
    assert "0.6 [0.5, 0.7]" in text and "## Done-when checks" in text


@pytest.mark.slow
def test_entry_point_tiny(tmp_path):
    result = main(["--size", "tiny", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "bench_tiny.json").read_text())
    assert data["environment"]["jax"] and data["done_when"]
    assert {c["family"] for c in result["results"]} >= {"mixtures", "molrg", "samplers",
                                                        "likelihood"}
    assert (tmp_path / "bench_tiny.md").read_text().startswith("# Benchmark results")


def test_unet_cases_get_their_table_and_goal():
    import pathlib

    result = json.loads((pathlib.Path(__file__).parents[1] / "benchmarks" / "results" /
                         "unet_cpu.json").read_text())
    checks = [c for c in report.done_when(result["results"]) if c["claim"].startswith("U-Net")]
    assert len(checks) == 2
    for c in checks:
        case = next(k for k in result["results"] if k["case"].split()[1] in c["claim"])
        torch_row = next(r for r in case["rows"] if r["impl"] == "torch")
        assert c["value"] == torch_row["speedup"] and c["holds"] == (torch_row["speedup"] >= 1)
    text = report.markdown(dict(result, done_when=checks))
    assert "## U-Net on images" in text and "| U-Net training step: image=8x8x1" in text

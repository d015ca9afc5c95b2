"""Markdown tables and the issue's Done-when checks from a benchmark result (the JSON dict)."""

from __future__ import annotations

import math
from typing import Any


def _ms(s):
    return "" if s is None else f"{s * 1e3:.3g}"


def _num(v, fmt="{:.3g}"):
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return fmt.format(v)


def _shape(shape: dict) -> str:
    parts = []
    for k, v in shape.items():
        if k in ("alpha",):
            continue
        parts.append(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


TITLES = {
    "mixtures": "Isotropic-mixture (empirical) score",
    "molrg": "MoLRG score",
    "samplers": "Samplers (fixed steps)",
    "likelihood": "Likelihood",
    "training": "Training steps",
    "unet": "U-Net on images, against the same U-Net in PyTorch",
}


def _timing_table(cases: list[dict]) -> list[str]:
    lines = ["| case | impl | median ms | IQR ms | compile s | XLA temp MiB | time / reference "
             "(median [q1, q3]) | compile / reference | rel. err | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        ref_compile = c["rows"][0].get("compile_s")
        for i, row in enumerate(c["rows"]):
            case = f"{c['case']}: {_shape(c['shape'])}" if i == 0 else ""
            ratio = "reference" if "speedup" not in row else (
                f"{row['speedup']:.3g} [{row['speedup_q1']:.3g}, {row['speedup_q3']:.3g}]")
            crat = ""
            if i and row.get("compile_s") and ref_compile:
                crat = f"{row['compile_s'] / ref_compile:.3g}"
            temp = "" if row.get("temp_bytes") is None else f"{row['temp_bytes'] / 2**20:.3g}"
            lines.append(
                f"| {case} | {row['impl']} | {_ms(row['median_s'])} | "
                f"{_ms(row['q3_s'] - row['q1_s'])} | {_num(row.get('compile_s'))} | {temp} | "
                f"{ratio} | {crat} | {_num(row.get('rel_err'), '{:.1e}')} | "
                f"{row.get('note', '')} |")
        for note in c.get("notes", []):
            lines.append(f"| | *{note}* | | | | | | | | |")
    return lines


def _memory_table(cases: list[dict]) -> list[str]:
    lines = ["| B | N | d | kernel XLA temp MiB | streamed floor XLA temp MiB | kernel compile s |",
             "|---|---|---|---|---|---|"]
    for c in cases:
        for r in c["rows"]:
            lines.append(f"| {r['B']} | {r['N']} | {r['d']} | "
                         f"{r['kernel']['temp_bytes'] / 2**20:.4g} | "
                         f"{r['streamed floor']['temp_bytes'] / 2**20:.4g} | "
                         f"{r['kernel']['compile_s']:.3g} |")
    return lines


def _find(results, family, case_prefix, **shape):
    for c in results:
        if c.get("family") != family or not c.get("case", "").startswith(case_prefix):
            continue
        if all(c["shape"].get(k) == v for k, v in shape.items()):
            return c
    return None


def _row(case, impl):
    if case is None:
        return None
    return next((r for r in case["rows"] if r.get("impl") == impl), None)


def done_when(results: list[dict]) -> list[dict[str, Any]]:
    """The issue's Done-when ratios, evaluated where this run measured their shapes."""
    checks = []

    def add(claim, row, key, op, target, fmt=None, missing="not measured at this size"):
        if row is None or row.get(key) is None:
            checks.append({"claim": claim, "measured": missing, "holds": None})
            return
        v = row[key]
        holds = bool(op(v, target))
        spread = ""
        if key == "speedup":
            spread = f" [{row['speedup_q1']:.3g}, {row['speedup_q3']:.3g}]"
        checks.append({"claim": claim, "measured": (fmt or "{:.3g}").format(v) + spread,
                       "value": v, "target": target, "holds": holds})

    ge = lambda a, b: a >= b  # noqa: E731
    le = lambda a, b: a <= b  # noqa: E731
    c = _find(results, "molrg", "MoLRG", B=4096, K=10, r=16, d=1024)
    add("MoLRG K=10 r=16 d=1024 B=4096: floor time / kernel time >= 0.5 (within 2x)",
        _row(c, "two-matmul floor"), "speedup", ge, 0.5)
    add("MoLRG K=10 r=16 d=1024 B=4096: dense time / kernel time >= 10",
        _row(c, "dense solves"), "speedup", ge, 10.0)
    for sigma, lim in ((1.0, 1.2), (1e-3, 1.4)):
        c = _find(results, "mixtures", "isotropic score", B=1024, N=100_000, d=256, sigma=sigma)
        add(f"Empirical B=1024 N=1e5 d=256 sigma={sigma:g}: floor / kernel >= {1 / lim:.3g} "
            f"(within {lim}x)", _row(c, "streamed floor"), "speedup", ge, 1 / lim)
        add(f"Empirical sigma={sigma:g}: naive / kernel >= 5", _row(c, "naive"), "speedup", ge,
            5.0)
        add(f"Empirical sigma={sigma:g}: torch / kernel > 1", _row(c, "torch cdist"), "speedup",
            lambda a, b: a > b, 1.0)
    for c in results:
        if c.get("case") == "isotropic score memory":
            ns = c["shape"]["N"]
            spread = c.get("kernel_temp_spread")
            checks.append({
                "claim": f"XLA temporaries independent of N (B={c['shape']['B']} "
                         f"d={c['shape']['d']}, N={ns}): spread <= 10%",
                "measured": "n/a" if spread is None else f"{spread:+.1%}",
                "value": spread, "target": 0.1,
                "holds": None if spread is None else spread <= 0.1})
    for c in results:
        if c.get("family") != "samplers":
            continue
        who = f"{c['shape']['score']} {c['case']} ({c['shape']['steps']} steps)"
        for row in c["rows"][1:]:
            impl = row["impl"]
            if "VirtualBrownianTree" in impl:
                add(f"{who}: {impl} / ours >= 10", row, "speedup", ge, 10.0)
            else:
                add(f"{who}: {impl} / ours >= 1 (equal or faster)", row, "speedup", ge, 1.0)
            ours = c["rows"][0]["compile_s"]
            comp = dict(row, compile_ratio=row["compile_s"] / ours if ours else None)
            add(f"{who}: {impl} compile / ours compile >= 3", comp, "compile_ratio", ge, 3.0)
    for c in results:
        if c.get("family") == "training" and c.get("case", "").startswith("training loop"):
            who = f"training loop ({_shape(c['shape'])})"
            add(f"{who}: fit within 1.2x of the scanned floor per step (floor / fit >= 0.833)",
                _row(c, "scanned floor"), "speedup", ge, 1 / 1.2)
            add(f"{who}: per-step loop / fit (reported)", _row(c, "per-step loop"), "speedup",
                ge, 0.0)
    for c in results:
        if c.get("family") == "training" and c.get("case", "").startswith("ISM"):
            row = _row(c, "torch MultivariateNormal")
            add(f"ISM WPO kernel ({_shape(c['shape'])}): torch / ours >= 3", row, "speedup", ge,
                3.0, missing="torch baseline not measured")
            add(f"ISM WPO kernel ({_shape(c['shape'])}): same loss to 1e-4 relative", row,
                "loss_rel_diff", le, 1e-4, fmt="{:.1e}", missing="torch baseline not measured")
    for c in results:
        if c.get("family") == "unet" and c.get("case") in ("U-Net training step",
                                                          "U-Net sampling"):
            what = "training step" if c["case"].endswith("step") else "1000-step sampling"
            add(f"U-Net {what} ({_shape(c['shape'])}): torch / ours >= 1 (at least as fast)",
                _row(c, "torch"), "speedup", ge, 1.0, missing="torch baseline not measured")
    if not any(c.get("family") == "training" for c in results):
        checks.append({"claim": "ISM WPO kernel step >= 3x faster than torch, same loss",
                       "measured": "training cases not run", "holds": None})
    return checks


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [f"# Benchmark results ({result['size']} size)", ""]
    if not result.get("complete", True):
        lines += ["*Partial: the run stopped before every family finished.*", ""]
    gpu = "no GPU" if not env.get("gpu") else "GPU"
    lines.append(
        f"Device `{env['device']}` ({gpu}; {env['cpu_count']} CPU cores), {env['dtype']}; "
        f"jax {env['jax']}, jaxlib {env['jaxlib']}, numpy {env['numpy']}, "
        f"torch {env['torch'] or 'not installed'}, diffrax {env['diffrax'] or 'not installed'}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in env['loadavg'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in result.get('loadavg_end', []))}; {env['time']}; "
        f"total {result.get('total_s', 0):.0f} s.")
    size_flag = {"quick": " --quick", "full": ""}.get(result["size"], f" --size {result['size']}")
    lines += ["", f"Reproduce: `pip install -e '.[bench]' && python -m benchmarks{size_flag}`. "
              + ("No GPU was available for this run: all times are CPU times. "
                 if not env.get("gpu") else "")]
    lines += ["", "Times are medians over alternating rounds after compilation; IQR is q3 - q1. "
              "`time / reference` is the per-round ratio (median [q1, q3]): above 1 the "
              "reference (the library's implementation, first row of a case) is faster. "
              "`rel. err` compares outputs with the reference's. The machine is shared: "
              "absolute times are noisy, ratios measured in the same rounds are robust.", ""]
    results = result["results"]
    for fam, title in TITLES.items():
        cases = [c for c in results if c.get("family") == fam and "impl" in str(c.get("rows"))]
        mem = [c for c in results if c.get("family") == fam and c.get("case", "").endswith(
            "memory")]
        if not cases and not mem:
            continue
        lines += [f"## {title}", ""]
        if cases:
            lines += _timing_table(cases) + [""]
        if mem:
            lines += ["XLA temporaries (`compiled.memory_analysis()`, compiled from shapes "
                      "only):", ""] + _memory_table(mem) + [""]
    for fam, msg in result.get("skipped", {}).items():
        lines += [f"*{fam}: {msg}*", ""]
    lines += ["## Done-when checks", "", "| claim | measured | holds |", "|---|---|---|"]
    for ch in result.get("done_when", []):
        h = {True: "yes", False: "**no**", None: "n/a"}[ch["holds"]]
        lines.append(f"| {ch['claim']} | {ch['measured']} | {h} |")
    return "\n".join(lines) + "\n"

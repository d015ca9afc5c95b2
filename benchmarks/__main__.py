"""One benchmark entry point: ``python -m benchmarks [--quick] [--only ...] [--out DIR]``.

Families (``--only`` takes a comma-separated subset): ``mixtures`` (isotropic-mixture score),
``molrg`` (MoLRG score grid), ``samplers`` (1000-step Euler, Heun, Euler-Maruyama vs diffrax),
``likelihood`` (PF-ODE log-density), ``training`` (DSM step of the MLP, ISM step of the WPO
kernel model vs PyTorch; runs only when those models exist), ``unet`` (U-Net training step
through the compiled loop and 1000-step sampling vs the same U-Net in PyTorch; alone:
``python -m benchmarks.unet``, which writes ``results/unet_<platform>.json``). Each run writes
``DIR/bench_<size>.json`` and ``DIR/bench_<size>.md`` (default ``DIR``: ``benchmarks/results``).

Sizes: ``--size tiny`` (seconds; the test suite), ``--quick`` (a minute or two on 2 idle CPU
cores), the default ``full`` (the issue's Done-when shapes, the rest scaled to what a 2-core CPU
runs in ~15 minutes; N = 1e6 and d = 3072 compiled for XLA temporaries only), and ``large``
(timed corners of the issue's range, B 4096, N 1e6, d 3072: for a quiet machine or a GPU).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback

FAMILIES = ("mixtures", "molrg", "samplers", "training", "likelihood", "unet")
MODULES = {"mixtures": "isotropic", "molrg": "molrg", "samplers": "samplers",
           "likelihood": "likelihood", "training": "training", "unet": "unet"}


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="quick sizes (same as --size quick)")
    parser.add_argument("--size", choices=("tiny", "quick", "full", "large"), default=None)
    parser.add_argument("--only", default=",".join(FAMILIES),
                        help=f"comma-separated families among {', '.join(FAMILIES)}")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"),
                        help="output folder ('' to write nothing)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                        help="merge the results of runs of disjoint families (e.g. run in "
                             "parallel processes) from these folders into --out")
    args = parser.parse_args(argv)
    size = args.size or ("quick" if args.quick else "full")
    if args.merge:
        return _merge(args, size)
    only = [f.strip() for f in args.only.split(",") if f.strip()]
    bad = [f for f in only if f not in FAMILIES]
    if bad:
        parser.error(f"unknown families {bad}; choose among {FAMILIES}")

    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    from benchmarks.common import environment

    torch = _torch()
    if torch is None:
        print("PyTorch not installed: torch baselines are skipped "
              "(pip install 'manifold-scores[bench]')", file=sys.stderr)
    env = environment(args.dtype)
    print(f"benchmarks ({size}) on {env['device']}, jax {env['jax']}, {args.dtype}, "
          f"load {env['loadavg'][0]:.2f}", flush=True)
    t0 = time.perf_counter()
    results, skipped, timings = [], {}, {}
    for fam in only:
        print(f"[{fam}]", flush=True)
        t_fam = time.perf_counter()
        try:
            mod = importlib.import_module(f"benchmarks.{MODULES[fam]}")
        except ImportError as err:
            skipped[fam] = f"skipped: {err}"
            print(f"  {skipped[fam]}", flush=True)
            continue
        try:
            out = mod.run(size, args.dtype, torch=torch,
                          log=lambda msg: print(msg, flush=True))
        except Exception as err:  # noqa: BLE001 - one failing family must not lose the others
            traceback.print_exc()
            skipped[fam] = f"failed: {type(err).__name__}: {err}"
            continue
        if isinstance(out, dict) and "skipped" in out:
            skipped[fam] = out["skipped"]
            print(f"  {out['skipped']}", flush=True)
            out = out.get("results", [])
        results += out
        timings[fam] = time.perf_counter() - t_fam
        _write(args, size, only, env, results, skipped, timings, t0, partial=True)
    return _write(args, size, only, env, results, skipped, timings, t0, partial=False)


def _write(args, size, only, env, results, skipped, timings, t0, partial):
    """Assemble the result; write JSON and markdown (after every family: a killed run keeps
    what it measured); the README table only for a complete full run."""
    from benchmarks import report

    result = {"benchmark": "manifold_scores", "size": size, "environment": env,
              "families": only, "family_seconds": timings, "results": results,
              "skipped": skipped, "loadavg_end": list(os.getloadavg()),
              "total_s": time.perf_counter() - t0, "complete": not partial}
    result["done_when"] = report.done_when(results)
    text = report.markdown(result)
    if not partial:
        print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        stem = os.path.join(args.out, f"bench_{size}")
        with open(stem + ".json", "w") as fh:
            json.dump(result, fh, indent=1, default=_json_default)
            fh.write("\n")
        with open(stem + ".md", "w") as fh:
            fh.write(text)
        if not partial:
            print(f"wrote {stem}.json and {stem}.md")
        if not partial and size in ("full", "large") and only == list(FAMILIES):
            # the latest complete run is the table the README shows
            with open(os.path.join(args.out, "README.md"), "w") as fh:
                fh.write(text)
    return result
    return result


def _merge(args, size) -> dict:
    parts = []
    for folder in args.merge:
        with open(os.path.join(folder, f"bench_{size}.json")) as fh:
            parts.append(json.load(fh))
    first = parts[0]
    env = dict(first["environment"])
    env["loadavg"] = first["environment"]["loadavg"]
    env["merged_from"] = [{"families": p["families"], "environment": p["environment"],
                           "total_s": p["total_s"]} for p in parts]
    results, skipped, timings, only = [], {}, {}, []
    for p in parts:
        results += p["results"]
        skipped.update(p["skipped"])
        timings.update(p["family_seconds"])
        only += p["families"]
    only = [f for f in FAMILIES if f in only]
    t0 = time.perf_counter() - max(p["total_s"] for p in parts)
    complete = all(p.get("complete", True) for p in parts)
    return _write(args, size, only, env, results, skipped, timings, t0, partial=not complete)


def _json_default(obj):
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)


if __name__ == "__main__":
    main()

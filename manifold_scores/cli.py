"""Command line: ``manifold-scores demo | verify``.

``demo`` shows the library at work in seconds on a CPU: it samples a sphere and a mixture of
low-rank Gaussians through the samplers with their exact scores, and prints the distances of the
samples to the manifold and the component weights recovered from them next to the truth.

``verify [--quick] [--json FILE] [--plots DIR] [--only E1,E3] [--wide]`` runs the experiments
(``manifold_scores.experiments``: the core checks, then E1, E2, ...), with a progress line per
experiment, prints each claim's verdict with what was measured and expected (wrapped to 100
columns; ``--wide``: one aligned line per row), optionally writes the rows as JSON and each
figure as a PNG. Arguments are checked before anything runs: an empty or unknown ``--only``
id, or a ``--json``/``--plots`` location that cannot be created or written, is a usage error.
The JSON file is replaced atomically, so a failed write leaves an earlier file as it was.
Exit status means "the studies are valid and say what they said before": 0 when every control
passes and every verdict equals the one recorded for its claim in the registry (a claim that does
not hold is a finding printed in the table, not an error, once it is recorded); 3 when a verdict
differs from the recorded one; 4 when a control failed (the study cannot support its verdicts);
2 for bad arguments; a crash, or a failure to write the results at the end, exits 1. An
experiment whose optional dependencies are missing (the real-data studies R1-R3 need the ``data``
extra) is skipped with a line naming the extra, and does not change the exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import manifold_scores as ms
from manifold_scores import experiments
from manifold_scores._files import atomic_write


def demo() -> int:
    """Sample a sphere and a MoLRG with exact scores; print what the samples recover."""
    start = time.perf_counter()
    proc = ms.VP()
    print("manifold-scores demo: exact scores through the samplers (float32, "
          f"{jax.devices()[0].platform})\n")

    sph = ms.Sphere(dim=10, intrinsic_dim=2, radius=1.0, key=jax.random.key(0))
    score = ms.score_fn(sph, proc)
    t_min = 2e-3
    xs = ms.sampling.sample_ode(jax.random.key(1), score, proc, (500, 10), steps=40,
                                method="heun", t_min=t_min)
    xs = xs / proc.alpha(t_min)
    dist = np.asarray(ms.metrics.distance_to_manifold(sph, xs))
    print(f"1. S^2 in R^10, PF-ODE (Heun, 40 steps) to sigma = {float(proc.sigma(t_min)):.3f}:")
    print(f"   distance to the sphere: median {np.median(dist):.4f}, "
          f"99% {np.quantile(dist, .99):.4f}  (noise level sigma * sqrt(d - 2) = "
          f"{float(proc.sigma(t_min)) * np.sqrt(7):.4f})")

    weights = jnp.array([0.5, 0.3, 0.2])
    mix = ms.MoLRG.random(jax.random.key(2), dim=16, rank=2, num_components=3, weights=weights)
    score = ms.score_fn(mix, proc)
    xs = ms.sampling.sample_sde(jax.random.key(3), score, proc, (2000, 16), steps=100,
                                t_min=t_min) / proc.alpha(t_min)
    coef = jnp.einsum("kdr,nd->nkr", mix.bases, xs)
    resid = jnp.sum(xs**2, 1)[:, None] - jnp.sum(coef**2, 2)
    label = np.asarray(jnp.argmin(resid, 1))
    dist = np.sqrt(np.maximum(np.asarray(jnp.min(resid, 1)), 0.0))
    freq = np.bincount(label, minlength=3) / len(label)
    se = np.sqrt(np.asarray(weights) * (1 - np.asarray(weights)) / len(label))
    print("\n2. MoLRG, 3 subspaces of rank 2 in R^16, reverse SDE (Euler-Maruyama, 100 steps):")
    print(f"   distance to the union of subspaces: median {np.median(dist):.4f}")
    print("   component   true weight   share of samples   sampling s.e.")
    for k in range(3):
        print(f"   {k:>9}   {float(weights[k]):11.3f}   {freq[k]:16.3f}   {se[k]:13.3f}")
    ok = bool(np.all(np.abs(freq - np.asarray(weights)) < 4 * se + 0.01)) and \
        float(np.median(dist)) < 0.1
    print(f"\n{'recovered' if ok else 'NOT recovered'} in {time.perf_counter() - start:.1f} s. "
          "`manifold-scores verify --quick` checks the theory claims.")
    return 0 if ok else 1


def _write_plot(table, directory: str) -> str | None:
    exp = experiments.get(table.experiment)
    if exp.plot is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from manifold_scores.experiments._plotting import DPI

    fig = exp.plot(table)
    path = os.path.join(directory, f"{table.experiment}.png")
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=max(DPI, fig.get_dpi()), format="png")
    finally:
        plt.close(fig)
    atomic_write(path, buf.getvalue())
    return path


def select_experiments(only: str | None) -> list[str]:
    """The experiment ids that ``--only`` names, in its order (all when ``None``).

    ``ValueError`` for an empty list or an unknown id, naming the valid ids.
    """
    valid = ", ".join(experiments.REGISTRY)
    if only is None:
        return list(experiments.REGISTRY)
    names = [name.strip() for name in only.split(",") if name.strip()]
    if not names:
        raise ValueError(f"argument --only: no experiment ids in {only!r}; valid ids: {valid}")
    ids = []
    for name in names:
        try:
            exp_id = experiments.get(name).id
        except ValueError:
            raise ValueError(f"argument --only: unknown experiment id {name!r}; "
                             f"valid ids: {valid}") from None
        if exp_id not in ids:
            ids.append(exp_id)
    return ids


def _check_writable_directory(directory: str, what: str) -> None:
    """Create ``directory`` if needed and prove it writable by creating a file in it.

    A probe file rather than ``os.access``: permission bits say nothing for root, ACLs or
    read-only mounts, and a failure found only after a long run would lose its results.
    """
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"{what}: {directory!r} is not a directory")
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise ValueError(f"{what}: cannot write to the directory {directory!r} "
                         f"({e.strerror or e})") from None


def check_output_paths(json_path: str | None, plots: str | None) -> None:
    """``ValueError`` naming the argument if the results could not be written after the run."""
    if json_path is not None:
        if not json_path:
            raise ValueError("argument --json: the file name is empty")
        if os.path.isdir(json_path):
            raise ValueError(f"argument --json: {json_path!r} is a directory, not a file name")
        directory = os.path.dirname(os.path.abspath(json_path))
        _check_writable_directory(directory, "argument --json")
    if plots is not None:
        if not plots:
            raise ValueError("argument --plots: the directory name is empty")
        _check_writable_directory(plots, "argument --plots")


def write_json(path: str, payload) -> None:
    """Write ``payload`` to ``path`` atomically: all of it, or the earlier file untouched.

    The temporary file sits in the same directory so that ``os.replace`` is a rename on one file
    system, and it is synced first so that the rename never exposes a file still being written.
    """
    atomic_write(path, json.dumps(payload, indent=2).encode())


def verify(quick: bool = False, json_path: str | None = None, plots: str | None = None,
           only: str | None = None, wide: bool = False) -> int:
    """Run the registered experiments; print, save, and return 0 iff every study is valid and
    every verdict is the recorded one (see the module docstring for the other statuses).

    Bad arguments raise ``ValueError`` before anything runs (:func:`main` turns them into usage
    errors).
    """
    size = "quick" if quick else "full"
    ids = select_experiments(only)
    check_output_paths(json_path, plots)
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("--plots needs matplotlib: pip install 'manifold-scores[notebooks]'",
                  file=sys.stderr)
            return 2
    start = time.perf_counter()
    tables, reviews, skipped = [], [], []
    for i, exp_id in enumerate(ids, 1):
        exp = experiments.get(exp_id)
        print(f"[{i}/{len(ids)}] {exp.id}: {exp.title} ({size}) ...", flush=True)
        missing = exp.missing()
        if missing:
            extras = ",".join(missing)
            skipped.append((exp.id, extras))
            print(f"      skipped: needs the {extras} extra "
                  f"(pip install \"manifold-scores[{extras}]\")", flush=True)
            continue
        table = experiments.run(exp.id, size)
        tables.append(table)
        rv = experiments.review(table)
        reviews.append(rv)
        status = "valid, verdicts as recorded" if rv.ok else "; ".join(
            ([f"{len(rv.failed_controls)} CONTROL FAILED"] if rv.failed_controls else [])
            + ([f"{len(rv.changed)} verdict(s) CHANGED"] if rv.changed else []))
        print(f"      {len(table.rows)} rows in {table.seconds:.1f} s: {status}", flush=True)
        if plots:
            path = _write_plot(table, plots)
            if path:
                print(f"      figure: {path}", flush=True)
    rows = [(t.experiment, r) for t in tables for r in t.rows]
    print()
    print(experiments.format_rows(rows, wide=wide))
    failed = [(t.experiment, k) for t, rv in zip(tables, reviews, strict=True)
              for k in rv.failed_controls]
    changed = [(t.experiment, *c) for t, rv in zip(tables, reviews, strict=True)
               for c in rv.changed]
    for exp_id, key in failed:
        print(f"CONTROL FAILED {exp_id} {key}: the study is invalid")
    for exp_id, key, got, recorded in changed:
        print(f"VERDICT CHANGED {exp_id} {key}: {got} (recorded: {recorded})")
    ok = not failed and not changed
    findings = sum(r.verdict == "does not hold" for _, r in rows)
    elapsed = time.perf_counter() - start
    summary = ("every study valid, every verdict as recorded" if ok else
               "SOME STUDIES INVALID" if failed else "SOME VERDICTS CHANGED")
    print(f"\n{len(rows)} rows from {len(tables)} experiments in {elapsed:.1f} s on "
          f"{jax.devices()[0].platform}: {summary}"
          + (f" ({findings} claim(s) do not hold: findings)" if findings else ""))
    if skipped:
        print(f"{len(skipped)} experiment(s) skipped for a missing extra: "
              + ", ".join(f"{e} ({x})" for e, x in skipped))
    if json_path:
        payload = {"size": size, "ok": ok, "failed_controls": failed,
                   "changed_verdicts": changed, "seconds": round(elapsed, 2),
                   "skipped": [{"experiment": e, "extra": x} for e, x in skipped],
                   "platform": jax.devices()[0].platform, "version": ms.__version__,
                   "experiments": [t.to_dict() for t in tables]}
        try:
            write_json(json_path, payload)
        except OSError as e:
            print(f"manifold-scores verify: error: could not write --json {json_path!r}: {e}",
                  file=sys.stderr)
            return 1
    return 0 if ok else CONTROL_FAILED if failed else VERDICT_CHANGED


#: exit status of ``verify`` when a verdict differs from the recorded one (not a crash's 1)
VERDICT_CHANGED = 3
#: exit status of ``verify`` when a control failed: the study cannot support its verdicts
CONTROL_FAILED = 4
#: the former name of :data:`VERDICT_CHANGED`
CLAIM_FAILS = VERDICT_CHANGED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="manifold-scores", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="sample a sphere and a MoLRG with exact scores (seconds)")
    ver = sub.add_parser("verify", help="run the experiments and check the theory's claims")
    ver.add_argument("--quick", action="store_true",
                     help="quick sizes (minutes on a 2-core CPU); default: full sizes")
    ver.add_argument("--json", metavar="FILE",
                     help="write the rows as JSON to FILE (its directory is created if needed)")
    ver.add_argument("--plots", metavar="DIR",
                     help="write each experiment's figure as DIR/<id>.png (needs matplotlib: "
                          "pip install 'manifold-scores[notebooks]')")
    ver.add_argument("--only", metavar="IDS",
                     help="comma-separated experiment ids to run, e.g. E1,E3 (default: all: "
                          + ", ".join(experiments.REGISTRY) + ")")
    ver.add_argument("--wide", action="store_true",
                     help="print the table one aligned line per row (wider than 100 columns)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo()
    if args.command == "verify":
        try:
            select_experiments(args.only)
            check_output_paths(args.json, args.plots)
        except ValueError as e:
            ver.error(str(e))
        return verify(args.quick, args.json, args.plots, args.only, args.wide)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""Timing, provenance and reporting shared by every benchmark.

Conventions: every JAX callable is compiled first
(``jax.jit(fn).lower(*args).compile()``, timed separately, with XLA's temporary bytes from
``compiled.memory_analysis()``), warmed up once, then timed with ``jax.block_until_ready``.
The implementations of one case are timed in *alternating rounds*: in each round every
implementation runs once, so load from other processes hits all of them alike. We report the
median and inter-quartile range of each implementation's times and, for every baseline, the
median and IQR of the per-round ratio ``baseline / kernel`` (above 1: the kernel is faster).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

# ---------------------------------------------------------------------------------------------
# Compilation and alternating rounds
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Impl:
    """One implementation of a case: a ready-to-run thunk plus its compile facts."""

    name: str
    run: Callable[[], Any]
    compile_s: float | None = None
    temp_bytes: int | None = None
    note: str = ""
    output: Any = None
    scale: float = 1.0  # measured time x scale (a baseline timed on a share of the batch)


def compile_impl(name: str, fn: Callable, *args: Any, note: str = "", static=()) -> Impl:
    """``jax.jit(fn)`` compiled for ``args`` (timed), memory analysed, warmed up once.

    JAX's caches are cleared first, so that the compile time is not a cache hit from an earlier
    case with the same shapes (compiled executables already held keep working).
    """
    jax.clear_caches()
    t0 = time.perf_counter()
    exe = jax.jit(fn, static_argnums=static).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    mem = exe.memory_analysis()
    temp = int(mem.temp_size_in_bytes) if mem is not None else None
    dyn = [a for i, a in enumerate(args) if i not in static]
    out = jax.block_until_ready(exe(*dyn))  # warm-up (allocations, thread pools)
    return Impl(name, lambda: jax.block_until_ready(exe(*dyn)), compile_s, temp, note, out)


def memory_only(fn: Callable, *args: Any) -> dict[str, float | int | None]:
    """Compile without running: compile seconds and XLA temporary / argument bytes."""
    jax.clear_caches()
    t0 = time.perf_counter()
    exe = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    mem = exe.memory_analysis()
    return {"compile_s": compile_s,
            "temp_bytes": int(mem.temp_size_in_bytes) if mem is not None else None,
            "argument_bytes": int(mem.argument_size_in_bytes) if mem is not None else None}


def python_impl(name: str, fn: Callable[[], Any], note: str = "") -> Impl:
    """A non-JAX implementation (PyTorch): no compile step; warmed up once."""
    out = fn()
    return Impl(name, fn, None, None, note, out)


def _time(thunk) -> float:
    t0 = time.perf_counter()
    thunk()
    return time.perf_counter() - t0


def alternate(impls: list[Impl], rounds: int, budget_s: float | None = None) -> dict[str, list]:
    """Time every implementation once per round, ``rounds`` rounds (fewer past ``budget_s``)."""
    times: dict[str, list[float]] = {im.name: [] for im in impls}
    start = time.perf_counter()
    for r in range(rounds):
        order = impls if r % 2 == 0 else impls[::-1]  # alternate the order too
        for im in order:
            times[im.name].append(_time(im.run) * im.scale)
        if budget_s is not None and r >= 2 and time.perf_counter() - start > budget_s:
            break
    return times


def _quartiles(values):
    q1, med, q3 = np.percentile(np.asarray(values, float), [25, 50, 75])
    return float(q1), float(med), float(q3)


def summarize(impls: list[Impl], times: dict[str, list], reference: str,
              check: Callable[[Any, Any], float] | None = None) -> list[dict[str, Any]]:
    """One JSON row per implementation: median, IQR, compile, temporaries, ratio to ``reference``.

    ``speedup`` is the per-round ratio ``time(impl) / time(reference)`` summarised by its
    median and quartiles (the reference's speedup over this implementation). ``check`` maps
    (reference output, this output) to an error, stored as ``rel_err``.
    """
    ref = times[reference]
    ref_out = next(im.output for im in impls if im.name == reference)
    rows = []
    for im in impls:
        t = times[im.name]
        q1, med, q3 = _quartiles(t)
        row = {"impl": im.name, "median_s": med, "q1_s": q1, "q3_s": q3, "times_s": t,
               "compile_s": im.compile_s, "temp_bytes": im.temp_bytes, "note": im.note}
        if im.name != reference:
            ratios = [a / b for a, b in zip(t, ref, strict=False)]
            r1, rm, r3 = _quartiles(ratios)
            row.update(speedup=rm, speedup_q1=r1, speedup_q3=r3)
        if check is not None and im.name != reference:
            try:
                row["rel_err"] = float(check(ref_out, im.output))
            except Exception as err:  # noqa: BLE001 - a failed check is reported, not fatal
                row["rel_err"] = f"check failed: {err}"
        rows.append(row)
    return rows


def rel_err(a, b) -> float:
    """``|a - b| / |a|`` over the whole array (float64 in NumPy)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-300))


def drop_outputs(impls: list[Impl]) -> None:
    """Free the warm-up outputs (large arrays) once a case is summarised."""
    for im in impls:
        im.output = None


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - optional packages
        return None
    return getattr(mod, "__version__", "unknown")


def environment(dtype: str) -> dict[str, Any]:
    """Device, versions, dtype and machine load, stored with every result."""
    dev = jax.devices()[0]
    import jaxlib

    env = {
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
        "platform": jax.default_backend(),
        "gpu": any(d.platform == "gpu" for d in jax.devices()),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "torch": _version("torch"),
        "diffrax": _version("diffrax"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "dtype": dtype,
        "loadavg": list(os.getloadavg()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return env


def compile_and_time(fn: Callable, *args: Any, repeats: int = 5) -> dict[str, float]:
    """Compile ``jax.jit(fn)`` for ``args`` and time it; seconds: compile, median, min.

    Kept for the stand-alone scripts; the suite uses :func:`compile_impl` and :func:`alternate`.
    """
    im = compile_impl("f", fn, *args)
    runs = [_time(im.run) for _ in range(repeats)]
    return {"compile_s": im.compile_s, "median_s": statistics.median(runs), "min_s": min(runs),
            "temp_bytes": im.temp_bytes}


def write_json(result: dict[str, Any], path: str | None) -> None:
    """Print the result; also write it to ``path`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text + "\n")

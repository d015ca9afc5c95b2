"""Timing and provenance shared by the benchmark scripts.

Every benchmark compiles first (timed separately), then times ``jax.block_until_ready`` over
repeats and reports the median; results carry the device, the versions and the dtype.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


def compile_and_time(fn: Callable, *args: Any, repeats: int = 5) -> dict[str, float]:
    """Compile ``jax.jit(fn)`` for ``args`` and time it; seconds: compile, median, min."""
    t0 = time.perf_counter()
    exe = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(exe(*args))  # warm-up run (allocations, thread pools)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(exe(*args))
        runs.append(time.perf_counter() - t0)
    mem = exe.memory_analysis()
    temp = int(mem.temp_size_in_bytes) if mem is not None else None
    return {"compile_s": compile_s, "median_s": statistics.median(runs), "min_s": min(runs),
            "temp_bytes": temp}


def environment(dtype: str) -> dict[str, Any]:
    """Device, versions and dtype, stored with every result."""
    dev = jax.devices()[0]
    return {
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "dtype": dtype,
    }


def write_json(result: dict[str, Any], path: str | None) -> None:
    """Print the result; also write it to ``path`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text + "\n")

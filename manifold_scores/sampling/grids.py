"""Time grids: ``steps + 1`` decreasing times from ``t_max`` to ``t_min`` for fixed-step solvers.

Kinds (:data:`GRID_KINDS`): uniform in ``t``; geometric in ``sigma(t)``; Karras et al.'s EDM grid
(``rho = 7``) in the scale-free noise level ``sigma / alpha``; uniform in the log-SNR
``lambda = log(alpha^2 / sigma^2)``. :func:`check_levels` checks that ``sigma(t) > 0`` and
finite on a grid's interval eagerly when the process and the interval are concrete (``sigma``
increases with ``t``, so the pinned ends decide); otherwise the sampler wraps its grid in one
run-time check (:func:`runtime_checked`, ``equinox.error_if``) outside its scan. Either way the
scan body is then traced inside ``_checks.validated()`` (no per-step checks in the densities).

Example:
    >>> import manifold_scores as ms
    >>> ts = ms.sampling.time_grid(ms.VP(), 4, kind="uniform", t_min=0.2, t_max=1.0)
    >>> [round(float(t), 3) for t in ts]
    [1.0, 0.8, 0.6, 0.4, 0.2]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from manifold_scores import _checks
from manifold_scores._api import public_dir as _public_dir
from manifold_scores.sampling import _args

__all__ = ["GRID_KINDS", "check_levels", "check_times", "runtime_checked", "time_grid"]

GRID_KINDS = ("uniform", "geometric", "edm", "log_snr")


def _grid(proc, steps, kind, t_min, t_max, rho, dtype):
    """The grid as a traceable function (no checks)."""
    t_min = jnp.asarray(t_min, dtype)
    t_max = jnp.asarray(t_max, dtype)
    u = jnp.linspace(0.0, 1.0, steps + 1, dtype=dtype)
    if kind == "uniform":
        ts = t_max + u * (t_min - t_max)
    elif kind == "geometric":
        lo, hi = jnp.log(proc.sigma(t_min)), jnp.log(proc.sigma(t_max))
        ts = proc.t_from_sigma(jnp.exp(hi + u * (lo - hi)))
    elif kind == "edm":
        # Karras et al.'s noise level is the scale-free sigma / alpha = exp(-lambda / 2).
        lo = jnp.exp(-0.5 * proc.log_snr(t_min) / rho)
        hi = jnp.exp(-0.5 * proc.log_snr(t_max) / rho)
        ratio = (hi + u * (lo - hi)) ** rho
        ts = proc.t_from_log_snr(-2.0 * jnp.log(ratio))
    elif kind == "log_snr":
        lo, hi = proc.log_snr(t_min), proc.log_snr(t_max)
        ts = proc.t_from_log_snr(hi + u * (lo - hi))
    else:
        raise ValueError(f"kind must be one of {GRID_KINDS}, got {kind!r}")
    # Inverse maps round; pin the ends so a sampler starts and stops exactly where asked.
    return ts.astype(dtype).at[0].set(t_max).at[-1].set(t_min)


def _all_concrete(*trees) -> bool:
    return all(_checks.is_concrete(leaf) for leaf in jax.tree.leaves(trees))


def _raise_if_bad(t, sig, name):
    ok = np.isfinite(t) & np.isfinite(sig) & (sig > 0)
    if not np.all(ok):
        i = int(np.argmin(ok))
        raise ValueError(
            f"sigma(t) must be positive and finite on the whole time grid {name}, got "
            f"sigma({t[i]:g}) = {sig[i]:g}: raise t_min (or lower t_max) into the process's "
            f"domain")


@jax.jit
def _sigma_of(proc, t):
    return proc.sigma(t)


def _sigma_at(proc, t):
    """``sigma`` at concrete times, in one small compiled call (not op by op: each eager op
    would be a compile of its own in a fresh process)."""
    with jax.ensure_compile_time_eval():
        return np.asarray(_sigma_of(proc, jnp.asarray(t)), np.float64)


def runtime_checked(proc, ts, name="ts"):
    """``ts`` wrapped in one run-time check of ``sigma(t) > 0`` and finite at every time."""
    sig = proc.sigma(ts)
    bad = ~jnp.all(jnp.isfinite(ts) & jnp.isfinite(sig) & (sig > 0))
    return _checks.runtime_check(ts, bad, f"sigma(t) must be positive and finite on the whole "
                                          f"time grid {name}: raise t_min")


def check_levels(proc, t_min, t_max, name="(t_min, t_max)") -> bool:
    """Check ``sigma > 0`` on ``[t_min, t_max]`` eagerly where concrete.

    ``sigma`` increases with ``t`` for every process, and the grids are pinned to ``t_min`` and
    ``t_max``, so the two ends decide for the whole grid. Returns whether a run-time check is
    still needed (something is traced): then the caller checks the grid with
    :func:`runtime_checked` once, outside its scan.
    """
    if not _all_concrete(proc, t_min, t_max):
        return True
    t = np.array([float(t_min), float(t_max)], np.float64)
    _raise_if_bad(t, _sigma_at(proc, t), name)
    return False


def check_times(proc, ts, name="ts"):
    """``ts`` with ``sigma(t) > 0`` and finite at every time.

    Concrete times raise ``ValueError`` now (finite times; ``sigma`` at the smallest and largest,
    as it is increasing); traced ones come back wrapped in one run-time check (use the returned
    array).
    """
    if _all_concrete(proc, ts):
        t = np.asarray(ts, np.float64)
        if not np.all(np.isfinite(t)):
            _raise_if_bad(t, np.zeros_like(t), name)
        ends = np.array([t.min(), t.max()])
        _raise_if_bad(ends, _sigma_at(proc, ends), name)
        return ts
    return runtime_checked(proc, ts, name)


def time_grid(proc, steps: int, kind: str = "edm", t_min=None, t_max=None, *, rho: float = 7.0,
              dtype=None) -> jax.Array:
    """``steps + 1`` decreasing times from ``t_max`` to ``t_min``.

    Kinds: ``"uniform"`` in ``t``; ``"geometric"`` in ``sigma(t)``; ``"edm"``, Karras et al.'s
    ``s_i = (s_max^(1/rho) + i/N (s_min^(1/rho) - s_max^(1/rho)))^rho`` in the scale-free noise
    level ``s = sigma / alpha``; ``"log_snr"``, uniform in ``lambda = log(alpha^2 / sigma^2)``.

    Args:
        proc: a process; ``t_min`` / ``t_max`` default to its attributes.
        steps: number of intervals (``>= 1``).
        kind: one of :data:`GRID_KINDS`.
        rho: EDM exponent (``> 0``).
        dtype: float dtype (default: the default float dtype).

    Raises:
        ValueError: bad ``steps``, ``kind``, ``rho``, an interval that is not finite and
            increasing, or ``sigma(t) <= 0`` somewhere on the grid (when concrete).

    Example:
        >>> import manifold_scores as ms
        >>> ts = ms.sampling.time_grid(ms.VP(), 10, kind="log_snr", t_min=1e-3, t_max=1.0)
        >>> ts.shape, round(float(ts[0]), 6), round(float(ts[-1]), 6)
        ((11,), 1.0, 0.001)
    """
    steps = _args.check_steps(steps)
    if kind not in GRID_KINDS:
        raise ValueError(f"kind must be one of {GRID_KINDS}, got {kind!r}")
    _checks.check_positive(rho, "rho")
    t_min = proc.t_min if t_min is None else t_min
    t_max = proc.t_max if t_max is None else t_max
    _args.check_interval(t_min, t_max, proc)
    needs_runtime_check = check_levels(proc, t_min, t_max)
    ts = _grid(proc, steps, kind, t_min, t_max, rho, _args.default_dtype(dtype))
    return runtime_checked(proc, ts) if needs_runtime_check else ts

__dir__ = _public_dir(__all__)

"""Argument validation shared by the samplers: steps, shapes, batches, intervals, save_at.

Shapes and static options are checked at trace time; values eagerly where they are concrete.
Every failure is a ``ValueError`` naming the argument. Noise levels along a time grid are
checked by :mod:`manifold_scores.sampling.grids`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from manifold_scores import _checks

__all__ = ["check_batch", "check_interval", "check_save_at", "check_shape", "check_steps",
           "default_dtype", "concrete_float"]


def check_steps(steps, name="steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {steps!r}")
    return int(steps)


def concrete_float(value):
    """``float(value)`` for a concrete scalar, else ``None`` (tracers, arrays of other shapes)."""
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def check_interval(t_min, t_max, proc=None) -> None:
    """Finite ``t_min < t_max`` (when concrete), inside the process's time domain if it has one."""
    for name, value in (("t_min", t_min), ("t_max", t_max)):
        if jnp.ndim(value) != 0:
            raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(value)}")
    lo, hi = concrete_float(t_min), concrete_float(t_max)
    if lo is not None and not math.isfinite(lo):
        raise ValueError(f"t_min must be finite, got {lo}")
    if hi is not None and not math.isfinite(hi):
        raise ValueError(f"t_max must be finite, got {hi}")
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"t_min must be < t_max, got t_min={lo}, t_max={hi}")
    check = getattr(proc, "check_interval", None)
    if callable(check):
        check(t_min, t_max)


def check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (n, d, ...) with positive sizes, got {shape}")
    return shape


def check_batch(x, name="x_init") -> None:
    if jnp.ndim(x) < 2:
        raise ValueError(f"{name} must be a batch of shape (n, d), got shape {jnp.shape(x)}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise ValueError(f"{name} must be a floating array, got dtype {jnp.result_type(x)}")
    if jnp.shape(x)[0] < 1:
        raise ValueError(f"{name} must hold at least one sample, got shape {jnp.shape(x)}")


def check_save_at(save_at, steps):
    if save_at is None:
        return None
    if isinstance(save_at, str):
        if save_at != "all":
            raise ValueError(
                f"save_at must be 'all' or a sequence of step indices, got {save_at!r}")
        return tuple(range(steps + 1))
    idx = tuple(int(i) + (steps + 1 if int(i) < 0 else 0) for i in np.atleast_1d(save_at))
    if not idx or any(i < 0 or i > steps for i in idx) or any(np.diff(idx) <= 0):
        raise ValueError(
            f"save_at must be increasing step indices in [0, {steps}] (or 'all'), got {save_at!r}")
    return idx


def default_dtype(dtype):
    if dtype is None:
        return jnp.dtype(jnp.result_type(float))
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    return dtype


def check_positive_levels(value, name):
    """``value > 0`` and finite: ``ValueError`` now when concrete, a run-time check when traced."""
    _checks.check_positive(value, name)
    if _checks.is_concrete(value):
        return value
    value = jnp.asarray(value)
    return _checks.runtime_check(value, ~jnp.all(jnp.isfinite(value) & (value > 0)),
                                 f"{name} must be positive and finite")

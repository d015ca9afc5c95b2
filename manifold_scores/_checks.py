"""Input validation shared by every module.

Shapes are checked at trace time (they are static) and raise ``ValueError`` naming the argument.
Values are checked eagerly where they are concrete (constructors, calls outside ``jit``), also
with ``ValueError``.

A traced noise level goes through :func:`runtime_check` (``sigma <= 0``, a negative ``alpha`` or
a NaN; never a silent NaN or the answer at ``|sigma|``), which decides as early as it can:

- Outside ``jit`` (under ``jax.vmap``, ``jax.grad``, ``jax.jvp`` and their compositions) the
  values are known while tracing: a failed check raises ``ValueError`` whose text is the message,
  before anything runs, and adds nothing to the computation.
- Under ``jax.jit`` (also inside ``lax.scan`` or ``jax.checkpoint`` bodies) the values exist only
  at run time: the check is one :func:`equinox.error_if` (a ``lax.cond`` around a host callback
  that raises). The XLA runtime, not this library, then builds the exception: jax raises
  ``jax.errors.JaxRuntimeError`` (a ``RuntimeError``), or ``ValueError`` on calls that take
  jax's compiled fast path (those after a successful call); its text starts with the runtime's
  prefix (``INTERNAL: CpuCallback error calling callback`` on CPU) and a Python traceback, and
  the message comes near the end, after ``_EquinoxRuntimeError:``. The runtime gives a callback
  no way to put its message first. Catch ``(ValueError, jax.errors.JaxRuntimeError)``.

Setting the environment variable ``EQX_ON_ERROR=nan`` (before ``equinox`` is imported) turns the
run-time failures under ``jit`` into NaNs (no host callback), for users who prefer that on
accelerators; ``EQX_ON_ERROR=off`` drops the run-time checks. Neither changes the errors raised
while tracing, which cost nothing at run time.

Code that has already validated its noise levels (a sampler checks its whole time grid before
the scan) traces the densities it calls inside :func:`validated`, which skips these checks.
"""

from __future__ import annotations

import contextlib
import contextvars
import operator
from collections.abc import Iterator
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from equinox.internal import unvmap_any

__all__ = [
    "is_concrete",
    "float_dtype",
    "as_float_array",
    "check_point",
    "check_positive",
    "check_nonnegative",
    "check_probability_vector",
    "check_orthonormal",
    "check_ndim",
    "check_nonempty",
    "check_sample_count",
    "check_noise_levels",
    "validated",
]

_VALIDATED = contextvars.ContextVar("manifold_scores_validated", default=False)


@contextlib.contextmanager
def validated() -> Iterator[None]:
    """Trace-time context: the caller has checked the noise levels; skip run-time checks."""
    token = _VALIDATED.set(True)
    try:
        yield
    finally:
        _VALIDATED.reset(token)


def runtime_check(value: Any, bad: Any, message: str) -> Any:
    """``value``, failing with ``message`` where the predicate ``bad`` holds.

    For tracers: eager callers check concrete values themselves. Decided while tracing when it
    can be (``ValueError`` now), else at run time under ``jit`` (see the module docstring for
    what is raised then). Inside :func:`validated` it returns ``value`` untouched.
    """
    if _VALIDATED.get():
        return value
    # Outside jit, vmap and JVP tracers carry concrete values: reducing over the batch now turns
    # a failure into a ValueError at the call instead of an error from the runtime. Under jit the
    # reduction is staged and reused as the predicate, so the run-time cost stays one cond.
    with jax.ensure_compile_time_eval():
        failed = unvmap_any(jnp.asarray(bad))
    if not isinstance(failed, jax.core.Tracer):
        if bool(failed):
            raise ValueError(message)
        return value
    return eqx.error_if(value, failed, message)


def is_concrete(value: Any) -> bool:
    """True when ``value`` holds numbers that can be read now (not a tracer)."""
    if isinstance(value, jax.core.Tracer):
        return False
    return isinstance(value, (np.ndarray, jax.Array, float, int, np.floating, np.integer))


def float_dtype(*values: Any):
    """The floating dtype that ``values`` promote to (``None`` and non-floats ignored).

    Falls back to the default float (float32, or float64 under x64): dtype follows the input.
    """
    dtypes = [jnp.result_type(v) for v in values if v is not None]
    dtypes = [d for d in dtypes if jnp.issubdtype(d, jnp.floating)]
    return jnp.result_type(*dtypes) if dtypes else jnp.result_type(float)


def as_float_array(value: Any, name: str) -> jax.Array:
    """``jnp.asarray`` that keeps floats, promotes ints to the default float dtype."""
    arr = jnp.asarray(value)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        if jnp.issubdtype(arr.dtype, jnp.complexfloating):
            raise ValueError(f"{name} must be real, got dtype {arr.dtype}")
        arr = arr.astype(jnp.result_type(float))
    return arr


def check_ndim(value: Any, ndim: int, name: str, shape_hint: str) -> None:
    if jnp.ndim(value) != ndim:
        raise ValueError(f"{name} must have shape {shape_hint}, got shape {jnp.shape(value)}")


def check_point(x: Any, dim: int, name: str = "x") -> None:
    """One point of shape ``(dim,)``; batches come from ``jax.vmap`` at the call site."""
    shape = jnp.shape(x)
    if shape != (dim,):
        hint = " (batches: wrap the call in jax.vmap)" if len(shape) == 2 else ""
        raise ValueError(f"{name} must have shape ({dim},), got shape {shape}{hint}")


def check_scalar(value: Any, name: str) -> None:
    if jnp.ndim(value) != 0:
        raise ValueError(
            f"{name} must be a scalar, got shape {jnp.shape(value)} (batches: use jax.vmap)"
        )


def check_positive(value: Any, name: str) -> None:
    """Scalar-or-array ``> 0`` (checked when concrete)."""
    if is_concrete(value):
        arr = np.asarray(value)
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"{name} must be positive and finite, got {arr}")


def check_nonnegative(value: Any, name: str) -> None:
    if is_concrete(value):
        arr = np.asarray(value)
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"{name} must be non-negative and finite, got {arr}")


def check_noise_levels(alpha: Any, sigma: Any) -> tuple[Any, Any]:
    """``alpha >= 0`` and ``sigma > 0``, both finite scalars; returns ``(alpha, sigma)``.

    Concrete values raise ``ValueError`` now; traced values come back wrapped in a run-time
    check, so callers must use the returned pair.
    """
    check_scalar(alpha, "alpha")
    check_scalar(sigma, "sigma")
    check_positive(sigma, "sigma")
    check_nonnegative(alpha, "alpha")
    if not is_concrete(sigma):
        sigma = runtime_check(sigma, ~(jnp.isfinite(sigma) & (sigma > 0)),
                              "sigma must be positive and finite")
    if not is_concrete(alpha):
        alpha = runtime_check(alpha, ~(jnp.isfinite(alpha) & (alpha >= 0)),
                              "alpha must be non-negative and finite")
    return alpha, sigma


def check_probability_vector(weights: Any, name: str = "weights", atol: float | None = None):
    """Non-negative entries summing to one (checked when concrete)."""
    check_ndim(weights, 1, name, "(K,)")
    if is_concrete(weights):
        w = np.asarray(weights, dtype=np.float64)
        # 1e-6 in float64 admits float32-rounded weights promoted to float64.
        if atol is not None:
            tol = atol
        else:
            tol = 1e-5 if np.asarray(weights).dtype == np.float32 else 1e-6
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"{name} must be non-negative and finite")
        if abs(w.sum() - 1.0) > tol * max(1, len(w)):
            raise ValueError(f"{name} must sum to one, got sum {w.sum():.6g}")


def check_orthonormal(bases: Any, name: str = "bases") -> None:
    """Columns of each ``(d, r)`` block orthonormal: ``U^T U = I`` (checked when concrete)."""
    if is_concrete(bases):
        u = np.asarray(bases, dtype=np.float64)
        gram = np.einsum("...dr,...ds->...rs", u, u)
        eye = np.eye(u.shape[-1])
        # float32-rounded bases promoted to float64 are orthonormal to ~1e-7: accepted.
        tol = 1e-4 if np.asarray(bases).dtype == np.float32 else 1e-6
        err = np.max(np.abs(gram - eye)) if gram.size else 0.0
        if err > tol:
            raise ValueError(
                f"{name} must have orthonormal columns (U^T U = I); max |U^T U - I| = {err:.3g}. "
                "Orthonormalise with jnp.linalg.qr first."
            )


def check_sample_count(n: Any) -> int:
    """A number of samples: an integer ``n >= 0`` (``ValueError`` naming ``n`` otherwise)."""
    try:
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"n must be a non-negative integer, got {n!r}") from None
    if n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n}")
    return n


def check_nonempty(points: Any, name: str = "points") -> None:
    if jnp.shape(points)[0] == 0:
        raise ValueError(f"{name} must hold at least one point, got shape {jnp.shape(points)}")

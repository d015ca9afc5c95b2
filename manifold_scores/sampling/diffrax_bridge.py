"""Adaptive PF-ODE steps through diffrax, an optional extra (imported lazily, on first call).

``pip install 'manifold-scores[diffrax]'`` provides it; ``import manifold_scores`` never needs it.

Example:
    >>> import jax, jax.numpy as jnp, manifold_scores as ms
    >>> proc, mix = ms.VP(), ms.MoLRG.random(jax.random.key(0), 3, 1, 1)
    >>> x = ms.sampling.integrate_ode_adaptive(  # doctest: +SKIP
    ...     ms.score_fn(mix, proc), proc, jnp.ones((2, 3)), 1.0, 0.1, solver="dopri5")
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from manifold_scores import _checks
from manifold_scores._api import public_dir as _public_dir
from manifold_scores.sampling import _args
from manifold_scores.sampling.grids import check_times
from manifold_scores.sampling.solver import pf_field

__all__ = ["integrate_ode_adaptive"]

SOLVERS = ("tsit5", "dopri5")


def integrate_ode_adaptive(score, proc, x_init, t0, t1, *, solver: str = "tsit5",
                           rtol: float = 1e-5, atol: float = 1e-5, dt0=None,
                           max_steps: int = 16384, pid: tuple[float, float] = (0.3, 0.4),
                           return_stats: bool = False):
    """Adaptive PF-ODE solve with diffrax (``pip install manifold-scores[diffrax]``).

    Tsit5 or Dopri5 with a PID step-size controller (``pcoeff, icoeff = pid``), from ``t0`` to
    ``t1`` (either direction), on the whole batch as one state. ``sigma(t) > 0`` is checked at
    both ends (the process's ``sigma`` is monotone), then the field is traced inside
    ``_checks.validated()``.

    Args:
        score, proc, x_init: as :func:`~manifold_scores.sampling.integrate_ode`.
        t0, t1: start and end times (distinct).
        solver: ``"tsit5"`` or ``"dopri5"``.
        rtol, atol: tolerances of the controller (``> 0``).
        dt0: first step (default ``(t1 - t0) / 100``).
        max_steps: step budget.
        return_stats: also return diffrax's stats dict (``num_steps``, ...).

    Returns:
        ``(n, d)`` states at ``t1`` (and the stats if asked).

    Example:
        >>> import jax, jax.numpy as jnp, manifold_scores as ms
        >>> proc, mix = ms.VP(), ms.MoLRG.random(jax.random.key(0), 3, 1, 1)
        >>> x = ms.sampling.integrate_ode_adaptive(  # doctest: +SKIP
        ...     ms.score_fn(mix, proc), proc, jnp.ones((2, 3)), 1.0, 0.1, solver="dopri5")
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if not callable(score):
        raise ValueError(f"score must be a callable score(x, t), got {type(score).__name__}")
    _args.check_batch(x_init)
    _checks.check_positive(rtol, "rtol")
    _checks.check_positive(atol, "atol")
    _args.check_steps(max_steps, "max_steps")
    if len(pid) != 2:
        raise ValueError(f"pid must be a pair (pcoeff, icoeff), got {pid!r}")
    lo, hi = _args.concrete_float(t0), _args.concrete_float(t1)
    for name, value in (("t0", lo), ("t1", hi)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    if lo is not None and hi is not None and lo == hi:
        raise ValueError(f"t0 and t1 must differ, got t0 = t1 = {lo}")
    try:
        import diffrax
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("integrate_ode_adaptive needs diffrax: pip install "
                          "'manifold-scores[diffrax]'") from err
    dtype = jnp.result_type(x_init)
    ends = check_times(proc, jnp.stack([jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)]),
                       name="(t0, t1)")
    t0, t1 = ends[0], ends[1]
    dt0 = (t1 - t0) / 100 if dt0 is None else dt0
    field = pf_field(score, proc)
    solvers = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5}
    term = diffrax.ODETerm(lambda t, y, args: field(y, t))
    controller = diffrax.PIDController(rtol=rtol, atol=atol, pcoeff=pid[0], icoeff=pid[1])
    with _checks.validated():
        sol = diffrax.diffeqsolve(term, solvers[solver](), t0, t1, dt0, x_init,
                                  stepsize_controller=controller, max_steps=max_steps)
    x = sol.ys[-1]
    return (x, sol.stats) if return_stats else x

__dir__ = _public_dir(__all__)

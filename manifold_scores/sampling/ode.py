"""Probability-flow ODE solvers: Euler, Heun, RK4 (explicit Runge-Kutta) and DPM-Solver++(2M).

The PF-ODE is ``dx/dt = f(t) x - g(t)^2 score(x, t) / 2``. The Runge-Kutta solvers spread their
stages over consecutive score evaluations of the one scan (``solver.run``); DPM-Solver++(2M)
is an exponential integrator in ``lambda = log(alpha / sigma)`` on the data prediction. Each
factory returns a static :class:`~manifold_scores.sampling.solver.Solver`; :data:`ODE_METHODS`
maps the names accepted by ``sample_ode`` and ``integrate_ode`` to them.

Example:
    >>> from manifold_scores import sampling
    >>> sampling.rk4().name, sorted(sampling.ODE_METHODS)
    ('rk4', ['dpm_solver_2m', 'euler', 'heun', 'rk4'])
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from manifold_scores._api import public_dir as _public_dir
from manifold_scores.sampling.solver import Solver, first, one_per_step_plan, select, tree_axpy

__all__ = ["ODE_METHODS", "dpm_solver_2m", "euler", "heun", "rk4"]


class _Tableau(NamedTuple):
    a: tuple
    b: tuple
    c: tuple
    euler_last: bool


def _rk_plan(steps, options):
    (tab,) = options
    s = len(tab.b)
    n, stage, end, b = [], [], [], []
    for i in range(steps):
        last = tab.euler_last and i == steps - 1
        ns = 1 if last else s
        weights = (1.0,) + (0.0,) * (s - 1) if last else tab.b
        for j in range(ns):
            n.append(i)
            stage.append(j)
            end.append(j == ns - 1)
            b.append(weights)
    return {"n": np.array(n), "stage": np.array(stage), "end": np.array(end),
            "b": np.array(b, dtype=np.float64)}


def _rk_init(x, options):
    (tab,) = options
    s = len(tab.b)
    # Stage values as a tuple of s arrays: selects fuse with the arithmetic, where a dynamic
    # update of one stacked buffer would copy it at every evaluation.
    return x, tuple(jax.tree.map(jnp.zeros_like, x) for _ in range(s - 1 if s > 1 else 0))


def _rk_step(state, row, ts, evaluate, noise, proc, options):
    (tab,) = options
    x, ks = state
    n = row["n"]
    t0 = ts[n]
    h = ts[n + 1] - t0
    if not ks:  # one stage (Euler): nothing to carry
        return tree_axpy(h, evaluate(x, t0), x), ks
    dtype = ts.dtype
    s = len(tab.b)
    stage = row["stage"]
    a_row = jnp.asarray(np.array(tab.a, dtype=np.float64), dtype)[stage]
    c = jnp.asarray(np.array(tab.c, dtype=np.float64), dtype)[stage]
    # The last stage's value is used only in the closing combination, so it is not stored.
    y = x
    for j in range(s - 1):
        y = tree_axpy(h * a_row[j], ks[j], y)
    k_new = evaluate(y, t0 + c * h)
    ks = tuple(select(stage == j, k_new, ks[j]) for j in range(s - 1))
    x_end = tree_axpy(h * row["b"][s - 1], k_new, x)
    for j in range(s - 1):
        x_end = tree_axpy(h * row["b"][j], ks[j], x_end)
    x = select(row["end"], x_end, x)
    return x, ks


def _rk_solver(name, tab):
    return Solver(name, _rk_plan, _rk_init, _rk_step, first, True, (tab,))


_EULER = _Tableau(a=((0.0,),), b=(1.0,), c=(0.0,), euler_last=False)
_HEUN = _Tableau(a=((0.0, 0.0), (1.0, 0.0)), b=(0.5, 0.5), c=(0.0, 1.0), euler_last=True)
_RK4 = _Tableau(
    a=((0.0, 0.0, 0.0, 0.0), (0.5, 0.0, 0.0, 0.0), (0.0, 0.5, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6), c=(0.0, 0.5, 0.5, 1.0), euler_last=False)


def euler() -> Solver:
    """Explicit Euler on the PF-ODE: ``x_{n+1} = x_n + h v(x_n, t_n)`` (order 1)."""
    return _rk_solver("euler", _EULER)


def heun() -> Solver:
    """Heun's method (explicit trapezoid, order 2), Euler on the last step as in EDM."""
    return _rk_solver("heun", _HEUN)


def rk4() -> Solver:
    """The classical fourth-order Runge-Kutta method (four evaluations per step)."""
    return _rk_solver("rk4", _RK4)


# DPM-Solver++(2M): data prediction, exponential integrator in lambda = log(alpha / sigma).


def _dpm_plan(steps, options):
    order = np.full(steps, 2)
    order[0] = 1
    order[-1] = 1  # lower order at the end
    return {**one_per_step_plan(steps), "second": order == 2}


def _dpm_init(x, options):
    return x, jnp.zeros_like(x), jnp.zeros((), x.dtype)


def _dpm_step(state, row, ts, evaluate, noise, proc, options):
    x, x0_prev, h_prev = state
    t, t1 = ts[row["n"]], ts[row["n"] + 1]
    a, s = proc.alpha(t), proc.sigma(t)
    a1, s1 = proc.alpha(t1), proc.sigma(t1)
    h = 0.5 * (proc.log_snr(t1) - proc.log_snr(t))
    x0 = (x + s * s * evaluate(x, t)) / a
    # Safe ratio: the unselected branch must stay finite for gradients through jnp.where.
    r = jnp.where(row["second"], h_prev / h, 1.0)
    d = jnp.where(row["second"], (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev, x0)
    x = (s1 / s) * x - a1 * jnp.expm1(-h) * d
    return x, x0, h


def dpm_solver_2m() -> Solver:
    """DPM-Solver++(2M) (Lu et al. 2022): multistep, data prediction, one evaluation per step.

    With ``lambda = log(alpha / sigma)``, ``h_i = lambda_i - lambda_{i-1}``, ``r = h_{i-1} / h_i``:
    ``x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (e^{-h_i} - 1) D_i``,
    ``D_i = (1 + 1/(2r)) x0_{i-1} - x0_{i-2} / (2r)``; first order on the first and last steps.
    """
    return Solver("dpm_solver_2m", _dpm_plan, _dpm_init, _dpm_step, first, False)


ODE_METHODS = {"euler": euler, "heun": heun, "rk4": rk4, "dpm_solver_2m": dpm_solver_2m}

__dir__ = _public_dir(__all__)

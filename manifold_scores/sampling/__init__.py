"""Samplers: time grids, probability-flow ODE and reverse-SDE solvers, Langevin dynamics.

Under ``x_t = alpha(t) x_0 + sigma(t) eps`` with ``f = dlog alpha/dt`` and ``g^2`` from the process,

    PF-ODE       dx/dt = f(t) x - g(t)^2 score(x, t) / 2
    reverse SDE  dx = [f(t) x - g(t)^2 score(x, t)] dt + g(t) dW_bar      (t decreasing)
    Langevin     dX = [sigma^a score(X, sigma) - grad v(X)] dt + sqrt(2) dW  (fixed sigma)

Every sampler takes a per-point ``score(x, t)`` (Langevin: ``score(x, sigma)``), works on a batch
``(n, d)`` and runs as one ``lax.scan`` over score evaluations. The package holds one concept per
module:

- :mod:`~manifold_scores.sampling.grids`: time grids (:data:`GRID_KINDS`, :func:`time_grid`);
- :mod:`~manifold_scores.sampling.solver`: the :class:`Solver` protocol, :class:`Trajectory`
  and the one scan engine;
- :mod:`~manifold_scores.sampling.ode`: PF-ODE solvers (Euler, Heun, RK4, DPM-Solver++(2M));
- :mod:`~manifold_scores.sampling.sde`: reverse-SDE solvers (Euler-Maruyama,
  predictor-corrector, DDPM, EDM churn);
- :mod:`~manifold_scores.sampling.langevin`: Langevin (plain, tempered-score, annealed);
- :mod:`~manifold_scores.sampling.samplers`: ``sample_ode``, ``sample_sde``, ``integrate_ode``,
  the prior; compilation, validation and sharding notes;
- :mod:`~manifold_scores.sampling.diffrax_bridge`: adaptive steps (diffrax, imported lazily).

Example:
    >>> import jax, manifold_scores as ms
    >>> proc = ms.VP()
    >>> mix = ms.MoLRG.random(jax.random.key(0), dim=4, rank=1, num_components=2)
    >>> xs = ms.sampling.sample_sde(jax.random.key(1), ms.score_fn(mix, proc), proc, (8, 4),
    ...                             steps=20)
    >>> xs.shape
    (8, 4)
"""

from manifold_scores.sampling.diffrax_bridge import integrate_ode_adaptive
from manifold_scores.sampling.grids import GRID_KINDS, time_grid
from manifold_scores.sampling.langevin import annealed_langevin, langevin
from manifold_scores.sampling.ode import ODE_METHODS, dpm_solver_2m, euler, heun, rk4
from manifold_scores.sampling.samplers import (
    integrate_ode,
    prior_sample,
    prior_std,
    sample_ode,
    sample_sde,
)
from manifold_scores.sampling.sde import (
    SDE_METHODS,
    ddpm,
    edm_churn,
    euler_maruyama,
    predictor_corrector,
)
from manifold_scores.sampling.solver import Solver, Trajectory

__all__ = [
    "GRID_KINDS",
    "ODE_METHODS",
    "SDE_METHODS",
    "Solver",
    "Trajectory",
    "annealed_langevin",
    "ddpm",
    "dpm_solver_2m",
    "edm_churn",
    "euler",
    "euler_maruyama",
    "heun",
    "integrate_ode",
    "integrate_ode_adaptive",
    "langevin",
    "predictor_corrector",
    "prior_sample",
    "prior_std",
    "rk4",
    "sample_ode",
    "sample_sde",
    "time_grid",
]

"""Reverse-SDE solvers: Euler-Maruyama, predictor-corrector, DDPM ancestral, EDM churn.

The reverse SDE is ``dx = [f(t) x - g(t)^2 score(x, t)] dt + g(t) dW_bar`` with ``t`` decreasing.
Each factory returns a static, stochastic :class:`~manifold_scores.sampling.solver.Solver` whose
step draws fresh per-sample noise at each score evaluation; :data:`SDE_METHODS` maps the names
accepted by ``sample_sde`` to them.

Example:
    >>> from manifold_scores import sampling
    >>> sampling.edm_churn(churn=10.0).stochastic, sorted(sampling.SDE_METHODS)[:2]
    (True, ['ddpm', 'edm_churn'])
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from manifold_scores import _checks
from manifold_scores._api import public_dir as _public_dir
from manifold_scores.sampling import _args
from manifold_scores.sampling.solver import Solver, first, identity, one_per_step_plan, x_init

__all__ = ["SDE_METHODS", "ddpm", "edm_churn", "euler_maruyama", "predictor_corrector"]


def _em_step(state, row, ts, evaluate, noise, proc, options):
    x = state
    t, t1 = ts[row["n"]], ts[row["n"] + 1]
    dt = t1 - t
    drift = proc.drift(t) * x - proc.diffusion_squared(t) * evaluate(x, t)
    return x + drift * dt + jnp.sqrt(proc.diffusion_squared(t) * jnp.abs(dt)) * noise()


def euler_maruyama() -> Solver:
    """Euler-Maruyama on the reverse SDE: ``x += [f x - g^2 s] dt + g sqrt(|dt|) z``."""
    return Solver("euler_maruyama", one_per_step_plan, x_init, _em_step, identity,
                  stochastic=True)


def _ddpm_step(state, row, ts, evaluate, noise, proc, options):
    x = state
    t, t1 = ts[row["n"]], ts[row["n"] + 1]
    a, s = proc.alpha(t), proc.sigma(t)
    a1, s1 = proc.alpha(t1), proc.sigma(t1)
    x0 = (x + s * s * evaluate(x, t)) / a
    # q(x_{t1} | x_t, x0) for x_t = (a/a1) x_{t1} + s_{t|t1} eps:
    a_ts = a / a1
    var_ts = s * s - a_ts * a_ts * s1 * s1
    mean = (a_ts * s1 * s1 / (s * s)) * x + (a1 * var_ts / (s * s)) * x0
    std = jnp.sqrt(jnp.maximum(var_ts, 0.0)) * s1 / s
    return mean + std * noise()


def ddpm() -> Solver:
    """DDPM ancestral sampling: draw ``x_{t'}`` from ``q(x_{t'} | x_t, x0 = Tweedie(x_t))``.

    With ``a = alpha_t / alpha_t'`` and ``v = sigma_t^2 - a^2 sigma_t'^2``: mean
    ``a sigma_t'^2 / sigma_t^2 x_t + alpha_t' v / sigma_t^2 x0``, variance
    ``v sigma_t'^2 / sigma_t^2``.
    """
    return Solver("ddpm", one_per_step_plan, x_init, _ddpm_step, identity, stochastic=True)


def _pc_plan(steps, options):
    _, m = options
    n = np.repeat(np.arange(steps), m + 1)
    corrector = np.tile(np.arange(m + 1) < m, steps)
    return {"n": n, "end": ~corrector, "corrector": corrector}


def _pc_step(state, row, ts, evaluate, noise, proc, options):
    snr, _ = options
    x = state
    t, t1 = ts[row["n"]], ts[row["n"] + 1]
    s = evaluate(x, t)
    z = noise()
    # Song et al.'s rule eps = 2 a (snr |z| / |s|)^2, a = alpha(t')^2 / alpha(t)^2 (1 - beta dt for
    # VP), with |z|^2 -> d and |s|^2 -> d / sigma^2 (their values for N(0, sigma^2 I)) so that eps
    # depends on t only: a step that depends on the state (or on z) makes Langevin sample
    # p / eps instead of p, and batch means of the norms would couple the samples.
    a_ratio = (proc.alpha(t1) / proc.alpha(t)) ** 2
    eps = 2.0 * a_ratio * (snr * proc.sigma(t)) ** 2
    x_corr = x + eps * s + jnp.sqrt(2.0 * eps) * z
    dt = t1 - t
    g2 = proc.diffusion_squared(t)
    x_pred = x + (proc.drift(t) * x - g2 * s) * dt + jnp.sqrt(g2 * jnp.abs(dt)) * z
    return jnp.where(row["corrector"], x_corr, x_pred)


def predictor_corrector(snr: float = 0.16, corrector_steps: int = 1) -> Solver:
    """Song et al.'s predictor-corrector: Langevin corrector steps at ``t_n``, then an
    Euler-Maruyama predictor to ``t_{n+1}``.

    The corrector ``x += eps s + sqrt(2 eps) z`` uses the signal-to-noise rule
    ``eps = 2 a (snr |z| / |s|)^2`` with the norms at their values for ``N(0, sigma_t^2 I)``
    (``|z|^2 = d``, ``|s|^2 = d / sigma_t^2``), i.e. ``eps = 2 a snr^2 sigma_t^2`` with
    ``a = alpha(t_{n+1})^2 / alpha(t_n)^2``: per-sample norms would make the step depend on the
    state and bias the law (Langevin with step ``eps(x)`` samples ``p / eps``).

    Args:
        snr: the signal-to-noise ratio of the corrector step rule.
        corrector_steps: Langevin steps per time step (each one score evaluation).
    """
    m = _args.check_steps(corrector_steps, "corrector_steps")
    _checks.check_positive(snr, "snr")
    options = (float(snr), m)
    return Solver("predictor_corrector", _pc_plan, x_init, _pc_step, identity, False, options,
                  stochastic=True)


def _churn_plan(steps, options):
    churn = options[0]
    n = np.repeat(np.arange(steps), 2)[:-1]  # Euler on the last step
    stage = np.tile([0, 1], steps)[:-1]
    end = stage == 1
    end[-1] = True
    gamma = np.full(len(n), min(churn / steps, math.sqrt(2.0) - 1.0))
    return {"n": n, "stage": stage, "end": end, "gamma": gamma}


def _churn_init(x, options):
    zero = jnp.zeros((), x.dtype)
    return x, jnp.zeros_like(x), jnp.zeros_like(x), zero, zero


def _churn_step(state, row, ts, evaluate, noise, proc, options):
    _, s_min, s_max, s_noise = options
    x, y_hat, k0, r_hat, t_hat = state
    t, t1 = ts[row["n"]], ts[row["n"] + 1]
    # EDM works with y = x / alpha and the scale-free level r = sigma / alpha; there
    # dy/dr = (y - D(y)) / r = -sigma(t) score(x, t).
    r_t = jnp.exp(-0.5 * proc.log_snr(t))
    r_1 = jnp.exp(-0.5 * proc.log_snr(t1))
    in_range = (r_t >= s_min) & (r_t <= s_max)
    gamma = jnp.where(in_range, row["gamma"], 0.0)
    r_new = r_t * (1.0 + gamma)
    t_new = jnp.where(gamma > 0, proc.t_from_log_snr(-2.0 * jnp.log(r_new)), t)
    # sqrt(r_new^2 - r^2) written as r sqrt(gamma (2 + gamma)): never negative by round-off.
    y_new = x / proc.alpha(t) + r_t * jnp.sqrt(gamma * (2.0 + gamma)) * s_noise * noise()
    first = row["stage"] == 0
    r_hat = jnp.where(first, r_new, r_hat)
    t_hat = jnp.where(first, t_new, t_hat)
    y_hat = jnp.where(first, y_new, y_hat)
    t_e = jnp.where(first, t_hat, t1)
    y_e = jnp.where(first, y_hat, y_hat + (r_1 - r_hat) * k0)
    k = -proc.sigma(t_e) * evaluate(proc.alpha(t_e) * y_e, t_e)
    y_next = jnp.where(first, y_hat + (r_1 - r_hat) * k, y_hat + (r_1 - r_hat) * 0.5 * (k0 + k))
    x = jnp.where(row["end"], proc.alpha(t1) * y_next, x)
    return x, y_hat, jnp.where(first, k, k0), r_hat, t_hat


def edm_churn(churn: float = 30.0, churn_min: float = 0.0, churn_max: float = float("inf"),
              noise: float = 1.0) -> Solver:
    """Karras et al.'s stochastic sampler (Algorithm 2): churn, then a Heun step.

    At each step with ``r = sigma / alpha`` in ``[churn_min, churn_max]``, raise the noise level
    to ``r_hat = r (1 + gamma)``, ``gamma = min(churn / N, sqrt 2 - 1)``, by adding
    ``sqrt(r_hat^2 - r^2) * noise * z`` to ``x / alpha``, then take a Heun step from ``r_hat`` to
    the next level (Euler on the last step). ``churn = 0`` is the deterministic Heun sampler.
    """
    for name, value in (("churn", churn), ("churn_min", churn_min), ("noise", noise)):
        _checks.check_nonnegative(value, name)
    if not float(churn_max) >= float(churn_min):
        raise ValueError(f"churn_max must be >= churn_min, got churn_max={churn_max}, "
                         f"churn_min={churn_min}")
    options = (float(churn), float(churn_min), float(churn_max), float(noise))
    return Solver("edm_churn", _churn_plan, _churn_init, _churn_step, first, False, options,
                  stochastic=True)


SDE_METHODS = {"euler_maruyama": euler_maruyama, "predictor_corrector": predictor_corrector,
               "ddpm": ddpm, "edm_churn": edm_churn}

__dir__ = _public_dir(__all__)

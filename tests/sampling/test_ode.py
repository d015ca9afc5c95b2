"""PF-ODE solvers: convergence orders against closed-form flows, gradients, every process."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores import sampling
from manifold_scores._pytree import pytree_dataclass
from tests.helpers import slow_except

ODE = ("euler", "heun", "rk4", "dpm_solver_2m")


# Closed-form PF-ODE flows: each eigen-coordinate divided by its marginal std is invariant.


def gaussian():
    scales = jnp.array([[1.0, 0.5, 2.0]])
    return ms.MoLRG(jnp.eye(3)[None], scales=scales), jnp.eye(3), scales[0] ** 2


def molrg_one():
    mix = ms.MoLRG.random(jax.random.key(3), dim=6, rank=2, num_components=1)
    return mix, mix.bases[0], jnp.ones(2)


def exact_flow(proc, basis, var, x, t_a, t_b):
    """Map ``x`` at ``t_a`` to ``t_b`` for data ``N(0, U diag(var) U^T)``."""

    def std(t, c):
        return jnp.sqrt(proc.alpha(t) ** 2 * c + proc.sigma(t) ** 2)

    coef = x @ basis
    rest = x - coef @ basis.T
    return (coef * std(t_b, var) / std(t_a, var)) @ basis.T + rest * std(t_b, 0.0) / std(t_a, 0.0)


ORDERS = {"euler": (1.0, 0.15), "heun": (2.0, 0.2), "dpm_solver_2m": (2.0, 0.2), "rk4": (4.0, 0.3)}
# Step counts in the asymptotic regime of each method (RK4 reaches round-off sooner).
STEP_COUNTS = {"euler": (64, 128, 256, 512), "heun": (64, 128, 256, 512),
               "dpm_solver_2m": (128, 256, 512, 1024), "rk4": (32, 64, 128, 256)}


def fitted_order(data, method):
    """Least-squares slope of log max-error against log step on a uniform grid, VP, t: 1 -> 0.1."""
    proc = ms.VP()
    mix, basis, var = data()
    score = ms.score_fn(mix, proc)
    x = jax.random.normal(jax.random.key(0), (5, mix.dim))
    exact = exact_flow(proc, basis, var, x, 1.0, 0.1)
    errs = []
    for n in STEP_COUNTS[method]:
        ts = sampling.time_grid(proc, n, kind="uniform", t_min=0.1, t_max=1.0)
        out = sampling.integrate_ode(score, proc, x, ts, method=method)
        errs.append(float(jnp.max(jnp.abs(out - exact))))
    h = 1.0 / np.asarray(STEP_COUNTS[method], float)
    return np.polyfit(np.log(h), np.log(errs), 1)[0], errs


@pytest.mark.parametrize("data", [gaussian, molrg_one], ids=["gaussian", "molrg_k1"])
@pytest.mark.parametrize("method", slow_except(ODE, ["heun"]))
def test_convergence_order(x64, data, method):
    slope, errs = fitted_order(data, method)
    order, tol = ORDERS[method]
    assert abs(slope - order) <= tol, (slope, errs)


@pytest.mark.slow
def test_grad_flows_through_ode(x64):
    proc = ms.VP()
    mix, basis, var = gaussian()
    score = ms.score_fn(mix, proc)
    ts = sampling.time_grid(proc, 40, kind="uniform", t_min=0.1, t_max=1.0)
    x = jnp.array([[0.3, -1.0, 2.0]])
    for method in ("heun", "rk4", "dpm_solver_2m"):
        jac = jax.jacrev(lambda y, m=method: sampling.integrate_ode(score, proc, y, ts, m)[0])(x)
        ratio = jnp.sqrt(proc.alpha(0.1) ** 2 * var + proc.sigma(0.1) ** 2) / jnp.sqrt(
            proc.alpha(1.0) ** 2 * var + proc.sigma(1.0) ** 2)
        tol = 1e-6 if method == "rk4" else 5e-2
        np.testing.assert_allclose(jac[:, 0], jnp.diag(ratio), atol=tol)


@pytree_dataclass
class ScaledScore:
    """A model-like callable PyTree: a trainable scale times an exact score."""

    w: jax.Array
    base: ms.scores.ScoreFn

    def __call__(self, x, t):
        return self.w * self.base(x, t)


def test_grad_wrt_score_parameters(x64):
    proc = ms.VP()
    mix = ms.MoLRG.random(jax.random.key(0), 4, 1, 2)
    base = ms.score_fn(mix, proc)
    ts = sampling.time_grid(proc, 20, kind="uniform", t_min=0.1, t_max=1.0)
    x = jnp.ones((2, 4))

    def loss(w, method):
        # The parameter is a traced leaf of the score: one compilation per method.
        return jnp.sum(sampling.integrate_ode(ScaledScore(w, base), proc, x, ts, method) ** 2)

    for method in ("rk4", "dpm_solver_2m"):  # the two code paths (Runge-Kutta, multistep)
        grad = jax.grad(loss)(1.0, method)
        fd = (loss(1.0 + 1e-6, method) - loss(1.0 - 1e-6, method)) / 2e-6
        assert float(grad) == pytest.approx(float(fd), rel=1e-7)


@pytest.mark.parametrize("proc", slow_except([ms.VE(), ms.CosineVP(), ms.EDM(), ms.Flow()], ["EDM"],
                                             ids=["VE", "CosineVP", "EDM", "Flow"]))
def test_every_process(x64, proc):
    """The PF-ODE solvers follow the exact flow for each process."""
    mix, basis, var = gaussian()
    score = ms.score_fn(mix, proc)
    x = jax.random.normal(jax.random.key(0), (4, 3)) * sampling.prior_std(proc)
    exact = exact_flow(proc, basis, var, x, proc.t_max, proc.t_min)
    tols = {"rk4": 1e-5, "dpm_solver_2m": 1e-2}  # Heun and Euler share RK4's code path
    for method, tol in tols.items():
        out = sampling.sample_ode(None, score, proc, steps=100, method=method, x_init=x)
        assert float(jnp.max(jnp.abs(out - exact) / jnp.abs(exact))) < tol, method


def test_integrate_ode_roundtrip(x64):
    proc = ms.VP()
    mix = ms.MoLRG.random(jax.random.key(0), dim=4, rank=1, num_components=2)
    score = ms.score_fn(mix, proc)
    ts = sampling.time_grid(proc, 200, kind="log_snr", t_min=0.05, t_max=1.0)
    x = mix.sample(jax.random.key(0), 4) * proc.alpha(0.05)
    z = sampling.integrate_ode(score, proc, x, ts[::-1])
    back = sampling.integrate_ode(score, proc, z, ts)
    np.testing.assert_allclose(back, x, atol=1e-6)

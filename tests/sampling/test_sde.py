"""Reverse-SDE solvers: MoLRG statistics at t_min, every process, solver options."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores import sampling
from tests.helpers import slow_except

SDE = ("euler_maruyama", "predictor_corrector", "ddpm", "edm_churn")


def _sde_stats(method, n, steps, kind="uniform"):
    """Deviations (in standard errors) of the sample covariance and component weights."""
    proc = ms.VP()
    mix = ms.MoLRG.random(jax.random.key(3), dim=6, rank=2, num_components=2,
                          weights=jnp.array([0.3, 0.7]))
    score = ms.score_fn(mix, proc)
    x = sampling.sample_sde(jax.random.key(1), score, proc, (n, 6), steps=steps, method=method,
                            kind=kind)
    t = proc.t_min
    a, s = proc.alpha(t), proc.sigma(t)
    # The target is p_{t_min}: covariance alpha^2 C + sigma^2 I.
    cov = a**2 * jnp.einsum("k,kde->de", mix.weights, mix.covariance()) + s**2 * jnp.eye(6)
    x = np.asarray(x, np.float64)
    prod = x[:, :, None] * x[:, None, :]
    iu = np.triu_indices(6)
    z_cov = ((prod.mean(0) - np.asarray(cov)) / (prod.std(0) / math.sqrt(n)))[iu]
    labels = np.asarray(jnp.argmax(jax.vmap(mix.posterior_weights, (0, None, None))(x, a, s), -1))
    p = 0.3
    z_w = ((labels == 0).mean() - p) / math.sqrt(p * (1 - p) / n)
    return np.max(np.abs(z_cov)), abs(z_w), bool(np.all(np.isfinite(x)))


@pytest.mark.parametrize("method", slow_except(SDE, ["ddpm"]))
def test_sde_reproduces_molrg_fast(method):
    z_cov, z_w, finite = _sde_stats(method, n=3000, steps=400)
    assert finite
    assert z_cov < 4.5, z_cov  # max over the 21 covariance entries
    assert z_w < 4.0, z_w


@pytest.mark.slow
@pytest.mark.parametrize("method", SDE)
def test_sde_reproduces_molrg(method):
    # DDPM loses O(h) variance per unit time (it drops Cov[x0 | x_t]); more steps keep its bias
    # well below one standard error at 20k samples.
    steps = 2000 if method == "ddpm" else 1000
    z_cov, z_w, finite = _sde_stats(method, n=20000, steps=steps)
    assert finite
    assert z_cov < 4.5, z_cov
    assert z_w < 4.0, z_w


@pytest.mark.parametrize("proc", slow_except([ms.VE(), ms.CosineVP(), ms.EDM(), ms.Flow()], ["EDM"],
                                             ids=["VE", "CosineVP", "EDM", "Flow"]))
def test_every_process(x64, proc):
    """Each SDE method on two of the four processes (compilation dominates the test's time)."""
    mix = ms.MoLRG(jnp.eye(3)[None], scales=jnp.array([[1.0, 0.5, 2.0]]))
    score = ms.score_fn(mix, proc)
    name = type(proc).__name__
    for method in SDE[:2] if name in ("VE", "EDM") else SDE[2:]:
        out = sampling.sample_sde(jax.random.key(0), score, proc, (4, 3), steps=20, method=method)
        assert bool(jnp.all(jnp.isfinite(out))), method


def test_custom_solver_options():
    # EDM's own process (alpha = 1, sigma = t): its churn-free sampler is exactly Heun's method.
    proc = ms.EDM()
    mix = ms.MoLRG.random(jax.random.key(0), dim=4, rank=1, num_components=2)
    score = ms.score_fn(mix, proc)
    key = jax.random.key(0)
    heun = sampling.sample_ode(key, score, proc, (3, 4), steps=10, method="heun")
    churn0 = sampling.sample_sde(key, score, proc, (3, 4), steps=10,
                                 method=sampling.edm_churn(churn=0.0))
    # With no churn, EDM's sampler is Heun's method with Euler on the last step.
    np.testing.assert_allclose(churn0, heun, rtol=1e-4, atol=1e-5)
    pc = sampling.sample_sde(key, score, proc, (3, 4), steps=10,
                             method=sampling.predictor_corrector(snr=0.1, corrector_steps=2))
    assert pc.shape == (3, 4) and bool(jnp.all(jnp.isfinite(pc)))


def test_solver_options_validated():
    with pytest.raises(ValueError, match="corrector_steps"):
        sampling.predictor_corrector(corrector_steps=0)
    with pytest.raises(ValueError, match="snr"):
        sampling.predictor_corrector(snr=-0.1)
    with pytest.raises(ValueError, match="churn"):
        sampling.edm_churn(churn=-1.0)
    with pytest.raises(ValueError, match="churn_max"):
        sampling.edm_churn(churn_min=2.0, churn_max=1.0)
    with pytest.raises(ValueError, match="noise"):
        sampling.edm_churn(noise=float("nan"))

"""PF-ODE likelihoods against the exact MoLRG log-density."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores import likelihood
from tests.helpers import slow_except


def _setup(proc, t_min, n=8):
    mix = ms.MoLRG.random(jax.random.key(3), dim=6, rank=2, num_components=3,
                          weights=jnp.array([0.2, 0.3, 0.5]))
    a, s = proc.alpha(t_min), proc.sigma(t_min)
    x0 = mix.sample(jax.random.key(1), n)
    x = a * x0 + s * jax.random.normal(jax.random.key(2), x0.shape, x0.dtype)  # points of p_t_min
    exact = jax.vmap(mix.log_prob, (0, None, None))(x, a, s)
    return mix, x, exact


@pytest.mark.parametrize("divergence", slow_except(["exact", "closed_form"], ["closed_form"]))
def test_log_prob_matches_exact_molrg(x64, divergence):
    proc, t_min = ms.VP(), 1e-3
    mix, x, exact = _setup(proc, t_min)
    score = ms.score_fn(mix, proc)
    div = likelihood.divergence_fn(mix, proc) if divergence == "closed_form" else divergence
    est = jax.jit(jax.vmap(lambda y: likelihood.log_prob(score, proc, y, t_min, div)))(x)
    assert float(jnp.max(jnp.abs(est - exact))) < 1e-3


@pytest.mark.parametrize("proc", [
    pytest.param(ms.VE(), marks=pytest.mark.slow),
    pytest.param(ms.CosineVP(), marks=pytest.mark.slow),
    pytest.param(ms.EDM(), marks=pytest.mark.slow),
    pytest.param(ms.Flow(), marks=pytest.mark.slow),
], ids=["VE", "CosineVP", "EDM", "Flow"])
def test_log_prob_other_processes(x64, proc):
    t_min = max(proc.t_min, 1e-3)  # log_prob needs t_min > 0 (VE's default t_min is 0)
    mix, x, exact = _setup(proc, t_min, n=4)
    score = ms.score_fn(mix, proc)
    t_max = proc.t_max
    # The exact terminal law isolates the ODE error from the prior's (VE: O(1/sigma_max^2) per dim).
    prior = lambda z: mix.log_prob(z, proc.alpha(t_max), proc.sigma(t_max))
    est = jax.vmap(lambda y: likelihood.log_prob(score, proc, y, t_min, prior=prior))(x)
    assert float(jnp.max(jnp.abs(est - exact))) < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_hutchinson_unbiased(x64, probe):
    proc, t_min = ms.VP(), 1e-3
    mix, x, exact = _setup(proc, t_min, n=1)
    score = ms.score_fn(mix, proc)
    m, steps = 200, 64
    keys = jax.random.split(jax.random.key(5), m)
    est = jax.vmap(lambda k: likelihood.log_prob(score, proc, x[0], t_min, "hutchinson", key=k,
                                                 probe=probe, steps=steps))(keys)
    # The probe is fixed along the path, so the mean is the exact-divergence solve on the
    # same grid; that solve is itself within 1e-3 of the exact log-density.
    reference = likelihood.log_prob(score, proc, x[0], t_min, "exact", steps=steps)
    se = float(est.std()) / math.sqrt(m)
    assert se > 0
    assert abs(float(est.mean()) - float(reference)) < 4 * se
    assert abs(float(reference) - float(exact[0])) < 1e-3


@pytest.mark.slow
def test_log_prob_gradient_is_the_score(x64):
    proc, t_min = ms.VP(), 0.05
    mix, x, _ = _setup(proc, t_min, n=1)
    score = ms.score_fn(mix, proc)
    grad = jax.grad(lambda y: likelihood.log_prob(score, proc, y, t_min))(x[0])
    np.testing.assert_allclose(grad, score(x[0], t_min), rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_float32_runs():
    proc = ms.VP()
    mix, x, exact = _setup(proc, 1e-2, n=1)
    est = likelihood.log_prob(ms.score_fn(mix, proc), proc, x[0], 1e-2)
    assert est.dtype == jnp.float32
    assert abs(float(est - exact[0])) < 0.05


def test_bits_per_dim():
    assert float(likelihood.bits_per_dim(-4 * math.log(2.0), 4)) == pytest.approx(1.0)
    # 8-bit images scaled by 1/127.5: add log2(127.5) bits per dimension.
    bpd = likelihood.bits_per_dim(jnp.array(0.0), 3, scale=1 / 127.5)
    assert float(bpd) == pytest.approx(math.log2(127.5), rel=1e-6)
    with pytest.raises(ValueError, match="dim"):
        likelihood.bits_per_dim(0.0, 0)


def test_bad_inputs():
    proc = ms.VP()
    score = lambda x, t: -x
    with pytest.raises(ValueError, match="x"):
        likelihood.log_prob(score, proc, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="divergence"):
        likelihood.log_prob(score, proc, jnp.ones(3), divergence="skilling")
    with pytest.raises(ValueError, match="key"):
        likelihood.log_prob(score, proc, jnp.ones(3), divergence="hutchinson")
    with pytest.raises(ValueError, match="method"):
        likelihood.log_prob(score, proc, jnp.ones(3), method="dpm_solver_2m")
    with pytest.raises(ValueError, match="t_min"):
        likelihood.log_prob(score, proc, jnp.ones(3), t_min=2.0)
    with pytest.raises(ValueError, match="steps"):
        likelihood.log_prob(score, proc, jnp.ones(3), steps=0)
    # p_0 is singular on a manifold: t_min > 0 (and sigma(t_min) > 0) is required.
    for t_min in (0, 0.0, -0.1):
        with pytest.raises(ValueError, match="t_min"):
            likelihood.log_prob(score, proc, jnp.ones(3), t_min=t_min)
    with pytest.raises(ValueError, match="t_min"):
        likelihood.log_prob(score, ms.VE(), jnp.ones(3), t_min=0.0)  # sigma(0) > 0 for VE
    with pytest.raises(ValueError, match="kind"):
        likelihood.log_prob(score, proc, jnp.ones(3), kind="cosine")
    with pytest.raises(ValueError, match="prior"):
        likelihood.log_prob(score, proc, jnp.ones(3), prior=1.0)
    # Traced t_min: checked at run time.
    run = jax.jit(lambda tm: likelihood.log_prob(score, proc, jnp.ones(3), t_min=tm, steps=4))
    assert bool(jnp.isfinite(run(0.1)))
    with pytest.raises(Exception, match="t_min"):
        jax.block_until_ready(run(0.0))


def test_fresh_score_fn_does_not_recompile():
    """Scores and closed-form divergences are callable PyTrees: traced, not constants."""
    proc, t_min = ms.VP(), 1e-2
    cache = likelihood._log_prob_jit.jitted
    outs = []
    for k in range(2):
        mix = ms.MoLRG.random(jax.random.key(k), dim=3, rank=1, num_components=2)
        x = mix.sample(jax.random.key(9), 1)[0]
        before = cache._cache_size()
        outs.append(likelihood.log_prob(ms.score_fn(mix, proc), proc, x, t_min, steps=9,
                                        divergence=likelihood.divergence_fn(mix, proc)))
        if k:
            assert cache._cache_size() == before
        exact = mix.log_prob(x, proc.alpha(t_min), proc.sigma(t_min))
        assert abs(float(outs[-1] - exact)) < 0.05

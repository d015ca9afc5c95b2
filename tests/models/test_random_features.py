"""Random features: the closed-form ridge fit equals the minimiser gradient descent finds."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.models import random_features as rf
from tests.helpers import rel_err, slow_except


@pytest.mark.parametrize("ts,time_features", slow_except(
    [(0.5, 0), (jnp.array([0.2, 0.5, 1.0]), 4)], [], ids=["0.5-0", "ts1-4"]))
def test_ridge_fit_equals_gradient_descent(x64, ts, time_features):
    mix = ms.MoLRG.random(jax.random.key(0), dim=4, rank=1, num_components=2)
    x0 = mix.sample(jax.random.key(1), 150)
    p0 = rf.init(jax.random.key(2), 4, 48, ms.EDM(), time_features=time_features)
    key, ridge = jax.random.key(3), 1e-2
    fitted = rf.fit_ridge(key, p0, x0, ts, ridge=ridge, num_noise=2)

    def loss(a):
        return rf.ridge_loss(key, rf.RFParams(a, p0.weights, p0.process, p0.activation,
                                              p0.time_features), x0, ts, ridge=ridge,
                             num_noise=2)

    grad = jax.grad(loss)
    # step 1 / L, L the largest eigenvalue of the (constant) Hessian of the quadratic loss
    a0 = jnp.zeros_like(fitted.readout)
    hess = jax.hessian(loss)(a0).reshape(a0.size, a0.size)
    step = 1.0 / float(jnp.linalg.eigvalsh(hess)[-1])

    @jax.jit
    def descend(a):
        return jax.lax.fori_loop(0, 4000, lambda i, a: a - step * grad(a), a)

    a_gd = descend(jnp.zeros_like(fitted.readout))
    assert float(jnp.linalg.norm(grad(fitted.readout))) < 1e-10
    assert rel_err(a_gd.reshape(-1), fitted.readout.reshape(-1)) < 1e-5
    assert float(loss(fitted.readout)) <= float(loss(a_gd)) + 1e-12


@pytest.mark.slow
def test_fit_improves_the_score_and_binds(x64):
    mix = ms.MoLRG.random(jax.random.key(0), dim=3, rank=1, num_components=1)
    proc = ms.EDM()
    x0 = mix.sample(jax.random.key(1), 1000)
    p = rf.fit_ridge(jax.random.key(2), rf.init(jax.random.key(3), 3, 128, proc), x0, 0.5,
                     ridge=1e-4, num_noise=4)
    xs = mix.sample(jax.random.key(4), 500) + 0.5 * jax.random.normal(jax.random.key(5),
                                                                       (500, 3))
    score = ms.models.bind(rf.apply, p)
    got = jax.vmap(score, (0, None))(xs, 0.5)
    ref = jax.vmap(mix.score, (0, None, None))(xs, 1.0, 0.5)
    err = float(jnp.mean(jnp.sum((got - ref) ** 2, -1)) / jnp.mean(jnp.sum(ref**2, -1)))
    assert err < 0.05, err


def test_validation():
    with pytest.raises(ValueError, match="activation"):
        rf.init(jax.random.key(0), 2, 8, ms.EDM(), activation="sigmoid")
    with pytest.raises(ValueError, match="time_features"):
        rf.init(jax.random.key(0), 2, 8, ms.EDM(), time_features=3)
    np.testing.assert_equal(rf.init(jax.random.key(0), 2, 8, ms.EDM()).readout.shape, (2, 8))

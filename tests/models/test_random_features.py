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


# Run-time checks under jit raise through a host callback; its exception type is the runtime's.
RUNTIME_ERRORS = (ValueError, RuntimeError)


class _NegativeSigma(ms.Process):
    """sigma(t) = t - 0.5: negative inside the (default) time domain for t < 0.5."""

    t_min, t_max = 0.6, 1.0

    def alpha(self, t):
        return jnp.ones_like(jnp.asarray(t))

    def sigma(self, t):
        return jnp.asarray(t) - 0.5


def test_fit_refuses_invalid_noise_levels_and_mismatched_data():
    key = jax.random.key(0)
    p = rf.init(key, 3, 16, ms.EDM())
    x0 = jax.random.normal(jax.random.key(1), (20, 3))
    for ts in (-1.0, 0.0, jnp.array([0.5, -1.0]), [0.5, -1.0]):  # EDM: t is sigma
        with pytest.raises(ValueError, match="ts must lie in"):
            rf.fit_ridge(key, p, x0, ts)
    with pytest.raises(ValueError, match="sigma must be positive"):
        rf.fit_ridge(key, rf.init(key, 3, 16, _NegativeSigma()), x0, 0.3)
    # traced: a run-time error, never the |sigma| answer or a NaN
    fit = jax.jit(lambda ts: rf.fit_ridge(key, p, x0, ts).readout)
    assert np.all(np.isfinite(np.asarray(fit(jnp.array([0.5, 1.0])))))
    for ts in ([0.5, -1.0], [0.5, 0.0], [float("nan"), 1.0]):
        with pytest.raises(RUNTIME_ERRORS, match="sigma must be positive"):
            jax.block_until_ready(fit(jnp.asarray(ts)))
    with pytest.raises(ValueError, match=r"x0 must have shape \(n, 3\)"):
        rf.fit_ridge(key, p, jnp.ones((10, 4)), 0.5)
    with pytest.raises(ValueError, match="ridge must be positive"):
        rf.fit_ridge(key, p, x0, 0.5, ridge=0.0)
    with pytest.raises(ValueError, match="num_noise must be an integer"):
        rf.fit_ridge(key, p, x0, 0.5, num_noise=2.5)
    with pytest.raises(ValueError, match="process must be a noising process"):
        rf.init(key, 3, 16, None)


def test_integer_inputs_are_promoted():
    key = jax.random.key(0)
    p = rf.init(key, 3, 16, ms.EDM(), time_features=4)
    xi = jnp.asarray(np.arange(60).reshape(20, 3) % 7 - 3)
    xf = xi.astype(jnp.result_type(float))

    @jax.jit
    def run(xi, xf):
        # integer data were a dtype error; an integer point's time embedding was in integers
        fit_i, fit_f = rf.fit_ridge(key, p, xi, 0.5), rf.fit_ridge(key, p, xf, 0.5)
        return (fit_i.readout, fit_f.readout, rf.apply(fit_f, xi[0], 0.5),
                rf.apply(fit_f, xf[0], 0.5))

    a_int, a_float, out_int, out_float = run(xi, xf)
    assert rel_err(a_int.reshape(-1), a_float.reshape(-1)) < 1e-5
    assert out_int.dtype == jnp.result_type(float)
    assert rel_err(out_int, out_float) < 1e-6

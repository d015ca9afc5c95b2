"""Public samplers: arguments, keys and batches, compilation caching, jit/vmap, trajectories."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores import sampling
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.sampling import samplers
from tests.helpers import slow_except

ODE = ("euler", "heun", "rk4", "dpm_solver_2m")
SDE = ("euler_maruyama", "predictor_corrector", "ddpm", "edm_churn")


def _toy():
    proc = ms.VP()
    mix = ms.MoLRG.random(jax.random.key(0), dim=4, rank=1, num_components=2)
    return proc, mix, ms.score_fn(mix, proc)


def test_bad_inputs():
    proc = ms.VP()
    score = lambda x, t: -x
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="method"):
        sampling.sample_ode(key, score, proc, (2, 2), steps=4, method="rk45")
    with pytest.raises(ValueError, match="method"):
        sampling.sample_sde(key, score, proc, (2, 2), steps=4, method="heun")
    with pytest.raises(ValueError, match="steps"):
        sampling.sample_sde(key, score, proc, (2, 2), steps=0)
    with pytest.raises(ValueError, match="shape"):
        sampling.sample_ode(key, score, proc, (2,), steps=4)
    with pytest.raises(ValueError, match="shape"):
        sampling.sample_ode(key, score, proc, None, steps=4)
    with pytest.raises(ValueError, match="kind"):
        sampling.sample_ode(key, score, proc, (2, 2), steps=4, kind="cosine")
    with pytest.raises(ValueError, match="t_min"):
        sampling.sample_sde(key, score, proc, (2, 2), steps=4, t_min=0.5, t_max=0.2)
    with pytest.raises(ValueError, match="score"):
        sampling.sample_ode(key, None, proc, (2, 2), steps=4)
    with pytest.raises(ValueError, match="x_init"):
        sampling.integrate_ode(score, proc, jnp.ones(3), jnp.linspace(1, 0.1, 5))
    with pytest.raises(ValueError, match="x_init"):
        sampling.sample_ode(None, score, proc, steps=4, x_init=jnp.ones((2, 2), jnp.int32))
    with pytest.raises(ValueError, match="does not match"):
        sampling.sample_ode(key, score, proc, (3, 2), steps=4, x_init=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="ts"):
        sampling.integrate_ode(score, proc, jnp.ones((2, 3)), jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="save_at"):
        sampling.sample_ode(key, score, proc, (2, 2), steps=4, save_at=(3, 1))
    with pytest.raises(ValueError, match="save_at"):
        sampling.sample_ode(key, score, proc, (2, 2), steps=4, save_at=(7,))
    with pytest.raises(ValueError, match="save_at"):
        sampling.sample_ode(key, score, proc, (2, 2), steps=4, save_at="some")
    with pytest.raises(ValueError, match="key"):
        sampling.sample_sde(None, score, proc, (2, 2), steps=4)
    with pytest.raises(ValueError, match="key"):
        sampling.prior_sample(None, proc, (2, 2))
    with pytest.raises(ValueError, match="sharding"):
        sampling.sample_ode(key, score, proc, (2, 2), steps=4, sharding="batch")
    with pytest.raises(ValueError, match="stochastic"):
        sampling.sample_ode(key, score, proc, (2, 2), steps=4, method=sampling.ddpm())
    with pytest.raises(ValueError, match="stochastic"):
        sampling.integrate_ode(score, proc, jnp.ones((2, 2)), jnp.linspace(1.0, 0.5, 3),
                               method=sampling.euler_maruyama())


@pytest.mark.parametrize("method", slow_except(ODE + SDE, ["euler", "euler_maruyama"]))
def test_sample_independent_of_batch_size(method):
    proc, mix, score = _toy()
    run = sampling.sample_ode if method in ODE else sampling.sample_sde
    key = jax.random.key(7)
    small = run(key, score, proc, (3, 4), steps=12, method=method)
    large = run(key, score, proc, (8, 4), steps=12, method=method)
    np.testing.assert_allclose(small, large[:3], rtol=1e-5, atol=1e-5)


def test_second_call_does_not_recompile():
    """A plain function is a static argument: the same object reuses the compilation."""
    proc, mix, _ = _toy()
    traces = []

    def score(x, t):
        traces.append(1)  # runs only while tracing
        return mix.score(x, proc.alpha(t), proc.sigma(t))

    key = jax.random.key(0)
    cache = samplers._sample_jit.jitted
    for method in ("euler_maruyama", "ddpm"):
        traces.clear()
        a = sampling.sample_sde(key, score, proc, (16, 4), steps=1000, method=method)
        first, compiled = len(traces), cache._cache_size()
        b = sampling.sample_sde(jax.random.key(1), score, proc, (16, 4), steps=1000, method=method)
        assert first == 1 and len(traces) == first  # one call site, traced once
        assert cache._cache_size() == compiled  # no new executable
        assert not np.allclose(a, b)
    traces.clear()
    for k in range(2):
        sampling.sample_ode(jax.random.key(k), score, proc, (16, 4), steps=50, method="rk4")
    assert len(traces) == 1  # RK4's four stages share one score call site


def test_fresh_score_fn_does_not_recompile():
    """score_fn(mix, proc) is a callable PyTree, a traced argument: a fresh one of the same
    structure (other arrays, other process floats) reuses the compiled sampler."""
    key = jax.random.key(0)
    cache = samplers._sample_jit.jitted
    procs = (ms.VP(), ms.VP(beta_max=15.0))
    mixes = [ms.MoLRG.random(jax.random.key(k), dim=5, rank=1, num_components=2)
             for k in range(2)]
    for run, method in ((sampling.sample_ode, "euler"), (sampling.sample_sde, "ddpm")):
        outs = []
        for i, (mix, proc) in enumerate(zip(mixes, procs, strict=True)):
            before = cache._cache_size()
            outs.append(run(key, ms.score_fn(mix, proc), proc, (5, 5), steps=7, method=method))
            if i == 0:
                assert cache._cache_size() <= before + 1
            else:
                assert cache._cache_size() == before, method  # compiled once
        assert not np.allclose(outs[0], outs[1])
        if method == "euler":
            # The second call used its own values (not constants of the first compilation): it
            # matches a run with a plain-function score of the second mixture and process.
            ref = run(key, lambda x, t, m=mixes[1], p=procs[1]: m.score(x, p.alpha(t),
                                                                          p.sigma(t)),
                      procs[1], (5, 5), steps=7, method=method)
            np.testing.assert_allclose(outs[1], ref, rtol=1e-5, atol=1e-6)


@pytree_dataclass
class _Model:
    """A model bound to its parameters: arrays are leaves, the apply function is static."""

    params: dict
    apply: object = static_field()

    def __call__(self, x, t):
        return self.apply(self.params, x, t)


def _apply(params, x, t):
    return -x * params["scale"] + jnp.tanh(params["w"] @ x) * t


def test_model_pytree_compiles_once_and_differentiates(x64):
    proc = ms.VP()
    x = jax.random.normal(jax.random.key(0), (3, 4))
    ts = sampling.time_grid(proc, 6, kind="uniform", t_min=0.2, t_max=1.0)
    params = [{"scale": jnp.asarray(s), "w": jax.random.normal(jax.random.key(k), (4, 4))}
              for k, s in enumerate((1.0, 0.5))]
    cache = samplers._integrate_jit.jitted
    outs = []
    for i, p in enumerate(params):
        before = cache._cache_size()
        outs.append(sampling.integrate_ode(_Model(p, _apply), proc, x, ts, "heun"))
        if i:
            assert cache._cache_size() == before  # new parameter values: no recompilation
    ref = sampling.integrate_ode(lambda y, t: _apply(params[1], y, t), proc, x, ts, "heun")
    np.testing.assert_allclose(outs[1], ref, rtol=1e-12)
    # Gradients flow into the parameters: against central differences in each direction.
    loss = lambda p: jnp.sum(sampling.integrate_ode(_Model(p, _apply), proc, x, ts, "heun") ** 2)
    grad = jax.grad(loss)(params[0])
    eps = 1e-6
    bump = {"scale": jnp.asarray(eps), "w": jnp.zeros((4, 4)).at[1, 2].set(eps)}
    for name, idx in (("scale", ()), ("w", (1, 2))):
        up = {k: v + (bump[k] if k == name else 0) for k, v in params[0].items()}
        down = {k: v - (bump[k] if k == name else 0) for k, v in params[0].items()}
        fd = (loss(up) - loss(down)) / (2 * eps)
        assert float(grad[name][idx]) == pytest.approx(float(fd), rel=1e-6), name


def _scan_has_checks(jaxpr):
    """(checks inside a scan body, checks outside): equinox's run-time errors are callbacks."""
    inside, outside = 0, 0

    def walk(jx, in_scan):
        nonlocal inside, outside
        for eqn in jx.eqns:
            if "callback" in eqn.primitive.name:
                if in_scan:
                    inside += 1
                else:
                    outside += 1
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    sub = getattr(sub, "jaxpr", sub)
                    if hasattr(sub, "eqns"):
                        walk(sub, in_scan or eqn.primitive.name == "scan")

    walk(jaxpr.jaxpr, False)
    return inside, outside


def test_scan_body_skips_per_step_checks():
    """Traced t_min: one run-time check of the grid before the scan, none inside it."""
    proc, mix, score = _toy()
    for run, method in ((sampling.sample_ode, "euler"), (sampling.sample_sde, "ddpm")):
        jaxpr = jax.make_jaxpr(lambda tm, run=run, method=method: run(
            jax.random.key(0), score, proc, (2, 4), steps=3, method=method, t_min=tm))(0.1)
        inside, outside = _scan_has_checks(jaxpr)
        assert inside == 0 and outside >= 1, (inside, outside)
    # Without the validated() context, the density would check at every evaluation.
    unchecked = jax.make_jaxpr(lambda x, t: jax.lax.scan(
        lambda c, s: (score(c, s), None), x, t)[0])(jnp.ones(4), jnp.ones(3))
    assert _scan_has_checks(unchecked)[0] >= 1


def test_jit_and_vmap_apply():
    proc, mix, score = _toy()
    f = jax.jit(lambda k: sampling.sample_sde(k, score, proc, (3, 4), steps=10, method="ddpm"))
    keys = jax.random.split(jax.random.key(0), 2)
    batched = jax.vmap(f)(keys)
    assert batched.shape == (2, 3, 4)
    np.testing.assert_allclose(batched[1], f(keys[1]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", slow_except(ODE + SDE, ["euler", "ddpm"]))
def test_trajectory(method):
    proc, mix, score = _toy()
    run = sampling.sample_ode if method in ODE else sampling.sample_sde
    key = jax.random.key(2)
    x, traj = run(key, score, proc, (3, 4), steps=8, method=method, save_at=(0, 3, 8))
    assert traj.xs.shape == (3, 3, 4)
    np.testing.assert_allclose(traj.xs[-1], x, rtol=1e-6)
    ts = sampling.time_grid(proc, 8)
    np.testing.assert_allclose(traj.ts, ts[jnp.array([0, 3, 8])], rtol=1e-6)
    assert traj.xs[0].std() > 0.3  # the prior draw: std 1 for VP
    # Intermediate states match a run stopped there (ODE: the same path on a sub-grid).
    if method in ("euler", "rk4"):
        part = sampling.integrate_ode(score, proc, traj.xs[0], ts[:4], method=method)
        np.testing.assert_allclose(traj.xs[1], part, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", slow_except(["heun", "edm_churn"], ["heun"]))
def test_saving_does_not_change_the_result(method):
    proc, mix, score = _toy()
    run = sampling.sample_ode if method in ODE else sampling.sample_sde
    key = jax.random.key(2)
    final = run(key, score, proc, (3, 4), steps=8, method=method)
    x, traj = run(key, score, proc, (3, 4), steps=8, method=method, save_at="all")
    np.testing.assert_allclose(x, final, rtol=1e-6)
    assert traj.xs.shape == (9, 3, 4)


def test_dtype_follows_input(dtype):
    proc, mix, score = _toy()
    x = sampling.sample_sde(jax.random.key(0), score, proc, (2, 4), steps=5)
    assert x.dtype == jnp.dtype(dtype)
    y = sampling.integrate_ode(score, proc, jnp.ones((2, 4), dtype), jnp.linspace(1.0, 0.5, 3))
    assert y.dtype == jnp.dtype(dtype)

"""Losses against independent references.

* DSM of the exact MoLRG score vs the irreducible constant: two Monte Carlo estimators of the same
  number (independent keys), compared within 3 standard errors.
* ISM: the identity ``J(s) - J(s*) = E|s - s*|^2 / 2`` on the same points (paired), with the
  divergence from ``jax.jacfwd`` and from the closed form of the mixture.
* Targets: the same model expressed in four parameterisations gives the same loss on the same
  draws; weightings differ per sample by exactly the documented ratio.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores import losses
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.scores import convert
from tests.helpers import slow_except


def _se(values):
    v = np.asarray(values)
    return v.std(ddof=1) / np.sqrt(v.size)


@pytest.fixture
def setup(x64):
    mix = ms.MoLRG.random(jax.random.key(0), dim=8, rank=2, num_components=3)
    proc = ms.VP()
    x0 = mix.sample(jax.random.key(1), 4000)
    return mix, proc, x0


def _exact(proc):
    def apply(p, x, t):
        return p.score(x, proc.alpha(t), proc.sigma(t))
    return apply


def test_dsm_of_exact_score_equals_constant(setup):
    mix, proc, x0 = setup
    apply = _exact(proc)
    kw = dict(t_min=0.02, reduction="none")
    dsm = jax.jit(lambda k, m, x, f: losses.dsm(k, f, m, x, proc, **kw), static_argnums=3)
    a = dsm(jax.random.key(2), mix, x0, apply)
    b = jax.jit(lambda k, m, x: losses.dsm_constant(k, m, x, proc, **kw))(
        jax.random.key(3), mix, x0)
    gap = float(a.mean() - b.mean())
    tol = 3 * np.hypot(_se(a), _se(b))
    assert abs(gap) < tol, (gap, tol)
    # a perturbed score: DSM rises above the constant by the excess E sigma^2 |ds|^2
    pert = lambda p, x, t: apply(p, x, t) * 1.2
    c = dsm(jax.random.key(2), mix, x0, pert)
    excess = float(c.mean() - b.mean())
    assert excess > 3 * np.hypot(_se(c), _se(b)), excess
    # paired with the same key, the excess equals ESM against the exact score (same draws)
    e = jax.jit(lambda k, m, x: losses.esm(k, pert, m, x, proc, ms.score_fn(m, proc), **kw))(
        jax.random.key(2), mix, x0)
    assert abs(float(c.mean() - a.mean() - e.mean())) < 3 * _se(c - a - e)


def test_exact_score_minimises_ism(setup):
    mix, _, x0 = setup
    alpha, sigma = 0.8, 0.6
    xt = alpha * x0 + sigma * jax.random.normal(jax.random.key(4), x0.shape, x0.dtype)
    exact = lambda p, x, t: p.score(x, alpha, sigma)
    closed = lambda p, x, t: (p.score(x, alpha, sigma), p.score_divergence(x, alpha, sigma))
    ism = jax.jit(lambda m, x, apply, div: losses.ism(None, apply, m, x, divergence=div,
                                                      reduction="none"), static_argnums=(2, 3))
    j_star = ism(mix, xt, exact, "exact")
    j_closed = ism(mix, xt, exact, closed)
    np.testing.assert_allclose(j_closed, j_star, rtol=1e-9, atol=1e-9)
    a = jax.random.normal(jax.random.key(5), (8, 8), jnp.float64) * 0.1
    for scale in (0.1, 0.3):
        pert = lambda p, x, t, scale=scale: exact(p, x, t) + scale * (a @ x)
        j = ism(mix, xt, pert, "exact")
        half_err = 0.5 * jnp.sum((scale * xt @ a.T) ** 2, -1)
        diff = j - j_star
        assert float(diff.mean()) > 0
        # J(s) - J(s*) = E |s - s*|^2 / 2 (Hyvarinen), paired on the same points
        assert abs(float(diff.mean() - half_err.mean())) < 3 * _se(diff - half_err)


@pytest.mark.slow
def test_hutchinson_is_unbiased(setup):
    mix, _, x0 = setup
    xt = x0[:200] + 0.5 * jax.random.normal(jax.random.key(6), (200, 8), x0.dtype)
    exact = lambda p, x, t: p.score(x, 1.0, 0.5)
    j = jax.jit(lambda m, x: losses.ism(None, exact, m, x, divergence="exact",
                                        reduction="none"))(mix, xt)
    h = jax.jit(lambda k, m, x: losses.ism(k, exact, m, x, divergence="hutchinson",
                                           num_probes=64, reduction="none"))(
        jax.random.key(7), mix, xt)
    assert abs(float(h.mean() - j.mean())) < 3 * _se(h - j) + 1e-12


def test_targets_agree_on_the_same_draws(setup):
    mix, proc, x0 = setup
    x0 = x0[:500]
    base = lambda p, x, t: 0.9 * _exact(proc)(p, x, t) + 0.1 * jnp.tanh(x)
    vals = {}
    for target in ("score", "eps", "x0", "v"):
        def apply(p, x, t, target=target):
            return convert(base(p, x, t), x, proc.alpha(t), proc.sigma(t), source="score",
                           target=target)
        vals[target] = jax.jit(lambda k, m, x, apply=apply, target=target: losses.dsm(
            k, apply, m, x, proc, target=target, weighting="edm", reduction="none"))(
            jax.random.key(8), mix, x0)
    for target in ("eps", "x0", "v"):
        np.testing.assert_allclose(vals[target], vals["score"], rtol=1e-8)


@pytest.mark.parametrize("name", slow_except(["sigma2", "likelihood", "edm", "min_snr", "uniform"],
                                              ["likelihood", "edm", "min_snr", "uniform"]))
def test_weightings_differ_by_the_documented_ratio(x64, name):
    proc = ms.VP()
    x0 = jax.random.normal(jax.random.key(9), (300, 3), jnp.float64)
    apply = lambda p, x, t: -p * x
    kw = dict(reduction="none", time_sampler="stratified")
    key = jax.random.key(10)
    plain = losses.dsm(key, apply, 0.7, x0, proc, weighting="uniform", **kw)
    times = losses.dsm(key, apply, 0.7, x0, proc, weighting=lambda t, a, s, p: t, **kw) / plain
    got = losses.dsm(key, apply, 0.7, x0, proc, weighting=name, **kw) / plain
    a, s = proc.alpha(times), proc.sigma(times)
    snr = a**2 / s**2
    st = s / a
    expected = {
        "sigma2": s**2,
        "likelihood": proc.diffusion_squared(times),
        "edm": s**4 / a**2 * (st**2 + 0.25) / (st**2 * 0.25),
        "min_snr": s**2 * jnp.minimum(snr, 5.0) / snr,
        "uniform": jnp.ones_like(s),
    }[name]
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_time_samplers(x64):
    proc = ms.EDM()
    n = 4000
    t = losses.sample_times(jax.random.key(0), n, proc, "stratified", 0.0, 1.0)
    np.testing.assert_array_equal(np.floor(np.sort(np.asarray(t)) * n), np.arange(n))
    t = losses.sample_times(jax.random.key(0), n, proc, "uniform", 0.2, 0.4)
    assert float(t.min()) >= 0.2 and float(t.max()) <= 0.4
    t = losses.sample_times(jax.random.key(0), n, proc, "edm", 1e-6, 1e6)
    logs = np.log(np.asarray(t))  # EDM: t = sigma, log sigma ~ N(-1.2, 1.2^2)
    assert abs(logs.mean() + 1.2) < 4 * 1.2 / np.sqrt(n)
    assert abs(logs.std() - 1.2) < 0.05
    t = losses.sample_times(jax.random.key(0), 5, proc, lambda k, m: jnp.full(m, 0.3))
    np.testing.assert_allclose(t, 0.3)


@pytest.mark.slow
def test_fixed_sigma_dsm(x64):
    mix = ms.MoLRG.random(jax.random.key(0), dim=6, rank=2, num_components=2)
    proc = ms.EDM()
    x0 = mix.sample(jax.random.key(1), 2000)
    apply = lambda p, x, t: p.score(x, 1.0, t)
    vals = jax.jit(lambda k, m, x: losses.dsm_fixed_sigma(
        k, apply, m, x, proc, 0.5, num_noise=4, antithetic=True, reduction="none"))(
        jax.random.key(2), mix, x0)
    assert vals.shape == (8000,)
    const = jax.jit(lambda k, m, x: losses.dsm_constant(
        k, m, x, proc, time_sampler=lambda k, n: jnp.full(n, 0.5), reduction="none"))(
        jax.random.key(3), mix, x0)
    assert abs(float(vals.mean() - const.mean())) < 3 * np.hypot(_se(vals), _se(const))
    with pytest.raises(ValueError, match="even"):
        losses.dsm_fixed_sigma(jax.random.key(2), apply, mix, x0, proc, 0.5, num_noise=3,
                               antithetic=True)


@pytest.mark.parametrize("dtype", slow_except(["float32", "float64"], ["float32"]), indirect=True)
def test_gradients_flow_and_dtype(dtype):
    x0 = jax.random.normal(jax.random.key(0), (64, 3), dtype)
    apply = lambda p, x, t: -p * x
    g = jax.grad(lambda p: losses.dsm(jax.random.key(1), apply, p, x0, ms.VE(),
                                      target="score"))(jnp.asarray(0.5, dtype))
    assert g.dtype == jnp.dtype(dtype) and np.isfinite(float(g))


def test_validation():
    x0 = jnp.ones((4, 2))
    apply = lambda p, x, t: x
    with pytest.raises(ValueError, match="target"):
        losses.dsm(jax.random.key(0), apply, None, x0, ms.VP(), target="noise")
    with pytest.raises(ValueError, match="weighting"):
        losses.dsm(jax.random.key(0), apply, None, x0, ms.VP(), weighting="snr")
    with pytest.raises(ValueError, match="time sampler"):
        losses.dsm(jax.random.key(0), apply, None, x0, ms.VP(), time_sampler="sobol")
    with pytest.raises(ValueError, match="x0"):
        losses.dsm(jax.random.key(0), apply, None, jnp.ones(3), ms.VP())
    with pytest.raises(ValueError, match="divergence"):
        losses.ism(None, apply, None, x0, divergence="trace")
    with pytest.raises(ValueError, match="key"):
        losses.ism(None, apply, None, x0, divergence="hutchinson")


# ---------------------------------------------------------------------------------------------
# No silent wrong answers
# ---------------------------------------------------------------------------------------------

# Run-time checks under jit raise through a host callback; its exception type is the runtime's.
RUNTIME_ERRORS = (ValueError, RuntimeError)


class _NegativeSigma(ms.Process):
    """sigma(t) = t - 0.5: negative inside the (default) time domain for t < 0.5."""

    t_min, t_max = 0.6, 1.0

    def alpha(self, t):
        return jnp.ones_like(jnp.asarray(t))

    def sigma(self, t):
        return jnp.asarray(t) - 0.5


def test_dsm_fixed_sigma_refuses_invalid_noise_levels():
    x0 = jax.random.normal(jax.random.key(0), (16, 3))
    apply = lambda p, x, t: -p * x
    key = jax.random.key(1)
    for t in (-1.0, 0.0, float("nan")):  # EDM: t is sigma
        with pytest.raises(ValueError, match="t must lie in"):
            losses.dsm_fixed_sigma(key, apply, 0.5, x0, ms.EDM(), t)
    with pytest.raises(ValueError, match="sigma must be positive"):
        losses.dsm_fixed_sigma(key, apply, 0.5, x0, _NegativeSigma(), 0.3)
    # traced: a run-time error, never the |sigma| answer or a NaN
    f = jax.jit(lambda t: losses.dsm_fixed_sigma(key, apply, 0.5, x0, ms.EDM(), t))
    assert np.isfinite(float(f(1.0)))
    for t in (-1.0, 0.0, float("nan")):
        with pytest.raises(RUNTIME_ERRORS, match="sigma must be positive"):
            jax.block_until_ready(f(t))
    for num_noise in (0, -2, 2.5):
        with pytest.raises(ValueError, match="num_noise must be an integer"):
            losses.dsm_fixed_sigma(key, apply, 0.5, x0, ms.EDM(), 1.0, num_noise=num_noise,
                                   antithetic=True)


def test_time_interval_is_checked_against_the_process():
    x0 = jax.random.normal(jax.random.key(0), (16, 3))
    apply = lambda p, x, t: -p * x
    key = jax.random.key(1)
    for proc, kw, match in [
        (ms.VE(), dict(t_min=-0.5), "t_min must lie in"),
        (ms.VP(), dict(t_min=0.0), "t_min must lie in"),
        (ms.VP(), dict(t_max=float("nan")), "t_max must lie in"),
        (ms.CosineVP(), dict(t_max=1.0), "t_max must lie in"),
        (ms.VE(), dict(t_min=0.8, t_max=0.2), "t_min must be < t_max"),
        (ms.VE(), dict(t_min=jnp.zeros(2)), "t_min must be a scalar"),
    ]:
        with pytest.raises(ValueError, match=match):
            losses.dsm(key, apply, 0.5, x0, proc, **kw)
        with pytest.raises(ValueError, match=match):
            losses.esm(key, apply, 0.5, x0, proc, lambda x, t: -x, **kw)
        with pytest.raises(ValueError, match=match):
            losses.dsm_constant(key, ms.Empirical(x0), x0, proc, **kw)
    assert np.isfinite(float(jax.jit(lambda x: losses.dsm(key, apply, 0.5, x, ms.VE(), t_min=0.0,
                                                          t_max=0.5))(x0)))
    for fn in (lambda: losses.dsm(key, apply, 0.5, x0, None),
               lambda: losses.dsm_fixed_sigma(key, apply, 0.5, x0, None, 0.5)):
        with pytest.raises(ValueError, match="process must be a noising process"):
            fn()


@pytree_dataclass
class _X0Params:
    """Parameters of a model predicting the clean point, as the models' parameters say."""

    w: jax.Array
    target: str = static_field(default="x0")


def test_losses_take_the_target_from_the_parameters(x64):
    proc = ms.VP()
    params = _X0Params(jnp.asarray(0.7))
    x0 = jax.random.normal(jax.random.key(2), (64, 3))
    key = jax.random.key(3)
    x0_model = lambda p, x, t: p.w * x if isinstance(p, _X0Params) else p["w"] * x
    # reference: the same model written as a score, (alpha x0_hat - x) / sigma^2, plain PyTree
    score_model = lambda p, x, t: (proc.alpha(t) * p["w"] * x - x) / proc.sigma(t) ** 2
    plain = {"w": params.w}

    @jax.jit
    def both(params, plain):
        kw = dict(t_min=0.05)
        return (jnp.stack([losses.dsm(key, x0_model, params, x0, proc, **kw),
                           losses.dsm_fixed_sigma(key, x0_model, params, x0, proc, 0.3),
                           losses.dsm(key, x0_model, params, x0, proc, target="x0", **kw),
                           losses.dsm(key, x0_model, plain, x0, proc, target="x0", **kw)]),
                jnp.stack([losses.dsm(key, score_model, plain, x0, proc, **kw),
                           losses.dsm_fixed_sigma(key, score_model, plain, x0, proc, 0.3),
                           losses.dsm(key, x0_model, plain, x0, proc, **kw)]))

    got, ref = (np.asarray(v) for v in both(params, plain))
    # the x0 model, its agreeing explicit target and a plain PyTree told "x0": one loss
    np.testing.assert_allclose(got[[0, 2, 3]], ref[0], rtol=1e-10)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-10)
    assert abs(ref[2] / ref[0] - 1) > 0.1  # x0 predictions read as scores: another number
    # an explicit target that contradicts the parameters' own
    for fn in (lambda: losses.dsm(key, x0_model, params, x0, proc, target="score"),
               lambda: losses.dsm_fixed_sigma(key, x0_model, params, x0, proc, 0.3,
                                              target="eps"),
               lambda: losses.esm(key, x0_model, params, x0, proc, lambda x, t: -x,
                                  target="v")):
        with pytest.raises(ValueError, match="contradicts the parameters' own target"):
            fn()


def test_ism_checks_shapes():
    x = jax.random.normal(jax.random.key(0), (8, 3))
    doubled = lambda p, y, t: jnp.concatenate([y, y])
    for method in ("exact", "hutchinson"):
        with pytest.raises(ValueError, match="apply must return a score of the same shape"):
            losses.ism(jax.random.key(1), doubled, None, x, divergence=method)
    with pytest.raises(ValueError, match="apply must return a score of the same shape"):
        losses.ism(None, None, None, x, divergence=lambda p, y, t: (y[:2], jnp.sum(y)))
    apply = lambda p, y, t: -y * (1.0 + t)
    for t in (jnp.ones(3), jnp.ones((8, 2)), jnp.ones((1,))):
        with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(8,\)"):
            losses.ism(None, apply, None, x, t, divergence="exact")
    # per-point times and integer points still work: s = -(1 + t) y, div s = -3 (1 + t)
    xi = jnp.arange(24).reshape(8, 3) % 5 - 2
    t = jnp.linspace(0.0, 1.0, 8)
    got = jax.jit(lambda x, t: losses.ism(None, apply, None, x, t, divergence="exact",
                                          reduction="none"))(xi, t)
    y = np.asarray(xi, np.float64)
    ref = 0.5 * (1 + np.asarray(t)) ** 2 * np.sum(y * y, 1) - 3 * (1 + np.asarray(t))
    np.testing.assert_allclose(got, ref, rtol=1e-5)

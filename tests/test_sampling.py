"""Samplers: grids, convergence orders, reverse-SDE statistics, Langevin laws, compile behaviour."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores import sampling
from manifold_scores.sampling import samplers

ODE = ("euler", "heun", "rk4", "dpm_solver_2m")
SDE = ("euler_maruyama", "predictor_corrector", "ddpm", "edm_churn")


# ------------------------------------------------------------------------------------------
# Closed-form PF-ODE flows: each eigen-coordinate divided by its marginal std is invariant
# ------------------------------------------------------------------------------------------


def _gaussian():
    scales = jnp.array([[1.0, 0.5, 2.0]])
    return ms.MoLRG(jnp.eye(3)[None], scales=scales), jnp.eye(3), scales[0] ** 2


def _molrg_one():
    mix = ms.MoLRG.random(jax.random.key(3), dim=6, rank=2, num_components=1)
    return mix, mix.bases[0], jnp.ones(2)


def _exact_flow(proc, basis, var, x, t_a, t_b):
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
    exact = _exact_flow(proc, basis, var, x, 1.0, 0.1)
    errs = []
    for n in STEP_COUNTS[method]:
        ts = sampling.time_grid(proc, n, kind="uniform", t_min=0.1, t_max=1.0)
        out = sampling.integrate_ode(score, proc, x, ts, method=method)
        errs.append(float(jnp.max(jnp.abs(out - exact))))
    h = 1.0 / np.asarray(STEP_COUNTS[method], float)
    return np.polyfit(np.log(h), np.log(errs), 1)[0], errs


@pytest.mark.parametrize("data", [_gaussian, _molrg_one], ids=["gaussian", "molrg_k1"])
@pytest.mark.parametrize("method", ODE)
def test_convergence_order(x64, data, method):
    slope, errs = fitted_order(data, method)
    order, tol = ORDERS[method]
    assert abs(slope - order) <= tol, (slope, errs)


def test_grad_flows_through_ode(x64):
    proc = ms.VP()
    mix, basis, var = _gaussian()
    score = ms.score_fn(mix, proc)
    ts = sampling.time_grid(proc, 40, kind="uniform", t_min=0.1, t_max=1.0)
    x = jnp.array([[0.3, -1.0, 2.0]])
    for method in ("heun", "rk4", "dpm_solver_2m"):
        jac = jax.jacrev(lambda y, m=method: sampling.integrate_ode(score, proc, y, ts, m)[0])(x)
        ratio = jnp.sqrt(proc.alpha(0.1) ** 2 * var + proc.sigma(0.1) ** 2) / jnp.sqrt(
            proc.alpha(1.0) ** 2 * var + proc.sigma(1.0) ** 2)
        tol = 1e-6 if method == "rk4" else 5e-2
        np.testing.assert_allclose(jac[:, 0], jnp.diag(ratio), atol=tol)


def test_grad_wrt_score_parameters(x64):
    proc = ms.VP()
    mix = ms.MoLRG.random(jax.random.key(0), 4, 1, 2)
    ts = sampling.time_grid(proc, 20, kind="uniform", t_min=0.1, t_max=1.0)
    x = jnp.ones((2, 4))

    def loss(w, method):
        score = lambda y, t: w * mix.score(y, proc.alpha(t), proc.sigma(t))
        return jnp.sum(sampling.integrate_ode(score, proc, x, ts, method) ** 2)

    for method in ("rk4", "dpm_solver_2m"):  # the two code paths (Runge-Kutta, multistep)
        grad = jax.grad(loss)(1.0, method)
        fd = (loss(1.0 + 1e-6, method) - loss(1.0 - 1e-6, method)) / 2e-6
        assert float(grad) == pytest.approx(float(fd), rel=1e-7)


@pytest.mark.parametrize("proc", [ms.VE(), ms.CosineVP(), ms.EDM(), ms.Flow()],
                         ids=["VE", "CosineVP", "EDM", "Flow"])
def test_every_process(x64, proc):
    """The PF-ODE solvers follow the exact flow and the SDE solvers run, for each process."""
    mix, basis, var = _gaussian()
    score = ms.score_fn(mix, proc)
    x = jax.random.normal(jax.random.key(0), (4, 3)) * sampling.prior_std(proc)
    exact = _exact_flow(proc, basis, var, x, proc.t_max, proc.t_min)
    tols = {"rk4": 1e-5, "dpm_solver_2m": 1e-2}  # Heun and Euler share RK4's code path
    for method, tol in tols.items():
        out = sampling.sample_ode(None, score, proc, steps=100, method=method, x_init=x)
        assert float(jnp.max(jnp.abs(out - exact) / jnp.abs(exact))) < tol, method
    # Each SDE method on two of the four processes (compilation dominates the test's time).
    names = type(proc).__name__
    for method in SDE[:2] if names in ("VE", "EDM") else SDE[2:]:
        out = sampling.sample_sde(jax.random.key(0), score, proc, (4, 3), steps=20, method=method)
        assert bool(jnp.all(jnp.isfinite(out))), method


# ------------------------------------------------------------------------------------------
# Time grids
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("proc", [ms.VP(), ms.VE(), ms.CosineVP(), ms.EDM(), ms.Flow()],
                         ids=["VP", "VE", "CosineVP", "EDM", "Flow"])
@pytest.mark.parametrize("kind", sampling.GRID_KINDS)
def test_time_grid(x64, proc, kind):
    t_min, t_max = proc.t_min * 2, proc.t_max * 0.9
    ts = sampling.time_grid(proc, 16, kind, t_min=t_min, t_max=t_max)
    assert ts.shape == (17,) and ts.dtype == jnp.float64
    assert float(ts[0]) == pytest.approx(t_max) and float(ts[-1]) == pytest.approx(t_min)
    assert bool(jnp.all(jnp.diff(ts) < 0))
    u = jnp.linspace(0, 1, 17)
    if kind == "uniform":
        target, got = t_max + u * (t_min - t_max), ts
    elif kind == "geometric":
        lo, hi = jnp.log(proc.sigma(t_min)), jnp.log(proc.sigma(t_max))
        target, got = hi + u * (lo - hi), jnp.log(proc.sigma(ts))
    elif kind == "log_snr":
        lo, hi = proc.log_snr(t_min), proc.log_snr(t_max)
        target, got = hi + u * (lo - hi), proc.log_snr(ts)
    else:
        r = lambda t: jnp.exp(-0.5 * proc.log_snr(t) / 7.0)
        target, got = r(t_max) + u * (r(t_min) - r(t_max)), r(ts)
    np.testing.assert_allclose(got, target, rtol=1e-7, atol=1e-9)


def test_time_grid_dtype_follows_default():
    ts = sampling.time_grid(ms.VP(), 4)
    assert ts.dtype == jnp.float32


def test_bad_inputs():
    proc = ms.VP()
    score = lambda x, t: -x
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="kind"):
        sampling.time_grid(proc, 4, kind="cosine")
    with pytest.raises(ValueError, match="steps"):
        sampling.time_grid(proc, 0)
    with pytest.raises(ValueError, match="t_min"):
        sampling.time_grid(proc, 4, t_min=1.0, t_max=0.5)
    with pytest.raises(ValueError, match="method"):
        sampling.sample_ode(key, score, proc, (2, 2), steps=4, method="rk45")
    with pytest.raises(ValueError, match="method"):
        sampling.sample_sde(key, score, proc, (2, 2), steps=4, method="heun")
    with pytest.raises(ValueError, match="steps"):
        sampling.sample_sde(key, score, proc, (2, 2), steps=0)
    with pytest.raises(ValueError, match="shape"):
        sampling.sample_ode(key, score, proc, (2,), steps=4)
    with pytest.raises(ValueError, match="x_init"):
        sampling.integrate_ode(score, proc, jnp.ones(3), jnp.linspace(1, 0.1, 5))
    with pytest.raises(ValueError, match="ts"):
        sampling.integrate_ode(score, proc, jnp.ones((2, 3)), jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="save_at"):
        sampling.sample_ode(key, score, proc, (2, 2), steps=4, save_at=(3, 1))
    with pytest.raises(ValueError, match="save_at"):
        sampling.sample_ode(key, score, proc, (2, 2), steps=4, save_at=(7,))
    with pytest.raises(ValueError, match="step_size"):
        sampling.langevin(key, score, jnp.ones((2, 2)), steps=3, step_size=-1.0)
    with pytest.raises(ValueError, match="sigmas"):
        sampling.annealed_langevin(key, score, jnp.ones((2, 2)), jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="corrector_steps"):
        sampling.predictor_corrector(corrector_steps=0)
    with pytest.raises(ValueError, match="key"):
        sampling.sample_sde(None, score, proc, (2, 2), steps=4)
    with pytest.raises(ValueError, match="stochastic"):
        sampling.sample_ode(key, score, proc, (2, 2), steps=4, method=sampling.ddpm())
    with pytest.raises(ValueError, match="stochastic"):
        sampling.integrate_ode(score, proc, jnp.ones((2, 2)), jnp.linspace(1.0, 0.5, 3),
                               method=sampling.euler_maruyama())


# ------------------------------------------------------------------------------------------
# Reverse-SDE samplers reproduce MoLRG statistics
# ------------------------------------------------------------------------------------------


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


@pytest.mark.parametrize("method", SDE)
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


# ------------------------------------------------------------------------------------------
# Keys, batches, jit, vmap, trajectories
# ------------------------------------------------------------------------------------------


def _toy():
    proc = ms.VP()
    mix = ms.MoLRG.random(jax.random.key(0), dim=4, rank=1, num_components=2)
    return proc, mix, ms.score_fn(mix, proc)


@pytest.mark.parametrize("method", ODE + SDE)
def test_sample_independent_of_batch_size(method):
    proc, mix, score = _toy()
    run = sampling.sample_ode if method in ODE else sampling.sample_sde
    key = jax.random.key(7)
    small = run(key, score, proc, (3, 4), steps=12, method=method)
    large = run(key, score, proc, (8, 4), steps=12, method=method)
    np.testing.assert_allclose(small, large[:3], rtol=1e-5, atol=1e-5)


def test_langevin_independent_of_batch_size():
    score = lambda x, s: -x / (1 + s**2)
    key = jax.random.key(1)
    small = sampling.langevin(key, score, jnp.ones((2, 3)), steps=20, step_size=0.1)
    large = sampling.langevin(key, score, jnp.ones((5, 3)), steps=20, step_size=0.1)
    np.testing.assert_allclose(small, large[:2], rtol=1e-6)


def test_second_call_does_not_recompile():
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


def test_jit_and_vmap_apply():
    proc, mix, score = _toy()
    f = jax.jit(lambda k: sampling.sample_sde(k, score, proc, (3, 4), steps=10, method="ddpm"))
    keys = jax.random.split(jax.random.key(0), 2)
    batched = jax.vmap(f)(keys)
    assert batched.shape == (2, 3, 4)
    np.testing.assert_allclose(batched[1], f(keys[1]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ODE + SDE)
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


@pytest.mark.parametrize("method", ["heun", "edm_churn"])
def test_saving_does_not_change_the_result(method):
    proc, mix, score = _toy()
    run = sampling.sample_ode if method in ODE else sampling.sample_sde
    key = jax.random.key(2)
    final = run(key, score, proc, (3, 4), steps=8, method=method)
    x, traj = run(key, score, proc, (3, 4), steps=8, method=method, save_at="all")
    np.testing.assert_allclose(x, final, rtol=1e-6)
    assert traj.xs.shape == (9, 3, 4)


def test_integrate_ode_roundtrip(x64):
    proc, mix, score = _toy()
    ts = sampling.time_grid(proc, 200, kind="log_snr", t_min=0.05, t_max=1.0)
    x = mix.sample(jax.random.key(0), 4) * proc.alpha(0.05)
    z = sampling.integrate_ode(score, proc, x, ts[::-1])
    back = sampling.integrate_ode(score, proc, z, ts)
    np.testing.assert_allclose(back, x, atol=1e-6)


def test_dtype_follows_input(dtype):
    proc, mix, score = _toy()
    x = sampling.sample_sde(jax.random.key(0), score, proc, (2, 4), steps=5)
    assert x.dtype == jnp.dtype(dtype)
    y = sampling.integrate_ode(score, proc, jnp.ones((2, 4), dtype), jnp.linspace(1.0, 0.5, 3))
    assert y.dtype == jnp.dtype(dtype)


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


# ------------------------------------------------------------------------------------------
# Langevin samplers
# ------------------------------------------------------------------------------------------


def _angle_tv(angles, log_density, bins=16):
    """Total variation between the angle histogram and a density on [-pi, pi)."""
    edges = np.linspace(-math.pi, math.pi, bins + 1)
    counts, _ = np.histogram(np.asarray(angles), edges)
    fine = np.linspace(-math.pi, math.pi, 64 * bins + 1)
    mid = 0.5 * (fine[1:] + fine[:-1])
    dens = np.exp(np.asarray(log_density(mid)))
    mass = (dens * np.diff(fine)).reshape(bins, 64).sum(1)
    mass /= mass.sum()
    return 0.5 * np.abs(counts / counts.sum() - mass).sum()


def test_tempered_langevin_on_circle():
    """seed 001: a = 0 samples p_sigma (von Mises); a = 1 tends to the uniform law on the circle."""
    vm = ms.VonMises(kappa=2.0, mu=0.5)
    circle = ms.Circle(dim=2)
    n = 8000
    angle = jax.vmap(vm.angle)

    def score(x, s):
        return vm.score(x, 1.0, s)

    # a = 0, started from the uniform law: curvature sigma^-2 in the normal direction; the
    # angle law of p_sigma is von Mises up to O(sigma^2).
    sigma = 0.1
    x = sampling.langevin(jax.random.key(0), score, circle.sample(jax.random.key(1), n),
                          steps=1500, step_size=0.2 * sigma**2, sigma=sigma, temper=0.0)
    tv0 = _angle_tv(angle(x), vm.log_prob_angle)
    # a = 1, started from the von Mises law: the angle diffuses freely up to an O(sigma) tilt.
    sigma = 0.02
    # Time 5: the first angular Fourier mode of the start decays by exp(-5).
    x = sampling.langevin(jax.random.key(2), score, vm.sample(jax.random.key(3), n),
                          steps=2500, step_size=0.1 * sigma, sigma=sigma, temper=1.0)
    tv1 = _angle_tv(angle(x), lambda th: np.zeros_like(th))
    tv_start = _angle_tv(angle(vm.sample(jax.random.key(3), n)), lambda th: np.zeros_like(th))
    assert tv0 <= 0.05, tv0
    assert tv1 <= 0.05, tv1
    assert tv_start > 0.3  # the test can tell the two laws apart


def test_tempered_langevin_inverse_problem():
    """Untempered likelihood potential + tempered prior score: posterior exp(-v) dVol_M."""
    vm = ms.VonMises(kappa=2.0, mu=0.5)
    y, noise = 0.6, 0.3
    potential = lambda th: (np.cos(th) - y) ** 2 / (2 * noise**2)
    grad_v = lambda x: jnp.array([(x[0] - y) / noise**2, 0.0], x.dtype)
    sigma = 0.02
    x = sampling.langevin(jax.random.key(0), lambda x, s: vm.score(x, 1.0, s),
                          vm.sample(jax.random.key(1), 8000), steps=1500,
                          step_size=0.1 * sigma, sigma=sigma, temper=1.0, potential_grad=grad_v)
    tv = _angle_tv(jax.vmap(vm.angle)(x), lambda th: -potential(th))
    assert tv <= 0.05, tv


def test_langevin_gaussian_and_annealed():
    # N(0, I) data: p_sigma = N(0, (1 + sigma^2) I); plain Langevin (a = 0) samples it.
    score = lambda x, s: -x / (1.0 + s**2)
    x0 = jnp.full((4000, 2), 3.0)
    x = sampling.langevin(jax.random.key(0), score, x0, steps=400, step_size=0.05, sigma=1.0,
                          temper=0.0)
    var = 2.0 / (1 - 0.05 / (2 * 2.0))  # Euler-Maruyama's stationary variance for this step
    assert abs(float(x.var()) - var) < 5 * var * math.sqrt(2 / x.size)
    assert abs(float(x.mean())) < 5 * math.sqrt(var / x.size)
    xa, traj = sampling.annealed_langevin(jax.random.key(1), score, x0,
                                          jnp.array([3.0, 1.0, 0.3, 0.1]), 100, step_size=0.02,
                                          save_at=(0, 100, 400))
    assert traj.xs.shape == (3, 4000, 2)
    np.testing.assert_allclose(traj.ts, [3.0, 3.0, 0.1], rtol=1e-6)
    assert abs(float(xa.var()) - 1.01) < 0.1
    # Tempering rescales the drift: stationary variance (1 + sigma^2) / sigma^a.
    xt = sampling.langevin(jax.random.key(2), score, x0, steps=400, step_size=0.05, sigma=2.0,
                           temper=1.0)
    assert abs(float(xt.var()) / 2.5 - 1) < 0.1


# ------------------------------------------------------------------------------------------
# Optional diffrax bridge
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["tsit5", "dopri5"])
def test_diffrax_bridge(x64, solver):
    pytest.importorskip("diffrax")
    proc = ms.VP()
    mix, basis, var = _molrg_one()
    score = ms.score_fn(mix, proc)
    x = jax.random.normal(jax.random.key(0), (4, mix.dim))
    out, stats = sampling.integrate_ode_adaptive(score, proc, x, 1.0, 0.1, solver=solver,
                                                 rtol=1e-8, atol=1e-8, return_stats=True)
    np.testing.assert_allclose(out, _exact_flow(proc, basis, var, x, 1.0, 0.1), atol=1e-6)
    assert int(stats["num_steps"]) > 1
    with pytest.raises(ValueError, match="solver"):
        sampling.integrate_ode_adaptive(score, proc, x, 1.0, 0.1, solver="euler")

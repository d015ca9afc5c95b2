"""Process identities against autodiff, and inverse maps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms

PROCESSES = {
    "VE": ms.VE(sigma_min=0.01, sigma_max=50.0),
    "VP": ms.VP(beta_min=0.1, beta_max=20.0),
    "CosineVP": ms.CosineVP(),
    "EDM": ms.EDM(),
    "Flow": ms.Flow(),
}


def _times(proc, n=17):
    lo, hi = float(proc.t_min), float(proc.t_max)
    lo = max(lo, 1e-3 * hi)
    return jnp.linspace(lo, hi * 0.999, n)


@pytest.mark.parametrize("name", PROCESSES)
def test_drift_is_dlog_alpha(x64, name):
    proc = PROCESSES[name]
    ts = _times(proc)
    f_auto = jax.vmap(jax.grad(lambda t: jnp.log(proc.alpha(t))))(ts)
    np.testing.assert_allclose(jax.vmap(proc.drift)(ts), f_auto, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", PROCESSES)
def test_diffusion_matches_variance_growth(x64, name):
    proc = PROCESSES[name]
    ts = _times(proc)
    dvar = jax.vmap(jax.grad(lambda t: proc.sigma(t) ** 2))(ts)
    g2 = dvar - 2 * jax.vmap(proc.drift)(ts) * jax.vmap(proc.sigma)(ts) ** 2
    np.testing.assert_allclose(jax.vmap(proc.diffusion)(ts) ** 2, g2, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", PROCESSES)
def test_log_snr_definition(x64, name):
    proc = PROCESSES[name]
    ts = _times(proc)
    ref = 2 * jnp.log(jax.vmap(proc.alpha)(ts) / jax.vmap(proc.sigma)(ts))
    np.testing.assert_allclose(jax.vmap(proc.log_snr)(ts), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", PROCESSES)
def test_inverse_maps_round_trip(dtype, name):
    proc = PROCESSES[name]
    ts = _times(proc)
    tol = 1e-6 if dtype == "float64" else 2e-3
    t_sigma = jax.vmap(proc.t_from_sigma)(jax.vmap(proc.sigma)(ts))
    t_snr = jax.vmap(proc.t_from_log_snr)(jax.vmap(proc.log_snr)(ts))
    np.testing.assert_allclose(t_sigma, ts, rtol=tol, atol=tol * 1e-2)
    np.testing.assert_allclose(t_snr, ts, rtol=tol, atol=tol * 1e-2)


def test_vp_small_t_is_accurate_in_float32():
    # sigma(t) ~ sqrt(beta_min t) for small t: the naive sqrt(1 - alpha^2) would round to 0.
    proc = ms.VP()
    t = jnp.float32(1e-6)
    np.testing.assert_allclose(proc.sigma(t), np.sqrt(-np.expm1(-0.1 * 1e-6 - 9.95 * 1e-12)),
                               rtol=1e-5)


def test_vp_closed_forms(x64):
    proc = ms.VP(beta_min=0.1, beta_max=20.0)
    t = 0.3
    b = 0.1 * t + 0.5 * 19.9 * t**2
    np.testing.assert_allclose(proc.alpha(t), np.exp(-b / 2), rtol=1e-14)
    np.testing.assert_allclose(proc.sigma(t) ** 2 + proc.alpha(t) ** 2, 1.0, rtol=1e-14)
    np.testing.assert_allclose(proc.diffusion(t) ** 2, 0.1 + 19.9 * t, rtol=1e-14)


def test_processes_are_pytrees_and_jit():
    proc = ms.VP(beta_min=0.2, beta_max=10.0)
    leaves = jax.tree.leaves(proc)
    assert len(leaves) == 4
    f = jax.jit(lambda p, t: p.sigma(t))
    np.testing.assert_allclose(f(proc, 0.5), proc.sigma(0.5), rtol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: ms.VP(beta_min=-1.0),
    lambda: ms.VP(beta_min=5.0, beta_max=1.0),
    lambda: ms.VP(beta_max=float("nan")),
    lambda: ms.VE(sigma_min=-1.0),
    lambda: ms.VE(sigma_min=10.0, sigma_max=1.0),
    lambda: ms.VE(t_min=0.5, t_max=0.2),
    lambda: ms.CosineVP(s=0.0),
    lambda: ms.CosineVP(t_min=0.0),
    lambda: ms.EDM(sigma_min=0.0),
    lambda: ms.EDM(sigma_min=2.0, sigma_max=1.0),
    lambda: ms.Flow(t_max=1.0),
])
def test_bad_parameters_raise(make):
    with pytest.raises(ValueError, match="must"):
        make()


@pytest.mark.parametrize("name", PROCESSES)
def test_check_interval(name):
    proc = PROCESSES[name]
    proc.check_interval(proc.t_min, proc.t_max)  # the defaults are valid
    with pytest.raises(ValueError, match="t_min must be < t_max"):
        proc.check_interval(proc.t_max, proc.t_min)
    with pytest.raises(ValueError, match="t_min must lie"):
        proc.check_interval(-1.0, proc.t_max)


def test_cosine_float32_keeps_digits_near_t_max():
    """alpha -> 0 at t -> 1: formed from 1 - t, float32 keeps ~1e-7 relative (it lost 8e-5)."""
    ts = np.linspace(0.9, 0.999, 12).astype(np.float32)  # the same float32 times in both runs
    got = jax.vmap(ms.CosineVP().alpha)(jnp.asarray(ts))
    with jax.enable_x64(True):
        ref = np.asarray(jax.vmap(ms.CosineVP().alpha)(jnp.asarray(ts, jnp.float64)))
    assert np.max(np.abs(np.asarray(got, np.float64) - ref) / ref) < 1e-6

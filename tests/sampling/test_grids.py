"""Time grids: each kind is uniform in its own variable; sigma > 0 is checked on the grid."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores import sampling


@pytest.mark.parametrize("proc", [ms.VP(), ms.VE(), ms.CosineVP(), ms.EDM(), ms.Flow()],
                         ids=["VP", "VE", "CosineVP", "EDM", "Flow"])
@pytest.mark.parametrize("kind", sampling.GRID_KINDS)
def test_time_grid(x64, proc, kind):
    t_min, t_max = max(proc.t_min * 2, 1e-3), proc.t_max * 0.9
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


def test_time_grid_bad_inputs():
    proc = ms.VP()
    with pytest.raises(ValueError, match="kind"):
        sampling.time_grid(proc, 4, kind="cosine")
    with pytest.raises(ValueError, match="steps"):
        sampling.time_grid(proc, 0)
    with pytest.raises(ValueError, match="t_min"):
        sampling.time_grid(proc, 4, t_min=1.0, t_max=0.5)
    with pytest.raises(ValueError, match="t_max"):
        sampling.time_grid(proc, 4, t_min=0.1, t_max=float("inf"))
    with pytest.raises(ValueError, match="rho"):
        sampling.time_grid(proc, 4, rho=0.0)
    with pytest.raises(ValueError, match="dtype"):
        sampling.time_grid(proc, 4, dtype=jnp.int32)


def test_sigma_checked_on_the_whole_grid():
    """sigma(t) = 0 at t = 0 for VP and Flow: refused eagerly, or at run time when traced."""
    score = lambda x, t: -x
    x = jnp.ones((2, 2))
    for proc in (ms.VP(), ms.Flow()):
        with pytest.raises(ValueError, match="t_min"):
            sampling.sample_ode(None, score, proc, steps=4, t_min=0.0, x_init=x)
    # A grid given by hand is checked too (no process-level interval check applies here).
    with pytest.raises(ValueError, match="sigma"):
        sampling.integrate_ode(score, ms.VP(), x, jnp.array([1.0, 0.5, 0.0]))
    # Traced t_min: one run-time check before the scan.
    run = jax.jit(lambda tm: sampling.sample_ode(None, score, ms.VP(), steps=4, t_min=tm,
                                                 method="euler", x_init=x))
    assert bool(jnp.all(jnp.isfinite(run(0.1))))
    with pytest.raises(Exception, match="sigma"):
        jax.block_until_ready(run(0.0))

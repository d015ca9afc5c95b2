"""E7 and the batched training helpers: crossing interpolation, padded batches, vmapped MLP
training; the quick run in the slow suite."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.experiments import _batched
from manifold_scores.experiments import e7_generalisation as e7


def test_crossing_interpolates_in_log_ratio():
    r = np.array([1.0, 10.0, 100.0])
    assert e7._crossing(r, [0.0, 0.5, 1.0]) == pytest.approx(10.0)
    assert e7._crossing(r, [0.0, 0.25, 0.75]) == pytest.approx(10 ** 1.5)
    assert e7._crossing(r, [0.6, 0.9, 1.0]) == -math.inf
    assert e7._crossing(r, [0.0, 0.1, 0.2]) == math.inf


def test_padded_batches_draw_valid_rows_only():
    data, counts = _batched.pad_sets([np.ones((3, 2)), 2 * np.ones((5, 2))])
    assert data.shape == (2, 5, 2) and counts.tolist() == [3, 5]
    rows = _batched.batch_rows(jax.random.key(0), data[0], counts[0], 500)
    assert bool(jnp.all(rows == 1.0))


@pytest.mark.slow
def test_vmapped_mlps_train_and_sample():
    """Two tiny denoisers (one per padded set) train to finite losses and sample; the Heun
    sampler with the exact denoiser of N(0, I) follows the exact PF-ODE flow."""
    x = np.asarray(jax.random.normal(jax.random.key(1), (64, 2)))
    data, counts = _batched.pad_sets([x[:16], x])
    params, hist = _batched.train_mlps(jax.random.key(2), data, counts, width=16, depth=1,
                                       steps=200, batch_size=32, sigma_data=1.0)
    hist = np.asarray(hist)
    assert hist.shape == (200, 2)
    assert np.all(np.isfinite(hist))
    xs = _batched.sample_edm(jax.random.key(3), params, n=8, steps=8)
    assert xs.shape == (2, 8, 2) and bool(jnp.all(jnp.isfinite(xs)))
    # exact denoiser of N(0, I): D(x) = x / (1 + sigma^2); the PF-ODE x(sigma) is proportional
    # to sqrt(1 + sigma^2), and the last step returns D(x(sigma_min), sigma_min). Heun is
    # second order: doubling the steps divides the error by about 4.
    z = jax.random.normal(jax.random.key(4), (1000, 1))
    errs = []
    for steps in (32, 64):
        sig = jnp.asarray(_batched.edm_sigmas(steps))
        out = _batched.heun_edm(lambda y, s: y / (1 + s * s), sig[0] * z, sig)
        ref = sig[0] * z / jnp.sqrt(1 + sig[0] ** 2) / jnp.sqrt(1 + sig[-1] ** 2)
        errs.append(float(jnp.max(jnp.abs(out - ref))) / float(jnp.max(jnp.abs(ref))))
    assert errs[1] < 1e-2 and errs[0] / errs[1] > 3.0, errs


@pytest.mark.slow
def test_quick_run_claims():
    table = ms.experiments.run("E7", "quick")
    assert table.ok, table.format()

"""Langevin samplers: the laws of plain, tempered-score, annealed and inverse-problem dynamics.

The tempered-score claims are those of Li, Shen, Hsieh, He, "When Scores Learn Geometry: Rate
Separations under the Manifold Hypothesis" (arXiv 2509.24912).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores import sampling
from manifold_scores._pytree import pytree_dataclass


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


@pytree_dataclass
class _LikelihoodGrad:
    """``grad v`` for ``v(x) = weight (x_0 - y)^2 / (2 noise^2)``, a callable PyTree."""

    weight: float
    y: float
    noise: float

    def __call__(self, x):
        return jnp.zeros_like(x).at[0].set(self.weight * (x[0] - self.y) / self.noise**2)


def test_tempered_langevin_laws_on_circle():
    """a = 0 samples p_sigma (von Mises); a = 1 tends to the uniform law on the circle; a = 1
    with an untempered likelihood potential samples the posterior exp(-v) dVol_M.

    The three chains share one compilation: sigma, the step and the exponent are traced, and the
    potential is a callable PyTree whose weight is 0 for the first two. Start points and angles
    go through NumPy (exact von Mises draws, arctan2 in the circle's frame).
    """
    vm = ms.VonMises(kappa=2.0, mu=0.5)
    n, steps = 8000, 1500
    rng = np.random.default_rng(0)
    frame, centre = np.asarray(vm.frame, np.float64), np.asarray(vm.centre, np.float64)
    embed = lambda th: jnp.asarray(centre + np.cos(th)[:, None] * frame[:, 0]
                                   + np.sin(th)[:, None] * frame[:, 1], jnp.float32)

    def angle(x):
        u = (np.asarray(x, np.float64) - centre) @ frame
        return np.arctan2(u[:, 1], u[:, 0])

    y, noise = 0.6, 0.3
    no_potential = _LikelihoodGrad(0.0, y, noise)

    def score(x, s):
        return vm.score(x, 1.0, s)

    # a = 0, started from the uniform law: curvature sigma^-2 in the normal direction, h at a
    # fifth of it; time 3. The angle law of p_sigma is von Mises up to O(sigma^2).
    sigma = 0.1
    x = sampling.langevin(jax.random.key(0), score, embed(rng.uniform(-np.pi, np.pi, n)),
                          steps=steps, step_size=0.2 * sigma**2, sigma=sigma, temper=0.0,
                          potential_grad=no_potential)
    tv0 = _angle_tv(angle(x), vm.log_prob_angle)
    # a = 1, started from the von Mises law: the angle diffuses freely up to an O(sigma) tilt.
    # Curvature sigma^-1, h at a fifth of it; time 6: the first angular Fourier mode of the
    # start decays by exp(-6).
    sigma = 0.02
    start = rng.vonmises(0.5, 2.0, n)
    x = sampling.langevin(jax.random.key(2), score, embed(start), steps=steps,
                          step_size=0.2 * sigma, sigma=sigma, temper=1.0,
                          potential_grad=no_potential)
    tv1 = _angle_tv(angle(x), lambda th: np.zeros_like(th))
    tv_start = _angle_tv(start, lambda th: np.zeros_like(th))
    # Untempered likelihood potential + tempered prior score: posterior exp(-v) dVol_M (h at a
    # tenth of the curvature, time 3, as the potential's own curvature 1 / noise^2 enters).
    potential = lambda th: (np.cos(th) - y) ** 2 / (2 * noise**2)
    x = sampling.langevin(jax.random.key(4), score, embed(rng.vonmises(0.5, 2.0, n)),
                          steps=steps, step_size=0.1 * sigma, sigma=sigma, temper=1.0,
                          potential_grad=_LikelihoodGrad(1.0, y, noise))
    tv_post = _angle_tv(angle(x), lambda th: -potential(th))
    assert tv0 <= 0.05, tv0
    assert tv1 <= 0.05, tv1
    assert tv_post <= 0.05, tv_post
    assert tv_start > 0.3  # the test can tell the two laws apart


def test_langevin_gaussian_and_annealed():
    # N(0, I) data: p_sigma = N(0, (1 + sigma^2) I); plain Langevin (the default a = 0) samples it.
    score = lambda x, s: -x / (1.0 + s**2)
    x0 = jnp.full((4000, 2), 3.0)
    x = sampling.langevin(jax.random.key(0), score, x0, steps=400, step_size=0.05, sigma=1.0)
    var = 2.0 / (1 - 0.05 / (2 * 2.0))  # Euler-Maruyama's stationary variance for this step
    assert abs(float(x.var()) - var) < 5 * var * math.sqrt(2 / x.size)
    assert abs(float(x.mean())) < 5 * math.sqrt(var / x.size)
    xa, traj = sampling.annealed_langevin(jax.random.key(1), score, x0,
                                          jnp.array([3.0, 1.0, 0.3, 0.1]), 100, step_size=0.02,
                                          save_at=(0, 100, 400))
    assert traj.xs.shape == (3, 4000, 2)
    np.testing.assert_allclose(traj.ts, [3.0, 3.0, 0.1], rtol=1e-6)
    assert abs(float(xa.var()) - 1.01) < 0.1
    # Tempering rescales the drift: stationary variance (1 + sigma^2) / sigma^a (same
    # compilation as the first run: the exponent is traced).
    xt = sampling.langevin(jax.random.key(2), score, x0, steps=400, step_size=0.05, sigma=2.0,
                           temper=1.0)
    assert abs(float(xt.var()) / 2.5 - 1) < 0.1


def test_default_temper_is_zero():
    """Both samplers default to the untempered score (temper = 0)."""
    score = lambda x, s: -x / (1.0 + s**2)
    x0 = jnp.ones((3, 2))
    key = jax.random.key(0)
    default = sampling.langevin(key, score, x0, steps=5, step_size=0.1, sigma=2.0)
    plain = sampling.langevin(key, score, x0, steps=5, step_size=0.1, sigma=2.0, temper=0.0)
    np.testing.assert_array_equal(default, plain)
    sig = jnp.array([2.0, 1.0])
    default = sampling.annealed_langevin(key, score, x0, sig, 3, step_size=0.1)
    plain = sampling.annealed_langevin(key, score, x0, sig, 3, step_size=0.1, temper=0.0)
    np.testing.assert_array_equal(default, plain)


def test_langevin_independent_of_batch_size():
    score = lambda x, s: -x / (1 + s**2)
    key = jax.random.key(1)
    small = sampling.langevin(key, score, jnp.ones((2, 3)), steps=20, step_size=0.1)
    large = sampling.langevin(key, score, jnp.ones((5, 3)), steps=20, step_size=0.1)
    np.testing.assert_allclose(small, large[:2], rtol=1e-6)


def test_langevin_bad_inputs():
    score = lambda x, s: -x
    key = jax.random.key(0)
    x = jnp.ones((2, 2))
    with pytest.raises(ValueError, match="step_size"):
        sampling.langevin(key, score, x, steps=3, step_size=-1.0)
    with pytest.raises(ValueError, match="sigma"):
        sampling.langevin(key, score, x, steps=3, sigma=0.0)
    with pytest.raises(ValueError, match="steps"):
        sampling.langevin(key, score, x, steps=0)
    with pytest.raises(ValueError, match="x_init"):
        sampling.langevin(key, score, jnp.ones(2), steps=3)
    with pytest.raises(ValueError, match="sigmas"):
        sampling.annealed_langevin(key, score, x, jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="sigmas"):
        sampling.annealed_langevin(key, score, x, jnp.array([1.0, -0.1]))
    with pytest.raises(ValueError, match="steps_per_sigma"):
        sampling.annealed_langevin(key, score, x, jnp.array([1.0]), steps_per_sigma=0)
    # Traced noise level: a run-time check before the scan (on a score that uses sigma: XLA
    # drops a check whose value never reaches the result).
    run = jax.jit(lambda s: sampling.langevin(key, lambda y, s: -y / (1 + s**2), x, steps=3,
                                              sigma=s))
    assert bool(jnp.all(jnp.isfinite(run(0.5))))
    with pytest.raises(Exception, match="sigma"):
        jax.block_until_ready(run(-0.5))

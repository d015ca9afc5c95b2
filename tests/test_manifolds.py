"""Curved manifolds: exact noised laws against independent quadratures, and their geometry.

References are written in numpy/scipy and share no code with the implementation: brute-force
midpoint quadratures over the manifold's parameters with at least 1e5 nodes (a different rule and
node set from the code under test), scipy's exponentially scaled Bessel functions, and zooming
grid searches for nearest points.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sps

import manifold_scores as ms

SIGMAS = (1.0, 0.3, 0.1, 0.03)
ALPHA = 0.8


def _lse(a, axis=-1):
    return sps.logsumexp(a, axis=axis)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _frame(seed, d, k):
    """A random orthonormal frame that is exact in float32 and float64.

    Signed permutations of a block-diagonal Hadamard matrix (entries 0, +-1/2, +-1): the
    same frame in both precisions, orthonormal to the last bit.
    """
    rng = np.random.default_rng(seed)
    h2 = np.array([[1.0, 1.0], [1.0, -1.0]])
    h4 = np.kron(h2, h2) / 2.0
    blocks = d // 4
    full = np.eye(d)
    full[: 4 * blocks, : 4 * blocks] = np.kron(np.eye(blocks), h4)
    full = full[rng.permutation(d)] * rng.choice([-1.0, 1.0], d)[:, None]
    return full[:, rng.permutation(d)[:k]]


def _tweedie_and_grad_errors(density, xs, alpha, sigma):
    """Max relative errors of grad(log_prob) and Tweedie's (alpha E[X|x] - x)/sigma^2 vs score."""
    score = jax.jit(jax.vmap(density.score, (0, None, None)))(xs, alpha, sigma)
    grad = jax.jit(jax.vmap(jax.grad(density.log_prob), (0, None, None)))(xs, alpha, sigma)
    mean = jax.jit(jax.vmap(density.denoise, (0, None, None)))(xs, alpha, sigma)
    tweedie = (alpha * mean - xs) / sigma**2
    scale = np.maximum(np.linalg.norm(score, axis=-1), 1.0 / sigma)[:, None]
    g = float(np.max(np.abs(np.asarray(grad) - np.asarray(score)) / scale))
    t = float(np.max(np.abs(np.asarray(tweedie) - np.asarray(score)) / scale))
    return g, t, np.all(np.isfinite(score))


# ---------------------------------------------------------------------------------------------
# Sphere / Circle / VonMises references
# ---------------------------------------------------------------------------------------------


def _sphere_ref_log_prob(x, frame, centre, radius, k, alpha, sigma, nodes=200_000):
    """Brute force over the polar angle phi to u: theta . u_hat = cos phi, density ~ sin^{k-2}."""
    d = x.shape[0]
    z = x - alpha * centre
    u = frame.T @ z
    zp2 = np.sum((z - frame @ u) ** 2)
    r = np.linalg.norm(u)
    phi = (np.arange(nodes) + 0.5) * math.pi / nodes
    logw = (k - 2) * np.log(np.sin(phi))
    logw -= _lse(logw)
    # |z - alpha R theta|^2 = zp2 + (r - alpha R)^2 + 2 alpha R r (1 - cos phi), no cancellation
    quad = zp2 + (r - alpha * radius) ** 2 + 4.0 * alpha * radius * r * np.sin(phi / 2) ** 2
    return _lse(logw - quad / (2 * sigma**2)) - 0.5 * d * math.log(2 * math.pi * sigma**2)


def _sphere_ref_score(x, frame, centre, radius, k, alpha, sigma):
    """score = -x_perp/sigma^2 + ((alpha R A(kappa) - r)/sigma^2) Q u_hat, A from scipy.ive."""
    nu = k / 2 - 1
    z = x - alpha * centre
    u = frame.T @ z
    z_perp = z - frame @ u
    r = np.linalg.norm(u)
    kappa = alpha * radius * r / sigma**2
    if kappa < 1e-8:
        radial = (alpha * radius) ** 2 / (k * sigma**4) - 1 / sigma**2
        return -z_perp / sigma**2 + frame @ (radial * u)
    a = sps.ive(nu + 1, kappa) / sps.ive(nu, kappa)
    return -z_perp / sigma**2 + frame @ (((alpha * radius * a - r) / sigma**2) * u / r)


def _sphere_points(seed, sph, frame, centre, radius, k, alpha, sigma, n=4):
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((n, k))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    on = centre + radius * theta @ frame.T
    noisy = alpha * on + sigma * rng.standard_normal((n, frame.shape[0]))
    far = 100.0 * rng.standard_normal((1, frame.shape[0])) / math.sqrt(frame.shape[0])
    at_centre = alpha * centre[None]
    near_centre = at_centre + 1e-3 * sigma * rng.standard_normal((1, frame.shape[0]))
    return np.concatenate([noisy, far, at_centre, near_centre])


def _make_sphere(k, d=32, radius=1.3, seed=0):
    frame = _frame(seed, d, k)
    centre = np.random.default_rng(seed + 1).standard_normal(d).astype(np.float32) * 0.25
    centre = centre.astype(np.float64)  # the same numbers in both precisions
    sph = ms.Sphere(dim=d, intrinsic_dim=k - 1, radius=radius, frame=jnp.asarray(frame),
                    centre=jnp.asarray(centre))
    return sph, frame, centre


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_sphere_log_prob_matches_quadrature(x64, k):
    sph, frame, centre = _make_sphere(k, d=12)
    log_prob = jax.jit(jax.vmap(sph.log_prob, (0, None, None)))
    worst = 0.0
    for i, sigma in enumerate(SIGMAS):
        xs = _sphere_points(i, sph, frame, centre, 1.3, k, ALPHA, sigma)
        xs = xs[np.linalg.norm(xs - ALPHA * centre, axis=1) < 10]  # keep log p moderate
        got = np.asarray(log_prob(jnp.asarray(xs), ALPHA, sigma))
        ref = np.array([_sphere_ref_log_prob(x, frame, centre, 1.3, k, ALPHA, sigma) for x in xs])
        worst = max(worst, float(np.max(np.abs(got - ref))))
    assert worst < 1e-6, worst


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_sphere_scores_exact_from_tiny_to_huge_sigma(x64, k):
    sph, frame, centre = _make_sphere(k)
    stats = jax.jit(jax.vmap(sph.stats, (0, None, None)))
    worst = 0.0
    for i, sigma in enumerate(np.geomspace(1e-4, 1e2, 13)):
        xs = _sphere_points(10 + i, sph, frame, centre, 1.3, k, ALPHA, sigma)
        st = stats(jnp.asarray(xs), ALPHA, sigma)
        assert np.all(np.isfinite(st.log_prob)) and np.all(np.isfinite(st.score))
        assert np.all(np.isfinite(st.mean)) and np.all(np.isfinite(st.cov_trace))
        for x, s in zip(xs, np.asarray(st.score), strict=True):
            ref = _sphere_ref_score(x, frame, centre, 1.3, k, ALPHA, sigma)
            scale = max(np.linalg.norm(ref), 1.0 / sigma)
            worst = max(worst, float(np.linalg.norm(s - ref) / scale))
    assert worst < 1e-8, worst


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_sphere_float32_matches_float64(k):
    # alpha = 1/2 makes alpha * centre exact in both precisions, so both see the same x - alpha c
    # (at the centre the score's Lipschitz constant is ~ 1/sigma^4: any input rounding shows).
    alpha = 0.5
    sph32, frame, centre = _make_sphere(k)
    assert sph32.frame.dtype == jnp.float32
    worst = 0.0
    for i, sigma in enumerate(np.geomspace(1e-3, 1e2, 11)):
        xs = _sphere_points(30 + i, sph32, frame, centre, 1.3, k, alpha, sigma)
        xs = xs.astype(np.float32)
        s32 = np.asarray(jax.vmap(sph32.score, (0, None, None))(jnp.asarray(xs), alpha, sigma))
        assert s32.dtype == np.float32 and np.all(np.isfinite(s32))
        with jax.enable_x64(True):
            sph64 = ms.Sphere(dim=32, intrinsic_dim=k - 1, radius=1.3,
                              frame=jnp.asarray(frame), centre=jnp.asarray(centre))
            s64 = np.asarray(jax.vmap(sph64.score, (0, None, None))(
                jnp.asarray(xs, jnp.float64), alpha, sigma))
        scale = np.maximum(np.linalg.norm(s64, axis=1), 1.0 / sigma)
        worst = max(worst, float(np.max(np.linalg.norm(s32 - s64, axis=1) / scale)))
    assert worst < 1e-4, worst


def test_circle_is_a_sphere_and_von_mises_with_kappa_zero(x64):
    frame = _frame(3, 5, 2)
    centre = np.array([0.1, -0.2, 0.3, 0.0, 0.5])
    circ = ms.Circle(dim=5, radius=1.7, frame=frame, centre=centre)
    sph = ms.Sphere(dim=5, intrinsic_dim=1, radius=1.7, frame=frame, centre=centre)
    vm = ms.VonMises(0.0, mu=0.3, radius=1.7, dim=5, frame=frame, centre=centre)
    x = jnp.asarray(np.random.default_rng(0).standard_normal(5))
    for sigma in (1e-3, 0.1, 3.0):
        a, b, c = (m.stats(x, 0.7, sigma) for m in (circ, sph, vm))
        np.testing.assert_allclose(a.log_prob, b.log_prob, rtol=1e-13)
        np.testing.assert_allclose(a.log_prob, c.log_prob, rtol=1e-13)
        np.testing.assert_allclose(a.score, c.score, rtol=1e-12)


def _von_mises_ref_log_prob(x, frame, centre, radius, kappa, mu, alpha, sigma, nodes=200_000):
    d = x.shape[0]
    theta = (np.arange(nodes) + 0.5) * 2 * math.pi / nodes
    log_angle = kappa * np.cos(theta - mu) - math.log(2 * math.pi * sps.i0e(kappa)) - kappa
    pts = centre + radius * np.stack([np.cos(theta), np.sin(theta)], 1) @ frame.T
    quad = np.sum((x - alpha * pts) ** 2, axis=1)
    return (_lse(log_angle - quad / (2 * sigma**2)) + math.log(2 * math.pi / nodes)
            - 0.5 * d * math.log(2 * math.pi * sigma**2))


@pytest.mark.parametrize("kappa", [0.5, 4.0, 60.0])
def test_von_mises_log_prob_matches_quadrature(x64, kappa):
    frame = _frame(7, 4, 2)
    centre = np.array([0.3, 0.0, -0.1, 0.2])
    vm = ms.VonMises(kappa, mu=1.1, radius=1.2, dim=4, frame=frame, centre=centre)
    rng = np.random.default_rng(1)
    on = np.asarray(vm.sample(jax.random.key(0), 4))
    worst = 0.0
    for sigma in SIGMAS:
        xs = np.concatenate([ALPHA * on + sigma * rng.standard_normal(on.shape),
                             ALPHA * centre[None], 2.0 * rng.standard_normal((1, 4))])
        got = np.asarray(jax.vmap(vm.log_prob, (0, None, None))(xs, ALPHA, sigma))
        ref = [_von_mises_ref_log_prob(x, frame, centre, 1.2, kappa, 1.1, ALPHA, sigma)
               for x in xs]
        worst = max(worst, float(np.max(np.abs(got - ref))))
    assert worst < 1e-6, worst


@pytest.mark.parametrize("kappa", [0.0, 2.0, 50.0])
def test_von_mises_samples_have_the_right_angles(kappa):
    vm = ms.VonMises(kappa, mu=-2.0, radius=2.0, dim=3, key=jax.random.key(0))
    x = vm.sample(jax.random.key(1), 20_000)
    np.testing.assert_allclose(jax.vmap(vm.distance)(x), 0.0, atol=2e-4)
    theta = np.asarray(jax.vmap(vm.angle)(x), np.float64)
    resultant = np.mean(np.exp(1j * theta))
    expected = sps.ive(1, kappa) / sps.ive(0, kappa)  # E cos(theta - mu) = I1/I0
    assert abs(abs(resultant) - expected) < 0.02
    if kappa > 0:
        assert abs(np.angle(resultant * np.exp(2.0j))) < 0.05
    # the angle's clean log density integrates to one
    grid = np.linspace(-math.pi, math.pi, 4001)[:-1]
    mass = np.sum(np.exp(np.asarray(vm.log_prob_angle(jnp.asarray(grid))))) * 2 * math.pi / 4000
    assert abs(mass - 1.0) < 1e-4


def test_sphere_samples_are_uniform_on_the_sphere():
    sph = ms.Sphere(dim=6, intrinsic_dim=2, radius=2.0, key=jax.random.key(0),
                    centre=jnp.ones(6))
    x = sph.sample(jax.random.key(1), 20_000)
    assert x.shape == (20_000, 6)
    np.testing.assert_allclose(jax.vmap(sph.distance)(x), 0.0, atol=2e-4)
    u = (np.asarray(x) - 1.0) @ np.asarray(sph.frame) / 2.0
    np.testing.assert_allclose(u.mean(0), 0.0, atol=0.02)
    np.testing.assert_allclose(u.T @ u / len(u), np.eye(3) / 3, atol=0.02)

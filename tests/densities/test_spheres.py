"""Round spheres (Sphere, Circle, VonMises): exact noised laws against independent references.

References are numpy/scipy and share no code with the implementation: brute-force quadratures
with at least 1e5 nodes (over the polar angle, the circle's angle, or Gauss-Legendre heights by
azimuth midpoints on S^2), scipy's exponentially scaled Bessel functions, and zooming grid
searches for nearest points (:mod:`tests.helpers`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sps

import manifold_scores as ms
from tests.helpers import (
    assert_geometry_and_rate_separation,
    assert_noised_law_exact,
    assert_transformations_compose,
    hadamard_frame,
    slow_except,
)

SIGMAS = (1.0, 0.3, 0.1, 0.03)
ALPHA = 0.8


def _lse(a, axis=-1):
    return sps.logsumexp(a, axis=axis)


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
    frame = hadamard_frame(seed, d, k)
    centre = np.random.default_rng(seed + 1).standard_normal(d).astype(np.float32) * 0.25
    centre = centre.astype(np.float64)  # the same numbers in both precisions
    sph = ms.Sphere(dim=d, intrinsic_dim=k - 1, radius=radius, frame=jnp.asarray(frame),
                    centre=jnp.asarray(centre))
    return sph, frame, centre


@pytest.mark.parametrize("k", slow_except([2, 3, 5, 10], [3]))
def test_sphere_exact_from_tiny_to_huge_sigma(x64, k):
    """S^{k-1} in R^32: log p against quadrature; scores against scipy from 1e-4 to 1e2."""
    sph, frame, centre = _make_sphere(k)
    stats = jax.jit(jax.vmap(sph.stats, (0, None, None)))
    worst_score, worst_log_p = 0.0, 0.0
    for i, sigma in enumerate(sorted(set(np.geomspace(1e-4, 1e2, 13)) | set(SIGMAS))):
        xs = _sphere_points(10 + i, sph, frame, centre, 1.3, k, ALPHA, sigma)
        st = stats(jnp.asarray(xs), ALPHA, sigma)
        assert np.all(np.isfinite(st.log_prob)) and np.all(np.isfinite(st.score))
        assert np.all(np.isfinite(st.mean)) and np.all(np.isfinite(st.cov_trace))
        for x, s in zip(xs, np.asarray(st.score), strict=True):
            ref = _sphere_ref_score(x, frame, centre, 1.3, k, ALPHA, sigma)
            scale = max(np.linalg.norm(ref), 1.0 / sigma)
            worst_score = max(worst_score, float(np.linalg.norm(s - ref) / scale))
        if sigma in SIGMAS:
            near = np.linalg.norm(xs - ALPHA * centre, axis=1) < 10  # keep |log p| moderate
            ref = [_sphere_ref_log_prob(x, frame, centre, 1.3, k, ALPHA, sigma) for x in xs[near]]
            err = np.abs(np.asarray(st.log_prob)[near] - ref)
            worst_log_p = max(worst_log_p, float(np.max(err)))
    assert worst_score < 1e-8, worst_score
    assert worst_log_p < 1e-6, worst_log_p


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_sphere_float32_matches_float64(k):
    # alpha = 1/2 makes alpha * centre exact in both precisions, so both see the same x - alpha c
    # (at the centre the score's Lipschitz constant is ~ 1/sigma^4: any input rounding shows).
    alpha = 0.5
    sph32, frame, centre = _make_sphere(k)
    assert sph32.frame.dtype == jnp.float32
    score32 = jax.jit(jax.vmap(sph32.score, (0, None, None)))
    with jax.enable_x64(True):
        sph64 = ms.Sphere(dim=32, intrinsic_dim=k - 1, radius=1.3,
                          frame=jnp.asarray(frame), centre=jnp.asarray(centre))
        score64 = jax.jit(jax.vmap(sph64.score, (0, None, None)))
    worst = 0.0
    for i, sigma in enumerate(np.geomspace(1e-3, 1e2, 11)):
        xs = _sphere_points(30 + i, sph32, frame, centre, 1.3, k, alpha, sigma)
        xs = xs.astype(np.float32)
        s32 = np.asarray(score32(jnp.asarray(xs), np.float32(alpha), np.float32(sigma)))
        assert s32.dtype == np.float32 and np.all(np.isfinite(s32))
        with jax.enable_x64(True):
            s64 = np.asarray(score64(jnp.asarray(xs, jnp.float64), alpha, sigma))
        scale = np.maximum(np.linalg.norm(s64, axis=1), 1.0 / sigma)
        worst = max(worst, float(np.max(np.linalg.norm(s32 - s64, axis=1) / scale)))
    assert worst < 1e-4, worst


def test_circle_is_a_sphere_and_von_mises_with_kappa_zero(x64):
    frame = hadamard_frame(3, 5, 2)
    centre = np.array([0.1, -0.2, 0.3, 0.0, 0.5])
    circ = ms.Circle(dim=5, radius=1.7, frame=frame, centre=centre)
    sph = ms.Sphere(dim=5, intrinsic_dim=1, radius=1.7, frame=frame, centre=centre)
    vm = ms.VonMises(0.0, mu=0.3, radius=1.7, dim=5, frame=frame, centre=centre)
    x = jnp.asarray(np.random.default_rng(0).standard_normal(5))
    stats = jax.jit(lambda m, s: m.stats(x, 0.7, s))
    for sigma in (1e-3, 0.1, 3.0):
        a, b, c = (stats(m, sigma) for m in (circ, sph, vm))
        np.testing.assert_allclose(a.log_prob, b.log_prob, rtol=1e-13)
        np.testing.assert_allclose(a.log_prob, c.log_prob, rtol=1e-13)
        np.testing.assert_allclose(a.score, c.score, rtol=1e-12)


def _von_mises_ref_log_prob(x, frame, centre, radius, kappa, mu, alpha, sigma, nodes=100_000):
    d = x.shape[0]
    theta = (np.arange(nodes) + 0.5) * 2 * math.pi / nodes
    log_angle = kappa * np.cos(theta - mu) - math.log(2 * math.pi * sps.i0e(kappa)) - kappa
    pts = centre + radius * np.stack([np.cos(theta), np.sin(theta)], 1) @ frame.T
    quad = np.sum((x - alpha * pts) ** 2, axis=1)
    return (_lse(log_angle - quad / (2 * sigma**2)) + math.log(2 * math.pi / nodes)
            - 0.5 * d * math.log(2 * math.pi * sigma**2))


def test_von_mises_log_prob_matches_quadrature(x64):
    frame = hadamard_frame(7, 4, 2)
    centre = np.array([0.3, 0.0, -0.1, 0.2])
    rng = np.random.default_rng(1)
    log_prob = jax.jit(lambda m, xs, s: jax.vmap(m.log_prob, (0, None, None))(xs, ALPHA, s))
    worst = 0.0
    for kappa in (0.5, 60.0):  # both branches of the Bessel normaliser
        vm = ms.VonMises(kappa, mu=1.1, radius=1.2, dim=4, frame=frame, centre=centre)
        on = np.asarray(jax.vmap(vm.point)(jnp.asarray([1.0, 1.3, 2.5, -2.0])))
        for sigma in SIGMAS:
            xs = np.concatenate([ALPHA * on + sigma * rng.standard_normal(on.shape),
                                 ALPHA * centre[None], 2.0 * rng.standard_normal((1, 4))])
            got = np.asarray(log_prob(vm, xs, sigma))
            ref = [_von_mises_ref_log_prob(x, frame, centre, 1.2, kappa, 1.1, ALPHA, sigma)
                   for x in xs]
            worst = max(worst, float(np.max(np.abs(got - ref))))
    assert worst < 1e-6, worst


def test_von_mises_samples_have_the_right_angles():
    sample = jax.jit(lambda m, key: m.sample(key, 8_000))
    angle = jax.jit(lambda m, x: jax.vmap(m.angle)(x))
    distance = jax.jit(lambda m, x: jax.vmap(m.distance)(x))
    for kappa in (0.0, 2.0, 50.0):
        vm = ms.VonMises(kappa, mu=-2.0, radius=2.0, dim=3, key=jax.random.key(0))
        x = sample(vm, jax.random.key(1))
        np.testing.assert_allclose(distance(vm, x), 0.0, atol=2e-4)
        theta = np.asarray(angle(vm, x), np.float64)
        resultant = np.mean(np.exp(1j * theta))
        expected = sps.ive(1, kappa) / sps.ive(0, kappa)  # E cos(theta - mu) = I1/I0
        assert abs(abs(resultant) - expected) < 0.03
        if kappa > 0:
            assert abs(np.angle(resultant * np.exp(2.0j))) < 0.05
        # the angle's clean log density integrates to one
        grid = np.linspace(-math.pi, math.pi, 4001)[:-1]
        dens = np.exp(np.asarray(vm.log_prob_angle(jnp.asarray(grid))))
        assert abs(np.sum(dens) * 2 * math.pi / 4000 - 1.0) < 1e-4


def test_sphere_samples_are_uniform_on_the_sphere():
    sph = ms.Sphere(dim=6, intrinsic_dim=2, radius=2.0, key=jax.random.key(0),
                    centre=jnp.ones(6))
    x = jax.jit(sph.sample, static_argnums=1)(jax.random.key(1), 20_000)
    assert x.shape == (20_000, 6)
    np.testing.assert_allclose(jax.jit(jax.vmap(sph.distance))(x), 0.0, atol=2e-4)
    u = (np.asarray(x) - 1.0) @ np.asarray(sph.frame) / 2.0
    np.testing.assert_allclose(u.mean(0), 0.0, atol=0.02)
    np.testing.assert_allclose(u.T @ u / len(u), np.eye(3) / 3, atol=0.02)


# ---------------------------------------------------------------------------------------------
# Catalogue: each law with an independent quadrature and a numpy chart
# ---------------------------------------------------------------------------------------------


def _catalogue():
    """name -> (law, reference nodes, log-weights, clean points, (chart, box, periodic))."""
    rng = np.random.default_rng(5)
    out = {}
    two_pi = 2 * math.pi

    # S^2 in R^5: uniform in height (Archimedes) by Gauss-Legendre x azimuth midpoints
    frame, centre = hadamard_frame(11, 5, 3), np.array([0.2, -0.1, 0.0, 0.3, 0.1])
    sph = ms.Sphere(dim=5, intrinsic_dim=2, radius=1.2, frame=frame, centre=centre)
    zs, wz = np.polynomial.legendre.leggauss(500)
    ph = (np.arange(400) + 0.5) * two_pi / 400
    zz, ph = (a.reshape(-1) for a in np.meshgrid(zs, ph, indexing="ij"))
    ring = np.sqrt(1 - zz**2)
    unit = np.stack([ring * np.cos(ph), ring * np.sin(ph), zz], 1)

    def sphere_chart(p):
        th, phi = p[..., 0], p[..., 1]
        u = np.stack([np.sin(th) * np.cos(phi), np.sin(th) * np.sin(phi), np.cos(th)], -1)
        return centre + 1.2 * u @ frame.T

    out["sphere"] = (sph, centre + 1.2 * unit @ frame.T, np.log(np.repeat(wz, 400)),
                     centre + 1.2 * unit[rng.integers(0, len(zz), 4)] @ frame.T,
                     (sphere_chart, [[0, math.pi], [0, two_pi]], (False, True)))

    frame_c, centre_c = hadamard_frame(12, 3, 2), np.array([0.1, 0.2, -0.3])
    circ = ms.Circle(dim=3, radius=0.9, frame=frame_c, centre=centre_c)
    t = (np.arange(200_000) + 0.5) * two_pi / 200_000

    def circ_pts(t):
        return centre_c + 0.9 * np.stack([np.cos(t), np.sin(t)], -1) @ frame_c.T

    circle_chart = (lambda p: circ_pts(p[..., 0]), [[0, two_pi]], (True,))
    out["circle"] = (circ, circ_pts(t), np.zeros_like(t),
                     circ_pts(rng.uniform(0, two_pi, 4)), circle_chart)
    vm = ms.VonMises(3.0, mu=0.7, radius=0.9, dim=3, frame=frame_c, centre=centre_c)
    out["von_mises"] = (vm, circ_pts(t), 3.0 * np.cos(t - 0.7),
                        circ_pts(rng.uniform(-0.5, 2.0, 4)), circle_chart)
    return out


NAMES = ["sphere", "circle", "von_mises"]


@pytest.fixture(scope="module")
def catalogue():
    with jax.enable_x64(True):
        yield _catalogue()


@pytest.mark.parametrize("name", NAMES)
def test_noised_law_exact(x64, catalogue, name):
    """log p against brute-force quadrature; score = grad log p; denoise through Tweedie."""
    law, nodes, log_w, clean, _ = catalogue[name]
    assert_noised_law_exact(law, nodes, log_w, clean, exact=True)


@pytest.mark.parametrize("name", slow_except(NAMES, ["sphere"]))
def test_geometry_and_rate_separation(x64, catalogue, name):
    """project/distance against a brute-force search; |sigma^2 s + x - proj x| ~ sigma^2."""
    law, _, _, clean, (chart, box, periodic) = catalogue[name]
    assert_geometry_and_rate_separation(law, clean, chart, box, periodic)


# ---------------------------------------------------------------------------------------------
# Transformations and validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: ms.Sphere(dim=4, intrinsic_dim=2, key=jax.random.key(0)),
    lambda: ms.VonMises(2.0, 0.5, dim=4, key=jax.random.key(1)),
], ids=["sphere", "von_mises"])
def test_transformations_compose(x64, make):
    """Densities are PyTrees: jit with the density as an argument, vmap, jacfwd, unflatten."""
    assert_transformations_compose(make(), jnp.array([0.3, -1.1, 0.4, 0.2]))


def test_log_prob_is_differentiable_in_the_radius(x64):
    x = jnp.array([0.3, -1.1, 0.4, 0.2])

    @jax.jit
    def log_p(radius):
        return ms.Sphere(dim=4, intrinsic_dim=2, radius=radius).log_prob(x, 0.9, 0.2)

    fd = (log_p(1.0 + 1e-6) - log_p(1.0 - 1e-6)) / 2e-6
    np.testing.assert_allclose(jax.jit(jax.grad(log_p))(1.0), fd, rtol=1e-6)


@pytest.mark.parametrize("make, match", [
    (lambda: ms.Sphere(dim=3, intrinsic_dim=0), "intrinsic_dim"),
    (lambda: ms.Sphere(dim=2, intrinsic_dim=2), "dim must be at least 3"),
    (lambda: ms.Sphere(dim=3, intrinsic_dim=1, radius=-1.0), "radius"),
    (lambda: ms.Circle(dim=3, frame=jnp.ones((3, 2))), "orthonormal"),
    (lambda: ms.Circle(dim=3, frame=jnp.eye(2)), "frame must have shape"),
    (lambda: ms.Circle(dim=3, centre=jnp.zeros(2)), "centre"),
    (lambda: ms.VonMises(-1.0), "kappa"),
])
def test_bad_arguments_raise_value_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_points_and_noise_levels_raise():
    sph = ms.Sphere(dim=4, intrinsic_dim=2)
    with pytest.raises(ValueError, match="x must have shape"):
        sph.score(jnp.zeros((2, 4)), 1.0, 0.1)
    with pytest.raises(ValueError, match="sigma"):
        sph.log_prob(jnp.zeros(4), 1.0, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        sph.denoise(jnp.zeros(4), -1.0, 0.1)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_tangent_basis_is_orthonormal_tangent_and_intrinsic_dim_wide(k):
    # reference: the tangent space at p is the complement of p - centre within the sphere's span
    sph = ms.Sphere(dim=7, intrinsic_dim=k, radius=1.5, key=jax.random.key(k))
    x = sph.sample(jax.random.key(10), 1)[0] + 0.1
    p = np.asarray(sph.project(x))
    t = np.asarray(sph.tangent_basis(x))
    assert t.shape == (7, k)
    np.testing.assert_allclose(t.T @ t, np.eye(k), atol=1e-5)
    radial = p - np.asarray(sph.centre)
    assert np.linalg.norm(t.T @ radial) <= 1e-5 * np.linalg.norm(radial)
    frame = np.asarray(sph.frame)
    np.testing.assert_allclose(frame @ (frame.T @ t), t, atol=1e-5)

"""Curved manifolds: exact noised laws against independent quadratures, and their geometry.

References are written in numpy/scipy and share no code with the implementation: brute-force
quadratures over the manifold's parameters with at least 1e5 nodes (midpoint, Simpson or
Gauss-Legendre in variables the code does not integrate over, never its own rule and nodes),
scipy's exponentially scaled Bessel functions, and zooming grid searches for nearest points.
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
    frame = _frame(3, 5, 2)
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
    frame = _frame(7, 4, 2)
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
# Every manifold: a catalogue with independent brute-force references
# ---------------------------------------------------------------------------------------------


def _wavy(th):
    """A closed wavy curve in R^3 (for Parametric): radius 1 + 0.2 cos 3t, height 0.3 sin 2t."""
    t = th[..., 0]
    rho = 1.0 + 0.2 * jnp.cos(3 * t)
    return jnp.stack([rho * jnp.cos(t), rho * jnp.sin(t), 0.3 * jnp.sin(2 * t)], -1)


def _wavy_log_density(th):
    return jnp.cos(th[0])


def _paraboloid(uv):
    return jnp.stack([uv[0], uv[1], 0.5 * (uv[0] ** 2 + uv[1] ** 2)])


def _catalogue():
    """name -> (manifold, reference nodes (N, d), reference log-weights (N,), interior points)."""
    rng = np.random.default_rng(5)
    out = {}

    def pick(n, lo, hi):
        return lo + (hi - lo) * rng.random(n)

    # sphere S^2 in R^5: uniform in height (Archimedes) by Gauss-Legendre x azimuth midpoints
    frame, centre = _frame(11, 5, 3), np.array([0.2, -0.1, 0.0, 0.3, 0.1])
    sph = ms.Sphere(dim=5, intrinsic_dim=2, radius=1.2, frame=frame, centre=centre)
    zs, wz = np.polynomial.legendre.leggauss(500)
    ph = (np.arange(400) + 0.5) * 2 * math.pi / 400
    zz, ph = (a.reshape(-1) for a in np.meshgrid(zs, ph, indexing="ij"))
    ring = np.sqrt(1 - zz**2)
    unit = np.stack([ring * np.cos(ph), ring * np.sin(ph), zz], 1)
    out["sphere"] = (sph, centre + 1.2 * unit @ frame.T, np.log(np.repeat(wz, 400)),
                     centre + 1.2 * unit[rng.integers(0, len(zz), 4)] @ frame.T)

    frame, centre = _frame(12, 3, 2), np.array([0.1, 0.2, -0.3])
    circ = ms.Circle(dim=3, radius=0.9, frame=frame, centre=centre)
    t = (np.arange(200_000) + 0.5) * 2 * math.pi / 200_000
    circ_pts = lambda t: centre + 0.9 * np.stack([np.cos(t), np.sin(t)], -1) @ frame.T
    out["circle"] = (circ, circ_pts(t), np.zeros_like(t), circ_pts(pick(4, 0, 2 * math.pi)))

    vm = ms.VonMises(3.0, mu=0.7, radius=0.9, dim=3, frame=frame, centre=centre)
    out["von_mises"] = (vm, circ_pts(t), 3.0 * np.cos(t - 0.7), circ_pts(pick(4, -0.5, 2.0)))

    frame, centre = _frame(13, 5, 4), np.array([0.0, 0.1, 0.2, 0.0, -0.1])
    tor = ms.FlatTorus(radii=(1.0, 0.5), dim=5, frame=frame, centre=centre)
    a = (np.arange(400) + 0.5) * 2 * math.pi / 400
    a1, a2 = (v.reshape(-1) for v in np.meshgrid(a, a, indexing="ij"))
    flat_pts = lambda a1, a2: centre + np.stack(
        [np.cos(a1), np.sin(a1), 0.5 * np.cos(a2), 0.5 * np.sin(a2)], -1) @ frame.T
    out["flat_torus"] = (tor, flat_pts(a1, a2), np.zeros_like(a1),
                         flat_pts(pick(4, 0, 6.3), pick(4, 0, 6.3)))

    frame, centre = _frame(14, 4, 3), np.array([0.1, 0.0, -0.2, 0.3])
    ring = ms.RingTorus(1.0, 0.4, dim=4, frame=frame, centre=centre)
    phi = (np.arange(512) + 0.5) * 2 * math.pi / 512
    psi = (np.arange(256) + 0.5) * 2 * math.pi / 256
    phi, psi = (v.reshape(-1) for v in np.meshgrid(phi, psi, indexing="ij"))

    def ring_pts(phi, psi):
        rho = 1.0 + 0.4 * np.cos(psi)
        return centre + np.stack([rho * np.cos(phi), rho * np.sin(phi), 0.4 * np.sin(psi)],
                                 -1) @ frame.T

    out["ring_torus"] = (ring, ring_pts(phi, psi), np.log(1.0 + 0.4 * np.cos(psi)),
                         ring_pts(pick(4, 0, 6.3), pick(4, 0, 6.3)))

    frame, centre = _frame(15, 3, 2), np.array([-0.2, 0.1, 0.0])
    ell_pts = lambda t: centre + np.stack([1.5 * np.cos(t), 0.8 * np.sin(t)], -1) @ frame.T
    speed = np.sqrt((1.5 * np.sin(t)) ** 2 + (0.8 * np.cos(t)) ** 2)
    ell = ms.Ellipse(axes=(1.5, 0.8), dim=3, frame=frame, centre=centre)
    out["ellipse"] = (ell, ell_pts(t), np.log(speed), ell_pts(pick(4, 0, 6.3)))
    ell_vm = ms.Ellipse(axes=(1.5, 0.8), dim=3, kappa=2.0, mu=-0.5, frame=frame, centre=centre)
    out["ellipse_von_mises"] = (ell_vm, ell_pts(t), 2.0 * np.cos(t + 0.5),
                                ell_pts(pick(4, -1.5, 0.5)))

    # swiss roll: Simpson's rule in (t, h), 1001 x 201 nodes
    frame, centre = _frame(16, 4, 3), np.array([0.0, -0.1, 0.1, 0.2])
    t0, t1 = 1.5 * math.pi, 4.5 * math.pi

    def simpson(lo, hi, n):
        x = np.linspace(lo, hi, n)
        w = np.ones(n)
        w[1:-1:2], w[2:-1:2] = 4.0, 2.0
        return x, w * (hi - lo) / (3 * (n - 1))

    ts, wt = simpson(t0, t1, 1001)
    hs, wh = simpson(0.0, 21.0, 201)
    tt, hh = (v.reshape(-1) for v in np.meshgrid(ts, hs, indexing="ij"))
    ww = np.log(np.outer(wt, wh).reshape(-1))
    roll_pts = lambda t, h: centre + 0.1 * np.stack([t * np.cos(t), h, t * np.sin(t)],
                                                    -1) @ frame.T
    interior = roll_pts(pick(4, t0 + 0.5, t1 - 0.5), pick(4, 3.0, 18.0))
    for measure, extra in (("parameter", 0.0), ("area", 0.5 * np.log1p(tt**2))):
        roll = ms.SwissRoll(dim=4, scale=0.1, measure=measure, frame=frame, centre=centre)
        out[f"swiss_roll_{measure}"] = (roll, roll_pts(tt, hh), ww + extra, interior)

    # Parametric: a closed wavy curve with a non-uniform density, and a paraboloid patch
    curve = ms.Parametric(_wavy, [[0.0, 2 * math.pi]], log_density=_wavy_log_density,
                          nodes=4096, periodic=True)
    wav = np.asarray(_wavy(jnp.asarray(t[:, None])))
    dwav = np.gradient(wav, t, axis=0)  # speed, only for the reference's weights
    out["parametric_curve"] = (curve, wav, np.cos(t) + np.log(np.linalg.norm(dwav, axis=1)),
                               np.asarray(_wavy(jnp.asarray(pick(4, 0, 6.3)[:, None]))))
    patch = ms.Parametric(_paraboloid, [[-1.0, 1.0], [-1.0, 1.0]], nodes=(256, 256))
    us, wu = simpson(-1.0, 1.0, 501)
    uu, vv = (v.reshape(-1) for v in np.meshgrid(us, us, indexing="ij"))
    par_pts = np.stack([uu, vv, 0.5 * (uu**2 + vv**2)], -1)
    inner = pick(8, -0.6, 0.6).reshape(4, 2)
    par_logw = np.log(np.outer(wu, wu).reshape(-1)) + 0.5 * np.log1p(uu**2 + vv**2)
    out["parametric_surface"] = (patch, par_pts, par_logw,
                                 np.stack([inner[:, 0], inner[:, 1],
                                           0.5 * np.sum(inner**2, 1)], -1))
    return out


def _ref_log_prob(x, nodes, log_w, alpha, sigma):
    log_w = log_w - _lse(log_w)
    quad = np.sum((x - alpha * nodes) ** 2, axis=1)
    return _lse(log_w - quad / (2 * sigma**2)) - 0.5 * x.shape[0] * math.log(2 * math.pi * sigma**2)


NAMES = ["sphere", "circle", "von_mises", "flat_torus", "ring_torus", "ellipse",
         "ellipse_von_mises", "swiss_roll_parameter", "swiss_roll_area", "parametric_curve",
         "parametric_surface"]


@pytest.fixture(scope="module")
def catalogue():
    with jax.enable_x64(True):
        yield _catalogue()


def _test_points(rng, clean, alpha, sigma):
    noisy = alpha * clean + sigma * rng.standard_normal(clean.shape)
    return np.concatenate([noisy, alpha * clean[:1] + 0.5 * rng.standard_normal(clean[:1].shape)])


@pytest.mark.parametrize("name", NAMES)
def test_noised_law_exact(x64, catalogue, name):
    """log p against brute-force quadrature; score = grad log p; denoise agrees through Tweedie."""
    manifold, nodes, log_w, clean = catalogue[name]
    rng = np.random.default_rng(0)

    @jax.jit
    def run(xs, alpha, sigma):
        over = (0, None, None)
        st = jax.vmap(manifold.stats, over)(xs, alpha, sigma)  # what log_prob/score/denoise read
        grad = jax.vmap(jax.grad(manifold.log_prob), over)(xs, alpha, sigma)
        return st.log_prob, st.score, grad, st.mean

    exact = name in ("sphere", "circle", "von_mises", "flat_torus")
    worst = {"log_prob": 0.0, "grad": 0.0, "tweedie": 0.0}
    for alpha in (ALPHA, 1.0):
        for sigma in SIGMAS + ((1e-3, 1e-4) if exact else ()):
            xs = _test_points(rng, clean, alpha, sigma)
            log_p, score, grad, mean = (np.asarray(v) for v in run(xs, alpha, sigma))
            assert np.all(np.isfinite(score))
            scale = np.maximum(np.linalg.norm(score, axis=-1), 1.0 / sigma)[:, None]
            tweedie = (alpha * mean - xs) / sigma**2
            worst["grad"] = max(worst["grad"], float(np.max(np.abs(grad - score) / scale)))
            worst["tweedie"] = max(worst["tweedie"],
                                   float(np.max(np.abs(tweedie - score) / scale)))
            if alpha == ALPHA and sigma in SIGMAS:
                ref = np.array([_ref_log_prob(x, nodes, log_w, alpha, sigma) for x in xs])
                worst["log_prob"] = max(worst["log_prob"], float(np.max(np.abs(log_p - ref))))
    assert worst["log_prob"] < 1e-6, (name, worst)
    assert worst["grad"] < 1e-9, (name, worst)
    assert worst["tweedie"] < 1e-9, (name, worst)


# ---------------------------------------------------------------------------------------------
# Geometry: nearest points against a brute-force search, and the rate separation
# ---------------------------------------------------------------------------------------------


def _np_charts():
    """name -> (numpy chart on parameter arrays (..., m), box (m, 2), periodic flags)."""
    def frame_centre(seed, d, k, centre):
        return _frame(seed, d, k), np.asarray(centre)

    f_s, c_s = frame_centre(11, 5, 3, [0.2, -0.1, 0.0, 0.3, 0.1])
    f_c, c_c = frame_centre(12, 3, 2, [0.1, 0.2, -0.3])
    f_f, c_f = frame_centre(13, 5, 4, [0.0, 0.1, 0.2, 0.0, -0.1])
    f_r, c_r = frame_centre(14, 4, 3, [0.1, 0.0, -0.2, 0.3])
    f_e, c_e = frame_centre(15, 3, 2, [-0.2, 0.1, 0.0])
    f_w, c_w = frame_centre(16, 4, 3, [0.0, -0.1, 0.1, 0.2])
    two_pi = 2 * math.pi

    def sphere(p):
        th, ph = p[..., 0], p[..., 1]
        u = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1)
        return c_s + 1.2 * u @ f_s.T

    def circle(p):
        return c_c + 0.9 * np.stack([np.cos(p[..., 0]), np.sin(p[..., 0])], -1) @ f_c.T

    def flat(p):
        a, b = p[..., 0], p[..., 1]
        return c_f + np.stack([np.cos(a), np.sin(a), 0.5 * np.cos(b), 0.5 * np.sin(b)],
                              -1) @ f_f.T

    def ring(p):
        phi, psi = p[..., 0], p[..., 1]
        rho = 1.0 + 0.4 * np.cos(psi)
        return c_r + np.stack([rho * np.cos(phi), rho * np.sin(phi), 0.4 * np.sin(psi)],
                              -1) @ f_r.T

    def ellipse(p):
        return c_e + np.stack([1.5 * np.cos(p[..., 0]), 0.8 * np.sin(p[..., 0])], -1) @ f_e.T

    def roll(p):
        t, h = p[..., 0], p[..., 1]
        return c_w + 0.1 * np.stack([t * np.cos(t), h, t * np.sin(t)], -1) @ f_w.T

    def wavy(p):
        t = p[..., 0]
        rho = 1.0 + 0.2 * np.cos(3 * t)
        return np.stack([rho * np.cos(t), rho * np.sin(t), 0.3 * np.sin(2 * t)], -1)

    def paraboloid(p):
        return np.stack([p[..., 0], p[..., 1], 0.5 * (p[..., 0] ** 2 + p[..., 1] ** 2)], -1)

    return {
        "sphere": (sphere, [[0, math.pi], [0, two_pi]], (False, True)),
        "circle": (circle, [[0, two_pi]], (True,)),
        "von_mises": (circle, [[0, two_pi]], (True,)),
        "flat_torus": (flat, [[0, two_pi], [0, two_pi]], (True, True)),
        "ring_torus": (ring, [[0, two_pi], [0, two_pi]], (True, True)),
        "ellipse": (ellipse, [[0, two_pi]], (True,)),
        "ellipse_von_mises": (ellipse, [[0, two_pi]], (True,)),
        "swiss_roll_parameter": (roll, [[1.5 * math.pi, 4.5 * math.pi], [0, 21]], (False, False)),
        "swiss_roll_area": (roll, [[1.5 * math.pi, 4.5 * math.pi], [0, 21]], (False, False)),
        "parametric_curve": (wavy, [[0, two_pi]], (True,)),
        "parametric_surface": (paraboloid, [[-1, 1], [-1, 1]], (False, False)),
    }


def _brute_force_nearest(chart, box, periodic, x, levels=6):
    """Nearest point by zooming grid searches over the parameter box (no derivatives)."""
    box = np.asarray(box, np.float64)
    m = len(box)
    n = 4000 if m == 1 else 500
    lo, hi = box[:, 0].copy(), box[:, 1].copy()
    best = None
    for _ in range(levels):
        axes = [np.linspace(lo[i], hi[i], n) for i in range(m)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, m)
        pts = chart(grid)
        i = np.argmin(np.sum((pts - x) ** 2, -1))
        best = grid[i]
        cell = (hi - lo) / (n - 1)
        lo, hi = best - 3 * cell, best + 3 * cell
        for j in range(m):  # stay inside non-periodic boxes
            if not periodic[j]:
                lo[j], hi[j] = max(lo[j], box[j, 0]), min(hi[j], box[j, 1])
        n = 200 if m == 1 else 60
    p = chart(best[None])[0]
    return p, float(np.linalg.norm(x - p))


def _tube_points(manifold, clean, deltas, seed):
    """Points at distance delta from the clean points, along random normal directions."""
    rng = np.random.default_rng(seed)
    projectors = np.asarray(jax.jit(jax.vmap(manifold.normal_projector))(jnp.asarray(clean)))
    out = []
    for y, proj in zip(clean, projectors, strict=True):
        for delta in deltas:
            n = proj @ rng.standard_normal(len(y))
            out.append(y + delta * n / np.linalg.norm(n))
    return np.asarray(out)


@pytest.mark.parametrize("name", NAMES)
def test_geometry_and_rate_separation(x64, catalogue, name):
    """project/distance against a brute-force search; |sigma^2 s + x - proj x| ~ sigma^2."""
    manifold, _, _, clean = catalogue[name]
    chart, box, periodic = _np_charts()[name]

    @jax.jit
    def geometry(xs):
        return jax.vmap(manifold.project)(xs), jax.vmap(manifold.distance)(xs)

    xs = _tube_points(manifold, clean[:3], (0.02, 0.15), seed=3)
    proj, dist = (np.asarray(v) for v in geometry(xs))
    for x, p, d in zip(xs, proj, dist, strict=True):
        p_ref, d_ref = _brute_force_nearest(chart, box, periodic, x)
        assert np.linalg.norm(p - p_ref) < 1e-6, (name, x, p, p_ref)
        assert abs(d - d_ref) < 1e-6, (name, d, d_ref)

    # rate separation: geometry lives at order sigma^-2, the density at order one
    xs = jnp.asarray(_tube_points(manifold, clean, (0.03,), seed=4))
    proj = geometry(xs)[0]
    score = jax.jit(jax.vmap(manifold.score, (0, None, None)))
    # quadrature manifolds: only sigmas their grid resolves (alpha * spacing <= sigma)
    low = max(0.01, float(getattr(manifold, "spacing", 0.0)))
    sigmas = np.geomspace(low, 4 * low, 5)
    gaps = []
    for sigma in sigmas:
        residual = sigma**2 * score(xs, 1.0, sigma) + (xs - proj)
        gaps.append(float(np.mean(np.linalg.norm(residual, axis=1))))
    slope = np.polyfit(np.log(sigmas), np.log(gaps), 1)[0]
    assert 1.8 <= slope <= 2.2, (name, slope, gaps)


# ---------------------------------------------------------------------------------------------
# Coarse grids, validation, transformations, dtypes
# ---------------------------------------------------------------------------------------------


def _unit_circle_chart(th):
    return jnp.stack([jnp.cos(th[0]), jnp.sin(th[0])])


def test_parametric_grid_too_coarse_raises_or_warns_with_a_fix():
    par = ms.Parametric(_unit_circle_chart, [[0.0, 2 * math.pi]], nodes=64, periodic=True)
    x = jnp.array([1.0, 0.1])
    with pytest.raises(ValueError, match=r"Increase nodes to at least \d+, or use sigma >= "):
        par.log_prob(x, 1.0, 0.01)
    assert float(par.min_sigma()) == pytest.approx(float(par.spacing))
    par.check_resolution(1.0, 0.2)  # a resolved sigma passes
    need = int(math.ceil(64 * float(par.spacing) / 0.01))
    fine = ms.Parametric(_unit_circle_chart, [[0.0, 2 * math.pi]], nodes=need, periodic=True)
    fine.check_resolution(1.0, 0.01)  # the suggested node count is accepted
    warn = ms.Parametric(_unit_circle_chart, [[0.0, 2 * math.pi]], nodes=64, periodic=True,
                         on_coarse="warn")
    with pytest.warns(UserWarning, match="Increase nodes"):
        assert np.isfinite(warn.log_prob(x, 1.0, 0.01))
    # the other quadrature manifolds refuse too, naming the same fix
    for m in (ms.Ellipse(axes=(2.0, 1.0), nodes=64), ms.RingTorus(nodes=16),
              ms.SwissRoll(scale=0.1, nodes=64)):
        with pytest.raises(ValueError, match="Increase nodes to at least"):
            m.score(jnp.ones(m.dim), 1.0, 0.005)


def test_parametric_matches_exact_circle_when_resolved(x64):
    par = ms.Parametric(_unit_circle_chart, [[0.0, 2 * math.pi]], nodes=2048, periodic=True)
    circ = ms.Circle()
    x = jnp.array([0.9, 0.3])
    log_prob = jax.jit(lambda m, s: m.log_prob(x, 1.0, s))
    for sigma in (0.01, 0.1, 1.0):
        np.testing.assert_allclose(log_prob(par, sigma), log_prob(circ, sigma), rtol=1e-9)
    # a coarse grid at a small sigma is a different law: the check is what prevents it
    coarse = ms.Parametric(_unit_circle_chart, [[0.0, 2 * math.pi]], nodes=64, periodic=True,
                           on_coarse="ignore")
    assert abs(float(log_prob(coarse, 0.02) - log_prob(circ, 0.02))) > 1e-3


@pytest.mark.parametrize("make, match", [
    (lambda: ms.Sphere(dim=3, intrinsic_dim=0), "intrinsic_dim"),
    (lambda: ms.Sphere(dim=2, intrinsic_dim=2), "dim must be at least 3"),
    (lambda: ms.Sphere(dim=3, intrinsic_dim=1, radius=-1.0), "radius"),
    (lambda: ms.Circle(dim=3, frame=jnp.ones((3, 2))), "orthonormal"),
    (lambda: ms.Circle(dim=3, frame=jnp.eye(2)), "frame must have shape"),
    (lambda: ms.Circle(dim=3, centre=jnp.zeros(2)), "centre"),
    (lambda: ms.VonMises(-1.0), "kappa"),
    (lambda: ms.FlatTorus(radii=(1.0, 1.0), dim=3), "dim must be at least 4"),
    (lambda: ms.RingTorus(major_radius=1.0, minor_radius=2.0), "minor_radius"),
    (lambda: ms.RingTorus(measure="volume"), "measure"),
    (lambda: ms.Ellipse(axes=(1.0, -1.0)), "axes"),
    (lambda: ms.Ellipse(on_coarse="maybe"), "on_coarse"),
    (lambda: ms.SwissRoll(t_min=5.0, t_max=1.0), "t_max"),
    (lambda: ms.Parametric(_unit_circle_chart, [[1.0, 0.0]]), "domain"),
    (lambda: ms.Parametric(_unit_circle_chart, [[0.0, 1.0]], nodes=(4, 4)), "nodes"),
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
    with pytest.raises(ValueError, match="x must have shape"):
        ms.Ellipse().project(jnp.zeros(3))


def test_transformations_compose(x64):
    """Densities are PyTrees: jit with the density as an argument, vmap, grad in x and in R."""
    x = jnp.array([0.3, -1.1, 0.4, 0.2])

    @jax.jit
    def run(m, x):
        score = m.score(x, 0.9, 0.2)
        batch = jax.vmap(m.score, (0, None, None))(jnp.stack([x, 2 * x]), 0.9, 0.2)
        div = jnp.trace(jax.jacfwd(m.score)(x, 0.9, 0.2))
        return score, batch, div, m.score_divergence(x, 0.9, 0.2), m.normal_projector(x)

    for m in (ms.Sphere(dim=4, intrinsic_dim=2, key=jax.random.key(0)),
              ms.VonMises(2.0, 0.5, dim=4, key=jax.random.key(1)),
              ms.RingTorus(dim=4, key=jax.random.key(2), nodes=64),
              ms.Ellipse(axes=(1.5, 1.0), dim=4, key=jax.random.key(3), nodes=256)):
        score, batch, div, closed_div, proj = run(m, x)
        np.testing.assert_allclose(batch[0], score, rtol=1e-12)
        np.testing.assert_allclose(closed_div, div, rtol=1e-6)
        np.testing.assert_allclose(proj @ proj, proj, atol=1e-12)
        leaves, tree = jax.tree_util.tree_flatten(m)
        np.testing.assert_allclose(run(jax.tree_util.tree_unflatten(tree, leaves), x)[0], score)

    @jax.jit
    def log_p(radius):
        return ms.Sphere(dim=4, intrinsic_dim=2, radius=radius).log_prob(x, 0.9, 0.2)

    fd = (log_p(1.0 + 1e-6) - log_p(1.0 - 1e-6)) / 2e-6
    np.testing.assert_allclose(jax.jit(jax.grad(log_p))(1.0), fd, rtol=1e-6)


def test_dtype_follows_input(dtype):
    x = jnp.array([0.3, -1.1, 0.4], dtype)

    @jax.jit
    def run(m, x):
        return m.stats(x, 1.0, 0.3), m.project(x)

    for m in (ms.FlatTorus(radii=(1.0,), dim=3), ms.RingTorus(nodes=128),
              ms.SwissRoll(scale=0.1, nodes=512),
              ms.Parametric(_paraboloid, [[-1.0, 1.0], [-1.0, 1.0]], nodes=(64, 64))):
        st, proj = run(m, x)
        for v in (*st, proj):
            assert v.dtype == jnp.dtype(dtype)
            assert np.all(np.isfinite(np.asarray(v)))


def test_samplers_follow_their_laws():
    """Histograms of the parameters of exact draws against the clean densities."""
    n, bins = 20_000, 12

    def tv(values, lo, hi, density):
        counts, edges = np.histogram(np.asarray(values), bins=bins, range=(lo, hi))
        fine = np.linspace(lo, hi, bins * 64 + 1)
        mid = 0.5 * (fine[1:] + fine[:-1])
        mass = density(mid).reshape(bins, 64).sum(1)
        return 0.5 * np.abs(counts / counts.sum() - mass / mass.sum()).sum()

    ell = ms.Ellipse(axes=(2.0, 0.5))
    t = jax.jit(lambda m, k: jax.vmap(m.angle)(m.sample(k, n)))(ell, jax.random.key(0))
    speed = lambda t: np.sqrt((2.0 * np.sin(t)) ** 2 + (0.5 * np.cos(t)) ** 2)
    assert tv(t, -math.pi, math.pi, speed) < 0.03
    assert tv(t, -math.pi, math.pi, np.ones_like) > 0.1  # the test can tell the laws apart

    roll = ms.SwissRoll(scale=0.1, measure="area", nodes=512)
    th = jax.jit(lambda m, k: jax.vmap(m.coordinates)(m.sample(k, n)))(roll, jax.random.key(1))
    lo, hi = 1.5 * math.pi, 4.5 * math.pi
    assert tv(th[:, 0], lo, hi, lambda t: np.sqrt(1 + t * t)) < 0.03
    assert tv(th[:, 1], 0.0, 21.0, np.ones_like) < 0.03

    ring = ms.RingTorus(nodes=64)
    ang = jax.jit(lambda m, k: jax.vmap(m.angles)(m.sample(k, n)))(ring, jax.random.key(2))
    assert tv(ang[:, 1], -math.pi, math.pi, lambda p: 1.0 + 0.4 * np.cos(p)) < 0.03
    assert tv(ang[:, 0], -math.pi, math.pi, np.ones_like) < 0.03

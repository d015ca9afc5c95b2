"""The isotropic kernel: chunking, memory, float32 accuracy at small sigma, translation
invariance, divergence; the Empirical law built on it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores import mixtures
from manifold_scores.testing import naive_isotropic_stats
from tests.helpers import rel_err, slow_except


def _circle_points(n, d, seed=0, dtype=np.float64):
    """Unit-scale points on a great circle of R^d: dense neighbours, hard at small sigma."""
    rng = np.random.default_rng(seed)
    th = rng.uniform(0, 2 * np.pi, n)
    frame = np.linalg.qr(rng.normal(size=(d, 2)))[0]
    return (np.stack([np.cos(th), np.sin(th)], 1) @ frame.T).astype(dtype)


@pytest.mark.slow
def test_chunked_equals_unchunked_100k(x64):
    n, d = 100_000, 6
    pts = jnp.asarray(np.random.default_rng(1).normal(size=(n, d)))
    xs = pts[:4] + 0.05 * jax.random.normal(jax.random.key(0), (4, d))
    chunked = ms.Empirical(pts, chunk_size=4096)
    whole = ms.Empirical(pts, chunk_size=None)
    f = jax.jit(jax.vmap(lambda e, x, a, s: e.stats(x, a, s), (None, 0, None, None)))
    for a, s in [(1.0, 0.05), (0.7, 1.0)]:
        got, ref = f(chunked, xs, a, s), f(whole, xs, a, s)
        np.testing.assert_allclose(got.log_prob, ref.log_prob, rtol=1e-12)
        for g, r in [(got.score, ref.score), (got.mean, ref.mean)]:
            err = np.linalg.norm(g - r, axis=-1) / np.linalg.norm(r, axis=-1)
            assert err.max() < 1e-12
        np.testing.assert_allclose(got.cov_trace, ref.cov_trace, rtol=1e-9, atol=1e-13)


def _avals(jaxpr):
    """Every intermediate abstract value of a jaxpr, sub-jaxprs (scan, cond, pjit) included."""
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            yield v.aval
        for p in eqn.params.values():
            subs = p if isinstance(p, (tuple, list)) else (p,)
            for sub in subs:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _avals(inner)


@pytest.mark.parametrize("refine", [0, 32])
def test_streaming_never_forms_batch_by_points(refine):
    """Under vmap over B queries, no intermediate reaches B * N elements (so no (B, N, d))."""
    n, d, b, chunk = 100_000, 4, 64, 2048
    emp = ms.Empirical(jnp.zeros((n, d)), chunk_size=chunk, refine=refine)
    fn = jax.vmap(emp.score, (0, None, None))
    jaxpr = jax.make_jaxpr(fn)(jnp.zeros((b, d)), 1.0, 1e-3).jaxpr
    largest = max(int(np.prod(a.shape)) for a in _avals(jaxpr) if hasattr(a, "shape"))
    assert largest <= max(n * d, b * chunk * d), largest
    # The naive kernel, for contrast, does form (B, N, d): the check can fail.
    naive = jax.vmap(lambda x: naive_isotropic_stats(x, emp.points, emp.log_weights, 1.0, 0.1))
    naive_largest = max(int(np.prod(a.shape)) for a in _avals(jax.make_jaxpr(naive)(
        jnp.zeros((b, d))).jaxpr) if hasattr(a, "shape"))
    assert naive_largest >= b * n * d
    # Compiled temporaries stay far below one (B, N) float array.
    mem = jax.jit(fn).lower(jnp.zeros((b, d)), 1.0, 1e-3).compile().memory_analysis()
    if mem is not None:
        assert mem.temp_size_in_bytes < b * n * 4


def test_float32_small_sigma_relative_error():
    """sigma = 1e-3, unit-scale points, queries within 3 sigma of a training point.

    Reference: the same float32 inputs evaluated in float64. Measured: about 2e-6 worst case
    with refinement; without it the expansion's error reaches order one.
    """
    sigma = 1e-3
    n, d, q = 5000, 16, 64
    pts = _circle_points(n, d, dtype=np.float32)
    rng = np.random.default_rng(2)
    offset = rng.normal(size=(q, d))
    offset *= (3 * sigma * rng.uniform(size=(q, 1))) / np.linalg.norm(offset, axis=1, keepdims=True)
    xs = (pts[rng.integers(0, n, q)] + offset).astype(np.float32)
    with jax.enable_x64(True):
        ref = jax.vmap(ms.Empirical(jnp.asarray(pts, jnp.float64)).score, (0, None, None))(
            jnp.asarray(xs, jnp.float64), 1.0, sigma)
    ref = np.asarray(ref)

    def rel_err(refine):
        emp = ms.Empirical(jnp.asarray(pts), refine=refine, chunk_size=1024)
        got = np.asarray(jax.vmap(emp.score, (0, None, None))(jnp.asarray(xs), 1.0, sigma))
        assert got.dtype == np.float32
        return np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)

    assert rel_err(None).max() < 1e-5  # the issue asks for 1e-3
    assert rel_err(0).max() > 1e-3  # the unrefined expansion really is inaccurate here


def test_isotropic_against_naive_reference(dtype):
    pts = jnp.asarray(_circle_points(3000, 5, seed=3), dtype)
    lw = jnp.log(jnp.asarray(np.random.default_rng(0).dirichlet(np.ones(3000)), dtype))
    xs = pts[:8] * 1.1
    for a, s in [(1.0, 0.3), (0.5, 0.05)]:
        got = jax.vmap(mixtures.isotropic, (0, None, None, None, None))(xs, pts, lw, a, s)
        ref = jax.vmap(naive_isotropic_stats, (0, None, None, None, None))(xs, pts, lw, a, s)
        tol = 1e-10 if dtype == "float64" else 1e-4
        np.testing.assert_allclose(got.log_prob, ref.log_prob, rtol=tol)
        np.testing.assert_allclose(got.score, ref.score, rtol=tol, atol=tol * 1e-2 / s**2)
        np.testing.assert_allclose(got.mean, ref.mean, rtol=tol, atol=tol)
        np.testing.assert_allclose(got.cov_trace, ref.cov_trace, rtol=100 * tol, atol=tol)


@pytest.mark.parametrize("kind", ["isotropic", "lowrank"])
def test_closed_form_divergence_matches_autodiff(x64, kind):
    key = jax.random.key(0)
    if kind == "isotropic":
        density = ms.Empirical(jax.random.normal(key, (300, 5)), chunk_size=64)
    else:
        density = ms.MoLRG.random(key, dim=5, rank=2, num_components=3, orthogonal=False,
                                  noise_floor=0.1)
    x = jax.random.normal(jax.random.key(1), (5,))

    @jax.jit
    def both(a, s):
        return density.score_divergence(x, a, s), jnp.trace(jax.jacfwd(density.score)(x, a, s))

    for a, s in [(1.0, 0.1), (0.8, 0.6), (0.3, 2.0)]:
        closed, auto = both(a, s)
        np.testing.assert_allclose(closed, auto, rtol=1e-9)


def test_alpha_zero_returns_prior_moments(x64):
    pts = jax.random.normal(jax.random.key(0), (50, 3))
    emp = ms.Empirical(pts)
    st = emp.stats(jnp.ones(3), 0.0, 1.0)
    np.testing.assert_allclose(st.mean, pts.mean(0), rtol=1e-12)
    np.testing.assert_allclose(st.cov_trace, jnp.sum(pts.var(0)), rtol=1e-10)
    np.testing.assert_allclose(st.score, -jnp.ones(3), rtol=1e-12)


def test_empirical_memorises_at_small_sigma(x64):
    pts = jax.random.normal(jax.random.key(0), (200, 4))
    emp = ms.Empirical(pts)
    x = pts[17] + 0.2
    nearest = pts[jnp.argmin(jnp.sum((pts - x) ** 2, -1))]
    np.testing.assert_allclose(jax.jit(emp.denoise)(x, 1.0, 1e-3), nearest, rtol=1e-10)
    w = emp.posterior_weights(x, 1.0, 1e-3)
    assert w.shape == (200,) and abs(float(w.sum()) - 1) < 1e-12


@pytest.mark.parametrize("dtype", slow_except(["float32", "float64"], ["float64"]), indirect=True)
def test_empirical_score_is_grad_log_prob(dtype):
    pts = jax.random.normal(jax.random.key(0), (500, 3))
    emp = ms.Empirical(pts, weights=jnp.full(500, 1 / 500), chunk_size=128)
    x = jnp.array([0.1, -0.3, 0.5])
    both = jax.jit(lambda s: (emp.score(x, 0.9, s), jax.grad(emp.log_prob)(x, 0.9, s)))
    for s in [0.05, 0.5, 5.0]:
        score, grad = both(s)
        tol = 1e-10 if dtype == "float64" else 1e-4
        np.testing.assert_allclose(score, grad, rtol=tol, atol=tol / s)


def test_empirical_sampling_uses_weights(key):
    pts = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    emp = ms.Empirical(pts, weights=jnp.array([0.25, 0.75]))
    draws = emp.sample(key, 20_000)
    frac = float(jnp.mean(draws[:, 0]))
    assert abs(frac - 0.75) < 5 * np.sqrt(0.75 * 0.25 / 20_000)


def _grid_data(n, d, bits, seed=0):
    """Unit-spread points on a 2^-bits grid: offsetting them by 1024 is exact in the dtype."""
    rng = np.random.default_rng(seed)
    pts = np.round(rng.normal(size=(n, d)) * 2.0**bits) / 2.0**bits
    return pts, rng


@pytest.mark.parametrize("sigma", [0.3, 1.0, 3.0])
def test_translation_invariance_float32(sigma):
    """Data offset by 1e3 give the scores and log-densities of the same data at the origin."""
    n, d, offset = 4096, 16, 1024.0
    pts, rng = _grid_data(n, d, 12)
    qs = np.concatenate([pts.mean(0, keepdims=True), pts[:7] + 0.5 * rng.normal(size=(7, d))])
    qs = np.round(qs * 2.0**12) / 2.0**12
    f = jax.jit(jax.vmap(lambda e, x: e.stats(x, 1.0, sigma), (None, 0)))
    at_origin = f(ms.Empirical(jnp.asarray(pts, jnp.float32)), jnp.asarray(qs, jnp.float32))
    far = f(ms.Empirical(jnp.asarray(pts + offset, jnp.float32)),
            jnp.asarray(qs + offset, jnp.float32))
    assert at_origin.score.dtype == jnp.float32
    assert rel_err(far.score, at_origin.score) < 1e-5
    assert rel_err(far.log_prob, at_origin.log_prob, axis=None) < 1e-5
    # the mean itself sits at 1024, where float32 resolves 6e-5: compare to that resolution
    assert np.max(np.abs(np.asarray(far.mean) - offset - np.asarray(at_origin.mean))) < 3e-4


def test_translation_invariance_float64_small_sigma(x64):
    n, d, offset, sigma = 4096, 16, 1000.0, 1e-4
    pts, rng = _grid_data(n, d, 20)
    qs = pts[:8] + sigma * rng.normal(size=(8, d))
    qs = np.round(qs * 2.0**30) / 2.0**30
    f = jax.jit(jax.vmap(lambda e, x: e.stats(x, 1.0, sigma), (None, 0)))
    at_origin = f(ms.Empirical(jnp.asarray(pts)), jnp.asarray(qs))
    far = f(ms.Empirical(jnp.asarray(pts + offset)), jnp.asarray(qs + offset))
    assert np.max(np.abs(np.asarray(far.log_prob - at_origin.log_prob))) < 1e-6
    assert rel_err(far.score, at_origin.score) < 1e-6


def test_temporaries_do_not_grow_with_points():
    """No O(N d) slice or padded copy of the points: XLA temporaries at N = 1e5 and 1e6 agree."""
    b, d = 64, 64
    sizes = []
    for n in (100_001, 1_000_003):  # ragged tails on purpose
        args = (jax.ShapeDtypeStruct((b, d), jnp.float32),
                jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((n,), jnp.float32))

        def fn(x, p, lw):
            return jax.vmap(lambda q: mixtures.isotropic(q, p, lw, 1.0, 1e-3).score)(x)

        mem = jax.jit(fn).lower(*args).compile().memory_analysis()
        if mem is None:
            pytest.skip("no memory analysis on this backend")
        sizes.append(mem.temp_size_in_bytes)
    assert abs(sizes[1] - sizes[0]) <= 0.1 * sizes[0], sizes
    assert sizes[1] < 1_000_003 * d * 4 / 4, sizes  # far below one copy of the points


@pytest.mark.parametrize("size", slow_except([100, 1000, 4096, 5000], [5000]))
def test_refinement_shortlist_is_the_exact_top_k(size):
    """The grouped shortlist returns the same index set as ``lax.top_k`` over the whole chunk,
    with ties, empty (-inf) components and a ragged last group; padding only when fewer than
    ``k`` entries are finite."""
    from manifold_scores.mixtures.isotropic import _top_k_indices

    rng = np.random.default_rng(size)
    logits = rng.normal(size=size).astype(np.float32)
    logits[rng.integers(0, size, size // 10)] = -np.inf
    logits[:5] = logits[5]  # ties
    for k in (1, 8, 32):
        got = np.asarray(jax.jit(_top_k_indices, static_argnums=1)(jnp.asarray(logits), k))
        assert len(set(got.tolist())) == k
        assert np.sort(logits[got])[::-1].tolist() == np.sort(logits)[::-1][:k].tolist()
    sparse = np.full(size, -np.inf, np.float32)
    sparse[[3, size - 1]] = [1.0, 2.0]
    got = np.asarray(_top_k_indices(jnp.asarray(sparse), 8))
    assert {3, size - 1} <= set(got.tolist())

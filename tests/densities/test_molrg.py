"""MoLRG: exact scores against autodiff and against dense linear algebra."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.mixtures import MixtureStats
from manifold_scores.testing import dense_mixture_stats, molrg_dense_parts
from tests.helpers import slow_except

SIGMAS_VE = np.array([1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0])
SIGMAS_VP = np.array([1e-4, 1e-3, 1e-2, 1e-1, 0.5, 0.9])


def _random_config(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 6))
    r = int(rng.integers(1, 9))
    d = int(rng.integers(r + 1, 129))
    return k, r, d, rng


def _random_mix(seed, **kwargs):
    k, r, d, rng = _random_config(seed)
    weights = jnp.asarray(rng.dirichlet(np.ones(k)))
    return ms.MoLRG.random(jax.random.key(seed), d, r, k, orthogonal=False, weights=weights,
                           **kwargs)


def _noise_levels():
    """(alpha, sigma) pairs from the VE process (sigma to 1e2) and the VP process (sigma < 1)."""
    ve = ms.VE(sigma_min=1e-5, sigma_max=200.0)
    vp = ms.VP()
    t_ve = jax.vmap(ve.t_from_sigma)(jnp.asarray(SIGMAS_VE))
    t_vp = jax.vmap(vp.t_from_sigma)(jnp.asarray(SIGMAS_VP))
    alphas = jnp.concatenate([jax.vmap(ve.alpha)(t_ve), jax.vmap(vp.alpha)(t_vp)])
    sigmas = jnp.concatenate([jax.vmap(ve.sigma)(t_ve), jax.vmap(vp.sigma)(t_vp)])
    return alphas, sigmas


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


def _evaluate(mix, alphas, sigmas, key):
    """Points x = alpha x0 + sigma eps at every noise level; returns stats, grads, references."""
    n = 3
    x0 = mix.sample(key, n)
    eps = jax.random.normal(jax.random.fold_in(key, 1), x0.shape, x0.dtype)
    xs = alphas[:, None, None] * x0 + sigmas[:, None, None] * eps  # (S, n, d)

    def at(x, a, s):
        return mix.stats(x, a, s), jax.grad(mix.log_prob)(x, a, s)

    st, grad = jax.jit(jax.vmap(jax.vmap(at, (0, None, None))))(xs, alphas, sigmas)
    means, covs, lw = molrg_dense_parts(mix)
    refs = [[dense_mixture_stats(x, means, covs, lw, a, s) for x in row]
            for row, a, s in zip(xs, alphas, sigmas, strict=True)]
    ref = MixtureStats(*(np.array([[getattr(r, f) for r in row] for row in refs])
                         for f in MixtureStats._fields))
    return st, grad, ref


@pytest.mark.parametrize("seed", slow_except(range(6), [3]))
def test_score_grad_and_dense_reference(x64, seed):
    """Random K in 1..5, r in 1..8, d in r+1..128; sigma 1e-4..1e2 from VE and VP."""
    mix = _random_mix(seed)
    alphas, sigmas = _noise_levels()
    st, grad, ref = _evaluate(mix, alphas, sigmas, jax.random.key(100 + seed))
    assert np.all(np.isfinite(np.asarray(st.score)))
    # score against autodiff of log_prob
    assert np.max(_rel(st.score, grad)) < 1e-9
    # against the dense covariance alpha^2 U U^T + sigma^2 I through jnp.linalg
    tol = np.where(np.asarray(sigmas) >= 1e-2, 1e-8, 1e-6)[:, None]
    lp_err = np.abs(np.asarray(st.log_prob - ref.log_prob)) / np.abs(np.asarray(ref.log_prob))
    assert np.all(lp_err < tol), lp_err.max()
    assert np.all(_rel(st.score, ref.score) < tol)
    assert np.all(_rel(st.mean, ref.mean) < tol)
    ct_err = np.abs(np.asarray(st.cov_trace - ref.cov_trace)) / np.asarray(ref.cov_trace)
    assert np.all(ct_err < 1e3 * tol), ct_err.max()


@pytest.mark.parametrize("seed", slow_except(range(2), [0]))
def test_generalised_components_against_dense(x64, seed):
    """Means, per-direction scales and a noise floor."""
    k, r, d, rng = _random_config(50 + seed)
    base = _random_mix(50 + seed)
    mix = ms.MoLRG(base.bases, base.weights, means=jnp.asarray(rng.normal(size=(k, d))),
                   scales=jnp.asarray(rng.uniform(0.2, 3.0, size=(k, r))), noise_floor=0.05)
    alphas, sigmas = _noise_levels()
    st, grad, ref = _evaluate(mix, alphas, sigmas, jax.random.key(seed))
    assert np.max(_rel(st.score, grad)) < 1e-9
    np.testing.assert_allclose(st.log_prob, ref.log_prob, rtol=1e-8)
    assert np.max(_rel(st.score, ref.score)) < 1e-8
    assert np.max(_rel(st.mean, ref.mean)) < 1e-8
    np.testing.assert_allclose(st.cov_trace, ref.cov_trace, rtol=1e-6)


def test_tweedie_and_closed_form_logits(x64):
    """Denoiser = Tweedie of the score, and the paper's logit formula for plain MoLRG."""
    mix = ms.MoLRG.random(jax.random.key(3), dim=12, rank=3, num_components=3,
                          weights=jnp.array([0.2, 0.3, 0.5]))
    x = mix.sample(jax.random.key(1), 1)[0] + 0.1
    a, s = 0.8, 0.3
    np.testing.assert_allclose(mix.denoise(x, a, s), ms.scores.tweedie(mix.score(x, a, s), x, a, s),
                               rtol=1e-10, atol=1e-12)
    v = a**2 + s**2
    proj = jnp.einsum("kdr,d->kr", mix.bases, x)
    logits = (jnp.log(mix.weights) + a**2 * jnp.sum(proj**2, -1) / (2 * s**2 * v)
              - mix.rank / 2 * jnp.log(v / s**2))
    np.testing.assert_allclose(mix.posterior_weights(x, a, s), jax.nn.softmax(logits), rtol=1e-10)
    ref_logp = (jax.scipy.special.logsumexp(logits) - x @ x / (2 * s**2)
                - mix.dim / 2 * jnp.log(2 * jnp.pi * s**2))
    np.testing.assert_allclose(mix.log_prob(x, a, s), ref_logp, rtol=1e-12)
    posterior_mean = jnp.einsum("k,kdr,kr->d", mix.posterior_weights(x, a, s), mix.bases,
                                a / v * proj)
    np.testing.assert_allclose(mix.denoise(x, a, s), posterior_mean, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_float32_stays_finite_and_close(key):
    mix = ms.MoLRG.random(key, dim=64, rank=4, num_components=3)
    x = mix.sample(jax.random.key(2), 16)
    with jax.enable_x64(True):
        mix64 = ms.MoLRG(jnp.asarray(mix.bases, jnp.float64), jnp.asarray(mix.weights, jnp.float64))
    for s in [1e-3, 1e-1, 10.0]:
        xs = x + s * jax.random.normal(jax.random.key(3), x.shape)
        s32 = jax.vmap(mix.score, (0, None, None))(xs, 1.0, s)
        with jax.enable_x64(True):
            s64 = jax.vmap(mix64.score, (0, None, None))(jnp.asarray(xs, jnp.float64), 1.0, s)
        assert np.all(np.isfinite(np.asarray(s32)))
        assert np.max(_rel(s32, s64)) < 1e-4


def test_chunked_components_match_single_chunk(x64):
    mix = ms.MoLRG.random(jax.random.key(0), dim=20, rank=2, num_components=7, orthogonal=False,
                          chunk_size=3)
    one = ms.MoLRG(mix.bases, mix.weights, chunk_size=None)
    x = jax.random.normal(jax.random.key(1), (20,))
    for a, b in zip(mix.stats(x, 0.9, 0.2), one.stats(x, 0.9, 0.2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_sampling_moments(key):
    """Monte Carlo: covariance and component frequencies of 20k samples (5 standard errors)."""
    n = 20_000
    weights = jnp.array([0.2, 0.3, 0.5])
    mix = ms.MoLRG.random(key, dim=6, rank=2, num_components=3, weights=weights)
    x, labels = mix.sample_with_labels(jax.random.key(7), n)
    freq = np.bincount(np.asarray(labels), minlength=3) / n
    se = np.sqrt(np.asarray(weights) * (1 - np.asarray(weights)) / n)
    assert np.all(np.abs(freq - np.asarray(weights)) < 5 * se)
    cov = np.asarray(jnp.einsum("k,kde->de", weights, mix.covariance()))
    emp = np.asarray(x).T @ np.asarray(x) / n
    # entrywise standard error of a second moment: sqrt(E[x_i^2 x_j^2] / n) <= sqrt(3 c_ii c_jj / n)
    se_cov = np.sqrt(3 * np.outer(np.diag(cov), np.diag(cov)) / n) + 1e-6
    assert np.all(np.abs(emp - cov) < 5 * se_cov)


@pytest.mark.slow
def test_sample_independent_of_batch_size(key):
    mix = ms.MoLRG.random(key, dim=8, rank=2, num_components=2)
    a = mix.sample(jax.random.key(3), 5)
    b = mix.sample(jax.random.key(3), 50)
    assert a.shape == (5, 8)
    np.testing.assert_array_equal(a, b[:5])

"""Conversions between score, eps, x0 and v, and score functions of t."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores import scores


def _truth(key, alpha, sigma, d=5):
    """A consistent (x, x0, eps) triple and the four predictions it implies."""
    k0, k1 = jax.random.split(key)
    x0 = jax.random.normal(k0, (d,))
    eps = jax.random.normal(k1, (d,))
    x = alpha * x0 + sigma * eps
    return x, {"x0": x0, "eps": eps, "score": -eps / sigma, "v": alpha * eps - sigma * x0}


@pytest.mark.parametrize("source,target", list(itertools.permutations(scores.PARAMETERISATIONS, 2)))
def test_convert_all_pairs(x64, source, target):
    for alpha, sigma in [(1.0, 0.01), (0.6, 0.8), (1.0, 30.0), (0.05, 0.999)]:
        x, preds = _truth(jax.random.key(0), alpha, sigma)
        got = jax.jit(lambda v, x, a, s: scores.convert(v, x, a, s, source=source, target=target))(
            preds[source], x, alpha, sigma)
        np.testing.assert_allclose(got, preds[target], rtol=1e-9, atol=1e-9)


def test_tweedie_recovers_posterior_mean(x64):
    mix = ms.MoLRG.random(jax.random.key(0), dim=10, rank=2, num_components=3)
    x = jax.random.normal(jax.random.key(1), (10,))
    proc = ms.VP()
    t = 0.4
    a, s = proc.alpha(t), proc.sigma(t)
    np.testing.assert_allclose(scores.tweedie(mix.score(x, a, s), x, a, s), mix.denoise(x, a, s),
                               rtol=1e-10)
    np.testing.assert_allclose(ms.score_fn(mix, proc)(x, t), mix.score(x, a, s), rtol=1e-12)
    np.testing.assert_allclose(ms.denoiser_fn(mix, proc)(x, t), mix.denoise(x, a, s), rtol=1e-12)


def test_convert_rejects_bad_names_and_shapes():
    with pytest.raises(ValueError, match="source"):
        scores.convert(jnp.ones(2), jnp.ones(2), 1.0, 1.0, source="noise", target="score")
    with pytest.raises(ValueError, match="target"):
        scores.convert(jnp.ones(2), jnp.ones(2), 1.0, 1.0, source="eps", target="x_0")
    with pytest.raises(ValueError, match="same shape"):
        scores.convert(jnp.ones(3), jnp.ones(2), 1.0, 1.0, source="eps", target="score")

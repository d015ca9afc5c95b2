"""The MLP score network trained by DSM on a MoLRG against the exact score.

Relative score error ``sqrt(E|s - s*|^2 / E|s*|^2)`` over noised held-out data at each sigma.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest

import manifold_scores as ms
from manifold_scores import losses, training
from manifold_scores.models import mlp
from tests.helpers import assert_rel_close


def _train_and_measure(dim, rank, k, n, steps, width, sigmas, batch=256, lr=3e-3):
    mix = ms.MoLRG.random(jax.random.key(0), dim=dim, rank=rank, num_components=k)
    proc = ms.EDM(sigma_min=0.05, sigma_max=2.0)
    x0 = mix.sample(jax.random.key(1), n)
    p = mlp.init(jax.random.key(2), dim, proc, width=width, depth=3)

    def loss(p, key, b):
        return losses.dsm(key, mlp.apply, p, b, proc, weighting="edm", time_sampler="edm")

    state = training.init_state(p, optax.adam(optax.cosine_decay_schedule(lr, steps)))
    state, _ = training.fit(jax.random.key(3), state, loss, x0, steps=steps, batch_size=batch,
                            progress=False)
    score = ms.models.bind(mlp.apply, state.params)
    xs = mix.sample(jax.random.key(4), 2000)

    @jax.jit
    def rel(model, sigma):
        xt = xs + sigma * jax.random.normal(jax.random.key(5), xs.shape)
        got = jax.vmap(model, (0, None))(xt, sigma)
        ref = jax.vmap(mix.score, (0, None, None))(xt, 1.0, sigma)
        return jnp.sqrt(jnp.mean(jnp.sum((got - ref) ** 2, -1)) / jnp.mean(jnp.sum(ref**2, -1)))

    return [float(rel(score, s)) for s in sigmas]


@pytest.mark.slow
def test_mlp_learns_the_score_small():
    # a smoke test of the pipeline (measured 0.32 and 0.07 after 300 steps)
    errs = _train_and_measure(4, 1, 2, 4096, 300, 32, [0.3, 1.0])
    assert errs[0] < 0.45 and errs[1] < 0.15, errs


@pytest.mark.slow
def test_mlp_learns_the_molrg_score():
    """d = 16, K = 2, r = 2: relative score error below 0.1 for sigma in [0.1, 1].

    Measured (5000 Adam steps, batch 512, 50k samples): 0.075, 0.075, 0.069, 0.057, 0.046, 0.032
    at sigma = 0.1, 0.2, 0.3, 0.5, 0.7, 1.
    """
    sigmas = [0.1, 0.2, 0.3, 0.5, 0.7, 1.0]
    errs = _train_and_measure(16, 2, 2, 50_000, 5000, 128, sigmas, batch=512, lr=2e-3)
    print("sigma, relative score error:", [(s, round(e, 4)) for s, e in zip(sigmas, errs,
                                                                             strict=True)])
    assert max(errs) < 0.1, errs


def test_init_validation_and_integer_points():
    key, proc = jax.random.key(0), ms.VP()
    for kw, match in [(dict(emb_dim=1), "emb_dim must be an integer >= 2"),
                      (dict(emb_dim=3), "emb_dim must be an even integer"),
                      (dict(width=0), "width must be"), (dict(width=2.5), "width must be"),
                      (dict(depth=-1), "depth must be")]:
        with pytest.raises(ValueError, match=match):
            mlp.init(key, 3, proc, **kw)
    with pytest.raises(ValueError, match="process must be a noising process"):
        mlp.init(key, 3, None)
    # integer points are promoted to the default float (alpha and sigma were cast to integers)
    p = mlp.init(key, 3, proc, width=8, depth=1)
    apply = jax.jit(mlp.apply)
    got = apply(p, jnp.asarray([1, -2, 3]), 0.5)
    ref = apply(p, jnp.asarray([1.0, -2.0, 3.0]), 0.5)
    assert got.dtype == jnp.result_type(float)
    assert_rel_close(got, ref, 1e-6)

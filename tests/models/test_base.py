"""Bound models: callable PyTrees; new parameter values reuse compiled programs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.models import mlp
from manifold_scores.scores import convert
from tests.helpers import assert_rel_close


def test_bound_model_is_a_pytree_and_does_not_recompile():
    proc = ms.VP()
    p1 = mlp.init(jax.random.key(0), 3, proc, width=8, depth=1, target="eps")
    p2 = jax.tree.map(lambda a: a + 0.1, p1)
    m1, m2 = ms.models.bind(mlp.apply, p1), ms.models.bind(mlp.apply, p2)
    assert jax.tree.structure(m1) == jax.tree.structure(m2)

    @jax.jit
    def batch_score(model, x):
        return jax.vmap(model, (0, None))(x, 0.3)

    x = jnp.ones((4, 3))
    a, b = batch_score(m1, x), batch_score(m2, x)
    assert batch_score._cache_size() == 1
    assert not np.allclose(a, b)
    # the bound model converts the eps prediction to the score
    eps = mlp.apply(p2, x[0], 0.3)
    assert_rel_close(b[0], convert(eps, x[0], proc.alpha(0.3), proc.sigma(0.3), source="eps",
                                   target="score"), 1e-5)
    # gradients flow into the parameters through the bound model
    g = jax.grad(lambda m: jnp.sum(batch_score(m, x)))(m2)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(g))


def test_bind_validation():
    with pytest.raises(ValueError, match="process"):
        ms.models.bind(lambda p, x, t: x, {}, target="eps")
    with pytest.raises(ValueError, match="target"):
        ms.models.bind(lambda p, x, t: x, {}, target="noise")


def test_mlp_targets_and_preconditioning(x64):
    proc = ms.VP()
    x = jax.random.normal(jax.random.key(1), (3,))
    # zero last layer at init: D = c_skip x / alpha, for every target after conversion
    for target in ("score", "eps", "x0", "v"):
        p = mlp.init(jax.random.key(0), 3, proc, width=8, depth=2, target=target)
        for t in (0.05, 0.5):
            a, s = proc.alpha(t), proc.sigma(t)
            st = s / a
            d = 0.25 / (st**2 + 0.25) * x / a
            got = convert(mlp.apply(p, x, t), x, a, s, source=target, target="x0")
            assert_rel_close(got, d, 1e-10)
    raw = mlp.init(jax.random.key(0), 3, proc, width=8, depth=2, precondition=False)
    np.testing.assert_allclose(mlp.apply(raw, x, 0.5), 0.0)
    with pytest.raises(ValueError, match="x must have shape"):
        mlp.apply(raw, jnp.ones(4), 0.5)


def test_bind_refuses_a_target_that_contradicts_the_parameters():
    proc = ms.VP()
    p = mlp.init(jax.random.key(0), 3, proc, width=8, depth=1, target="x0")
    with pytest.raises(ValueError, match="contradicts the parameters' own target"):
        ms.models.bind(mlp.apply, p, proc, target="score")
    model = ms.models.bind(mlp.apply, p, target="x0")
    assert model.target == "x0" and ms.models.bind(mlp.apply, p).target == "x0"
    # plain PyTrees carry no target: any explicit one is taken as given
    assert ms.models.bind(lambda q, x, t: x, {"w": 1.0}, proc, target="eps").target == "eps"

"""The U-Net score network: shapes, EDM preconditioning, its convolution against lax's, the
JAX transformations, and a short fit on digits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import manifold_scores as ms
from manifold_scores import losses, training
from manifold_scores.models import unet
from tests.helpers import assert_rel_close

SMALL = {"channels": (4, 8), "emb_dim": 8, "groups": 2}
apply = jax.jit(unet.apply)  # eager flax ops compile one by one: slow


@pytest.fixture(scope="module")
def params():
    return unet.init(jax.random.key(0), (8, 8, 1), ms.EDM(), **SMALL)


def _trained_like(p, key):
    """The parameters with every leaf perturbed (the last convolution starts at zero)."""
    leaves, tree = jax.tree.flatten(p.variables)
    keys = jax.random.split(key, len(leaves))
    leaves = [v + 0.1 * jax.random.normal(k, v.shape, v.dtype) for v, k in zip(leaves, keys,
                                                                                 strict=True)]
    return unet.UNetParams(jax.tree.unflatten(tree, leaves), p.shape, p.process, p.channels,
                           p.blocks, p.emb_dim, p.groups, p.target, p.precondition, p.sigma_data)


@pytest.mark.slow  # compiles the U-Net (tens of seconds on 2 loaded cores)
def test_shapes_and_levels():
    p = unet.init(jax.random.key(1), (8, 4, 3), ms.VP(), channels=(4, 8, 8), emb_dim=4,
                  groups=2)
    assert p.dim == 96
    assert apply(p, jnp.ones(96), 0.5).shape == (96,)
    assert unet.num_params(p) > 0
    with pytest.raises(ValueError, match="x"):
        unet.apply(p, jnp.ones((8, 4, 3)), 0.5)


@pytest.mark.parametrize("kwargs, name", [
    ({"shape": (6, 6, 1), "channels": (4, 8, 8)}, "shape"), ({"shape": (8, 8)}, "shape"),
    ({"channels": ()}, "channels"), ({"channels": (4, 0)}, "channels"),
    ({"emb_dim": 3}, "emb_dim"), ({"blocks": 0}, "blocks"), ({"sigma_data": -1.0}, "sigma_data"),
    ({"target": "noise"}, "target")])
def test_bad_arguments(kwargs, name):
    kwargs = {"shape": (8, 8, 1), **kwargs}
    with pytest.raises(ValueError, match=name):
        unet.init(jax.random.key(1), kwargs.pop("shape"), ms.VP(), **kwargs)


def test_preconditioning_limits():
    sd = 0.5
    c_skip, c_out, c_in, c_noise = unet.preconditioning(jnp.array([1e-6, 1e3]), sd)
    np.testing.assert_allclose(c_skip, [1.0, sd**2 / (1e6 + sd**2)], rtol=1e-6)
    assert float(c_out[0]) < 1e-5 and abs(float(c_out[1]) - sd) < 1e-6
    np.testing.assert_allclose(c_in, 1 / np.sqrt(np.array([1e-12, 1e6]) + sd**2), rtol=1e-6)
    np.testing.assert_allclose(c_noise, np.log([1e-6, 1e3]) / 4, rtol=1e-6)


@pytest.mark.slow  # compiles the U-Net (tens of seconds on 2 loaded cores)
def test_denoiser_tends_to_identity(params):
    # x0 prediction of a perturbed network: D(x, sigma) -> x as sigma -> 0
    p = _trained_like(unet.init(jax.random.key(0), (8, 8, 1), ms.EDM(), target="x0", **SMALL),
                      jax.random.key(3))
    x = jax.random.normal(jax.random.key(4), (64,))
    errs = [float(jnp.linalg.norm(apply(p, x, s) - x) / jnp.linalg.norm(x))
            for s in (1e-1, 1e-2, 1e-3)]
    assert errs[2] < 1e-2 and errs[2] < errs[1] < errs[0], errs
    # at initialisation the last convolution is zero: D = c_skip x
    p0 = unet.init(jax.random.key(0), (8, 8, 1), ms.EDM(), target="x0", **SMALL)
    sigma = 0.7
    assert_rel_close(apply(p0, x, sigma), 0.25 / (sigma**2 + 0.25) * x, rtol=1e-6)


@pytest.mark.slow  # compiles the U-Net (tens of seconds on 2 loaded cores)
def test_score_target_is_the_converted_denoiser():
    px = _trained_like(unet.init(jax.random.key(0), (8, 8, 1), ms.VP(), target="x0", **SMALL),
                       jax.random.key(5))
    ps = unet.UNetParams(px.variables, px.shape, px.process, px.channels, px.blocks,
                         px.emb_dim, px.groups, "score", True, px.sigma_data)
    x, t = jax.random.normal(jax.random.key(6), (64,)), 0.4
    a, s = ms.VP().alpha(t), ms.VP().sigma(t)
    ref = (a * apply(px, x, t) - x) / s**2  # Tweedie: score = (alpha D - x) / sigma^2
    assert_rel_close(apply(ps, x, t), ref, rtol=1e-5)


def test_conv2d_matches_lax_with_derivatives():
    x = jax.random.normal(jax.random.key(0), (3, 8, 4, 5))
    k = jax.random.normal(jax.random.key(1), (3, 3, 5, 6))

    def ref(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    assert_rel_close(unet.conv2d(x, k), ref(x, k), rtol=1e-6)
    f = lambda fn: (lambda x, k: jnp.sum(jnp.sin(fn(x, k))))  # noqa: E731
    for got, want in zip(jax.grad(f(unet.conv2d), (0, 1))(x, k), jax.grad(f(ref), (0, 1))(x, k),
                         strict=True):
        assert_rel_close(got, want, rtol=1e-5)
    tx, tk = jnp.ones_like(x), 0.1 * jnp.ones_like(k)
    assert_rel_close(jax.jvp(unet.conv2d, (x, k), (tx, tk))[1],
                     jax.jvp(ref, (x, k), (tx, tk))[1], rtol=1e-5)


@pytest.mark.slow  # compiles the U-Net (tens of seconds on 2 loaded cores)
def test_jit_vmap_grad_and_bind(params):
    p = _trained_like(params, jax.random.key(7))
    xs = jax.random.normal(jax.random.key(8), (5, 64))
    ts = jnp.linspace(0.1, 2.0, 5)
    batched = jax.jit(jax.vmap(unet.apply, (None, 0, 0)))(p, xs, ts)
    one = jnp.stack([apply(p, x, t) for x, t in zip(xs, ts, strict=True)])
    assert_rel_close(batched, one, rtol=1e-5)
    loss = lambda p: losses.dsm(jax.random.key(9), unet.apply, p, xs, ms.EDM())  # noqa: E731
    g = jax.jit(jax.grad(loss))(p)
    norms = [float(jnp.linalg.norm(v)) for v in jax.tree.leaves(g.variables)]
    assert all(np.isfinite(norms)) and max(norms) > 0
    score = ms.models.bind(unet.apply, p)
    assert jax.jit(lambda s, x: s(x, 0.5))(score, xs[0]).shape == (64,)
    # forward mode (exact divergences, Jacobians) works through the custom convolution
    jac = jax.jit(jax.jacfwd(lambda x: unet.apply(p, x, 0.5)))(xs[0])
    assert_rel_close(jac, jax.jit(jax.jacrev(lambda x: unet.apply(p, x, 0.5)))(xs[0]), rtol=1e-4)


@pytest.mark.slow
def test_short_fit_reduces_the_dsm_loss_on_digits():
    pytest.importorskip("sklearn")
    ds = ms.datasets.digits(jax.random.key(0))
    x = jnp.asarray(ds.train[:256])
    proc = ms.EDM()
    p = unet.init(jax.random.key(1), (8, 8, 1), proc, channels=(8, 16), emb_dim=16, groups=4)

    def loss(p, key, b):
        return losses.dsm(key, unet.apply, p, b, proc, weighting="edm", time_sampler="edm")

    held = jnp.asarray(ds.test[:256])
    evaluate = jax.jit(lambda p: jnp.mean(jnp.stack(
        [loss(p, jax.random.key(i), held) for i in range(4)])))
    before = float(evaluate(p))
    state = training.init_state(p, optax.adam(2e-3))
    state, hist = training.fit(jax.random.key(2), state, loss, x, steps=150, batch_size=32,
                               progress=False)
    after = float(evaluate(state.params))
    assert hist["status"] == "completed"
    assert after < 0.7 * before, (before, after)

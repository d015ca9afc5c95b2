"""jit, vmap and grad compose with every public function; no recompilation on a second call."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores import mixtures, scores
from manifold_scores.testing import naive_isotropic_stats
from tests.helpers import assert_rel_close, slow_except

DIM = 6


def _densities():
    key = jax.random.key(0)
    return {
        "molrg": ms.MoLRG.random(key, dim=DIM, rank=2, num_components=3),
        "molrg_general": ms.MoLRG.random(key, dim=DIM, rank=2, num_components=2,
                                         means=jnp.ones((2, DIM)), scales=jnp.ones((2, 2)) * 0.5,
                                         noise_floor=0.1),
        "empirical": ms.Empirical(jax.random.normal(key, (40, DIM)), chunk_size=16),
    }


@pytest.mark.parametrize("name", slow_except(["molrg", "molrg_general", "empirical"],
                                              ["molrg", "empirical"]))
@pytest.mark.parametrize("method", slow_except(["log_prob", "score", "denoise", "score_divergence",
                                                 "posterior_weights"], ["score"]))
def test_jit_vmap_grad_compose(name, method):
    density = _densities()[name]
    xs = jax.random.normal(jax.random.key(1), (4, DIM))

    def f(dens, x, a, s):
        return getattr(dens, method)(x, a, s)

    eager = jnp.stack([f(density, x, 0.9, 0.3) for x in xs])
    batched = jax.jit(jax.vmap(f, (None, 0, None, None)))(density, xs, 0.9, 0.3)
    # relative to each vector's norm: float32 round-off scales with the largest element
    assert_rel_close(batched, eager, 1e-5, what=method)
    # grad through x and through the noise level, under jit and vmap
    scalar = lambda x, s: jnp.sum(f(density, x, 0.9, s))
    gx, gs = jax.jit(jax.vmap(jax.grad(scalar, argnums=(0, 1)), (0, None)))(xs, 0.3)
    assert gx.shape == xs.shape and gs.shape == (4,)
    assert np.all(np.isfinite(np.asarray(gx))) and np.all(np.isfinite(np.asarray(gs)))


@pytest.mark.slow
def test_grad_with_respect_to_density_parameters():
    """Densities are PyTrees: gradients flow into their array fields (e.g. points)."""
    emp = _densities()["empirical"]
    x = jnp.ones(DIM)
    g = jax.grad(lambda e: e.log_prob(x, 1.0, 0.5))(emp)
    assert g.points.shape == emp.points.shape
    ref = jax.grad(lambda p: naive_isotropic_stats(x, p, emp.log_weights, 1.0, 0.5).log_prob)(
        emp.points)
    np.testing.assert_allclose(g.points, ref, rtol=1e-4, atol=1e-6 * float(jnp.abs(ref).max()))


def test_processes_and_conversions_compose():
    proc = ms.VP()
    ts = jnp.linspace(0.1, 0.9, 5)
    g = jax.jit(jax.vmap(jax.grad(lambda t: proc.sigma(t) * proc.alpha(t))))(ts)
    assert g.shape == (5,)
    mix = _densities()["molrg"]
    score = ms.score_fn(mix, proc)
    xs = jax.random.normal(jax.random.key(2), (3, DIM))
    out = jax.jit(jax.vmap(score, (0, None)))(xs, 0.5)
    eps = jax.vmap(lambda s, x: scores.convert(s, x, proc.alpha(0.5), proc.sigma(0.5),
                                               source="score", target="eps"))(out, xs)
    assert eps.shape == xs.shape


def test_mixture_kernels_compose():
    pts = jax.random.normal(jax.random.key(0), (30, 3))
    lw = jnp.full(30, -jnp.log(30.0))
    f = jax.jit(jax.vmap(jax.grad(lambda x: mixtures.isotropic(x, pts, lw, 1.0, 0.4).log_prob)))
    assert f(jnp.ones((2, 3))).shape == (2, 3)
    u = jnp.eye(3)[None, :, :1]
    h = jax.jit(jax.vmap(lambda x: mixtures.lowrank(x, u, jnp.zeros(1), 1.0, 0.4).score))
    assert h(jnp.ones((2, 3))).shape == (2, 3)


def test_second_call_does_not_recompile():
    traces = []

    @jax.jit
    def batched_score(density, xs, a, s):
        traces.append(1)  # runs only while tracing
        return jax.vmap(density.score, (0, None, None))(xs, a, s)

    d1 = ms.MoLRG.random(jax.random.key(0), dim=DIM, rank=2, num_components=3)
    d2 = ms.MoLRG.random(jax.random.key(1), dim=DIM, rank=2, num_components=3)
    xs = jnp.ones((4, DIM))
    batched_score(d1, xs, 1.0, 0.1).block_until_ready()
    batched_score(d2, xs + 1, 0.5, 0.2).block_until_ready()  # new values, same shapes
    assert len(traces) == 1
    e1 = ms.Empirical(jnp.ones((20, DIM)), chunk_size=8)
    e2 = ms.Empirical(jnp.zeros((20, DIM)), chunk_size=8)
    batched_score(e1, xs, 1.0, 0.1)
    batched_score(e2, xs, 1.0, 1e-3)
    assert len(traces) == 2

"""MoLRG-parameterised denoiser: exact posterior mean, orthonormality, recovery by DSM training.

References: the MoLRG density's own posterior mean (closed form of the mixture kernel), SVD for
the polar factor, PCA by SVD, and the true bases of the generating MoLRG.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import manifold_scores as ms
from manifold_scores import losses, training
from manifold_scores.models import lowrank
from tests.helpers import assert_rel_close


def subspace_distance(u_hat, u):
    """``min over permutations of max_k |U_hat U_hat^T - U U^T|_F``."""
    ph = np.einsum("kdr,ker->kde", u_hat, u_hat)
    p = np.einsum("kdr,ker->kde", u, u)
    k = u.shape[0]
    return min(max(np.linalg.norm(ph[perm[j]] - p[j]) for j in range(k))
               for perm in itertools.permutations(range(k)))


def test_apply_is_the_molrg_posterior_mean(x64):
    mix = ms.MoLRG.random(jax.random.key(0), dim=10, rank=2, num_components=3)
    proc = ms.VP()
    p = lowrank.init(None, 10, 2, 3, proc, bases=mix.bases, orthonormalize="none")
    x = jax.random.normal(jax.random.key(1), (5, 10))
    for t in (0.1, 0.5):
        got = jax.vmap(lowrank.apply, (None, 0, None))(p, x, t)
        ref = jax.vmap(mix.denoise, (0, None, None))(x, proc.alpha(t), proc.sigma(t))
        assert_rel_close(got, ref, 1e-12)
        # the bound model returns the score (Tweedie)
        score = jax.vmap(ms.models.bind(lowrank.apply, p), (0, None))(x, t)
        ref_s = jax.vmap(mix.score, (0, None, None))(x, proc.alpha(t), proc.sigma(t))
        assert_rel_close(score, ref_s, 1e-10)


def test_orthonormalize_and_retract(x64):
    raw = jax.random.normal(jax.random.key(0), (3, 9, 2))
    for method in ("qr", "polar"):
        u = lowrank.orthonormalize(raw, method)
        np.testing.assert_allclose(jnp.einsum("kdr,kds->krs", u, u),
                                   np.broadcast_to(np.eye(2), (3, 2, 2)), atol=1e-12)
    # polar = the nearest orthonormal matrix, U V^T from the SVD
    a, _, bt = np.linalg.svd(np.asarray(raw), full_matrices=False)
    np.testing.assert_allclose(lowrank.orthonormalize(raw, "polar"), a @ bt, atol=1e-12)
    p = lowrank.LowRankParams(raw, None, ms.VE(), "none")
    r = lowrank.retract(p)
    np.testing.assert_allclose(jnp.einsum("kdr,kds->krs", r.raw, r.raw),
                               np.broadcast_to(np.eye(2), (3, 2, 2)), atol=1e-12)
    with pytest.raises(ValueError, match="orthonormalize"):
        lowrank.orthonormalize(raw, "gram")


@pytest.mark.slow
def test_k_subspaces_recovers_the_bases():
    mix = ms.MoLRG.random(jax.random.key(0), dim=64, rank=4, num_components=3)
    x0 = mix.sample(jax.random.key(1), 240)
    u = lowrank.k_subspaces(jax.random.key(2), x0, 3, 4)
    assert subspace_distance(np.asarray(u), np.asarray(mix.bases)) < 1e-4


def _train(mix, n_per, sigma, steps, lr, restarts, num_noise, fixed_noise):
    k, d, r = mix.num_components, mix.dim, mix.rank
    x0 = mix.sample(jax.random.key(1), n_per * k)
    proc = ms.EDM()  # t = sigma

    def loss(p, key, batch):
        key = jax.random.key(99) if fixed_noise else key
        return losses.dsm_fixed_sigma(key, lowrank.apply, p, batch, proc, sigma, target="x0",
                                      weighting="uniform", num_noise=num_noise, antithetic=True)

    best = None
    for i in range(restarts):
        p = lowrank.init(jax.random.key(10 + i), d, r, k, proc)
        state = training.init_state(p, optax.adam(optax.cosine_decay_schedule(lr, steps)))
        state, _ = training.fit(jax.random.key(2), state, loss, x0, steps=steps,
                                progress=False)
        final = float(jax.jit(loss)(state.params, jax.random.key(7), x0))
        if best is None or final < best[0]:
            best = (final, state.params)
    return x0, np.asarray(lowrank.bases(best[1]))


@pytest.mark.slow
def test_k1_matches_pca_small():
    mix = ms.MoLRG.random(jax.random.key(0), dim=16, rank=2, num_components=1)
    x0, u = _train(mix, 40, 0.03, 600, 0.02, 1, 16, True)
    assert subspace_distance(u, np.asarray(lowrank.pca(x0, 2))) < 1e-3


@pytest.mark.slow
def test_k1_matches_pca():
    """d = 64, r = 4, N = 20 r: measured 8e-4 (sigma = 0.03, 1000 Adam steps)."""
    mix = ms.MoLRG.random(jax.random.key(0), dim=64, rank=4, num_components=1)
    x0, u = _train(mix, 80, 0.03, 1000, 0.01, 1, 16, True)
    dist = subspace_distance(u, np.asarray(lowrank.pca(x0, 4)))
    print(f"K=1 trained vs PCA: {dist:.2e}")
    assert dist < 1e-3


@pytest.mark.slow
def test_dsm_recovers_subspaces():
    """d = 64, K = 3, r = 4, N_k = 20 r; the restart with the lowest loss is kept."""
    mix = ms.MoLRG.random(jax.random.key(0), dim=64, rank=4, num_components=3)
    _, u = _train(mix, 80, 0.3, 800, 0.01, 4, 4, False)
    dist = subspace_distance(u, np.asarray(mix.bases))
    print(f"K=3 trained vs true bases: {dist:.3f}")
    assert dist <= 0.1


@pytest.mark.slow
def test_dsm_recovers_subspaces_small():
    mix = ms.MoLRG.random(jax.random.key(0), dim=16, rank=2, num_components=2)
    _, u = _train(mix, 40, 0.3, 300, 0.02, 2, 4, False)
    assert subspace_distance(u, np.asarray(mix.bases)) <= 0.1


def test_float16_and_degenerate_sizes_are_refused():
    key, proc = jax.random.key(0), ms.VP()
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        lowrank.init(key, 8, 2, 3, proc, dtype=jnp.float16)
    half = jax.tree.map(lambda a: a.astype(jnp.float16), lowrank.init(key, 8, 2, 3, proc))
    with pytest.raises(ValueError, match="must be float32 or float64"):
        lowrank.apply(half, jnp.ones(8), 0.5)
    with pytest.raises(ValueError, match="process must be a noising process"):
        lowrank.init(key, 8, 2, 3, None)
    x = jax.random.normal(key, (20, 4))
    for kw, match in [(dict(num_components=0), "num_components must be"),
                      (dict(restarts=0), "restarts must be"), (dict(iters=-1), "iters must be"),
                      (dict(rank=0), "rank must be an integer in"),
                      (dict(rank=5), "rank must be an integer in")]:
        with pytest.raises(ValueError, match=match):
            lowrank.k_subspaces(key, x, **(dict(num_components=2, rank=1) | kw))
    with pytest.raises(ValueError, match="rank must be"):
        lowrank.pca(x, 0)


def test_integer_points_are_promoted():
    mix = ms.MoLRG.random(jax.random.key(0), dim=6, rank=2, num_components=3)
    p = lowrank.init(None, 6, 2, 3, ms.VP(), bases=mix.bases)
    apply = jax.jit(lowrank.apply)
    xi = jnp.asarray([1, -2, 0, 3, 1, -1])
    got = apply(p, xi, 0.5)  # was refused: "sigma must be positive" (sigma cast to 0)
    assert got.dtype == jnp.result_type(float)
    assert_rel_close(got, apply(p, xi.astype(got.dtype), 0.5), 1e-6)

"""Training many small models at once: ``jax.vmap`` over models, ``lax.scan`` over steps.

The learning experiments (E5-E9) sweep seeds and training-set sizes. Training sets of different
sizes are padded to a common ``(M, N_max, d)`` array with a validity mask, so one compiled
program trains all ``M`` models: each model draws its mini-batch (with replacement) from its own
valid rows only. The optimiser is optax Adam; the whole loop is one ``lax.scan``.

:func:`train_mlps` trains :mod:`manifold_scores.models.mlp` denoisers by EDM-weighted DSM
(:func:`manifold_scores.losses.dsm`, ``target="x0"``, EDM time sampler), :func:`sample_edm`
draws from many models by the Heun PF-ODE on an EDM grid (Karras et al. 2022, ending with the
denoiser at ``sigma_min``: ``sigma_N = 0``), vmapped over models. (``training.fit`` trains
one model from a Python loop; a vmapped ``fit`` over models would make these helpers
unnecessary.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import manifold_scores as ms
from manifold_scores import losses
from manifold_scores.models import mlp

__all__ = ["pad_sets", "batch_rows", "train_mlps", "sample_edm", "sample_one", "edm_sigmas"]


def pad_sets(sets: list[np.ndarray]) -> tuple[jax.Array, jax.Array]:
    """Stack point sets of different sizes into ``(M, N_max, d)`` (zero rows) and counts ``(M,)``.
    """
    n_max = max(len(s) for s in sets)
    d = sets[0].shape[1]
    out = np.zeros((len(sets), n_max, d), np.asarray(sets[0]).dtype)
    for i, s in enumerate(sets):
        out[i, : len(s)] = np.asarray(s)
    return jnp.asarray(out), jnp.asarray([len(s) for s in sets], jnp.int32)


def batch_rows(key, data, count, batch_size: int):
    """``batch_size`` rows of ``data`` ``(N_max, d)`` drawn uniformly from its first ``count``."""
    u = jax.random.uniform(key, (batch_size,))
    idx = jnp.minimum((u * count).astype(jnp.int32), count - 1)
    return data[idx]


@functools.partial(jax.jit, static_argnames=("dim", "width", "depth", "steps", "batch_size",
                                             "sigma_data", "lr"))
def _train_mlps(keys, data, counts, *, dim, width, depth, steps, batch_size, sigma_data, lr):
    proc = ms.EDM()
    params = jax.vmap(lambda k: mlp.init(k, dim, proc, width=width, depth=depth, target="x0",
                                         sigma_data=sigma_data, dtype=data.dtype))(keys)
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05))
    opt_state = jax.vmap(opt.init)(params)

    def loss_fn(p, key, batch):
        return losses.dsm(key, mlp.apply, p, batch, proc, target="x0", weighting="edm",
                          time_sampler="edm")

    def one(p, s, key, x, n):
        k_b, k_l = jax.random.split(key)
        loss, g = jax.value_and_grad(loss_fn)(p, k_l, batch_rows(k_b, x, n, batch_size))
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, loss

    def step(carry, i):
        p, s = carry
        ks = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
        p, s, loss = jax.vmap(one)(p, s, ks, data, counts)
        return (p, s), loss

    (params, _), hist = jax.lax.scan(step, (params, opt_state), jnp.arange(steps))
    return params, hist


def train_mlps(key, data, counts, *, width: int = 128, depth: int = 3, steps: int = 2000,
               batch_size: int = 128, sigma_data: float = 0.5, lr: float = 2e-3):
    """Train one MLP denoiser per row of ``data`` ``(M, N_max, d)`` (``counts`` valid rows each).

    Returns the vmapped :class:`~manifold_scores.models.mlp.MLPParams` (leading axis ``M``) and
    the loss history ``(steps, M)``.
    """
    keys = jax.random.split(key, data.shape[0])
    return _train_mlps(keys, data, counts, dim=int(data.shape[-1]), width=width, depth=depth,
                       steps=steps, batch_size=batch_size, sigma_data=float(sigma_data),
                       lr=float(lr))


def edm_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
    """Karras et al.'s noise levels, decreasing, ``steps + 1`` of them (the last ``sigma_min``)."""
    i = np.arange(steps + 1) / steps
    return (sigma_max ** (1 / rho) + i * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def heun_edm(denoise, x, sigmas):
    """Heun's PF-ODE ``dx/dsigma = (x - D(x, sigma)) / sigma`` over ``sigmas`` (batch ``x``),
    then a last Euler step from ``sigmas[-1]`` to ``sigma = 0``, which returns
    ``D(x, sigmas[-1])`` (Karras et al. 2022, Algorithm 1, ``sigma_N = 0``).
    ``denoise(x, sigma)`` is per point."""
    d_batch = jax.vmap(denoise, (0, None))

    def step(x, pair):
        s0, s1 = pair
        k0 = (x - d_batch(x, s0)) / s0
        x_e = x + (s1 - s0) * k0
        k1 = (x_e - d_batch(x_e, s1)) / s1
        return x + (s1 - s0) * 0.5 * (k0 + k1), None

    x, _ = jax.lax.scan(step, x, (sigmas[:-1], sigmas[1:]))
    return d_batch(x, sigmas[-1])


@functools.partial(jax.jit, static_argnames=("apply", "n", "steps"))
def sample_one(key, apply, params, *, n: int, steps: int = 32):
    """``n`` float32 PF-ODE samples (EDM grid, Heun) of one network ``apply(params, x, sigma)``
    predicting ``x0`` on flat points of size ``params.dim``."""
    sigmas = jnp.asarray(edm_sigmas(steps), jnp.float32)
    x0 = sigmas[0] * jax.random.normal(key, (n, params.dim), sigmas.dtype)
    return heun_edm(lambda y, s: apply(params, y, s), x0, sigmas)


@functools.partial(jax.jit, static_argnames=("n", "steps"))
def sample_edm(key, params, *, n: int, steps: int = 32):
    """``n`` PF-ODE samples from each of the vmapped MLP denoisers in ``params`` (EDM, Heun).

    Returns ``(M, n, d)``; the same initial noise is used for every model.
    """
    sigmas = jnp.asarray(edm_sigmas(steps), jax.tree.leaves(params.variables)[0].dtype)
    x0 = sigmas[0] * jax.random.normal(key, (n, params.dim), sigmas.dtype)

    def one(p):
        return heun_edm(lambda x, s: mlp.apply(p, x, s), x0, sigmas)

    return jax.vmap(one)(params)

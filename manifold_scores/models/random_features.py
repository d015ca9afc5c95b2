"""Random-feature score model with a closed-form ridge fit of the DSM objective.

George and Macris (arXiv 2603.22962) analyse denoising score matching with the random-feature
model

    s(x, t) = A phi(W [x; emb(t)]) / sqrt(p),

with a fixed random ``W`` (``p`` features) and trainable ``A`` (``d x p``). The DSM loss is
quadratic in ``A``: with features ``f_i = phi(W [x_i; emb(t_i)]) / sqrt(p)``, targets ``y_i``
and weights ``lambda_i`` (the DSM weighting times the target factor), the ridge problem

    min_A  (1/m) sum_i lambda_i |A f_i - y_i|^2 + ridge |A|_F^2

has the minimiser ``A = Y^T Lambda F (F^T Lambda F + m ridge I)^{-1}``: one ``p x p``
Cholesky solve (:func:`fit_ridge`), no gradient descent. The draws are those of
:func:`manifold_scores.losses.dsm_fixed_sigma` with the same key, so the fitted ``A``
minimises exactly that loss plus the ridge term.

Example:
    >>> import jax, jax.numpy as jnp, manifold_scores as ms
    >>> from manifold_scores.models import random_features as rf
    >>> p = rf.init(jax.random.key(0), dim=2, num_features=64, process=ms.EDM())
    >>> x0 = jax.random.normal(jax.random.key(1), (100, 2))
    >>> p = rf.fit_ridge(jax.random.key(2), p, x0, 0.5, ridge=1e-3)
    >>> rf.apply(p, jnp.ones(2), 0.5).shape
    (2,)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from manifold_scores import _checks, losses
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.losses import _check_count

__all__ = ["RFParams", "init", "apply", "features", "fit_ridge", "ridge_loss"]

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu,
               "erf": jax.scipy.special.erf}


@pytree_dataclass
class RFParams:
    """``A`` (``(d, p)``, fitted) and the fixed ``W`` (``(p, d + e)``; a leaf, never fitted)."""

    readout: jax.Array
    weights: jax.Array
    process: Any = static_field(default=None)
    activation: str = static_field(default="relu")
    time_features: int = static_field(default=0)


def init(key, dim: int, num_features: int, process, *, activation: str = "relu",
         time_features: int = 0, dtype=None) -> RFParams:
    """``W ~ N(0, 1 / (d + e))``, ``A = 0``; ``e = time_features`` (even) embeds the noise level.

    With ``time_features = 0`` the model ignores ``t`` (a fit at one noise level).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    if time_features % 2 or time_features < 0:
        raise ValueError(f"time_features must be even and >= 0, got {time_features}")
    _check_count(dim, "dim")
    _check_count(num_features, "num_features")
    losses._check_process(process)
    dtype = dtype or jnp.result_type(float)
    n_in = dim + time_features
    w = jax.random.normal(key, (num_features, n_in), dtype) / jnp.sqrt(n_in)
    return RFParams(jnp.zeros((dim, num_features), dtype), w, process, activation,
                    time_features)


def _embed(params: RFParams, t, dtype):
    e = params.time_features
    if e == 0:
        return jnp.zeros((0,), dtype)
    alpha, sigma = params.process.alpha(t), params.process.sigma(t)
    c = jnp.log(sigma / alpha).astype(dtype)  # log noise-to-signal ratio
    freqs = jnp.arange(1, e // 2 + 1, dtype=dtype) * 0.5
    return jnp.concatenate([jnp.sin(freqs * c), jnp.cos(freqs * c)])


def features(params: RFParams, x, t):
    """``phi(W [x; emb(t)]) / sqrt(p)``, shape ``(p,)``."""
    x = _checks.as_float_array(x, "x")  # an integer x would embed t in integers
    inp = jnp.concatenate([x, _embed(params, t, x.dtype)])
    w = jax.lax.stop_gradient(params.weights)
    h = jnp.dot(w, inp, precision=jax.lax.Precision.HIGHEST)
    return ACTIVATIONS[params.activation](h) / jnp.sqrt(params.weights.shape[0]).astype(x.dtype)


def apply(params: RFParams, x, t):
    """The score at one point ``x`` and time ``t``."""
    return jnp.dot(params.readout, features(params, x, t), precision=jax.lax.Precision.HIGHEST)


def _checked_data(params, x0, ts):
    """``x0`` ``(n, d)`` matching the model, ``ts`` as a float vector, and ``(alpha, sigma)`` at
    every time: ``sigma > 0``, ``alpha >= 0`` (eagerly, or once at run time under ``jit``),
    where the fit would otherwise return the ``|sigma|`` answer or NaN."""
    x0 = losses._check_batch(x0)
    dim = params.readout.shape[0]
    if x0.shape[1] != dim:
        raise ValueError(f"x0 must have shape (n, {dim}) (the model's dimension), got shape "
                         f"{x0.shape}")
    proc = params.process
    losses._check_process(proc)
    ts = jnp.asarray(ts, x0.dtype)
    if ts.ndim > 1:
        raise ValueError(f"ts must be one time or a vector of times, got shape {ts.shape}")
    ts = jnp.atleast_1d(ts)
    if _checks.is_concrete(ts):
        for t in np.asarray(ts):
            losses._check_time(proc, t, "ts")
    alphas, sigmas = proc.alpha(ts).astype(x0.dtype), proc.sigma(ts).astype(x0.dtype)
    if _checks.is_concrete(sigmas) and _checks.is_concrete(alphas):
        _checks.check_positive(sigmas, "sigma")
        _checks.check_nonnegative(alphas, "alpha")
    else:
        bad = ~jnp.all(jnp.isfinite(sigmas) & (sigmas > 0) & jnp.isfinite(alphas) & (alphas >= 0))
        sigmas = _checks.runtime_check(sigmas, bad, "sigma must be positive and finite and "
                                       "alpha non-negative and finite at every time in ts")
    return x0, ts, alphas, sigmas


def _draws(key, params, x0, ts, alphas, sigmas, weighting, num_noise, antithetic):
    """Features, targets and weights of the fixed-sigma DSM draws at each time in ``ts``."""
    proc = params.process
    keys = jax.random.split(key, ts.shape[0]) if ts.shape[0] > 1 else key[None]

    def one(k, t, alpha, sigma):
        _, eps, xt = losses._fixed_draw(k, x0, alpha, sigma, num_noise, antithetic)
        f = jax.vmap(features, (None, 0, None))(params, xt, t)
        lam = losses.weight(weighting, t, alpha, sigma, proc) * jnp.ones(xt.shape[0], x0.dtype)
        return f, -eps / sigma, lam

    f, y, lam = jax.vmap(one)(keys, ts, alphas, sigmas)
    return f, y, lam


def fit_ridge(key, params: RFParams, x0, ts, *, ridge: float = 1e-3, weighting="sigma2",
              num_noise: int = 1, antithetic: bool = False) -> RFParams:
    """Closed-form ``A`` minimising :func:`ridge_loss` (one Cholesky solve).

    Args:
        key: PRNG key; with one time it is passed unchanged to the draws of
            :func:`manifold_scores.losses.dsm_fixed_sigma`; with a grid, time ``j`` uses
            ``split(key, len(ts))[j]``.
        params: from :func:`init` (``W`` is kept, ``A`` is replaced).
        x0: clean data ``(n, d)``.
        ts: one time or a grid ``(T,)`` (with ``ms.EDM()``, times are noise levels), inside
            the process's time domain; ``sigma(t) <= 0``, ``alpha(t) < 0`` or NaN raise a
            ``ValueError`` (at run time under ``jit``).
        ridge: ``> 0``, the Frobenius penalty on ``A``.
        weighting, num_noise, antithetic: as in
            :func:`manifold_scores.losses.dsm_fixed_sigma`; the loss is the mean over the grid.
    """
    x0, ts, alphas, sigmas = _checked_data(params, x0, ts)
    _checks.check_positive(ridge, "ridge")
    f, y, lam = _draws(key, params, x0, ts, alphas, sigmas, weighting, num_noise, antithetic)
    p = f.shape[-1]
    f, y, lam = f.reshape(-1, p), y.reshape(-1, y.shape[-1]), lam.reshape(-1)
    m = f.shape[0]
    hi = jax.lax.Precision.HIGHEST
    gram = jnp.dot(f.T * lam, f, precision=hi) / m + ridge * jnp.eye(p, dtype=f.dtype)
    rhs = jnp.dot(f.T * lam, y, precision=hi) / m  # (p, d)
    a = jsl.cho_solve(jsl.cho_factor(gram, lower=True), rhs).T
    return RFParams(a, params.weights, params.process, params.activation, params.time_features)


def ridge_loss(key, params: RFParams, x0, ts, *, ridge: float = 1e-3, weighting="sigma2",
               num_noise: int = 1, antithetic: bool = False):
    """Mean over ``ts`` of :func:`manifold_scores.losses.dsm_fixed_sigma` plus ``ridge |A|_F^2``:
    the objective :func:`fit_ridge` minimises (for gradient-based checks)."""
    x0 = losses._check_batch(x0)
    ts = jnp.asarray(ts, x0.dtype)
    if ts.ndim > 1:
        raise ValueError(f"ts must be one time or a vector of times, got shape {ts.shape}")
    ts = jnp.atleast_1d(ts)
    keys = jax.random.split(key, ts.shape[0]) if ts.shape[0] > 1 else key[None]
    vals = jnp.stack([losses.dsm_fixed_sigma(keys[j], apply, params, x0, params.process, ts[j],
                                             weighting=weighting, num_noise=num_noise,
                                             antithetic=antithetic)
                      for j in range(ts.shape[0])])
    return jnp.mean(vals) + ridge * jnp.sum(params.readout ** 2)

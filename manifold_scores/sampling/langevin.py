"""Langevin dynamics at fixed noise levels: plain, tempered-score, annealed, inverse problems.

``dX = [sigma^a s_sigma(X) - grad v(X)] dt + sqrt(2) dW``, discretised by Euler-Maruyama with
step ``h``: ``x += h (sigma^a s(x, sigma) - grad v(x)) + sqrt(2 h) z``. With ``a = 0`` (the
default, ``temper=0.0``) and no potential it samples ``p_sigma``. Tempering is opt-in: with
``0 < a < 2`` it tends to the uniform (volume) law on the data manifold as ``sigma -> 0``, and
with a likelihood potential ``v`` (not tempered) to the posterior ``exp(-v) dVol_M`` of an
inverse problem (Li, Shen, Hsieh, He, "When Scores Learn Geometry: Rate Separations under the
Manifold Hypothesis", arXiv 2509.24912). All steps, and all levels of the annealed ladder, run
in the one scan of :mod:`manifold_scores.sampling.solver`.

Example:
    >>> import jax, jax.numpy as jnp, manifold_scores as ms
    >>> score = lambda x, s: -x / (1.0 + s**2)          # N(0, I) data
    >>> ms.sampling.langevin(jax.random.key(0), score, jnp.zeros((4, 2)), steps=10).shape
    (4, 2)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from manifold_scores import _checks
from manifold_scores._api import public_dir as _public_dir
from manifold_scores.sampling import _args
from manifold_scores.sampling._jit import filter_jit
from manifold_scores.sampling._sharding import batch_sharding, constrain, key_sharding
from manifold_scores.sampling.solver import Solver, batched, identity, run, x_init

__all__ = ["annealed_langevin", "langevin"]


def _langevin_plan(steps, options=()):
    return {"n": np.arange(steps), "end": np.ones(steps, bool)}


def _langevin_step(state, row, ts, evaluate, noise, proc, options):
    """``x += h (sigma^a s(x, sigma) - grad v(x)) + sqrt(2 h) z``; ``options`` holds the
    per-step ``(sigmas, hs)``."""
    sigmas, hs = options
    x, h = state, hs[row["n"]]
    return x + h * evaluate(x, sigmas[row["n"]]) + jnp.sqrt(2.0 * h) * noise()


def _langevin_impl(key, x_init_, sigmas, hs, temper, *, score, potential_grad, save_at, steps,
                   sharding):
    score_b = batched(score)
    grad_v = None if potential_grad is None else jax.vmap(potential_grad)

    def drift(x, sigma):
        d = sigma**temper * score_b(x, sigma)
        # The likelihood potential is not tempered: only the prior score is scaled.
        return d if grad_v is None else d - grad_v(x)

    # Built under the trace: the per-step arrays ride in the options, not in a static argument.
    solver = Solver("langevin", _langevin_plan, x_init, _langevin_step, identity, False,
                    (sigmas, hs), stochastic=True)
    keys = constrain(jax.random.split(key, x_init_.shape[0]), key_sharding(sharding))
    x = constrain(x_init_, sharding)
    ts = jnp.zeros(steps + 1, x.dtype)  # no time axis; the Trajectory reports sigmas
    # The noise levels and steps were checked before the scan (eagerly or at run time).
    with _checks.validated():
        out = run(solver, drift, None, ts, x, keys, save_at, steps)
    if save_at is None:
        return constrain(out, sharding)
    x, traj = out
    return constrain(x, sharding), traj._replace(
        ts=jnp.concatenate([sigmas[:1], sigmas])[jnp.asarray(save_at)])


_langevin_jit = filter_jit(_langevin_impl, split=("score", "potential_grad"),
                           static_argnames=("save_at", "steps", "sharding"))


def _prepare(key, x_init, sharding):
    if key is None:
        raise ValueError("key must be a PRNG key, got None")
    _args.check_batch(x_init)
    return batch_sharding(x_init, sharding, jnp.ndim(x_init))


def langevin(key, score_at_sigma, x_init, steps: int = 1000, step_size=1e-2, sigma=0.01,
             temper: float = 0.0, *, potential_grad=None, save_at=None, sharding=None):
    """Langevin dynamics at a fixed noise level, optionally with a tempered score.

    ``dX = [sigma^a s_sigma(X) - grad v(X)] dt + sqrt(2) dW`` (the tempered-score Langevin
    dynamics of Li, Shen, Hsieh, He, arXiv 2509.24912), Euler-Maruyama with step ``h``:
    ``x += h (sigma^a s(x, sigma) - grad v(x)) + sqrt(2 h) z``. With the default ``a = 0``
    (``temper=0.0``) and no potential it samples ``p_sigma``; tempering is opt-in: with
    ``0 < a < 2`` it tends to the uniform (volume) law on the data manifold as ``sigma -> 0``;
    with ``potential_grad = grad v`` (a likelihood potential, not tempered) it targets the
    posterior ``exp(-v) dVol_M`` of an inverse problem. The normal direction is stiff
    (curvature ``sigma^(a-2)``): take ``h`` below ``sigma^(2-a)``.

    Args:
        key: PRNG key; sample ``i`` uses ``split(key, n)[i]``.
        score_at_sigma: per-point ``score(x, sigma)`` of the noised law (``alpha = 1``); a plain
            function or a callable PyTree (its arrays are traced: new values do not recompile).
        x_init: ``(n, d)`` start; its sharding (if spread over devices) is kept.
        steps: Langevin steps.
        step_size: ``h > 0``.
        sigma: the fixed noise level ``> 0``.
        temper: the exponent ``a`` (default ``0.0``: plain Langevin on ``p_sigma``).
        potential_grad: optional per-point ``grad v(x)`` (function or callable PyTree).
        save_at: step indices to store (see ``sample_ode``); ``Trajectory.ts`` holds sigma.
        sharding: optional batch sharding of the samples (see ``sample_ode``).

    Example:
        >>> import jax, jax.numpy as jnp, manifold_scores as ms
        >>> score = lambda x, s: -x / (1.0 + s**2)          # N(0, I) data
        >>> x = ms.sampling.langevin(jax.random.key(0), score, jnp.zeros((4, 2)), steps=50,
        ...                          step_size=0.1, sigma=0.1)
        >>> x.shape
        (4, 2)
    """
    steps = _args.check_steps(steps)
    sharding = _prepare(key, x_init, sharding)
    dtype = jnp.result_type(x_init)
    for name, value in (("sigma", sigma), ("step_size", step_size)):
        if jnp.ndim(value) != 0:
            raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(value)}")
    sigma = _args.check_positive_levels(sigma, "sigma")
    step_size = _args.check_positive_levels(step_size, "step_size")
    _checks.check_scalar(temper, "temper")
    sigmas = jnp.full((steps,), sigma, dtype)
    hs = jnp.full((steps,), step_size, dtype)
    return _langevin_jit(key, x_init, sigmas, hs, jnp.asarray(temper, dtype),
                         score=score_at_sigma, potential_grad=potential_grad,
                         save_at=_args.check_save_at(save_at, steps), steps=steps,
                         sharding=sharding)


def annealed_langevin(key, score_at_sigma, x_init, sigmas: Sequence[float] | jax.Array,
                      steps_per_sigma: int = 100, step_size=2e-5, temper: float = 0.0, *,
                      potential_grad=None, save_at=None, sharding=None):
    """Annealed Langevin dynamics (Song and Ermon 2019) over a decreasing ladder of sigmas.

    At level ``sigma_i`` take ``steps_per_sigma`` steps of :func:`langevin` with step
    ``h_i = step_size * sigma_i^2 / sigma_L^2`` (``sigma_L`` the last, smallest level), so that
    ``h_i`` scales like the curvature of ``log p_{sigma_i}``. All levels run in one scan. As in
    :func:`langevin`, ``temper`` defaults to ``0.0`` (the untempered score); tempering is opt-in.

    Args:
        sigmas: ``(L,)`` noise levels ``> 0``, typically geometric and decreasing.
        steps_per_sigma: steps at each level.
        step_size: ``h > 0`` at the last level.
        temper, potential_grad, save_at, sharding: as :func:`langevin` (``save_at`` counts all
            steps).

    Example:
        >>> import jax, jax.numpy as jnp, manifold_scores as ms
        >>> score = lambda x, s: -x / (1.0 + s**2)
        >>> x = ms.sampling.annealed_langevin(jax.random.key(0), score, jnp.zeros((4, 2)),
        ...                                   jnp.array([1.0, 0.3, 0.1]), 20, step_size=0.05)
        >>> x.shape
        (4, 2)
    """
    m = _args.check_steps(steps_per_sigma, "steps_per_sigma")
    sharding = _prepare(key, x_init, sharding)
    dtype = jnp.result_type(x_init)
    sigmas = jnp.asarray(sigmas, dtype)
    if sigmas.ndim != 1 or sigmas.shape[0] < 1:
        raise ValueError(f"sigmas must have shape (L,) with L >= 1, got shape {sigmas.shape}")
    if jnp.ndim(step_size) != 0:
        raise ValueError(f"step_size must be a scalar, got shape {jnp.shape(step_size)}")
    sigmas = _args.check_positive_levels(sigmas, "sigmas")
    step_size = _args.check_positive_levels(step_size, "step_size")
    _checks.check_scalar(temper, "temper")
    steps = m * sigmas.shape[0]
    hs = step_size * (sigmas / sigmas[-1]) ** 2
    return _langevin_jit(key, x_init, jnp.repeat(sigmas, m), jnp.repeat(hs, m),
                         jnp.asarray(temper, dtype), score=score_at_sigma,
                         potential_grad=potential_grad,
                         save_at=_args.check_save_at(save_at, steps), steps=steps,
                         sharding=sharding)

__dir__ = _public_dir(__all__)

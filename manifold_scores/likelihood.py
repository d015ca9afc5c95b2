"""Log-likelihood through the probability-flow ODE (instantaneous change of variables).

Along the PF-ODE ``dx/dt = v(x, t) = f(t) x - g(t)^2 s(x, t) / 2`` the log-density obeys
``d log p_t(x(t)) / dt = -div v = -(f d - g^2 div s / 2)``, so integrating ``t_min -> t_max``

    log p_{t_min}(x) = log p_{t_max}(x(t_max)) + int_{t_min}^{t_max} div v(x(t), t) dt.

The divergence comes from one of: ``"exact"`` (a Jacobian-vector product per basis vector; for
small ``d``), ``"hutchinson"`` (``z^T (ds/dx) z`` with one probe ``z`` fixed along the path, an
unbiased estimate; vmap over keys to average), or a callable ``(x, t) -> div_x s(x, t)`` such as
the closed form of mixture scores from :func:`divergence_fn`.

Example:
    >>> import jax, manifold_scores as ms
    >>> proc = ms.VP()
    >>> mix = ms.MoLRG.random(jax.random.key(0), dim=4, rank=1, num_components=2)
    >>> x = mix.sample(jax.random.key(1), 1)[0]
    >>> logp = ms.likelihood.log_prob(ms.score_fn(mix, proc), proc, x, steps=32)
    >>> logp.shape
    ()
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from manifold_scores import _checks
from manifold_scores._api import public_dir as _public_dir
from manifold_scores._pytree import pytree_dataclass
from manifold_scores.sampling import _args, _jit
from manifold_scores.sampling import grids as _grids
from manifold_scores.sampling import ode as _ode
from manifold_scores.sampling import samplers as _samplers
from manifold_scores.sampling import solver as _solver

__all__ = ["DIVERGENCES", "DivergenceFn", "bits_per_dim", "divergence_fn", "log_prob",
           "prior_log_prob"]

DIVERGENCES = ("exact", "hutchinson")
METHODS = ("euler", "heun", "rk4")


@pytree_dataclass
class DivergenceFn:
    """``(x, t) -> div_x score(x, t)`` from ``density.score_divergence``; a callable PyTree
    (density and process are children, so ``log_prob`` takes it as a traced argument)."""

    density: Any
    process: Any

    def __call__(self, x, t):
        return self.density.score_divergence(x, self.process.alpha(t), self.process.sigma(t))

    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other


def divergence_fn(density, proc) -> DivergenceFn:
    """``(x, t) -> div_x score(x, t)`` in closed form, from ``density.score_divergence``.

    For mixtures: ``-d / sigma^2 + alpha^2 tr Cov[X | x] / sigma^4``.
    """
    return DivergenceFn(density, proc)


def prior_log_prob(proc, x, t_max=None):
    """``log N(x; 0, prior_std^2 I)``, the prior that ``sampling.prior_sample`` draws from."""
    std = _samplers.prior_std(proc, t_max)
    d = x.size
    return -0.5 * jnp.sum(x * x) / std**2 - d * jnp.log(std) - 0.5 * d * math.log(2 * math.pi)


def _score_and_div(score, divergence, probe):
    """A function ``(x, t) -> (s, div s)`` with the score traced once."""
    if callable(divergence):
        return lambda x, t: (score(x, t), divergence(x, t))
    if divergence == "hutchinson":

        def hutchinson(x, t):
            s, jz = jax.jvp(lambda y: score(y, t), (x,), (probe,))
            return s, jnp.vdot(probe, jz)

        return hutchinson

    def exact(x, t):
        basis = jnp.eye(x.shape[0], dtype=x.dtype)
        # vmap over tangents only: the primal (the score) is evaluated once.
        s, cols = jax.vmap(lambda v: jax.jvp(lambda y: score(y, t), (x,), (v,)),
                           out_axes=(None, 0))(basis)
        return s, jnp.trace(cols)

    return exact


def log_prob(score, proc, x, t_min=1e-3, divergence="exact", *, key=None, t_max=None,
             steps: int = 128, method: str = "rk4", kind: str = "log_snr",
             probe: str = "rademacher",
             prior: Callable | None = None):
    """``log p_{t_min}(x)`` of one point ``x`` ``(d,)`` through the PF-ODE.

    Args:
        score: per-point ``score(x, t)``: a callable PyTree such as ``ms.score_fn(density,
            proc)`` or a model bound to its parameters (traced: new values reuse the
            compilation), or a plain function (static, by identity).
        proc: the process.
        x: one point, shape ``(d,)``.
        t_min: the time of the law whose density is returned (``p_{t_min}``, not ``p_0``,
            which is singular on a manifold): ``t_min > 0`` and ``sigma > 0`` on the whole grid,
            else ``ValueError`` (a run-time error when traced).
        divergence: ``"exact"``, ``"hutchinson"`` (needs ``key``), or a callable
            ``(x, t) -> div_x score`` (e.g. :func:`divergence_fn`; a callable PyTree is traced).
        key: PRNG key of the Hutchinson probe.
        t_max: end of the path (default ``proc.t_max``).
        steps, method, kind: fixed-step solver (``"euler"``, ``"heun"``, ``"rk4"``) and grid
            (see :func:`manifold_scores.sampling.time_grid`); the log-SNR grid resolves the stiff
            start near ``t_min``.
        probe: ``"rademacher"`` (the smaller variance: ``z^T A z`` has none from the diagonal
            of ``A``) or ``"gaussian"`` Hutchinson probe.
        prior: ``x_T -> log p_{t_max}(x_T)`` (function or callable PyTree); default
            :func:`prior_log_prob`.

    Returns:
        The scalar log-density.

    Example:
        >>> import jax, manifold_scores as ms
        >>> proc, mix = ms.VP(), ms.MoLRG.random(jax.random.key(0), 4, 1, 2)
        >>> x = mix.sample(jax.random.key(1), 1)[0]
        >>> est = ms.likelihood.log_prob(ms.score_fn(mix, proc), proc, x, steps=32,
        ...                              divergence="hutchinson", key=jax.random.key(2))
        >>> est.shape
        ()
    """
    if jnp.ndim(x) != 1:
        raise ValueError(f"x must be one point of shape (d,), got shape {jnp.shape(x)} "
                         "(batches: wrap the call in jax.vmap)")
    if not callable(score):
        raise ValueError(f"score must be a callable score(x, t), got {type(score).__name__}")
    if not callable(divergence) and divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES} or a callable, got "
                         f"{divergence!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if probe not in ("gaussian", "rademacher"):
        raise ValueError(f"probe must be 'gaussian' or 'rademacher', got {probe!r}")
    if prior is not None and not callable(prior):
        raise ValueError(f"prior must be a callable x_T -> log p(x_T) or None, got "
                         f"{type(prior).__name__}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    hutchinson = isinstance(divergence, str) and divergence == "hutchinson"
    if hutchinson and key is None:
        raise ValueError("key must be given for divergence='hutchinson'")
    steps = _args.check_steps(steps)
    if kind not in _grids.GRID_KINDS:
        raise ValueError(f"kind must be one of {_grids.GRID_KINDS}, got {kind!r}")
    t_max = proc.t_max if t_max is None else t_max
    _args.check_interval(t_min, t_max, proc)
    # p_0 is singular on a manifold: the density is that of p_{t_min}, t_min > 0, sigma > 0.
    lo = _args.concrete_float(t_min)
    if lo is not None and not lo > 0:
        raise ValueError(f"t_min must be > 0 (log p_0 is singular on a manifold), got {lo}")
    if lo is None:
        t_min = _checks.runtime_check(t_min, ~(t_min > 0), "t_min must be > 0")
    check = _grids.check_levels(proc, t_min, t_max)
    return _log_prob_jit(x, t_min, t_max, key if hutchinson else None, proc=proc,
                         score=score, divergence=divergence, steps=steps, method=method,
                         kind=kind, probe=probe, prior=prior, check=check)


def _log_prob_impl(x, t_min, t_max, key, *, proc, score, divergence, steps, method, kind, probe,
                   prior, check):
    dtype = x.dtype
    ts = _grids._grid(proc, steps, kind, t_min, t_max, 7.0, dtype)
    if check:  # traced interval or process: one run-time check of the grid, before the scan
        ts = _grids.runtime_checked(proc, ts)
    ts = ts[::-1]
    z = None
    if isinstance(divergence, str) and divergence == "hutchinson":
        draw = jax.random.normal if probe == "gaussian" else jax.random.rademacher
        z = draw(key, x.shape, dtype)
    score_div = _score_and_div(score, divergence, z)
    d = x.shape[0]

    def field(state, t):
        y, _ = state
        s, div_s = jax.vmap(score_div, in_axes=(0, None))(y, t)
        f, g2 = proc.drift(t), proc.diffusion_squared(t)
        return f * y - 0.5 * g2 * s, f * d - 0.5 * g2 * div_s

    solver = _ode.ODE_METHODS[method]()
    # The state is a batch of one (x, delta) pair so that the sampler engine applies unchanged.
    state = (x[None], jnp.zeros((1,), dtype))
    # sigma > 0 was checked on the whole grid before the scan.
    with _checks.validated():
        x_t, delta = _solver.run(solver, field, proc, ts, state, None, None, steps)
    t_max = ts[-1]
    log_prior = prior_log_prob(proc, x_t[0], t_max) if prior is None else prior(x_t[0])
    return log_prior + delta[0]


_log_prob_jit = _jit.filter_jit(_log_prob_impl, split=("proc", "score", "divergence", "prior"),
                           static_argnames=("steps", "method", "kind", "probe", "check"))


def bits_per_dim(log_prob_value, dim: int, scale: float = 1.0):
    """Bits per dimension ``-(log p + d log scale) / (d log 2)``.

    ``scale`` is the factor that took the original units to the model's: for 8-bit images mapped
    by ``x / 127.5 - 1``, ``scale = 1 / 127.5`` gives bits per sub-pixel in the 0..255 units.

    Example:
        >>> from manifold_scores.likelihood import bits_per_dim
        >>> round(float(bits_per_dim(-2 * 0.6931471805599453, 2)), 6)
        1.0
    """
    if int(dim) < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    return -(log_prob_value + dim * math.log(scale)) / (dim * math.log(2.0))

__dir__ = _public_dir(__all__)

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

import jax
import jax.numpy as jnp

from manifold_scores import sampling

__all__ = ["DIVERGENCES", "bits_per_dim", "divergence_fn", "log_prob", "prior_log_prob"]

DIVERGENCES = ("exact", "hutchinson")
METHODS = ("euler", "heun", "rk4")


def divergence_fn(density, proc) -> Callable:
    """``(x, t) -> div_x score(x, t)`` in closed form, from ``density.score_divergence``.

    For mixtures: ``-d / sigma^2 + alpha^2 tr Cov[X | x] / sigma^4``.
    """

    def div(x, t):
        return density.score_divergence(x, proc.alpha(t), proc.sigma(t))

    return div


def prior_log_prob(proc, x, t_max=None):
    """``log N(x; 0, prior_std^2 I)``, the prior that ``sampling.prior_sample`` draws from."""
    std = sampling.prior_std(proc, t_max)
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
        score: per-point ``score(x, t)``.
        proc: the process.
        x: one point, shape ``(d,)``.
        t_min: the time of the law whose density is returned (``p_{t_min}``, not ``p_0``).
        divergence: ``"exact"``, ``"hutchinson"`` (needs ``key``), or a callable
            ``(x, t) -> div_x score`` (e.g. :func:`divergence_fn`).
        key: PRNG key of the Hutchinson probe.
        t_max: end of the path (default ``proc.t_max``).
        steps, method, kind: fixed-step solver (``"euler"``, ``"heun"``, ``"rk4"``) and grid
            (see :func:`manifold_scores.sampling.time_grid`); the log-SNR grid resolves the stiff
            start near ``t_min``.
        probe: ``"rademacher"`` (the smaller variance: ``z^T A z`` has none from the diagonal
            of ``A``) or ``"gaussian"`` Hutchinson probe.
        prior: ``x_T -> log p_{t_max}(x_T)``; default :func:`prior_log_prob`.

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
    if not callable(divergence) and divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES} or a callable, got "
                         f"{divergence!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if probe not in ("gaussian", "rademacher"):
        raise ValueError(f"probe must be 'gaussian' or 'rademacher', got {probe!r}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if divergence == "hutchinson" and key is None:
        raise ValueError("key must be given for divergence='hutchinson'")
    steps = sampling._check_steps(steps)
    if kind not in sampling.GRID_KINDS:
        raise ValueError(f"kind must be one of {sampling.GRID_KINDS}, got {kind!r}")
    t_max = proc.t_max if t_max is None else t_max
    sampling._check_interval(t_min, t_max)
    return _log_prob_jit(x, proc, t_min, t_max, key if divergence == "hutchinson" else None,
                         score=score, divergence=divergence, steps=steps, method=method,
                         kind=kind, probe=probe, prior=prior)


def _log_prob_impl(x, proc, t_min, t_max, key, *, score, divergence, steps, method, kind, probe,
                   prior):
    dtype = x.dtype
    z = None
    if divergence == "hutchinson":
        draw = jax.random.normal if probe == "gaussian" else jax.random.rademacher
        z = draw(key, x.shape, dtype)
    ts = sampling._grid(proc, steps, kind, t_min, t_max, 7.0, dtype)[::-1]
    score_div = _score_and_div(score, divergence, z)
    d = x.shape[0]

    def field(state, t):
        y, _ = state
        s, div_s = jax.vmap(score_div, in_axes=(0, None))(y, t)
        f, g2 = proc.drift(t), proc.diffusion_squared(t)
        return f * y - 0.5 * g2 * s, f * d - 0.5 * g2 * div_s

    solver = sampling.ODE_METHODS[method]()
    # The state is a batch of one (x, delta) pair so that the sampler engine applies unchanged.
    state = (x[None], jnp.zeros((1,), dtype))
    x_t, delta = sampling._run(solver, field, proc, ts, state, None, None, steps)
    log_prior = prior_log_prob(proc, x_t[0], t_max) if prior is None else prior(x_t[0])
    return log_prior + delta[0]


_log_prob_jit = sampling._maybe_jit(
    _log_prob_impl, ("score", "divergence", "steps", "method", "kind", "probe", "prior"))


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

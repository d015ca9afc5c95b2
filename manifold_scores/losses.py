"""Score-matching losses: denoising (DSM), implicit (ISM) and explicit (ESM) score matching.

Under ``x_t = alpha x_0 + sigma eps`` the DSM regression target of the score is
``-eps / sigma``; a model may predict any of the four parameterisations of
:mod:`manifold_scores.scores` (``"score"``, ``"eps"``, ``"x0"``, ``"v"``). Every weighting is
stated on the *score-space* squared error, so the same weighting gives the same loss whatever
the target: with ``e = |pred - target|^2`` in the target's own space,

    |s - s*|^2 = e * c_target,   c_score = 1,   c_eps = 1 / sigma^2,
    c_x0 = alpha^2 / sigma^4,    c_v = alpha^2 / (sigma^2 (alpha^2 + sigma^2)^2),

and ``dsm = E_t E_{x0, eps} lambda(t) |s - s*|^2`` (no factor 1/2). Weightings ``lambda``:
``"sigma2"`` (``sigma^2``: the plain eps-MSE), ``"likelihood"`` (``g(t)^2``), ``"edm"``
(Karras et al. 2022 on the denoiser, with ``sigma_data = 0.5``), ``"min_snr"`` (Hang et al. 2023,
``gamma = 5``, on the eps-MSE), ``"uniform"`` (1), or a callable
``lambda(t, alpha, sigma, process)``.

Example:
    >>> import jax, jax.numpy as jnp, manifold_scores as ms
    >>> apply = lambda p, x, t: -p * x  # the exact score of N(0, I) data under VE is -x/(1+s^2)
    >>> x0 = jax.random.normal(jax.random.key(0), (64, 3))
    >>> float(ms.losses.dsm(jax.random.key(1), apply, 0.5, x0, ms.VE())) > 0
    True
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from manifold_scores import _checks
from manifold_scores._api import public_dir as _public_dir
from manifold_scores.scores import PARAMETERISATIONS, convert

__all__ = [
    "TIME_SAMPLERS",
    "WEIGHTINGS",
    "dsm",
    "dsm_constant",
    "dsm_fixed_sigma",
    "edm_weighting",
    "esm",
    "ism",
    "min_snr_weighting",
    "sample_times",
    "target_factor",
    "weight",
]


# --------------------------------------------------------------------------------------------
# Weightings and target factors
# --------------------------------------------------------------------------------------------


def target_factor(target: str, alpha, sigma):
    """``c`` with ``|s - s*|^2 = c |pred - target|^2`` for a prediction in ``target`` space."""
    s2 = sigma * sigma
    if target == "score":
        return jnp.ones_like(s2)
    if target == "eps":
        return 1.0 / s2
    if target == "x0":
        return alpha * alpha / (s2 * s2)
    if target == "v":
        v = alpha * alpha + s2
        return alpha * alpha / (s2 * v * v)
    raise ValueError(f"target must be one of {PARAMETERISATIONS}, got {target!r}")


def edm_weighting(sigma_data: float = 0.5) -> Callable:
    """EDM weighting: ``(sigma~^2 + sigma_data^2) / (sigma~ sigma_data)^2`` on the denoiser error.

    ``sigma~ = sigma / alpha`` is the variance-exploding noise level of the rescaled point
    ``x / alpha``; on the score error it reads ``lambda = sigma^4 / alpha^2 * w_x0``.
    """

    def weighting(t, alpha, sigma, process):
        st = sigma / alpha
        w_x0 = (st * st + sigma_data**2) / (st * st * sigma_data**2)
        return sigma**4 / (alpha * alpha) * w_x0

    return weighting


def min_snr_weighting(gamma: float = 5.0) -> Callable:
    """Min-SNR-gamma: ``min(SNR, gamma) / SNR`` on the eps-MSE, ``SNR = alpha^2 / sigma^2``."""

    def weighting(t, alpha, sigma, process):
        snr = alpha * alpha / (sigma * sigma)
        return sigma * sigma * jnp.minimum(snr, gamma) / snr

    return weighting


def _sigma2(t, alpha, sigma, process):
    return sigma * sigma


def _likelihood(t, alpha, sigma, process):
    return process.diffusion_squared(t)


def _uniform(t, alpha, sigma, process):
    return jnp.ones_like(sigma)


WEIGHTINGS = {
    "sigma2": _sigma2,
    "likelihood": _likelihood,
    "edm": edm_weighting(),
    "min_snr": min_snr_weighting(),
    "uniform": _uniform,
}


def weight(weighting, t, alpha, sigma, process):
    """``lambda(t)`` of a weighting name or callable (on the score-space squared error)."""
    if callable(weighting):
        return weighting(t, alpha, sigma, process)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {tuple(WEIGHTINGS)} or a callable, "
                         f"got {weighting!r}")
    return WEIGHTINGS[weighting](t, alpha, sigma, process)


# --------------------------------------------------------------------------------------------
# Time samplers
# --------------------------------------------------------------------------------------------

TIME_SAMPLERS = ("uniform", "stratified", "edm")


def sample_times(key, n: int, process, kind="uniform", t_min=None, t_max=None, *,
                 dtype=None, p_mean: float = -1.2, p_std: float = 1.2):
    """``n`` times in ``[t_min, t_max]`` (default: the process's interval).

    ``"uniform"``: i.i.d., one key per sample. ``"stratified"``: ``t_i = (i + u) / n`` rescaled,
    one shared ``u``, so the batch covers the interval evenly (a low-discrepancy draw; variance
    of the loss estimate drops). ``"edm"``: ``log(sigma / alpha) ~ N(p_mean, p_std^2)``
    (Karras et al. 2022), mapped to ``t`` through the process's inverse log-SNR and clipped to
    the interval. A callable ``kind(key, n) -> (n,)`` is used as is.
    """
    t_min = process.t_min if t_min is None else t_min
    t_max = process.t_max if t_max is None else t_max
    dtype = dtype or jnp.result_type(float)
    if callable(kind):
        return jnp.asarray(kind(key, n), dtype)
    if kind == "uniform":
        keys = jax.random.split(key, n)
        u = jax.vmap(lambda k: jax.random.uniform(k, (), dtype))(keys)
    elif kind == "stratified":
        u = (jnp.arange(n, dtype=dtype) + jax.random.uniform(key, (), dtype)) / n
    elif kind == "edm":
        keys = jax.random.split(key, n)
        z = jax.vmap(lambda k: jax.random.normal(k, (), dtype))(keys)
        log_snr = -2.0 * (p_mean + p_std * z)
        t = process.t_from_log_snr(log_snr).astype(dtype)
        return jnp.clip(t, t_min, t_max)
    else:
        raise ValueError(f"time sampler must be one of {TIME_SAMPLERS} or a callable, got {kind!r}")
    return t_min + (t_max - t_min) * u


# --------------------------------------------------------------------------------------------
# Shared draws
# --------------------------------------------------------------------------------------------


def _check_batch(x0, name="x0"):
    x0 = jnp.asarray(x0)
    if x0.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d) (a batch), got shape {x0.shape}")
    _checks.check_nonempty(x0, name)
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = x0.astype(jnp.result_type(float))
    return x0


def _check_target(target):
    if target not in PARAMETERISATIONS:
        raise ValueError(f"target must be one of {PARAMETERISATIONS}, got {target!r}")


def _resolve_target(params, target):
    """The parameterisation a model predicts: ``params.target`` where the parameters carry one
    (a model's own parameters), else ``target`` (default ``"score"``, for plain PyTrees).

    An explicit ``target`` that contradicts ``params.target`` is refused: scoring an x0 model
    as a score model gives a finite, wrong loss.
    """
    carried = getattr(params, "target", None)
    if not isinstance(carried, str):
        carried = None
    if target is None:
        target = "score" if carried is None else carried
    elif carried is not None and target != carried:
        raise ValueError(f"target={target!r} contradicts the parameters' own target "
                         f"(params.target={carried!r}); leave target out to use it")
    _check_target(target)
    return target


def _check_process(process):
    if not all(callable(getattr(process, attr, None)) for attr in ("alpha", "sigma")):
        raise ValueError(f"process must be a noising process with alpha(t) and sigma(t), such as "
                         f"ms.VP(), got {process!r}")


def _check_interval(process, t_min, t_max):
    """``t_min < t_max`` inside the process's time domain, both scalars (when concrete)."""
    for name, value in (("t_min", t_min), ("t_max", t_max)):
        _checks.check_scalar(value, name)
    check = getattr(process, "check_interval", None)
    if callable(check):
        check(t_min, t_max)
    elif _checks.is_concrete(t_min) and _checks.is_concrete(t_max) and \
            not float(t_min) < float(t_max):
        raise ValueError(f"t_min must be < t_max, got t_min={float(t_min):g}, "
                         f"t_max={float(t_max):g}")


def _check_time(process, t, name="t"):
    """One time inside the process's time domain (when concrete)."""
    check = getattr(process, "check_time", None)
    if callable(check):
        check(t, name)


def _check_count(value, name, least=1, most=None) -> int:
    """``value`` as an integer in ``[least, most]``, else a ``ValueError`` naming it."""
    try:
        count = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if count < least or (most is not None and count > most):
        bound = f">= {least}" if most is None else f"in [{least}, {most}]"
        raise ValueError(f"{name} must be an integer {bound}, got {count}")
    return count


def _noise(key, x0):
    keys = jax.random.split(key, x0.shape[0])
    return jax.vmap(lambda k: jax.random.normal(k, x0.shape[1:], x0.dtype))(keys)


def _draw(key, x0, process, time_sampler, t_min, t_max):
    _check_process(process)
    # a time outside the domain gives a plausible but meaningless loss (VE at t < 0, say)
    _check_interval(process, process.t_min if t_min is None else t_min,
                    process.t_max if t_max is None else t_max)
    k_t, k_eps = jax.random.split(key)
    t = sample_times(k_t, x0.shape[0], process, time_sampler, t_min, t_max, dtype=x0.dtype)
    alpha, sigma = process.alpha(t).astype(x0.dtype), process.sigma(t).astype(x0.dtype)
    eps = _noise(k_eps, x0)
    xt = alpha[:, None] * x0 + sigma[:, None] * eps
    return t, alpha, sigma, eps, xt


def _target_value(target, x0, eps, xt, alpha, sigma):
    if target == "score":
        return -eps / sigma
    if target == "eps":
        return eps
    if target == "x0":
        return x0
    return alpha * eps - sigma * x0  # v


def _reduce(values, reduction):
    if reduction == "mean":
        return jnp.mean(values)
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _regression(apply, params, target, weighting, process, t, alpha, sigma, xt, goal):
    """``lambda(t) c_target |apply(params, x_t, t) - goal|^2`` per sample."""
    pred = jax.vmap(apply, (None, 0, 0))(params, xt, t)
    if pred.shape != xt.shape:
        raise ValueError(f"the model must return shape {xt.shape[1:]} per point, got "
                         f"{pred.shape[1:]}")
    err = jnp.sum(jnp.square(pred - goal), axis=-1)
    lam = weight(weighting, t, alpha, sigma, process)
    return lam * target_factor(target, alpha, sigma) * err


# --------------------------------------------------------------------------------------------
# DSM
# --------------------------------------------------------------------------------------------


def dsm(key, apply: Callable, params: Any, x0, process, *, target: str | None = None,
        weighting="sigma2", time_sampler="uniform", t_min=None, t_max=None,
        reduction: str = "mean"):
    """Denoising score matching ``E_t lambda(t) E |s(x_t, t) + eps / sigma|^2``.

    Args:
        key: PRNG key (times and noise; one key per sample).
        apply: the model, ``apply(params, x, t) -> prediction`` on one point ``x`` of shape
            ``(d,)``, in the parameterisation ``target``.
        params: its parameters (any PyTree; ``jax.grad`` differentiates through them).
        x0: clean data, shape ``(n, d)``.
        process: the noising process.
        target: ``"score"``, ``"eps"``, ``"x0"`` or ``"v"``; default ``params.target`` where
            the parameters carry one (the models' parameters do), else ``"score"``. A target
            that contradicts ``params.target`` is a ``ValueError``.
        weighting: a name from :data:`WEIGHTINGS` or ``lambda(t, alpha, sigma, process)``,
            always on the score-space error (see the module docstring).
        time_sampler: ``"uniform"``, ``"stratified"``, ``"edm"`` or ``f(key, n) -> t``.
        t_min, t_max: time interval (default: the process's); ``t_min < t_max`` inside the
            process's time domain.
        reduction: ``"mean"`` or ``"none"`` (per-sample terms, shape ``(n,)``).

    Examples:
        The exact score of the data (passed as the model; ``params`` unused) reaches the
        irreducible value :func:`dsm_constant` on the same draws, a zero score does not:

        >>> import jax, manifold_scores as ms
        >>> proc, key = ms.VP(), jax.random.key(1)
        >>> mix = ms.MoLRG.random(jax.random.key(0), dim=4, rank=1, num_components=2)
        >>> x0 = mix.sample(jax.random.key(2), 512)
        >>> exact = lambda p, x, t: ms.score_fn(mix, proc)(x, t)
        >>> zero = lambda p, x, t: 0.0 * x
        >>> floor = float(ms.losses.dsm_constant(key, mix, x0, proc))
        >>> abs(float(ms.losses.dsm(key, exact, None, x0, proc)) - floor) < 0.05
        True
        >>> round(float(ms.losses.dsm(key, zero, None, x0, proc)) - floor, 1)
        3.8
    """
    x0 = _check_batch(x0)
    target = _resolve_target(params, target)
    t, alpha, sigma, eps, xt = _draw(key, x0, process, time_sampler, t_min, t_max)
    a, s = alpha[:, None], sigma[:, None]
    goal = _target_value(target, x0, eps, xt, a, s)
    return _reduce(_regression(apply, params, target, weighting, process, t, alpha, sigma, xt,
                               goal), reduction)


def _fixed_draw(key, x0, alpha, sigma, num_noise, antithetic):
    n = x0.shape[0]
    num_noise = _check_count(num_noise, "num_noise")
    if antithetic:
        if num_noise % 2:
            raise ValueError(f"antithetic draws need an even num_noise, got {num_noise}")
        half = _noise(key, jnp.repeat(x0, num_noise // 2, axis=0))
        eps = jnp.stack([half, -half], 1).reshape(n * num_noise, -1)
    else:
        eps = _noise(key, jnp.repeat(x0, num_noise, axis=0))
    x0r = jnp.repeat(x0, num_noise, axis=0)
    return x0r, eps, alpha * x0r + sigma * eps


def dsm_fixed_sigma(key, apply: Callable, params: Any, x0, process, t, *,
                    target: str | None = None,
                    weighting="sigma2", num_noise: int = 1, antithetic: bool = False,
                    reduction: str = "mean"):
    """DSM at one noise level ``(alpha(t), sigma(t))``, the form analysed for random-feature
    (George and Macris, arXiv 2603.22962) and MoLRG (Wang, Zhang et al., arXiv 2409.02426)
    models: ``lambda(t) E_{x0, eps} |s(x_t, t) + eps / sigma|^2``.

    Args:
        t: the (scalar) time, inside the process's time domain; ``alpha(t), sigma(t)`` come
            from ``process`` (with ``ms.EDM()``, ``t`` is ``sigma``). ``sigma(t) <= 0``,
            ``alpha(t) < 0`` or NaN raise a ``ValueError`` (at run time under ``jit``).
        num_noise: noise draws per clean point; the draws of point ``i`` are rows
            ``i * num_noise ...`` of the noisy batch.
        antithetic: pair every draw ``eps`` with ``-eps`` (needs an even ``num_noise``): the term
            linear in ``eps`` cancels exactly, which lowers the variance of the loss.
        Others: as :func:`dsm`; ``reduction="none"`` gives ``n * num_noise`` terms.
    """
    x0 = _check_batch(x0)
    target = _resolve_target(params, target)
    _check_process(process)
    _checks.check_scalar(t, "t")
    _check_time(process, t)
    t = jnp.asarray(t, x0.dtype)
    alpha, sigma = _checks.check_noise_levels(process.alpha(t).astype(x0.dtype),
                                              process.sigma(t).astype(x0.dtype))
    x0r, eps, xt = _fixed_draw(key, x0, alpha, sigma, num_noise, antithetic)
    goal = _target_value(target, x0r, eps, xt, alpha, sigma)
    m = xt.shape[0]
    ts, alphas, sigmas = (jnp.full((m,), v) for v in (t, alpha, sigma))
    return _reduce(_regression(apply, params, target, weighting, process, ts, alphas, sigmas,
                               xt, goal), reduction)


def dsm_constant(key, density, x0, process, *, weighting="sigma2", time_sampler="uniform",
                 t_min=None, t_max=None, reduction: str = "mean"):
    """The irreducible DSM value of a known density: the loss of its exact score.

    ``E |s* + eps/sigma|^2 = E |eps|^2 / sigma^2 - E |s*(x_t)|^2 = d / sigma^2 - E|s*(x_t)|^2``
    (``E[-eps / sigma | x_t] = s*``), estimated on the same draws as :func:`dsm` with the same
    key, so ``dsm(...) - dsm_constant(...) >= 0`` is the excess loss
    ``E lambda |s - s*|^2`` up to Monte Carlo error. Arguments as in :func:`dsm`; ``density``
    provides ``score(x, alpha, sigma)``.
    """
    x0 = _check_batch(x0)
    t, alpha, sigma, eps, xt = _draw(key, x0, process, time_sampler, t_min, t_max)
    d = x0.shape[1]
    s = jax.vmap(density.score)(xt, alpha, sigma)
    lam = weight(weighting, t, alpha, sigma, process)
    return _reduce(lam * (d / (sigma * sigma) - jnp.sum(s * s, -1)), reduction)


# --------------------------------------------------------------------------------------------
# ESM and ISM
# --------------------------------------------------------------------------------------------


def esm(key, apply: Callable, params: Any, x0, process, reference: Callable, *,
        target: str | None = None, weighting="sigma2", time_sampler="uniform", t_min=None,
        t_max=None, reduction: str = "mean"):
    """Explicit score matching ``E_t lambda(t) E |s(x_t, t) - s_ref(x_t, t)|^2``.

    ``reference(x, t)`` is a per-point score (e.g. ``ms.score_fn(density, process)``); the points
    ``x_t`` are drawn as in :func:`dsm` with the same key. Arguments as in :func:`dsm`.
    """
    x0 = _check_batch(x0)
    target = _resolve_target(params, target)
    t, alpha, sigma, eps, xt = _draw(key, x0, process, time_sampler, t_min, t_max)
    ref = jax.vmap(reference)(xt, t)
    goal = jax.vmap(lambda r, x, a, s: convert(r, x, a, s, source="score", target=target))(
        ref, xt, alpha, sigma)
    return _reduce(_regression(apply, params, target, weighting, process, t, alpha, sigma, xt,
                               goal), reduction)


def _check_score_shape(shape, x_shape):
    # a divergence needs a square Jacobian: the trace of a (d', d) one is a number, not div s
    if tuple(shape) != tuple(x_shape):
        raise ValueError(f"apply must return a score of the same shape as the point, "
                         f"{tuple(x_shape)}, got {tuple(shape)}")


def _divergence(fn, x, key, method, num_probes):
    """``div fn`` at ``x``: exact trace of the Jacobian, or Hutchinson with Rademacher probes."""
    if method == "exact":
        out = fn(x)
        _check_score_shape(out.shape, x.shape)
        return out, jnp.trace(jax.jacfwd(fn)(x))
    keys = jax.random.split(key, num_probes)
    probes = jax.vmap(lambda k: jax.random.rademacher(k, x.shape, x.dtype))(keys)
    out, lin = jax.linearize(fn, x)
    _check_score_shape(out.shape, x.shape)
    return out, jnp.mean(jax.vmap(lambda v: jnp.dot(v, lin(v)))(probes))


def ism(key, apply: Callable, params: Any, x, t=0.0, *, divergence="auto", num_probes: int = 1,
        exact_below: int = 64, reduction: str = "mean"):
    """Implicit score matching (Hyvarinen) ``E_x [ |s(x)|^2 / 2 + div s(x) ]`` at time ``t``.

    It equals ``E |s - s*|^2 / 2`` up to a constant (``-E|s*|^2 / 2``), so the true score of the
    law of ``x`` minimises it; no noise is added here: pass points of the law to fit.

    Args:
        key: PRNG key for Hutchinson probes (may be ``None`` for an exact divergence).
        apply: ``apply(params, x, t) -> score`` on one point, of the point's shape ``(d,)``.
        params: its parameters.
        x: points, shape ``(n, d)`` (integers are promoted to the default float).
        t: scalar time, or ``(n,)`` times (any other shape is a ``ValueError``).
        divergence: ``"exact"`` (trace of the Jacobian, ``d`` forward-mode passes),
            ``"hutchinson"`` (``num_probes`` Rademacher probes through one linearisation),
            ``"auto"`` (exact when ``d < exact_below``), or a callable
            ``div(params, x, t) -> (score, div)`` for models with a closed form (the kernel model).
        reduction: ``"mean"`` or ``"none"``.
    """
    x = _check_batch(x, "x")
    n, d = x.shape
    t = jnp.asarray(t, x.dtype)
    if t.shape not in ((), (n,)):
        raise ValueError(f"t must be a scalar or have shape ({n},) (one time per point), got "
                         f"shape {t.shape}")
    t = jnp.broadcast_to(t, (n,))
    num_probes = _check_count(num_probes, "num_probes")
    if callable(divergence):
        s, div = jax.vmap(divergence, (None, 0, 0))(params, x, t)
        _check_score_shape(s.shape[1:], (d,))
        if div.shape != (n,):
            raise ValueError(f"divergence must return a scalar divergence per point, got shape "
                             f"{div.shape[1:]}")
    else:
        method = ("exact" if d < exact_below else "hutchinson") if divergence == "auto" \
            else divergence
        if method not in ("exact", "hutchinson"):
            raise ValueError("divergence must be 'exact', 'hutchinson', 'auto' or a callable, "
                             f"got {divergence!r}")
        if method == "hutchinson" and key is None:
            raise ValueError("key must be given for the Hutchinson divergence")
        keys = jax.random.split(key, n) if key is not None else jnp.zeros((n,))

        def one(xi, ti, ki):
            return _divergence(lambda y: apply(params, y, ti), xi, ki, method, num_probes)

        s, div = jax.vmap(one)(x, t, keys)
    return _reduce(0.5 * jnp.sum(s * s, -1) + div, reduction)

__dir__ = _public_dir(__all__)

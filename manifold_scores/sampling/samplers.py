"""Public samplers of the diffusion: prior draws, PF-ODE and reverse-SDE sampling, ODE maps.

``sample_ode`` integrates the probability-flow ODE and ``sample_sde`` the reverse SDE from the
prior at ``t_max`` down to ``t_min`` on a time grid; ``integrate_ode`` maps a batch along a given
grid (either direction, differentiable); ``prior_sample`` / ``prior_std`` give the Gaussian prior.

Compilation. The score (and the process) are *traced* arguments of ``jax.jit``: a callable PyTree
such as ``ms.score_fn(density, process)`` or a model dataclass holding its parameters is split
into its array leaves (traced) and the rest (static, hashed), so a fresh ``score_fn(mix, proc)``
of the same structure, or a model with new parameter values, reuses the compiled sampler, and
``jax.grad`` flows into the parameters. A plain Python function is static, hashed by identity:
keep the same function object between calls. Shapes, ``steps``, the method, the grid kind and
``save_at`` are static.

Validation. Arguments are checked eagerly (``ValueError`` naming the argument); the grid is
checked to have ``sigma(t) > 0`` everywhere, eagerly when the process and the interval are
concrete, else by one run-time check outside the scan. The scan body is then traced inside
``_checks.validated()``: the densities skip their per-step checks of the noise levels.

Sharding. Samples are independent (one key each), so a batch shards over devices with no
communication. Either pass ``x_init`` as a ``jax.Array`` that carries a
``NamedSharding(mesh, PartitionSpec("batch"))`` (the sampler keeps it: state, per-sample keys
and output are sharded alike), or, when drawing from the prior, pass ``sharding=`` with the
batch sharding of the ``(n, d)`` output. Results equal the single-device ones (partitionable
threefry random numbers: a sample depends on its key only). Multi-host: call
``jax.distributed.initialize()`` on every process, build the mesh over ``jax.devices()`` (all
hosts), run the same call with the same key everywhere (``sharding=``), or assemble ``x_init``
with ``jax.make_array_from_process_local_data(sharding, local_batch)``; each host then holds its
addressable shards of the output (gather with
``jax.experimental.multihost_utils.process_allgather`` if needed).

Example:
    >>> import jax, manifold_scores as ms
    >>> proc = ms.VP()
    >>> mix = ms.MoLRG.random(jax.random.key(0), dim=4, rank=1, num_components=2)
    >>> score = ms.score_fn(mix, proc)
    >>> xs = ms.sampling.sample_ode(jax.random.key(1), score, proc, (8, 4), steps=20)
    >>> xs.shape
    (8, 4)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from manifold_scores import _checks
from manifold_scores._api import public_dir as _public_dir
from manifold_scores.sampling import _args
from manifold_scores.sampling._jit import filter_jit
from manifold_scores.sampling._sharding import batch_sharding, constrain, key_sharding
from manifold_scores.sampling.grids import (
    GRID_KINDS,
    _grid,
    check_levels,
    check_times,
    runtime_checked,
)
from manifold_scores.sampling.ode import ODE_METHODS
from manifold_scores.sampling.sde import SDE_METHODS
from manifold_scores.sampling.solver import Solver, batched, pf_field, resolve, run

__all__ = ["integrate_ode", "prior_sample", "prior_std", "sample_ode", "sample_sde"]


def prior_std(proc, t_max=None):
    """Standard deviation of the prior at ``t_max``: ``sqrt(alpha^2 + sigma^2)``.

    It is the exact marginal of isotropic unit-variance data, ``1`` for VP and about
    ``sigma_max`` for VE / EDM.

    Example:
        >>> import manifold_scores as ms
        >>> round(float(ms.sampling.prior_std(ms.VP())), 4)
        1.0
    """
    t_max = proc.t_max if t_max is None else t_max
    return jnp.sqrt(proc.alpha(t_max) ** 2 + proc.sigma(t_max) ** 2)


def prior_sample(key, proc, shape, t_max=None, dtype=None) -> jax.Array:
    """``x_T ~ N(0, prior_std^2 I)``, shape ``(n, d)``; one key per sample.

    Example:
        >>> import jax, manifold_scores as ms
        >>> ms.sampling.prior_sample(jax.random.key(0), ms.VE(), (3, 2)).shape
        (3, 2)
    """
    shape = _args.check_shape(shape)
    dtype = _args.default_dtype(dtype)
    if key is None:
        raise ValueError("key must be a PRNG key, got None")
    keys = jax.random.split(key, shape[0])
    z = jax.vmap(lambda k: jax.random.normal(k, shape[1:], dtype))(keys)
    return prior_std(proc, t_max).astype(dtype) * z


def _sample_keys(key, n):
    """Per-sample keys: one for the prior draw, one for the path noise."""
    keys = jax.random.split(key, n)
    both = jax.vmap(lambda k: jax.random.split(k, 2))(keys)
    return both[:, 0], both[:, 1]


def _sample_impl(key, t_min, t_max, x_init, *, proc, score, shape, steps, solver, kind, save_at,
                 dtype, stochastic, sharding, check):
    ts = _grid(proc, steps, kind, t_min, t_max, 7.0, dtype)
    if check:  # traced interval or process: one run-time check of the grid, before the scan
        ts = runtime_checked(proc, ts)
    k_prior, k_path = _sample_keys(key, shape[0]) if key is not None else (None, None)
    k_sharding = key_sharding(sharding)
    if x_init is None:
        std = prior_std(proc, ts[0]).astype(dtype)
        k_prior = constrain(k_prior, k_sharding)
        x = std * jax.vmap(lambda k: jax.random.normal(k, shape[1:], dtype))(k_prior)
    else:
        x = x_init
    x = constrain(x, sharding)
    keys = constrain(k_path, k_sharding) if stochastic else None
    evaluate = pf_field(score, proc) if solver.uses_field else batched(score)
    # sigma > 0 was checked on the whole grid (eagerly, or at run time just above).
    with _checks.validated():
        out = run(solver, evaluate, proc, ts, x, keys, save_at, steps)
    if save_at is None:
        return constrain(out, sharding)
    return constrain(out[0], sharding), out[1]


_sample_jit = filter_jit(_sample_impl, split=("proc", "score"),
                         static_argnames=("shape", "steps", "solver", "kind", "save_at", "dtype",
                                          "stochastic", "sharding", "check"))


def _sample(key, score, proc, shape, steps, method, table, t_min, t_max, kind, save_at, x_init,
            dtype, stochastic, sharding):
    steps = _args.check_steps(steps)
    solver = resolve(method, table)
    if solver.stochastic and not stochastic:
        raise ValueError(f"method {solver.name!r} is stochastic: use sample_sde")
    if key is None and (stochastic or x_init is None):
        raise ValueError("key must be given (it may be None only for sample_ode with x_init)")
    if not isinstance(kind, str) or kind not in GRID_KINDS:
        raise ValueError(f"kind must be one of {GRID_KINDS}, got {kind!r}")
    if not callable(score):
        raise ValueError(f"score must be a callable score(x, t), got {type(score).__name__}")
    if x_init is not None:
        _args.check_batch(x_init)
        if shape is not None and tuple(shape) != tuple(jnp.shape(x_init)):
            raise ValueError(f"shape {tuple(shape)} does not match x_init {jnp.shape(x_init)}")
        shape = tuple(jnp.shape(x_init))
        if dtype is not None and jnp.dtype(dtype) != jnp.result_type(x_init):
            raise ValueError(f"dtype {jnp.dtype(dtype)} does not match x_init's "
                             f"{jnp.result_type(x_init)}")
        dtype = jnp.result_type(x_init)
    elif shape is None:
        raise ValueError("shape must be given when x_init is None")
    shape = _args.check_shape(shape)
    dtype = _args.default_dtype(dtype)
    sharding = batch_sharding(x_init, sharding, len(shape))
    t_min = proc.t_min if t_min is None else t_min
    t_max = proc.t_max if t_max is None else t_max
    _args.check_interval(t_min, t_max, proc)
    save_at = _args.check_save_at(save_at, steps)
    check = check_levels(proc, t_min, t_max)
    return _sample_jit(key, t_min, t_max, x_init, proc=proc, score=score, shape=shape,
                       steps=steps, solver=solver, kind=kind, save_at=save_at, dtype=dtype,
                       stochastic=stochastic, sharding=sharding, check=check)


def sample_ode(key, score, proc, shape=None, steps: int = 100, method: str | Solver = "heun", *,
               t_min=None, t_max=None, kind: str = "edm", save_at=None, x_init=None, dtype=None,
               sharding=None):
    """Integrate the PF-ODE ``dx/dt = f x - g^2 score / 2`` from the prior at ``t_max`` down to
    ``t_min``.

    Args:
        key: PRNG key; sample ``i`` uses ``split(key, n)[i]``. May be ``None`` with ``x_init``.
        score: per-point ``score(x, t)``, ``x`` of shape ``(d,)``: a callable PyTree such as
            ``ms.score_fn(density, proc)`` or a model bound to its parameters (traced: new values
            reuse the compilation), or a plain function (static: keep the same object).
        proc: the process.
        shape: ``(n, d)``.
        steps: grid intervals.
        method: ``"euler"``, ``"heun"``, ``"rk4"``, ``"dpm_solver_2m"`` or a :class:`Solver`.
        t_min, t_max: time interval (default: the process's); ``sigma > 0`` on all of it.
        kind: time grid, see :func:`~manifold_scores.sampling.time_grid`.
        save_at: increasing grid indices in ``[0, steps]`` (or ``"all"``) to store.
        x_init: optional start ``(n, d)`` instead of the prior draw; a sharded ``jax.Array``
            keeps its sharding.
        dtype: float dtype of the samples (default: the default float dtype, or ``x_init``'s).
        sharding: optional ``jax.sharding.Sharding`` of the ``(n, d)`` samples (e.g.
            ``NamedSharding(mesh, PartitionSpec("batch"))``); default: that of ``x_init``.

    Returns:
        ``(n, d)`` samples at ``t_min``; with ``save_at``, ``(samples, Trajectory)``.

    Example:
        >>> import jax, manifold_scores as ms
        >>> proc, mix = ms.VP(), ms.MoLRG.random(jax.random.key(0), 4, 1, 2)
        >>> x = ms.sampling.sample_ode(jax.random.key(1), ms.score_fn(mix, proc), proc, (2, 4),
        ...                            steps=10, method="dpm_solver_2m")
        >>> x.shape
        (2, 4)
    """
    return _sample(key, score, proc, shape, steps, method, ODE_METHODS, t_min, t_max, kind,
                   save_at, x_init, dtype, False, sharding)


def sample_sde(key, score, proc, shape=None, steps: int = 1000,
               method: str | Solver = "euler_maruyama", *, t_min=None, t_max=None,
               kind: str = "edm", save_at=None, x_init=None, dtype=None, sharding=None):
    """Simulate the reverse SDE ``dx = [f x - g^2 score] dt + g dW_bar`` from ``t_max`` down to
    ``t_min``.

    Args:
        method: ``"euler_maruyama"``, ``"predictor_corrector"``, ``"ddpm"``, ``"edm_churn"``, or
            a :class:`Solver` such as ``predictor_corrector(snr=0.1)`` or ``edm_churn(churn=40)``.
        Others: as :func:`sample_ode` (``key`` is required).

    Returns:
        ``(n, d)`` samples of ``p_{t_min}``; with ``save_at``, ``(samples, Trajectory)``.

    Example:
        >>> import jax, manifold_scores as ms
        >>> proc, mix = ms.VP(), ms.MoLRG.random(jax.random.key(0), 4, 1, 2)
        >>> x = ms.sampling.sample_sde(jax.random.key(1), ms.score_fn(mix, proc), proc, (2, 4),
        ...                            steps=20, method="ddpm")
        >>> x.shape
        (2, 4)
    """
    return _sample(key, score, proc, shape, steps, method, SDE_METHODS, t_min, t_max, kind,
                   save_at, x_init, dtype, True, sharding)


def _integrate_impl(x_init, ts, *, proc, score, solver, save_at, sharding):
    steps = ts.shape[0] - 1
    evaluate = pf_field(score, proc) if solver.uses_field else batched(score)
    x = constrain(x_init, sharding)
    with _checks.validated():
        out = run(solver, evaluate, proc, ts, x, None, save_at, steps)
    if save_at is None:
        return constrain(out, sharding)
    return constrain(out[0], sharding), out[1]


_integrate_jit = filter_jit(_integrate_impl, split=("proc", "score"),
                            static_argnames=("solver", "save_at", "sharding"))


def integrate_ode(score, proc, x_init, ts, method: str | Solver = "rk4", *, save_at=None,
                  sharding=None):
    """Deterministic PF-ODE map along the grid ``ts`` (either direction), batch in, batch out.

    Differentiable: ``jax.grad`` flows through the solver (reverse mode through the scan), into
    ``x_init`` and into the array leaves of a callable-PyTree ``score``.

    Args:
        score: per-point ``score(x, t)`` (function or callable PyTree, see :func:`sample_ode`).
        proc: the process.
        x_init: ``(n, d)`` states at ``ts[0]``; a sharded ``jax.Array`` keeps its sharding.
        ts: ``(N + 1,)`` monotone times, e.g. from :func:`time_grid` (or reversed), with
            ``sigma(t) > 0`` at every one.
        method: an ODE method name or a :class:`Solver`.
        save_at: grid indices to store (see :func:`sample_ode`).
        sharding: optional batch sharding (see :func:`sample_ode`).

    Returns:
        ``(n, d)`` states at ``ts[-1]``; with ``save_at``, ``(states, Trajectory)``.

    Example:
        >>> import jax, jax.numpy as jnp, manifold_scores as ms
        >>> proc, mix = ms.VP(), ms.MoLRG.random(jax.random.key(0), 4, 1, 2)
        >>> ts = ms.sampling.time_grid(proc, 8, kind="uniform", t_min=0.1, t_max=1.0)
        >>> ms.sampling.integrate_ode(ms.score_fn(mix, proc), proc, jnp.ones((3, 4)), ts).shape
        (3, 4)
    """
    solver = resolve(method, ODE_METHODS)
    if solver.stochastic:
        raise ValueError(f"method {solver.name!r} is stochastic: integrate_ode needs an ODE "
                         "solver")
    if not callable(score):
        raise ValueError(f"score must be a callable score(x, t), got {type(score).__name__}")
    _args.check_batch(x_init)
    sharding = batch_sharding(x_init, sharding, jnp.ndim(x_init))
    ts = jnp.asarray(ts, jnp.result_type(x_init))
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must have shape (N + 1,) with N >= 1, got shape {ts.shape}")
    save_at = _args.check_save_at(save_at, ts.shape[0] - 1)
    ts = check_times(proc, ts, name="ts")
    return _integrate_jit(x_init, ts, proc=proc, score=score, solver=solver, save_at=save_at,
                          sharding=sharding)

__dir__ = _public_dir(__all__)

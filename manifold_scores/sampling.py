"""Samplers: time grids, probability-flow ODE and reverse-SDE solvers, Langevin dynamics.

Under ``x_t = alpha(t) x_0 + sigma(t) eps`` with ``f = dlog alpha/dt`` and ``g^2`` from the process,

    PF-ODE       dx/dt = f(t) x - g(t)^2 score(x, t) / 2
    reverse SDE  dx = [f(t) x - g(t)^2 score(x, t)] dt + g(t) dW_bar      (t decreasing)
    Langevin     dX = [sigma^a score(X, sigma) - grad v(X)] dt + sqrt(2) dW  (fixed sigma)

Every sampler takes a per-point ``score(x, t)`` (Langevin: ``score(x, sigma)``), works on a batch
``(n, d)`` and runs as one ``lax.scan`` over *score evaluations*: a solver is a small step
function that calls the score exactly once per scan iteration (Heun and RK4 spread their stages
over consecutive iterations), so the score is traced once whatever the solver. Solvers are static
choices (no ``lax.cond`` on the method); the public functions are jitted with the score, shapes
and solver as static arguments, so a second call with the same score object and shapes does not
recompile. Each sample owns a key (split, then vmap): a sample does not depend on the batch size.

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

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from manifold_scores import _checks

__all__ = [
    "GRID_KINDS",
    "ODE_METHODS",
    "SDE_METHODS",
    "Solver",
    "Trajectory",
    "annealed_langevin",
    "ddpm",
    "dpm_solver_2m",
    "edm_churn",
    "euler",
    "euler_maruyama",
    "heun",
    "integrate_ode",
    "integrate_ode_adaptive",
    "langevin",
    "predictor_corrector",
    "prior_sample",
    "prior_std",
    "rk4",
    "sample_ode",
    "sample_sde",
    "time_grid",
]

GRID_KINDS = ("uniform", "geometric", "edm", "log_snr")


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_steps(steps, name="steps"):
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {steps!r}")
    return int(steps)


def _concrete_float(value):
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _check_interval(t_min, t_max):
    lo, hi = _concrete_float(t_min), _concrete_float(t_max)
    if lo is not None and not math.isfinite(lo):
        raise ValueError(f"t_min must be finite, got {lo}")
    if hi is not None and not math.isfinite(hi):
        raise ValueError(f"t_max must be finite, got {hi}")
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"t_min must be < t_max, got t_min={lo}, t_max={hi}")


def _check_shape(shape):
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (n, d, ...) with positive sizes, got {shape}")
    return shape


def _check_batch(x, name="x_init"):
    if jnp.ndim(x) < 2:
        raise ValueError(f"{name} must be a batch of shape (n, d), got shape {jnp.shape(x)}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise ValueError(f"{name} must be a floating array, got dtype {jnp.result_type(x)}")


def _check_save_at(save_at, steps):
    if save_at is None:
        return None
    if isinstance(save_at, str):
        if save_at != "all":
            raise ValueError(
                f"save_at must be 'all' or a sequence of step indices, got {save_at!r}")
        return tuple(range(steps + 1))
    idx = tuple(int(i) + (steps + 1 if int(i) < 0 else 0) for i in np.atleast_1d(save_at))
    if not idx or any(i < 0 or i > steps for i in idx) or any(np.diff(idx) <= 0):
        raise ValueError(
            f"save_at must be increasing step indices in [0, {steps}] (or 'all'), got {save_at!r}")
    return idx


def _default_dtype(dtype):
    return jnp.dtype(dtype) if dtype is not None else jnp.dtype(jnp.result_type(float))


def _maybe_jit(fn, static_argnames):
    """``jax.jit`` with callables as static arguments; unhashable callables run un-jitted."""
    jitted = jax.jit(fn, static_argnames=static_argnames)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            for name in static_argnames:
                hash(kwargs.get(name))
        except TypeError:
            return fn(*args, **kwargs)
        return jitted(*args, **kwargs)

    call.jitted = jitted  # exposes the compilation cache (``call.jitted._cache_size()``)
    return call


# --------------------------------------------------------------------------------------------
# Time grids
# --------------------------------------------------------------------------------------------


def _grid(proc, steps, kind, t_min, t_max, rho, dtype):
    t_min = jnp.asarray(t_min, dtype)
    t_max = jnp.asarray(t_max, dtype)
    u = jnp.linspace(0.0, 1.0, steps + 1, dtype=dtype)
    if kind == "uniform":
        ts = t_max + u * (t_min - t_max)
    elif kind == "geometric":
        lo, hi = jnp.log(proc.sigma(t_min)), jnp.log(proc.sigma(t_max))
        ts = proc.t_from_sigma(jnp.exp(hi + u * (lo - hi)))
    elif kind == "edm":
        # Karras et al.'s noise level is the scale-free sigma / alpha = exp(-lambda / 2).
        lo = jnp.exp(-0.5 * proc.log_snr(t_min) / rho)
        hi = jnp.exp(-0.5 * proc.log_snr(t_max) / rho)
        ratio = (hi + u * (lo - hi)) ** rho
        ts = proc.t_from_log_snr(-2.0 * jnp.log(ratio))
    elif kind == "log_snr":
        lo, hi = proc.log_snr(t_min), proc.log_snr(t_max)
        ts = proc.t_from_log_snr(hi + u * (lo - hi))
    else:
        raise ValueError(f"kind must be one of {GRID_KINDS}, got {kind!r}")
    # Inverse maps round; pin the ends so a sampler starts and stops exactly where asked.
    return ts.astype(dtype).at[0].set(t_max).at[-1].set(t_min)


def time_grid(proc, steps: int, kind: str = "edm", t_min=None, t_max=None, *, rho: float = 7.0,
              dtype=None) -> jax.Array:
    """``steps + 1`` decreasing times from ``t_max`` to ``t_min``.

    Kinds: ``"uniform"`` in ``t``; ``"geometric"`` in ``sigma(t)``; ``"edm"``, Karras et al.'s
    ``s_i = (s_max^(1/rho) + i/N (s_min^(1/rho) - s_max^(1/rho)))^rho`` in the scale-free noise
    level ``s = sigma / alpha``; ``"log_snr"``, uniform in ``lambda = log(alpha^2 / sigma^2)``.

    Args:
        proc: a process; ``t_min`` / ``t_max`` default to its attributes.
        steps: number of intervals (``>= 1``).
        kind: one of :data:`GRID_KINDS`.
        rho: EDM exponent.
        dtype: float dtype (default: the default float dtype).

    Example:
        >>> import manifold_scores as ms
        >>> ts = ms.sampling.time_grid(ms.VP(), 10, kind="log_snr", t_min=1e-3, t_max=1.0)
        >>> ts.shape, round(float(ts[0]), 6), round(float(ts[-1]), 6)
        ((11,), 1.0, 0.001)
    """
    steps = _check_steps(steps)
    if kind not in GRID_KINDS:
        raise ValueError(f"kind must be one of {GRID_KINDS}, got {kind!r}")
    t_min = proc.t_min if t_min is None else t_min
    t_max = proc.t_max if t_max is None else t_max
    _check_interval(t_min, t_max)
    return _grid(proc, steps, kind, t_min, t_max, rho, _default_dtype(dtype))


# --------------------------------------------------------------------------------------------
# The solver protocol and the scan engine
# --------------------------------------------------------------------------------------------


class Solver(NamedTuple):
    """A fixed-step solver as a state machine over score evaluations.

    Attributes:
        name: for messages.
        plan: ``(steps, options) -> dict`` of NumPy arrays with one row per score evaluation;
            the rows ``"n"`` (step index) and ``"end"`` (this evaluation completes step ``n``)
            are required.
        init: ``(x, options) -> state``.
        step: ``(state, row, ts, evaluate, noise, proc, options) -> state``; calls
            ``evaluate(x, t)`` exactly once. ``evaluate`` is the batched PF-ODE vector field
            when ``uses_field`` and the batched score otherwise; ``noise()`` draws standard
            normals shaped like ``x`` from the per-sample keys, fresh at each evaluation.
        output: ``state -> x``.
        uses_field: see ``step``.
        options: parameters passed to ``init`` and ``step`` (hashable floats for the public
            solvers, so that they can be static arguments).
        stochastic: whether ``step`` draws noise (reverse-SDE and Langevin solvers).

    A solver is a static argument (its functions are module-level and its options hashable),
    so the method is fixed at trace time.
    """

    name: str
    plan: Callable
    init: Callable
    step: Callable
    output: Callable
    uses_field: bool = False
    options: tuple = ()
    stochastic: bool = False


class Trajectory(NamedTuple):
    """States at the chosen steps: ``ts`` ``(S,)`` and ``xs`` ``(S, n, d)``."""

    ts: jax.Array
    xs: Any


def _tree_axpy(a, x, y):
    return jax.tree.map(lambda xi, yi: a * xi + yi, x, y)


def _normal_fn(keys, like, index):
    """Standard normals shaped like ``like``, one key per sample, fresh for each ``index``."""

    def draw():
        def one(k):
            return jax.random.normal(jax.random.fold_in(k, index), like.shape[1:], like.dtype)

        return jax.vmap(one)(keys)

    return draw


def _run(solver: Solver, evaluate, proc, ts, x, keys, save_at, steps):
    """One ``lax.scan`` over the solver's score evaluations; optionally store chosen steps."""
    plan = solver.plan(steps, solver.options)
    num = len(plan["n"])
    rows = {k: jnp.asarray(v) if np.asarray(v).dtype.kind in "biu" else jnp.asarray(v, ts.dtype)
            for k, v in plan.items()}
    rows["index"] = jnp.arange(num)
    state = solver.init(x, solver.options)
    like = jax.tree.leaves(x)[0]

    buf = None
    if save_at is not None:
        # Evaluation e that ends step n writes the state at grid index n + 1 into its slot;
        # every other evaluation writes into a spare last slot.
        slot_of_step = np.full(steps + 1, len(save_at))
        slot_of_step[list(save_at)] = np.arange(len(save_at))
        ends = np.asarray(plan["end"], bool)
        slot_of_eval = np.where(ends, slot_of_step[np.asarray(plan["n"]) + 1], len(save_at))
        rows["slot"] = jnp.asarray(slot_of_eval)
        buf = jax.tree.map(lambda a: jnp.zeros((len(save_at) + 1,) + a.shape, a.dtype), x)
        if save_at[0] == 0:
            buf = jax.tree.map(lambda b, a: b.at[0].set(a), buf, x)

    def body(carry, row):
        state, buf = carry
        noise = _normal_fn(keys, like, row["index"]) if keys is not None else None
        state = solver.step(state, row, ts, evaluate, noise, proc, solver.options)
        if buf is not None:
            out = solver.output(state)
            buf = jax.tree.map(
                lambda b, o: jax.lax.dynamic_update_index_in_dim(b, o, row["slot"], 0), buf, out)
        return (state, buf), None

    (state, buf), _ = jax.lax.scan(body, (state, buf), rows)
    x_final = solver.output(state)
    if save_at is None:
        return x_final
    traj = jax.tree.map(lambda b: b[:-1], buf)
    return x_final, Trajectory(ts[jnp.asarray(save_at)], traj)


# --------------------------------------------------------------------------------------------
# Explicit Runge-Kutta solvers (stages spread over consecutive evaluations)
# --------------------------------------------------------------------------------------------


class _Tableau(NamedTuple):
    a: tuple
    b: tuple
    c: tuple
    euler_last: bool


def _rk_plan(steps, options):
    (tab,) = options
    s = len(tab.b)
    n, stage, end, b = [], [], [], []
    for i in range(steps):
        last = tab.euler_last and i == steps - 1
        ns = 1 if last else s
        weights = (1.0,) + (0.0,) * (s - 1) if last else tab.b
        for j in range(ns):
            n.append(i)
            stage.append(j)
            end.append(j == ns - 1)
            b.append(weights)
    return {"n": np.array(n), "stage": np.array(stage), "end": np.array(end),
            "b": np.array(b, dtype=np.float64)}


def _rk_init(x, options):
    (tab,) = options
    s = len(tab.b)
    # Stage values as a tuple of s arrays: selects fuse with the arithmetic, where a dynamic
    # update of one stacked buffer would copy it at every evaluation.
    return x, tuple(jax.tree.map(jnp.zeros_like, x) for _ in range(s - 1 if s > 1 else 0))


def _rk_step(state, row, ts, evaluate, noise, proc, options):
    (tab,) = options
    x, ks = state
    n = row["n"]
    t0 = ts[n]
    h = ts[n + 1] - t0
    if not ks:  # one stage (Euler): nothing to carry
        return _tree_axpy(h, evaluate(x, t0), x), ks
    dtype = ts.dtype
    s = len(tab.b)
    stage = row["stage"]
    a_row = jnp.asarray(np.array(tab.a, dtype=np.float64), dtype)[stage]
    c = jnp.asarray(np.array(tab.c, dtype=np.float64), dtype)[stage]
    # The last stage's value is used only in the closing combination, so it is not stored.
    y = x
    for j in range(s - 1):
        y = _tree_axpy(h * a_row[j], ks[j], y)
    k_new = evaluate(y, t0 + c * h)
    ks = tuple(_select(stage == j, k_new, ks[j]) for j in range(s - 1))
    x_end = _tree_axpy(h * row["b"][s - 1], k_new, x)
    for j in range(s - 1):
        x_end = _tree_axpy(h * row["b"][j], ks[j], x_end)
    x = _select(row["end"], x_end, x)
    return x, ks


def _select(pred, a, b):
    return jax.tree.map(lambda u, v: jnp.where(pred, u, v), a, b)


def _first(state):
    return state[0]


def _rk_solver(name, tab):
    return Solver(name, _rk_plan, _rk_init, _rk_step, _first, True, (tab,))


_EULER = _Tableau(a=((0.0,),), b=(1.0,), c=(0.0,), euler_last=False)
_HEUN = _Tableau(a=((0.0, 0.0), (1.0, 0.0)), b=(0.5, 0.5), c=(0.0, 1.0), euler_last=True)
_RK4 = _Tableau(
    a=((0.0, 0.0, 0.0, 0.0), (0.5, 0.0, 0.0, 0.0), (0.0, 0.5, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6), c=(0.0, 0.5, 0.5, 1.0), euler_last=False)


def euler() -> Solver:
    """Explicit Euler on the PF-ODE: ``x_{n+1} = x_n + h v(x_n, t_n)`` (order 1)."""
    return _rk_solver("euler", _EULER)


def heun() -> Solver:
    """Heun's method (explicit trapezoid, order 2), Euler on the last step as in EDM."""
    return _rk_solver("heun", _HEUN)


def rk4() -> Solver:
    """The classical fourth-order Runge-Kutta method (four evaluations per step)."""
    return _rk_solver("rk4", _RK4)


# --------------------------------------------------------------------------------------------
# DPM-Solver++(2M): data prediction, exponential integrator in lambda = log(alpha / sigma)
# --------------------------------------------------------------------------------------------


def _one_per_step_plan(steps, options=()):
    return {"n": np.arange(steps), "end": np.ones(steps, bool)}


def _dpm_plan(steps, options):
    order = np.full(steps, 2)
    order[0] = 1
    order[-1] = 1  # lower order at the end
    return {**_one_per_step_plan(steps), "second": order == 2}


def _dpm_init(x, options):
    return x, jnp.zeros_like(x), jnp.zeros((), x.dtype)


def _dpm_step(state, row, ts, evaluate, noise, proc, options):
    x, x0_prev, h_prev = state
    t, t1 = ts[row["n"]], ts[row["n"] + 1]
    a, s = proc.alpha(t), proc.sigma(t)
    a1, s1 = proc.alpha(t1), proc.sigma(t1)
    h = 0.5 * (proc.log_snr(t1) - proc.log_snr(t))
    x0 = (x + s * s * evaluate(x, t)) / a
    # Safe ratio: the unselected branch must stay finite for gradients through jnp.where.
    r = jnp.where(row["second"], h_prev / h, 1.0)
    d = jnp.where(row["second"], (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev, x0)
    x = (s1 / s) * x - a1 * jnp.expm1(-h) * d
    return x, x0, h


def dpm_solver_2m() -> Solver:
    """DPM-Solver++(2M) (Lu et al. 2022): multistep, data prediction, one evaluation per step.

    With ``lambda = log(alpha / sigma)``, ``h_i = lambda_i - lambda_{i-1}``, ``r = h_{i-1} / h_i``:
    ``x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (e^{-h_i} - 1) D_i``,
    ``D_i = (1 + 1/(2r)) x0_{i-1} - x0_{i-2} / (2r)``; first order on the first and last steps.
    """
    return Solver("dpm_solver_2m", _dpm_plan, _dpm_init, _dpm_step, _first, False)


ODE_METHODS = {"euler": euler, "heun": heun, "rk4": rk4, "dpm_solver_2m": dpm_solver_2m}


# --------------------------------------------------------------------------------------------
# Reverse-SDE solvers
# --------------------------------------------------------------------------------------------


def _x_init(x, options):
    return x


def _identity(state):
    return state


def _em_step(state, row, ts, evaluate, noise, proc, options):
    x = state
    t, t1 = ts[row["n"]], ts[row["n"] + 1]
    dt = t1 - t
    drift = proc.drift(t) * x - proc.diffusion_squared(t) * evaluate(x, t)
    return x + drift * dt + jnp.sqrt(proc.diffusion_squared(t) * jnp.abs(dt)) * noise()


def euler_maruyama() -> Solver:
    """Euler-Maruyama on the reverse SDE: ``x += [f x - g^2 s] dt + g sqrt(|dt|) z``."""
    return Solver("euler_maruyama", _one_per_step_plan, _x_init, _em_step, _identity,
                  stochastic=True)


def _ddpm_step(state, row, ts, evaluate, noise, proc, options):
    x = state
    t, t1 = ts[row["n"]], ts[row["n"] + 1]
    a, s = proc.alpha(t), proc.sigma(t)
    a1, s1 = proc.alpha(t1), proc.sigma(t1)
    x0 = (x + s * s * evaluate(x, t)) / a
    # q(x_{t1} | x_t, x0) for x_t = (a/a1) x_{t1} + s_{t|t1} eps:
    a_ts = a / a1
    var_ts = s * s - a_ts * a_ts * s1 * s1
    mean = (a_ts * s1 * s1 / (s * s)) * x + (a1 * var_ts / (s * s)) * x0
    std = jnp.sqrt(jnp.maximum(var_ts, 0.0)) * s1 / s
    return mean + std * noise()


def ddpm() -> Solver:
    """DDPM ancestral sampling: draw ``x_{t'}`` from ``q(x_{t'} | x_t, x0 = Tweedie(x_t))``.

    With ``a = alpha_t / alpha_t'`` and ``v = sigma_t^2 - a^2 sigma_t'^2``: mean
    ``a sigma_t'^2 / sigma_t^2 x_t + alpha_t' v / sigma_t^2 x0``, variance
    ``v sigma_t'^2 / sigma_t^2``.
    """
    return Solver("ddpm", _one_per_step_plan, _x_init, _ddpm_step, _identity, stochastic=True)


def _pc_plan(steps, options):
    _, m = options
    n = np.repeat(np.arange(steps), m + 1)
    corrector = np.tile(np.arange(m + 1) < m, steps)
    return {"n": n, "end": ~corrector, "corrector": corrector}


def _pc_step(state, row, ts, evaluate, noise, proc, options):
    snr, _ = options
    x = state
    t, t1 = ts[row["n"]], ts[row["n"] + 1]
    s = evaluate(x, t)
    z = noise()
    # Song et al.'s rule eps = 2 a (snr |z| / |s|)^2, a = alpha(t')^2 / alpha(t)^2 (1 - beta dt for
    # VP), with |z|^2 -> d and |s|^2 -> d / sigma^2 (their values for N(0, sigma^2 I)) so that eps
    # depends on t only: a step that depends on the state (or on z) makes Langevin sample
    # p / eps instead of p, and batch means of the norms would couple the samples.
    a_ratio = (proc.alpha(t1) / proc.alpha(t)) ** 2
    eps = 2.0 * a_ratio * (snr * proc.sigma(t)) ** 2
    x_corr = x + eps * s + jnp.sqrt(2.0 * eps) * z
    dt = t1 - t
    g2 = proc.diffusion_squared(t)
    x_pred = x + (proc.drift(t) * x - g2 * s) * dt + jnp.sqrt(g2 * jnp.abs(dt)) * z
    return jnp.where(row["corrector"], x_corr, x_pred)


def predictor_corrector(snr: float = 0.16, corrector_steps: int = 1) -> Solver:
    """Song et al.'s predictor-corrector: Langevin corrector steps at ``t_n``, then an
    Euler-Maruyama predictor to ``t_{n+1}``.

    The corrector ``x += eps s + sqrt(2 eps) z`` uses the signal-to-noise rule
    ``eps = 2 a (snr |z| / |s|)^2`` with the norms at their values for ``N(0, sigma_t^2 I)``
    (``|z|^2 = d``, ``|s|^2 = d / sigma_t^2``), i.e. ``eps = 2 a snr^2 sigma_t^2`` with
    ``a = alpha(t_{n+1})^2 / alpha(t_n)^2``: per-sample norms would make the step depend on the
    state and bias the law (Langevin with step ``eps(x)`` samples ``p / eps``).

    Args:
        snr: the signal-to-noise ratio of the corrector step rule.
        corrector_steps: Langevin steps per time step (each one score evaluation).
    """
    m = _check_steps(corrector_steps, "corrector_steps")
    options = (float(snr), m)
    return Solver("predictor_corrector", _pc_plan, _x_init, _pc_step, _identity, False, options,
                  stochastic=True)


def _churn_plan(steps, options):
    churn = options[0]
    n = np.repeat(np.arange(steps), 2)[:-1]  # Euler on the last step
    stage = np.tile([0, 1], steps)[:-1]
    end = stage == 1
    end[-1] = True
    gamma = np.full(len(n), min(churn / steps, math.sqrt(2.0) - 1.0))
    return {"n": n, "stage": stage, "end": end, "gamma": gamma}


def _churn_init(x, options):
    zero = jnp.zeros((), x.dtype)
    return x, jnp.zeros_like(x), jnp.zeros_like(x), zero, zero


def _churn_step(state, row, ts, evaluate, noise, proc, options):
    _, s_min, s_max, s_noise = options
    x, y_hat, k0, r_hat, t_hat = state
    t, t1 = ts[row["n"]], ts[row["n"] + 1]
    # EDM works with y = x / alpha and the scale-free level r = sigma / alpha; there
    # dy/dr = (y - D(y)) / r = -sigma(t) score(x, t).
    r_t = jnp.exp(-0.5 * proc.log_snr(t))
    r_1 = jnp.exp(-0.5 * proc.log_snr(t1))
    in_range = (r_t >= s_min) & (r_t <= s_max)
    gamma = jnp.where(in_range, row["gamma"], 0.0)
    r_new = r_t * (1.0 + gamma)
    t_new = jnp.where(gamma > 0, proc.t_from_log_snr(-2.0 * jnp.log(r_new)), t)
    # sqrt(r_new^2 - r^2) written as r sqrt(gamma (2 + gamma)): never negative by round-off.
    y_new = x / proc.alpha(t) + r_t * jnp.sqrt(gamma * (2.0 + gamma)) * s_noise * noise()
    first = row["stage"] == 0
    r_hat = jnp.where(first, r_new, r_hat)
    t_hat = jnp.where(first, t_new, t_hat)
    y_hat = jnp.where(first, y_new, y_hat)
    t_e = jnp.where(first, t_hat, t1)
    y_e = jnp.where(first, y_hat, y_hat + (r_1 - r_hat) * k0)
    k = -proc.sigma(t_e) * evaluate(proc.alpha(t_e) * y_e, t_e)
    y_next = jnp.where(first, y_hat + (r_1 - r_hat) * k, y_hat + (r_1 - r_hat) * 0.5 * (k0 + k))
    x = jnp.where(row["end"], proc.alpha(t1) * y_next, x)
    return x, y_hat, jnp.where(first, k, k0), r_hat, t_hat


def edm_churn(churn: float = 30.0, churn_min: float = 0.0, churn_max: float = float("inf"),
              noise: float = 1.0) -> Solver:
    """Karras et al.'s stochastic sampler (Algorithm 2): churn, then a Heun step.

    At each step with ``r = sigma / alpha`` in ``[churn_min, churn_max]``, raise the noise level
    to ``r_hat = r (1 + gamma)``, ``gamma = min(churn / N, sqrt 2 - 1)``, by adding
    ``sqrt(r_hat^2 - r^2) * noise * z`` to ``x / alpha``, then take a Heun step from ``r_hat`` to
    the next level (Euler on the last step). ``churn = 0`` is the deterministic Heun sampler.
    """
    options = (float(churn), float(churn_min), float(churn_max), float(noise))
    return Solver("edm_churn", _churn_plan, _churn_init, _churn_step, _first, False, options,
                  stochastic=True)


SDE_METHODS = {"euler_maruyama": euler_maruyama, "predictor_corrector": predictor_corrector,
               "ddpm": ddpm, "edm_churn": edm_churn}


def _resolve(method, table):
    if isinstance(method, Solver):
        return method
    if method not in table:
        raise ValueError(f"method must be one of {tuple(table)} or a Solver, got {method!r}")
    return table[method]()


# --------------------------------------------------------------------------------------------
# Public samplers
# --------------------------------------------------------------------------------------------


def _batched(score):
    return jax.vmap(score, in_axes=(0, None))


def _pf_field(score, proc):
    batched = _batched(score)

    def field(x, t):
        return proc.drift(t) * x - 0.5 * proc.diffusion_squared(t) * batched(x, t)

    return field


def prior_std(proc, t_max=None):
    """Standard deviation of the prior at ``t_max``: ``sqrt(alpha^2 + sigma^2)``.

    It is the exact marginal of isotropic unit-variance data, ``1`` for VP and about
    ``sigma_max`` for VE / EDM.
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
    shape = _check_shape(shape)
    dtype = _default_dtype(dtype)
    keys = jax.random.split(key, shape[0])
    z = jax.vmap(lambda k: jax.random.normal(k, shape[1:], dtype))(keys)
    return prior_std(proc, t_max).astype(dtype) * z


def _sample_keys(key, n):
    """Per-sample keys: one for the prior draw, one for the path noise."""
    keys = jax.random.split(key, n)
    both = jax.vmap(lambda k: jax.random.split(k, 2))(keys)
    return both[:, 0], both[:, 1]


def _sample_impl(key, proc, t_min, t_max, x_init, *, score, shape, steps, solver, kind, save_at,
                 dtype, stochastic):
    ts = _grid(proc, steps, kind, t_min, t_max, 7.0, dtype)
    k_prior, k_path = _sample_keys(key, shape[0]) if key is not None else (None, None)
    if x_init is None:
        std = prior_std(proc, t_max).astype(dtype)
        x = std * jax.vmap(lambda k: jax.random.normal(k, shape[1:], dtype))(k_prior)
    else:
        x = x_init
    evaluate = _pf_field(score, proc) if solver.uses_field else _batched(score)
    return _run(solver, evaluate, proc, ts, x, k_path if stochastic else None, save_at, steps)


_sample_jit = _maybe_jit(_sample_impl, ("score", "shape", "steps", "solver", "kind", "save_at",
                                        "dtype", "stochastic"))


def _sample(key, score, proc, shape, steps, method, table, t_min, t_max, kind, save_at, x_init,
            dtype, stochastic):
    steps = _check_steps(steps)
    solver = _resolve(method, table)
    if solver.stochastic and not stochastic:
        raise ValueError(f"method {solver.name!r} is stochastic: use sample_sde")
    if key is None and (stochastic or x_init is None):
        raise ValueError("key must be given (it may be None only for sample_ode with x_init)")
    if kind not in GRID_KINDS:
        raise ValueError(f"kind must be one of {GRID_KINDS}, got {kind!r}")
    if x_init is not None:
        _check_batch(x_init)
        if shape is not None and tuple(shape) != tuple(jnp.shape(x_init)):
            raise ValueError(f"shape {tuple(shape)} does not match x_init {jnp.shape(x_init)}")
        shape = tuple(jnp.shape(x_init))
        dtype = jnp.result_type(x_init)
    elif shape is None:
        raise ValueError("shape must be given when x_init is None")
    shape = _check_shape(shape)
    dtype = _default_dtype(dtype)
    t_min = proc.t_min if t_min is None else t_min
    t_max = proc.t_max if t_max is None else t_max
    _check_interval(t_min, t_max)
    save_at = _check_save_at(save_at, steps)
    return _sample_jit(key, proc, t_min, t_max, x_init, score=score, shape=shape, steps=steps,
                       solver=solver, kind=kind, save_at=save_at, dtype=dtype,
                       stochastic=stochastic)


def sample_ode(key, score, proc, shape=None, steps: int = 100, method: str | Solver = "heun", *,
               t_min=None, t_max=None, kind: str = "edm", save_at=None, x_init=None, dtype=None):
    """Integrate the PF-ODE ``dx/dt = f x - g^2 score / 2`` from the prior at ``t_max`` down to
    ``t_min``.

    Args:
        key: PRNG key; sample ``i`` uses ``split(key, n)[i]``. May be ``None`` with ``x_init``.
        score: per-point ``score(x, t)``, ``x`` of shape ``(d,)``. Keep the same object between
            calls to reuse the compiled sampler.
        proc: the process.
        shape: ``(n, d)``.
        steps: grid intervals.
        method: ``"euler"``, ``"heun"``, ``"rk4"``, ``"dpm_solver_2m"`` or a :class:`Solver`.
        t_min, t_max: time interval (default: the process's).
        kind: time grid, see :func:`time_grid`.
        save_at: increasing grid indices in ``[0, steps]`` (or ``"all"``) to store.
        x_init: optional start ``(n, d)`` instead of the prior draw.
        dtype: float dtype of the samples (default: the default float dtype).

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
                   save_at, x_init, dtype, stochastic=False)


def sample_sde(key, score, proc, shape=None, steps: int = 1000,
               method: str | Solver = "euler_maruyama", *, t_min=None, t_max=None,
               kind: str = "edm", save_at=None, x_init=None, dtype=None):
    """Simulate the reverse SDE ``dx = [f x - g^2 score] dt + g dW_bar`` from ``t_max`` down to
    ``t_min``.

    Args:
        method: ``"euler_maruyama"``, ``"predictor_corrector"``, ``"ddpm"``, ``"edm_churn"``, or
            a :class:`Solver` such as ``predictor_corrector(snr=0.1)`` or ``edm_churn(churn=40)``.
        Others: as :func:`sample_ode`.

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
                   save_at, x_init, dtype, stochastic=True)


def _integrate_impl(x_init, ts, proc, *, score, solver, save_at):
    steps = ts.shape[0] - 1
    evaluate = _pf_field(score, proc) if solver.uses_field else _batched(score)
    return _run(solver, evaluate, proc, ts, x_init, None, save_at, steps)


_integrate_jit = _maybe_jit(_integrate_impl, ("score", "solver", "save_at"))


def integrate_ode(score, proc, x_init, ts, method: str | Solver = "rk4", *, save_at=None):
    """Deterministic PF-ODE map along the grid ``ts`` (either direction), batch in, batch out.

    Differentiable: ``jax.grad`` flows through the solver (reverse mode through the scan).

    Args:
        score: per-point ``score(x, t)``.
        proc: the process.
        x_init: ``(n, d)`` states at ``ts[0]``.
        ts: ``(N + 1,)`` monotone times, e.g. from :func:`time_grid` (or reversed).
        method: an ODE method name or a :class:`Solver`.
        save_at: grid indices to store (see :func:`sample_ode`).

    Returns:
        ``(n, d)`` states at ``ts[-1]``; with ``save_at``, ``(states, Trajectory)``.

    Example:
        >>> import jax, jax.numpy as jnp, manifold_scores as ms
        >>> proc, mix = ms.VP(), ms.MoLRG.random(jax.random.key(0), 4, 1, 2)
        >>> ts = ms.sampling.time_grid(proc, 8, kind="uniform", t_min=0.1, t_max=1.0)
        >>> ms.sampling.integrate_ode(ms.score_fn(mix, proc), proc, jnp.ones((3, 4)), ts).shape
        (3, 4)
    """
    solver = _resolve(method, ODE_METHODS)
    if solver.stochastic:
        raise ValueError(f"method {solver.name!r} is stochastic: integrate_ode needs an ODE "
                         "solver")
    _check_batch(x_init)
    ts = jnp.asarray(ts, jnp.result_type(x_init))
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must have shape (N + 1,) with N >= 1, got shape {ts.shape}")
    save_at = _check_save_at(save_at, ts.shape[0] - 1)
    return _integrate_jit(x_init, ts, proc, score=score, solver=solver, save_at=save_at)


# --------------------------------------------------------------------------------------------
# Langevin dynamics at fixed noise levels
# --------------------------------------------------------------------------------------------


def _langevin_plan(steps, options=()):
    return {"n": np.arange(steps), "end": np.ones(steps, bool)}


def _langevin_step(state, row, ts, evaluate, noise, proc, options):
    """``x += h (sigma^a s(x, sigma) - grad v(x)) + sqrt(2 h) z``; ``options`` holds the
    per-step ``(sigmas, hs)``."""
    sigmas, hs = options
    x, h = state, hs[row["n"]]
    return x + h * evaluate(x, sigmas[row["n"]]) + jnp.sqrt(2.0 * h) * noise()


def _langevin_impl(key, x_init, sigmas, hs, *, score, temper, potential_grad, save_at, steps):
    score_b = _batched(score)
    grad_v = None if potential_grad is None else jax.vmap(potential_grad)

    def drift(x, sigma):
        d = sigma**temper * score_b(x, sigma) if temper != 0 else score_b(x, sigma)
        # The likelihood potential is not tempered: only the prior score is scaled.
        return d if grad_v is None else d - grad_v(x)

    # Built under the trace: the per-step arrays ride in the options, not in a static argument.
    solver = Solver("langevin", _langevin_plan, _x_init, _langevin_step, _identity, False,
                    (sigmas, hs), stochastic=True)
    keys = jax.random.split(key, x_init.shape[0])
    ts = jnp.zeros(steps + 1, x_init.dtype)  # no time axis; the Trajectory reports sigmas
    out = _run(solver, drift, None, ts, x_init, keys, save_at, steps)
    if save_at is None:
        return out
    x, traj = out
    return x, traj._replace(ts=jnp.concatenate([sigmas[:1], sigmas])[jnp.asarray(save_at)])


_langevin_jit = _maybe_jit(_langevin_impl,
                           ("score", "temper", "potential_grad", "save_at", "steps"))


def langevin(key, score_at_sigma, x_init, steps: int = 1000, step_size=1e-2, sigma=0.01,
             temper: float = 1.0, *, potential_grad=None, save_at=None):
    """Tempered-score Langevin dynamics at a fixed noise level (seed 001, Eq. 8).

    ``dX = [sigma^a s_sigma(X) - grad v(X)] dt + sqrt(2) dW``, Euler-Maruyama with step ``h``:
    ``x += h (sigma^a s(x, sigma) - grad v(x)) + sqrt(2 h) z``. With ``a = 0`` and no potential it
    samples ``p_sigma``; with ``0 < a < 2`` it tends to the uniform (volume) law on the data
    manifold as ``sigma -> 0``; with ``potential_grad = grad v`` (a likelihood potential, not
    tempered) it targets the posterior ``exp(-v) dVol_M`` of an inverse problem.
    The normal direction is stiff (curvature ``sigma^(a-2)``): take ``h`` below ``sigma^(2-a)``.

    Args:
        key: PRNG key; sample ``i`` uses ``split(key, n)[i]``.
        score_at_sigma: per-point ``score(x, sigma)`` of the noised law (``alpha = 1``).
        x_init: ``(n, d)`` start.
        steps: Langevin steps.
        step_size: ``h``.
        sigma: the fixed noise level.
        temper: the exponent ``a``.
        potential_grad: optional per-point ``grad v(x)``.
        save_at: step indices to store (see :func:`sample_ode`); ``Trajectory.ts`` holds sigma.

    Example:
        >>> import jax, jax.numpy as jnp, manifold_scores as ms
        >>> score = lambda x, s: -x / (1.0 + s**2)          # N(0, I) data
        >>> x = ms.sampling.langevin(jax.random.key(0), score, jnp.zeros((4, 2)), steps=50,
        ...                          step_size=0.1, sigma=0.1, temper=0.0)
        >>> x.shape
        (4, 2)
    """
    steps = _check_steps(steps)
    _check_batch(x_init)
    dtype = jnp.result_type(x_init)
    sigmas = jnp.full((steps,), sigma, dtype)
    hs = jnp.full((steps,), step_size, dtype)
    _checks.check_positive(sigma, "sigma")
    _checks.check_positive(step_size, "step_size")
    return _langevin_jit(key, x_init, sigmas, hs, score=score_at_sigma, temper=float(temper),
                         potential_grad=potential_grad, save_at=_check_save_at(save_at, steps),
                         steps=steps)


def annealed_langevin(key, score_at_sigma, x_init, sigmas: Sequence[float] | jax.Array,
                      steps_per_sigma: int = 100, step_size=2e-5, temper: float = 0.0, *,
                      potential_grad=None, save_at=None):
    """Annealed Langevin dynamics (Song and Ermon 2019) over a decreasing ladder of sigmas.

    At level ``sigma_i`` take ``steps_per_sigma`` steps of :func:`langevin` with step
    ``h_i = step_size * sigma_i^2 / sigma_L^2`` (``sigma_L`` the last, smallest level), so that
    ``h_i`` scales like the curvature of ``log p_{sigma_i}``. All levels run in one scan.

    Args:
        sigmas: ``(L,)`` noise levels, typically geometric and decreasing.
        steps_per_sigma: steps at each level.
        step_size: ``h`` at the last level.
        temper, potential_grad, save_at: as :func:`langevin` (``save_at`` counts all steps).

    Example:
        >>> import jax, jax.numpy as jnp, manifold_scores as ms
        >>> score = lambda x, s: -x / (1.0 + s**2)
        >>> x = ms.sampling.annealed_langevin(jax.random.key(0), score, jnp.zeros((4, 2)),
        ...                                   jnp.array([1.0, 0.3, 0.1]), 20, step_size=0.05)
        >>> x.shape
        (4, 2)
    """
    m = _check_steps(steps_per_sigma, "steps_per_sigma")
    _check_batch(x_init)
    dtype = jnp.result_type(x_init)
    sigmas = jnp.asarray(sigmas, dtype)
    if sigmas.ndim != 1 or sigmas.shape[0] < 1:
        raise ValueError(f"sigmas must have shape (L,) with L >= 1, got shape {sigmas.shape}")
    _checks.check_positive(sigmas, "sigmas")
    _checks.check_positive(step_size, "step_size")
    steps = m * sigmas.shape[0]
    hs = step_size * (sigmas / sigmas[-1]) ** 2
    return _langevin_jit(key, x_init, jnp.repeat(sigmas, m), jnp.repeat(hs, m),
                         score=score_at_sigma, temper=float(temper),
                         potential_grad=potential_grad, save_at=_check_save_at(save_at, steps),
                         steps=steps)


# --------------------------------------------------------------------------------------------
# Adaptive steps through diffrax (optional extra)
# --------------------------------------------------------------------------------------------


def integrate_ode_adaptive(score, proc, x_init, t0, t1, *, solver: str = "tsit5",
                           rtol: float = 1e-5, atol: float = 1e-5, dt0=None,
                           max_steps: int = 16384, pid: tuple[float, float] = (0.3, 0.4),
                           return_stats: bool = False):
    """Adaptive PF-ODE solve with diffrax (``pip install manifold-scores[diffrax]``).

    Tsit5 or Dopri5 with a PID step-size controller (``pcoeff, icoeff = pid``), from ``t0`` to
    ``t1`` (either direction), on the whole batch as one state.

    Args:
        score, proc, x_init: as :func:`integrate_ode`.
        t0, t1: start and end times.
        solver: ``"tsit5"`` or ``"dopri5"``.
        rtol, atol: tolerances of the controller.
        dt0: first step (default ``(t1 - t0) / 100``).
        max_steps: step budget.
        return_stats: also return diffrax's stats dict (``num_steps``, ...).

    Returns:
        ``(n, d)`` states at ``t1`` (and the stats if asked).

    Example:
        >>> import jax, jax.numpy as jnp, manifold_scores as ms
        >>> proc, mix = ms.VP(), ms.MoLRG.random(jax.random.key(0), 3, 1, 1)
        >>> x = ms.sampling.integrate_ode_adaptive(  # doctest: +SKIP
        ...     ms.score_fn(mix, proc), proc, jnp.ones((2, 3)), 1.0, 0.1, solver="dopri5")
    """
    try:
        import diffrax
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("integrate_ode_adaptive needs diffrax: pip install "
                          "'manifold-scores[diffrax]'") from err
    solvers = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5}
    if solver not in solvers:
        raise ValueError(f"solver must be one of {tuple(solvers)}, got {solver!r}")
    _check_batch(x_init)
    field = _pf_field(score, proc)
    dtype = jnp.result_type(x_init)
    t0 = jnp.asarray(t0, dtype)
    t1 = jnp.asarray(t1, dtype)
    dt0 = (t1 - t0) / 100 if dt0 is None else dt0
    term = diffrax.ODETerm(lambda t, y, args: field(y, t))
    controller = diffrax.PIDController(rtol=rtol, atol=atol, pcoeff=pid[0], icoeff=pid[1])
    sol = diffrax.diffeqsolve(term, solvers[solver](), t0, t1, dt0, x_init,
                              stepsize_controller=controller, max_steps=max_steps)
    x = sol.ys[-1]
    return (x, sol.stats) if return_stats else x

"""The solver protocol and its one engine: a ``lax.scan`` over score evaluations.

A :class:`Solver` is a small state machine: ``plan`` lays out one row per score evaluation
(NumPy, at trace time), ``step`` consumes a row and calls the score exactly once, so the score
is traced once whatever the method (Heun and RK4 spread their stages over consecutive scan
iterations). :func:`run` is the scan; it also stores chosen steps as a :class:`Trajectory`.
Solvers are static choices (no ``lax.cond`` on the method). Every sampler, and the likelihood,
calls :func:`run`.

Example:
    >>> import jax.numpy as jnp
    >>> from manifold_scores.sampling import ode, solver
    >>> ts = jnp.linspace(1.0, 0.0, 5)
    >>> x = solver.run(ode.euler(), lambda x, t: -x, None, ts, jnp.ones((2, 1)), None, None, 4)
    >>> [round(float(v), 4) for v in x[:, 0]]  # (1 + 1/4)^4 for dx/dt = -x backwards in t
    [2.4414, 2.4414]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from manifold_scores._api import public_dir as _public_dir

__all__ = ["Solver", "Trajectory", "batched", "pf_field", "resolve", "run"]


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


def tree_axpy(a, x, y):
    return jax.tree.map(lambda xi, yi: a * xi + yi, x, y)


def select(pred, a, b):
    return jax.tree.map(lambda u, v: jnp.where(pred, u, v), a, b)


def first(state):
    return state[0]


def identity(state):
    return state


def x_init(x, options):
    return x


def one_per_step_plan(steps, options=()):
    return {"n": np.arange(steps), "end": np.ones(steps, bool)}


def resolve(method, table) -> Solver:
    """A :class:`Solver` from a name in ``table`` (or the solver itself)."""
    if isinstance(method, Solver):
        return method
    if not isinstance(method, str) or method not in table:
        raise ValueError(f"method must be one of {tuple(table)} or a Solver, got {method!r}")
    return table[method]()


def batched(score):
    """The per-point ``score(x, t)`` on a batch ``(n, d)`` at one time."""
    return jax.vmap(score, in_axes=(0, None))


def pf_field(score, proc):
    """The batched PF-ODE vector field ``f(t) x - g(t)^2 score(x, t) / 2``."""
    score_b = batched(score)

    def field(x, t):
        return proc.drift(t) * x - 0.5 * proc.diffusion_squared(t) * score_b(x, t)

    return field


def _normal_fn(keys, like, index):
    """Standard normals shaped like ``like``, one key per sample, fresh for each ``index``."""

    def draw():
        def one(k):
            return jax.random.normal(jax.random.fold_in(k, index), like.shape[1:], like.dtype)

        return jax.vmap(one)(keys)

    return draw


def run(solver: Solver, evaluate, proc, ts, x, keys, save_at, steps):
    """One ``lax.scan`` over the solver's score evaluations; optionally store chosen steps.

    Args:
        solver: the method.
        evaluate: batched ``(x, t) -> array``, the score or the PF-ODE field (``uses_field``).
        proc: the process (handed to ``solver.step``).
        ts: ``(steps + 1,)`` times.
        x: the initial state (an array or a PyTree of arrays, batch first).
        keys: per-sample keys ``(n,)`` for stochastic solvers, else ``None``.
        save_at: ``None`` or increasing grid indices (validated).
        steps: ``len(ts) - 1``.

    Returns:
        the final state, or ``(state, Trajectory)`` with ``save_at``.
    """
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

__dir__ = _public_dir(__all__)

"""Training loops on optax: a pure jitted step, ``fit`` with a progress bar, save and load.

A loss is any ``loss_fn(params, key, batch) -> scalar`` (e.g. a lambda around
:func:`manifold_scores.losses.dsm`). :func:`make_step` returns the pure step
``(state, key, batch) -> (state, loss)``, jitted once; :func:`fit` runs it over mini-batches
with a ``tqdm`` progress bar, periodic metrics, an optional exponential moving average of the
parameters and an optional ``post_update`` (a retraction, such as
:func:`manifold_scores.models.lowrank.retract`). Parameters are saved with Flax's msgpack
serialisation (no pickle) and load back bit for bit.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from manifold_scores import training
    >>> loss = lambda p, key, batch: jnp.mean((batch - p) ** 2)
    >>> state = training.init_state(jnp.zeros(2), optax.sgd(0.5))
    >>> state, hist = training.fit(jax.random.key(0), state, loss, jnp.ones((8, 2)), steps=50,
    ...                            batch_size=4, progress=False)
    >>> bool(jnp.allclose(state.params, 1.0, atol=1e-3))
    True
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from manifold_scores._pytree import pytree_dataclass, static_field

__all__ = ["TrainState", "init_state", "make_step", "fit", "save", "load", "to_bytes",
           "from_bytes"]


@pytree_dataclass
class TrainState:
    """Parameters, optimiser state, step count and the optional EMA of the parameters."""

    params: Any
    opt_state: Any
    step: jax.Array
    ema: Any = None
    optimizer: Any = static_field(default=None)


def init_state(params, optimizer: optax.GradientTransformation, *, ema: bool = False
               ) -> TrainState:
    """Fresh optimiser state (and an EMA initialised at ``params`` when ``ema``)."""
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32),
                      jax.tree.map(jnp.asarray, params) if ema else None, optimizer)


def make_step(loss_fn: Callable, *, ema_decay: float = 0.999,
              post_update: Callable | None = None) -> Callable:
    """The pure training step ``(state, key, batch) -> (state, loss)``, jitted.

    ``loss_fn(params, key, batch)`` must be differentiable in ``params``. ``post_update(params)``
    runs after the optimiser update (a projection or retraction). The EMA, when the state
    carries one, follows ``ema <- decay ema + (1 - decay) params``.
    """

    def step(state: TrainState, key, batch):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, key, batch)
        updates, opt_state = state.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if post_update is not None:
            params = post_update(params)
        ema = state.ema
        if ema is not None:
            ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
        return TrainState(params, opt_state, state.step + 1, ema, state.optimizer), loss

    return jax.jit(step)


def _batches(key, data, batch_size):
    n = jax.tree.leaves(data)[0].shape[0]
    if batch_size is None or batch_size >= n:
        return data
    idx = jax.random.choice(key, n, (batch_size,), replace=False)
    return jax.tree.map(lambda a: a[idx], data)


def fit(key, state: TrainState, loss_fn: Callable, data, *, steps: int,
        batch_size: int | None = None, ema_decay: float = 0.999,
        post_update: Callable | None = None, metrics: Callable | None = None,
        metrics_every: int = 100, progress: bool = True, step_fn: Callable | None = None):
    """Train for ``steps`` steps on mini-batches of ``data`` (a PyTree with a leading axis).

    Args:
        key: PRNG key; step ``i`` uses ``fold_in(key, i)`` (for the batch and the loss).
        state: from :func:`init_state`.
        loss_fn: ``loss_fn(params, key, batch) -> scalar``.
        data: the training set; each step draws ``batch_size`` rows without replacement
            (``None``: the whole set).
        ema_decay, post_update: see :func:`make_step`.
        metrics: optional ``metrics(params) -> dict`` of scalars, evaluated every
            ``metrics_every`` steps and at the end.
        progress: show a ``tqdm`` progress bar with the running loss.
        step_fn: a step from :func:`make_step` to reuse (skips re-jitting between calls).

    Returns:
        ``(state, history)``: ``history["loss"]`` holds every step's loss (NumPy), and
        ``history["metrics"]`` a list of ``(step, dict)``.
    """
    from tqdm.auto import tqdm

    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    step_fn = step_fn or make_step(loss_fn, ema_decay=ema_decay, post_update=post_update)
    losses, logged = [], []
    bar = tqdm(range(steps), disable=not progress, desc="fit", dynamic_ncols=True)
    for i in bar:
        k = jax.random.fold_in(key, i)
        k_batch, k_loss = jax.random.split(k)
        state, loss = step_fn(state, k_loss, _batches(k_batch, data, batch_size))
        losses.append(loss)
        if metrics is not None and ((i + 1) % metrics_every == 0 or i + 1 == steps):
            values = {name: float(v) for name, v in metrics(state.params).items()}
            logged.append((i + 1, values))
            bar.set_postfix(values)
        if progress and (i % 10 == 0 or i + 1 == steps):
            bar.set_postfix(loss=float(loss), refresh=False)
    bar.close()
    history = {"loss": np.asarray(jnp.stack(losses)) if losses else np.zeros(0),
               "metrics": logged}
    return state, history


def to_bytes(params) -> bytes:
    """msgpack bytes of the parameter leaves (Flax serialisation; bit-exact, no pickle)."""
    leaves = jax.tree.leaves(params)
    return serialization.msgpack_serialize(
        {str(i): np.asarray(leaf) for i, leaf in enumerate(leaves)})


def from_bytes(like, data: bytes):
    """Parameters with the structure (and static configuration) of ``like``, leaves from
    ``data`` (written by :func:`to_bytes`); shapes and dtypes must match."""
    leaves, treedef = jax.tree.flatten(like)
    state = serialization.msgpack_restore(data)
    if len(state) != len(leaves):
        raise ValueError(f"saved parameters have {len(state)} leaves, the template {len(leaves)}")
    restored = []
    for i, ref in enumerate(leaves):
        arr = np.asarray(state[str(i)])
        ref = np.asarray(ref)
        if arr.shape != ref.shape or arr.dtype != ref.dtype:
            raise ValueError(f"leaf {i}: saved {arr.shape} {arr.dtype}, template "
                             f"{ref.shape} {ref.dtype}")
        restored.append(jnp.asarray(arr))
    return jax.tree.unflatten(treedef, restored)


def save(path: str | os.PathLike, params) -> None:
    """Write ``params`` to ``path`` (msgpack); load with :func:`load` and a template."""
    with open(path, "wb") as f:
        f.write(to_bytes(params))


def load(path: str | os.PathLike, like):
    """Read parameters saved by :func:`save`; ``like`` gives the structure (e.g. ``init``'s)."""
    with open(path, "rb") as f:
        return from_bytes(like, f.read())

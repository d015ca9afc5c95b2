"""Training on optax: a compiled loop, ``fit`` that survives a day, atomic checkpoints.

A loss is any ``loss_fn(params, key, batch) -> scalar`` (e.g. a lambda around
:func:`manifold_scores.losses.dsm`).

* :func:`make_step`: the pure step ``(state, key, batch) -> (state, loss)``, jitted.
* :func:`make_loop`: ``k`` steps per dispatch through one ``lax.scan``, with the mini-batch
  draw, the per-step keys, the optimiser update, the EMA and a non-finite guard all inside the
  compiled program; optionally data-parallel over a :class:`jax.sharding.Mesh`.
* :func:`fit`: runs the loop between progress-bar, metrics and checkpoint updates; stops on a
  non-finite loss with the last finite state; keeps the state so far on Ctrl-C; resumes exactly.
* :func:`save` / :func:`load`: any PyTree (parameters, a :class:`TrainState`, a
  :class:`Checkpoint`), written atomically, with the tree's paths, its static configuration and
  a SHA-256 checksum, so that a corrupted file, another model's file or renamed keys are
  refused.

Randomness depends on the step number only: step ``i`` of a run with key ``key`` draws its
batch and its loss key from ``(key, i)``, so ``fit`` for 5 then 5 more steps equals 10 steps
bit for bit, whatever the number of steps per dispatch.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from manifold_scores import training
    >>> loss = lambda p, key, batch: jnp.mean((batch - p) ** 2)
    >>> state = training.init_state(jnp.zeros(2), optax.sgd(0.5))
    >>> state, hist = training.fit(jax.random.key(0), state, loss, jnp.ones((8, 2)), steps=50,
    ...                            batch_size=4, progress=False)
    >>> bool(jnp.allclose(state.params, 1.0, atol=1e-3)), hist["status"], int(state.step)
    (True, 'completed', 50)
"""

from __future__ import annotations

import contextlib as _contextlib
import functools as _functools
import hashlib as _hashlib
import math as _math
import operator as _operator
import os as _os
import re as _re
import time as _time
import warnings as _warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as _np
import optax as _optax
from flax import serialization as _serialization
from jax.sharding import NamedSharding as _NamedSharding
from jax.sharding import PartitionSpec as _P

from manifold_scores._api import public_dir as _public_dir
from manifold_scores._files import atomic_write
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.sampling._sharding import auto_mesh as _auto_mesh

__all__ = [
    "TrainState",
    "Checkpoint",
    "LoopOutput",
    "NonFiniteLossWarning",
    "init_state",
    "make_step",
    "make_loop",
    "fit",
    "save",
    "load",
    "to_bytes",
    "from_bytes",
]


@pytree_dataclass
class TrainState:
    """Parameters, optimiser state, step count and the optional EMA of the parameters.

    ``step`` counts the steps taken; the optimiser itself is static (it is not saved: pass the
    same one to :func:`init_state` to build the template that :func:`load` fills).
    """

    params: Any
    opt_state: Any
    step: jax.Array
    ema: Any = None
    optimizer: Any = static_field(default=None)


class Checkpoint(NamedTuple):
    """What :func:`fit` writes: the whole train state and the run's key.

    Load one with ``training.load(path, training.Checkpoint(state, key))``, where ``state`` is a
    fresh :func:`init_state` of the same model and optimiser.
    """

    state: TrainState
    key: jax.Array


class LoopOutput(NamedTuple):
    """What one call of a :func:`make_loop` loop reports.

    Attributes:
        losses: ``(steps_per_call,)``: the loss of each step taken; at the step that met a
            non-finite value, that value; NaN for steps not taken.
        count: number of steps applied to the state.
        finite: False when a step met a non-finite loss or parameters; that step was not
            applied, nor any after it, so the state is the last finite one.
    """

    losses: jax.Array
    count: jax.Array
    finite: jax.Array


class NonFiniteLossWarning(UserWarning):
    """:func:`fit` stopped because the loss or the parameters became NaN or infinite."""


def _check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, _np.integer)):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return int(value)


def _check_decay(ema_decay: Any) -> float:
    try:
        decay = float(ema_decay)
    except (TypeError, ValueError):
        raise ValueError(f"ema_decay must be a number in [0, 1], got {ema_decay!r}") from None
    if not 0.0 <= decay <= 1.0:  # also refuses NaN
        raise ValueError(f"ema_decay must be in [0, 1] (above 1 the EMA diverges), got {decay}")
    return decay


def init_state(params, optimizer: _optax.GradientTransformation, *, ema: bool = False
               ) -> TrainState:
    """Fresh optimiser state (and an EMA initialised at ``params`` when ``ema``)."""
    if not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise ValueError(f"optimizer must be an optax GradientTransformation, got {optimizer!r}")
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32),
                      jax.tree.map(jnp.asarray, params) if ema else None, optimizer)


def _update(loss_fn, post_update, ema_decay, state: TrainState, key, batch):
    loss, grads = jax.value_and_grad(loss_fn)(state.params, key, batch)
    updates, opt_state = state.optimizer.update(grads, state.opt_state, state.params)
    params = _optax.apply_updates(state.params, updates)
    if post_update is not None:
        params = post_update(params)
    ema = state.ema
    if ema is not None:
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
    return TrainState(params, opt_state, state.step + 1, ema, state.optimizer), loss


def make_step(loss_fn: Callable, *, ema_decay: float = 0.999,
              post_update: Callable | None = None) -> Callable:
    """The pure training step ``(state, key, batch) -> (state, loss)``, jitted.

    ``loss_fn(params, key, batch)`` must be differentiable in ``params``. ``post_update(params)``
    runs after the optimiser update (a projection or retraction). The EMA, when the state
    carries one, follows ``ema <- decay ema + (1 - decay) params``. :func:`make_loop` runs
    this step ``k`` times per dispatch and draws the batches itself.
    """
    decay = _check_decay(ema_decay)
    return jax.jit(_functools.partial(_update, loss_fn, post_update, decay))


def _data_size(data) -> int:
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("data must hold at least one array")
    sizes = set()
    for leaf in leaves:
        if _np.ndim(leaf) == 0:
            raise ValueError("data must have a leading (example) axis; got a scalar leaf "
                             f"of shape {_np.shape(leaf)}")
        sizes.add(_np.shape(leaf)[0])
    if len(sizes) > 1:
        raise ValueError("every leaf of data must have the same number of rows, got "
                         f"{sorted(sizes)}")
    n = sizes.pop()
    if n == 0:
        raise ValueError("data must hold at least one example, got 0 rows")
    return n


def _all_finite(tree) -> jax.Array:
    flags = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
             if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    return _functools.reduce(_operator.and_, flags, jnp.bool_(True))


def _loop_impl(loss_fn, post_update, ema_decay, batch_size, steps_per_call, mesh,
               state: TrainState, key, data, num_steps):
    n = jax.tree.leaves(data)[0].shape[0]
    full = batch_size is None or batch_size == n
    per_epoch = 1 if full else n // batch_size
    key_batch, key_loss = jax.random.split(key)
    batch_spec = None if mesh is None else _NamedSharding(mesh, _P(mesh.axis_names))

    def permutation(epoch):
        # one shuffle per epoch: every example once per epoch, the last partial batch dropped
        return jax.random.permutation(jax.random.fold_in(key_batch, epoch), n).astype(jnp.int32)

    def take(state, perm, epoch):
        if full:
            return data, perm, epoch
        i = state.step
        e = (i // per_epoch).astype(jnp.int32)
        perm = jax.lax.cond(e == epoch, lambda: perm, lambda: permutation(e))
        idx = jax.lax.dynamic_slice_in_dim(perm, (i % per_epoch) * batch_size, batch_size)
        batch = jax.tree.map(lambda a: jnp.take(a, idx, axis=0), data)
        return batch, perm, e

    def run(carry):
        state, perm, epoch = carry
        batch, perm, epoch = take(state, perm, epoch)
        if batch_spec is not None:
            batch = jax.tree.map(
                lambda a: jax.lax.with_sharding_constraint(a, batch_spec), batch)
        new, loss = _update(loss_fn, post_update, ema_decay, state,
                            jax.random.fold_in(key_loss, state.step), batch)
        finite = jnp.isfinite(loss) & _all_finite(new.params)
        new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
        return (new, perm, epoch), loss.astype(jnp.result_type(float)), finite

    def skip(carry):
        return carry, jnp.full((), jnp.nan, jnp.result_type(float)), jnp.bool_(True)

    def body(carry, j):
        inner, finite = carry
        inner, loss, ok = jax.lax.cond((j < num_steps) & finite, run, skip, inner)
        return (inner, finite & ok), loss

    if full:
        perm0, epoch0 = jnp.zeros((0,), jnp.int32), jnp.int32(0)
    else:
        epoch0 = (state.step // per_epoch).astype(jnp.int32)
        perm0 = permutation(epoch0)
    start = state.step
    ((state, _, _), finite), losses = jax.lax.scan(
        body, ((state, perm0, epoch0), jnp.bool_(True)), jnp.arange(steps_per_call))
    return state, LoopOutput(losses, state.step - start, finite)


_compiled_loop = jax.jit(_loop_impl, static_argnums=(0, 1, 2, 3, 4, 5))


def make_loop(loss_fn: Callable, *, batch_size: int | None = None, steps_per_call: int = 32,
              ema_decay: float = 0.999, post_update: Callable | None = None,
              mesh: jax.sharding.Mesh | None = None) -> Callable:
    """The compiled training loop ``(state, key, data, num_steps) -> (state, LoopOutput)``.

    One call runs ``num_steps <= steps_per_call`` steps inside one ``lax.scan`` of length
    ``steps_per_call`` (the steps past ``num_steps`` are skipped by a ``lax.cond``, so one
    compiled program serves every ``num_steps``). Step ``i = state.step`` trains on batch
    ``i % (n // batch_size)`` of a shuffle of the ``n`` rows of ``data`` drawn from
    ``(key, i // (n // batch_size))`` (every example once per epoch, the last partial batch
    dropped; ``batch_size=None`` trains on all of ``data`` at every step) with the loss key
    ``fold_in(split(key)[1], i)``. A step whose loss or updated parameters hold a NaN or an
    infinity is not applied, nor any after it: the returned state is the last finite one and
    ``LoopOutput.finite`` is False.

    ``data`` is any PyTree of arrays with a common leading axis, passed to the compiled program
    as an argument (never baked in as a constant). The loop is pure, so it can also be
    ``jax.vmap``-ed over independent runs (states, keys, data sets).

    Data parallelism: with ``mesh``, each batch is split along its first axis over every
    device of the mesh (``PartitionSpec(mesh.axis_names)``) and the parameters are replicated;
    XLA inserts the gradient reduction. The batches and keys are the same as on one device,
    so results agree up to the order of floating-point reductions. Place ``state`` and
    ``data`` replicated on the mesh first (:func:`fit` does). The same code runs across hosts
    after ``jax.distributed.initialize()``, with a mesh over ``jax.devices()`` and every process
    passing the same data.

    Args:
        loss_fn: ``loss_fn(params, key, batch) -> scalar``.
        batch_size: rows per step, ``1 <= batch_size <= n``; ``None``: all of ``data``. With
            ``mesh``, a multiple of the number of devices.
        steps_per_call: scan length ``k``; the host sees the loop every ``k`` steps.
        ema_decay, post_update: as in :func:`make_step`.
        mesh: a :class:`jax.sharding.Mesh` to split each batch over, or ``None``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from manifold_scores import training
        >>> loss = lambda p, key, batch: jnp.mean((batch - p) ** 2)
        >>> loop = training.make_loop(loss, batch_size=2, steps_per_call=8)
        >>> state = training.init_state(jnp.zeros(()), optax.sgd(0.1))
        >>> state, out = loop(state, jax.random.key(0), jnp.arange(4.0), 5)
        >>> int(out.count), bool(out.finite), out.losses.shape
        (5, True, (8,))
    """
    steps_per_call = _check_int(steps_per_call, "steps_per_call", 1)
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size", 1)
    if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
        raise ValueError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if mesh is not None:
        mesh = _auto_mesh(mesh)  # make_mesh gives Explicit axes
    if mesh is not None and batch_size is not None and batch_size % mesh.size:
        raise ValueError(f"batch_size ({batch_size}) must be a multiple of the number of "
                         f"devices in mesh ({mesh.size})")
    decay = _check_decay(ema_decay)

    def loop(state: TrainState, key, data, num_steps):
        n = _data_size(data)
        if batch_size is not None and batch_size > n:
            raise ValueError(f"batch_size ({batch_size}) must be at most the number of "
                             f"examples in data ({n})")
        if mesh is not None and batch_size is None and n % mesh.size:
            raise ValueError(f"with batch_size=None the {n} rows of data must split evenly "
                             f"over the {mesh.size} devices of mesh")
        return _compiled_loop(loss_fn, post_update, decay, batch_size, steps_per_call, mesh,
                              state, key, data, num_steps)

    return loop


# ---------------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------------


def _next_boundary(step: int, every: int | None) -> int:
    return _math.inf if every is None else (step // every + 1) * every


def _same_key(a, b) -> bool:
    def raw(k):
        k = jnp.asarray(k) if not isinstance(k, jax.Array) else k
        if jnp.issubdtype(k.dtype, jax.dtypes.prng_key):
            return _np.asarray(jax.random.key_data(k))
        return _np.asarray(k)

    ra, rb = raw(a), raw(b)
    return ra.shape == rb.shape and bool(_np.all(ra == rb))


def fit(key, state: TrainState, loss_fn: Callable, data, *, steps: int,
        batch_size: int | None = None, ema_decay: float = 0.999,
        post_update: Callable | None = None, metrics: Callable | None = None,
        metrics_every: int = 100, progress: bool = True, steps_per_call: int = 32,
        checkpoint: str | _os.PathLike | None = None, checkpoint_every: int | None = None,
        resume: bool = False, mesh: jax.sharding.Mesh | None = None):
    """Train for ``steps`` steps on mini-batches of ``data`` with the compiled loop.

    The work runs in :func:`make_loop` calls of up to ``steps_per_call`` steps; between calls
    the progress bar and the metrics update and checkpoints are written. Calls with the same
    ``loss_fn`` (the same Python object), ``post_update`` and options reuse one compiled program.

    Randomness: step ``i`` (counted by ``state.step``) uses ``(key, i)`` only, so training 5
    steps and then 5 more from the returned state equals training 10, bit for bit.

    What stops a run:
        * A NaN or infinite loss or parameters at step ``k``: the run stops, the state returned
          is the one after step ``k - 1`` (the last finite one), a
          :class:`NonFiniteLossWarning` names step ``k``, ``history["status"]`` is
          ``"nonfinite"`` and ``history["stopped_at"]`` is ``k``.
        * Ctrl-C (``KeyboardInterrupt``): the state after the last completed call of the loop
          is returned (and written to ``checkpoint`` when given), with ``history["status"]``
          ``"interrupted"``.
        * Any other exception (in ``metrics``, say): the state so far is written to
          ``checkpoint`` when given, and the exception propagates with a note naming the step
          and the file.

    Args:
        key: PRNG key of the run.
        state: from :func:`init_state`.
        loss_fn: ``loss_fn(params, key, batch) -> scalar``.
        data: a PyTree of arrays with a common leading axis of ``n >= 1`` rows.
        steps: number of steps to take (``>= 0``). With ``resume``, the run ends at step
            ``state.step + steps`` of the ``state`` passed in, so re-running the same call
            after a crash finishes the original run.
        batch_size: rows per step (``1 <= batch_size <= n``), drawn as in :func:`make_loop`;
            ``None``: all of ``data``.
        ema_decay, post_update: see :func:`make_step`.
        metrics: optional ``metrics(params) -> dict`` of scalars, evaluated every
            ``metrics_every`` steps (at multiples of the step count) and at the end.
        metrics_every: ``>= 1``.
        progress: show a ``tqdm`` progress bar with the running loss.
        steps_per_call: steps per dispatch of the compiled loop.
        checkpoint: path of a :class:`Checkpoint` file, written atomically every
            ``checkpoint_every`` steps (at multiples of the step count) and when the run ends.
        checkpoint_every: ``>= 1``, or ``None`` to write only at the end.
        resume: when ``checkpoint`` exists, continue from it (its key must equal ``key``);
            ``state`` serves as the template (same model and optimiser).
        mesh: train data-parallel over this :class:`jax.sharding.Mesh` (see :func:`make_loop`).

    Returns:
        ``(state, history)``: ``history["loss"]`` holds the loss of every step taken in this
        call (NumPy; after a non-finite stop, the offending value last), ``history["metrics"]``
        a list of ``(step, dict)``, ``history["status"]`` one of ``"completed"``,
        ``"nonfinite"``, ``"interrupted"``, ``history["stopped_at"]`` the failed step or
        ``None``, and ``history["seconds"]`` the wall time (compilation included).
    """
    from tqdm.auto import tqdm

    steps = _check_int(steps, "steps", 0)
    metrics_every = _check_int(metrics_every, "metrics_every", 1)
    if checkpoint_every is not None:
        checkpoint_every = _check_int(checkpoint_every, "checkpoint_every", 1)
        if checkpoint is None:
            raise ValueError("checkpoint_every needs a checkpoint path")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    if not isinstance(state, TrainState):
        raise ValueError(f"state must be a TrainState (from init_state), got "
                         f"{type(state).__name__}")
    if metrics is not None and not callable(metrics):
        raise ValueError(f"metrics must be callable, got {metrics!r}")
    n = _data_size(data)
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size", 1)
        if batch_size > n:
            raise ValueError(f"batch_size ({batch_size}) must be at most the number of "
                             f"examples in data ({n})")
    loop = make_loop(loss_fn, batch_size=batch_size, steps_per_call=steps_per_call,
                     ema_decay=ema_decay, post_update=post_update, mesh=mesh)

    end = int(state.step) + steps
    if resume and _os.path.exists(checkpoint):
        saved = load(checkpoint, Checkpoint(state, key))
        if not _same_key(saved.key, key):
            raise ValueError(f"{_os.fspath(checkpoint)}: written by a run with another key; "
                             "pass that run's key to resume it")
        state = saved.state
    if mesh is not None:
        replicated = _NamedSharding(_auto_mesh(mesh), _P())
        state, data = jax.device_put((state, data), replicated)

    def write(state):
        if checkpoint is not None:
            save(checkpoint, Checkpoint(state, key))

    t0 = _time.perf_counter()
    first = int(state.step)
    losses, logged = [], []
    status, stopped_at = "completed", None
    bar = tqdm(total=max(end - first, 0), disable=not progress, desc="fit", dynamic_ncols=True)
    try:
        step = first
        while step < end:
            stop = min(end, step + steps_per_call,
                       _next_boundary(step, metrics_every if metrics is not None else None),
                       _next_boundary(step, checkpoint_every))
            state, out = loop(state, key, data, stop - step)
            count, finite = int(out.count), bool(out.finite)
            chunk = _np.asarray(out.losses)[: count + (0 if finite else 1)]
            losses.append(chunk)
            step = int(state.step)
            bar.update(count)
            if chunk.size:
                bar.set_postfix(loss=float(chunk[-1]), refresh=False)
            if not finite:
                status, stopped_at = "nonfinite", step
                _warnings.warn(
                    f"fit: the loss or the parameters became non-finite at step {step} "
                    f"(loss {float(chunk[-1])}); stopped, returning the state after step "
                    f"{step - 1}", NonFiniteLossWarning, stacklevel=2)
                break
            if metrics is not None and (step % metrics_every == 0 or step == end):
                values = {name: float(v) for name, v in metrics(state.params).items()}
                logged.append((step, values))
                bar.set_postfix(values)
            if checkpoint_every is not None and step % checkpoint_every == 0 and step < end:
                write(state)
    except KeyboardInterrupt:
        status = "interrupted"
    except BaseException as err:
        if checkpoint is not None:
            with _contextlib.suppress(Exception):
                write(state)
                err.add_note(f"fit: the state after step {int(state.step)} was saved to "
                             f"{_os.fspath(checkpoint)}")
        raise
    finally:
        bar.close()
    write(state)
    history = {"loss": _np.concatenate(losses) if losses else _np.zeros(0),
               "metrics": logged, "status": status, "stopped_at": stopped_at,
               "seconds": _time.perf_counter() - t0}
    return state, history


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

_MAGIC = b"MSCKPT\x00\x01"
_VERSION = 1


class _StateRecord(NamedTuple):
    """A TrainState without its optimiser: what identifies a saved state's structure."""

    params: Any
    opt_state: Any
    step: Any
    ema: Any


def _structure(tree) -> str:
    """The tree's structure and static configuration, stable across processes.

    The optimiser (a static field of functions) is left out: it is not saved, and its repr
    changes with the library version. Object addresses are removed.
    """
    tree = jax.tree.map(
        lambda s: _StateRecord(s.params, s.opt_state, s.step, s.ema)
        if isinstance(s, TrainState) else s,
        tree, is_leaf=lambda s: isinstance(s, TrainState))
    return _re.sub(r" at 0x[0-9a-fA-F]+", "", str(jax.tree.structure(tree)))


def _is_key(leaf) -> bool:
    return isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def to_bytes(tree) -> bytes:
    """The checkpoint bytes of any PyTree: a header, a SHA-256 digest, then msgpack.

    The body holds every leaf (NumPy arrays, bit-exact; typed PRNG keys as their key data and
    implementation), the leaves' paths and the tree's structure with its static
    configuration. Everything is serialised before anything is written, so a leaf that cannot
    be serialised raises here.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    leaves, impls = {}, {}
    for i, (_, leaf) in enumerate(flat):
        if _is_key(leaf):
            impls[str(i)] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        arr = _np.asarray(leaf)
        if arr.dtype == object:
            raise ValueError(f"leaf {jax.tree_util.keystr(flat[i][0])} cannot be saved: "
                             f"{type(leaf).__name__} is not an array")
        leaves[str(i)] = arr
    body = _serialization.msgpack_serialize({
        "version": _VERSION,
        "structure": _structure(tree),
        "paths": [jax.tree_util.keystr(path) for path, _ in flat],
        "leaves": leaves,
        "key_impls": impls,
    })
    return _MAGIC + _hashlib.sha256(body).digest() + body


def from_bytes(like, data: bytes, *, name: str = "checkpoint"):
    """A PyTree with the structure of ``like`` and the leaves saved in ``data``.

    Refuses, with a ``ValueError`` that starts with ``name``: data without the header, a
    checksum mismatch (a flipped byte, a truncated file), other leaf paths (renamed keys), another
    structure or static configuration (another model, even one with the same shapes), and other
    shapes or dtypes. Restoring runs no code from the file (msgpack holds data only).
    """
    head = len(_MAGIC) + 32
    if len(data) < head or data[: len(_MAGIC)] != _MAGIC:
        raise ValueError(f"{name}: not a manifold_scores checkpoint (no header); was it "
                         "written by training.save?")
    digest, body = data[len(_MAGIC): head], data[head:]
    if _hashlib.sha256(body).digest() != digest:
        raise ValueError(f"{name}: checksum mismatch: the file is corrupted or truncated")
    try:
        saved = _serialization.msgpack_restore(body)
    except Exception as err:  # the checksum matched, so this is a writer bug, not corruption
        raise ValueError(f"{name}: unreadable checkpoint body ({err})") from None
    if saved.get("version") != _VERSION:
        raise ValueError(f"{name}: checkpoint version {saved.get('version')}, this library "
                         f"reads version {_VERSION}")
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    paths = [jax.tree_util.keystr(path) for path, _ in flat]
    saved_paths = list(saved["paths"])
    if saved_paths != paths:
        diff = [(a, b) for a, b in zip(saved_paths, paths, strict=False) if a != b][:3]
        raise ValueError(
            f"{name}: saved leaves {len(saved_paths)}, template {len(paths)}; paths differ "
            f"(saved, template): {diff or 'extra leaves at the end'}")
    structure = _structure(like)
    if saved["structure"] != structure:
        raise ValueError(f"{name}: saved for another model or configuration:\n  saved    "
                         f"{saved['structure']}\n  template {structure}")
    impls = saved.get("key_impls", {})
    restored = []
    for i, (_, ref) in enumerate(flat):
        arr = _np.asarray(saved["leaves"][str(i)])
        if _is_key(ref):
            if impls.get(str(i)) != str(jax.random.key_impl(ref)):
                raise ValueError(f"{name}: leaf {paths[i]} holds a {impls.get(str(i))} key, "
                                 f"the template a {jax.random.key_impl(ref)} one")
            ref_data = _np.asarray(jax.random.key_data(ref))
            if arr.shape != ref_data.shape or arr.dtype != ref_data.dtype:
                raise ValueError(f"{name}: key leaf {paths[i]}: saved {arr.shape} {arr.dtype}, "
                                 f"template {ref_data.shape} {ref_data.dtype}")
            restored.append(jax.random.wrap_key_data(arr, impl=jax.random.key_impl(ref)))
            continue
        ref_arr = _np.asarray(ref)
        if arr.shape != ref_arr.shape or arr.dtype != ref_arr.dtype:
            raise ValueError(f"{name}: leaf {paths[i]}: saved {arr.shape} {arr.dtype}, "
                             f"template {ref_arr.shape} {ref_arr.dtype}")
        restored.append(jnp.asarray(arr) if isinstance(ref, jax.Array) else arr)
    return jax.tree.unflatten(treedef, restored)


def save(path: str | _os.PathLike, tree) -> None:
    """Write any PyTree (parameters, a :class:`TrainState`, a :class:`Checkpoint`) to ``path``.

    Atomic: the bytes are built first (:func:`to_bytes`), then written to a temporary file
    beside ``path`` and renamed over it, so a save that fails at any point (an unserialisable
    leaf, Ctrl-C, a full disk) leaves the previous file loadable and unchanged. The format is
    msgpack behind a SHA-256 checksum; loading executes nothing from the file.
    """
    atomic_write(_os.fspath(path), to_bytes(tree))


def load(path: str | _os.PathLike, like):
    """Read a PyTree saved by :func:`save`; ``like`` gives the structure (e.g. ``init``'s).

    Raises ``ValueError`` naming the file when it is corrupted, truncated, saved from another
    model or configuration, or holds other keys, shapes or dtypes (see :func:`from_bytes`).

    Example:
        >>> import jax.numpy as jnp, tempfile, os
        >>> from manifold_scores import training
        >>> path = os.path.join(tempfile.mkdtemp(), "params.ckpt")
        >>> training.save(path, {"w": jnp.arange(3.0)})
        >>> training.load(path, {"w": jnp.zeros(3)})["w"]
        Array([0., 1., 2.], dtype=float32)
    """
    path = _os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    return from_bytes(like, data, name=path)

__dir__ = _public_dir(__all__)

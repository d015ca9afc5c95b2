"""Callables as jit arguments: array leaves traced, the rest static and hashed.

A score, a potential gradient, a divergence or a prior may be a plain Python function or a
callable PyTree (``scores.score_fn(density, process)``, a model dataclass holding its parameters
next to a static apply function, a ``jax.tree_util.Partial``). :func:`filter_jit` splits each such
argument into its array leaves, which become traced arguments of ``jax.jit``, and the rest (the
tree structure and the non-array leaves: functions, strings, ints), which is hashed into the
static part of the cache key. A fresh ``score_fn(mix, proc)`` of the same structure, or a model
with new parameter values, therefore reuses the compiled sampler, and gradients flow into the
parameters. Python floats count as array leaves (a process built from floats does not force a
recompile when a float changes). A plain function is one static leaf, hashed by identity: keep
the same function object between calls to reuse the compilation.

If the static part cannot be hashed, the call runs without ``jit`` (op by op), as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

__all__ = ["combine", "filter_jit", "is_traced_leaf", "partition"]


def is_traced_leaf(leaf: Any) -> bool:
    """Arrays (JAX or NumPy, any dtype) and Python / NumPy floats; not bools, ints or objects."""
    if isinstance(leaf, (bool, np.bool_)):
        return False
    return isinstance(leaf, (jax.Array, np.ndarray, float, complex, np.floating,
                             np.complexfloating))


class _Static:
    """Hashable static part of a PyTree: its structure and its non-array leaves."""

    __slots__ = ("_hash", "leaves", "treedef")

    def __init__(self, treedef, leaves: tuple):
        self.treedef = treedef
        self.leaves = leaves
        self._hash = hash((treedef, leaves))  # TypeError if a leaf is unhashable

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return (isinstance(other, _Static) and self.treedef == other.treedef
                and len(self.leaves) == len(other.leaves)
                and all(a is b or a == b for a, b in zip(self.leaves, other.leaves, strict=True)))

    def __repr__(self) -> str:
        return f"_Static({self.treedef})"


def partition(tree: Any) -> tuple[list, _Static]:
    """``(dynamic, static)``: the traced leaves (``None`` in static slots) and the static rest.

    Raises ``TypeError`` when a static leaf is unhashable.
    """
    leaves, treedef = jax.tree.flatten(tree)
    traced = [is_traced_leaf(leaf) for leaf in leaves]
    dynamic = [leaf if t else None for leaf, t in zip(leaves, traced, strict=True)]
    static = tuple(None if t else leaf for leaf, t in zip(leaves, traced, strict=True))
    return dynamic, _Static(treedef, static)


def combine(dynamic: list, static: _Static) -> Any:
    """Inverse of :func:`partition` (``None`` is never a leaf, so it marks the static slots)."""
    leaves = [s if d is None else d for d, s in zip(dynamic, static.leaves, strict=True)]
    return jax.tree.unflatten(static.treedef, leaves)


def filter_jit(fn: Callable, split: Sequence[str] = (), static_argnames: Sequence[str] = ()):
    """``jax.jit(fn)`` where the keyword arguments named in ``split`` are partitioned.

    Positional arguments are traced as usual; ``static_argnames`` are static as in ``jax.jit``;
    each keyword in ``split`` (a callable PyTree, a plain function, a string, ``None``) is split
    by :func:`partition`. The jitted function is exposed as ``.jitted`` (its compilation cache:
    ``.jitted._cache_size()``).
    """
    split = tuple(split)

    def inner(*args, _dynamic, _static, **kwargs):
        for name, dyn, stat in zip(split, _dynamic, _static, strict=True):
            kwargs[name] = combine(dyn, stat)
        return fn(*args, **kwargs)

    jitted = jax.jit(inner, static_argnames=("_static", *static_argnames))

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            parts = [partition(kwargs[name]) for name in split]
            for name in static_argnames:
                hash(kwargs.get(name))
        except TypeError:  # an unhashable static part: run op by op
            return fn(*args, **kwargs)
        rest = {k: v for k, v in kwargs.items() if k not in split}
        return jitted(*args, _dynamic=tuple(p[0] for p in parts),
                      _static=tuple(p[1] for p in parts), **rest)

    call.jitted = jitted
    return call

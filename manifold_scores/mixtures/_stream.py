"""The online log-sum-exp engine: fold per-chunk sums of a mixture into one accumulator.

A kernel describes one chunk of components by its logits ``l_i`` and a PyTree of weighted sums
``sum_i w_i f_i`` (``w_i = exp(l_i - max_chunk l)``). :func:`stream` folds the chunks with a
running maximum and rescaled sums, so memory is ``O(chunk)`` per query and
``O(batch * chunk)`` under ``jax.vmap``, whatever the number of components.

The loop indexes its chunks inside the body (``lax.dynamic_slice``): it carries no ``O(N d)``
slice or padded copy of the components. A ragged tail (``N`` not a multiple of the chunk) is
evaluated once, outside the loop, and seeds the accumulator; otherwise the first chunk does.
Seeding from a real chunk gives the carry its dtypes and, inside ``shard_map``, its per-device
variance without a synthetic ``-inf`` start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["Acc", "DEFAULT_CHUNK_SIZE", "HIGHEST", "check_chunk_size", "finite_or_zero", "merge",
           "reduce_chunk", "stream"]

HIGHEST = lax.Precision.HIGHEST
DEFAULT_CHUNK_SIZE = 4096


class Acc(NamedTuple):
    """Running maximum ``top`` of the logits and a PyTree of sums scaled by ``exp(-top)``."""

    top: jax.Array
    sums: Any


def finite_or_zero(top):
    """The reference a log-sum-exp subtracts: ``top``, or 0 where no component is finite."""
    return jnp.where(jnp.isfinite(top), top, jnp.zeros_like(top))


def reduce_chunk(logits: jax.Array, sums_fn: Callable[[jax.Array], Any]) -> Acc:
    """``Acc`` of one chunk: weights relative to the chunk's own maximum, then ``sums_fn(w)``."""
    top = jnp.max(logits)
    w = jnp.exp(logits - finite_or_zero(top))
    return Acc(top, sums_fn(w))


def merge(a: Acc, b: Acc) -> Acc:
    """Combine two accumulators (log-sum-exp of their maxima, rescaled sums)."""
    top = jnp.maximum(a.top, b.top)
    ref = finite_or_zero(top)
    ca, cb = jnp.exp(a.top - ref), jnp.exp(b.top - ref)
    return Acc(top, jax.tree.map(lambda u, v: ca * u + cb * v, a.sums, b.sums))


def check_chunk_size(chunk_size) -> None:
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")


def stream(chunk_fn: Callable[[tuple], Acc], arrays: tuple, chunk_size: int | None) -> Acc:
    """Fold ``chunk_fn`` over chunks of the leading axis of ``arrays`` (all the same length).

    ``chunk_fn`` receives a tuple of slices (leading length ``chunk_size``, or the shorter tail)
    and returns an :class:`Acc`. No copy of ``arrays`` is made: the loop slices them in place.
    """
    n = arrays[0].shape[0]
    size = n if chunk_size is None or chunk_size >= n else int(chunk_size)
    full, tail = divmod(n, size)

    def take(i):
        return tuple(lax.dynamic_slice_in_dim(a, i * size, size) for a in arrays)

    if tail:
        first = chunk_fn(tuple(a[full * size:] for a in arrays))
        start = 0
    else:
        first = chunk_fn(tuple(a[:size] for a in arrays))
        start = 1
    if full <= start:
        return first

    def body(acc, i):
        return merge(acc, chunk_fn(take(i))), None

    acc, _ = lax.scan(body, first, jnp.arange(start, full))
    return acc

"""Frozen dataclasses registered as PyTrees.

Densities, processes and model parameters are values: array fields are PyTree leaves (so
``jax.jit``, ``jax.vmap`` and ``jax.grad`` see through them), integer sizes and options are
static fields (part of the jit cache key).

Unflattening bypasses ``__init__``: JAX rebuilds these objects with tracers, cotangents, batch
axes or placeholders as leaves, and none of those should meet the constructor's validation
(a cotangent of ``weights`` does not sum to one). Validation in ``__post_init__`` therefore runs
exactly when a user constructs an object.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

__all__ = ["pytree_dataclass", "static_field"]


def static_field(**kwargs: Any) -> Any:
    """A dataclass field that is static (hashable metadata, not a leaf)."""
    return dataclasses.field(metadata={"static": True}, **kwargs)


def pytree_dataclass(cls: type) -> type:
    """``dataclasses.dataclass(frozen=True)`` registered as a PyTree with keyed leaves."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    data = tuple(f.name for f in fields if not f.metadata.get("static", False))
    meta = tuple(f.name for f in fields if f.metadata.get("static", False))
    keys = tuple(jax.tree_util.GetAttrKey(name) for name in data)

    def flatten_with_keys(obj):
        children = [(k, getattr(obj, n)) for k, n in zip(keys, data, strict=True)]
        return children, tuple(getattr(obj, n) for n in meta)

    def flatten(obj):
        return [getattr(obj, n) for n in data], tuple(getattr(obj, n) for n in meta)

    def unflatten(aux, children):
        obj = object.__new__(cls)
        for name, value in zip(data, children, strict=True):
            object.__setattr__(obj, name, value)
        for name, value in zip(meta, aux, strict=True):
            object.__setattr__(obj, name, value)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls

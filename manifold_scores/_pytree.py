"""Frozen dataclasses registered as PyTrees.

Densities, processes and model parameters are values: array fields are PyTree leaves (so
``jax.jit``, ``jax.vmap`` and ``jax.grad`` see through them), integer sizes and options are
static fields (part of the jit cache key).
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
    """``dataclasses.dataclass(frozen=True)`` plus ``jax.tree_util.register_dataclass``."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    return jax.tree_util.register_dataclass(cls)

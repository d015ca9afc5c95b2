"""``dir()`` of a public module lists its API (``__all__``), not the modules it imports."""

from __future__ import annotations

from collections.abc import Callable, Iterable


def public_dir(names: Iterable[str]) -> Callable[[], list[str]]:
    """A module-level ``__dir__`` returning ``names`` sorted: ``__dir__ = public_dir(__all__)``."""
    listed = sorted(names)
    return lambda: list(listed)

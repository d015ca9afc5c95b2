"""The experiment registry: id -> (run, plot), in the order the CLI runs them.

An experiment module defines ``run(size="quick", *, seed=0) -> Table`` and
``plot(table) -> matplotlib Figure`` (matplotlib imported inside ``plot`` only) and calls
:func:`register` at import. ``manifold_scores.experiments`` imports every module, so adding an
experiment is one module plus one import line.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from manifold_scores.experiments._table import Table, check_size


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment: ``id`` (e.g. ``"E1"``), a title, the claim's source, and the
    ``run(size, seed=...)`` / ``plot(table)`` functions."""

    id: str
    title: str
    source: str
    run: Callable[..., Table]
    plot: Callable[[Table], object] | None = None


REGISTRY: dict[str, Experiment] = {}


def register(id: str, title: str, source: str, run: Callable[..., Table],
             plot: Callable[[Table], object] | None = None) -> Experiment:
    """Add an experiment (ids are unique; registering one twice replaces it)."""
    exp = Experiment(id, title, source, run, plot)
    REGISTRY[id] = exp
    return exp


def get(id: str) -> Experiment:
    """The experiment with this id (case-insensitive); ``ValueError`` if unknown."""
    for key, exp in REGISTRY.items():
        if key.lower() == id.lower():
            return exp
    raise ValueError(f"unknown experiment {id!r}; known: {', '.join(REGISTRY)}")


def run(id: str, size: str = "quick", **kwargs) -> Table:
    """Run one experiment by id and time it."""
    check_size(size)
    exp = get(id)
    start = time.perf_counter()
    table = exp.run(size, **kwargs)
    return dataclasses.replace(table, seconds=time.perf_counter() - start, title=exp.title)


def plot(table: Table):
    """Draw a table's figure with its experiment's ``plot`` (None if it has none)."""
    exp = get(table.experiment)
    return None if exp.plot is None else exp.plot(table)

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

from manifold_scores.experiments._table import CLAIM, HOLDS, SIZES, VERDICTS, Table, check_size


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment: ``id`` (e.g. ``"E1"``), a title, the claim's source, the
    ``run(size, seed=...)`` / ``plot(table)`` functions, the verdicts recorded for its
    claims (``recorded[key] = (verdict, one-line reason)``; a claim without a record is
    expected to hold), and the optional modules it needs with the extra that installs them
    (``requires = (("sklearn", "data"), ...)``)."""

    id: str
    title: str
    source: str
    run: Callable[..., Table]
    plot: Callable[[Table], object] | None = None
    recorded: dict = dataclasses.field(default_factory=dict)
    requires: tuple[tuple[str, str], ...] = ()

    def missing(self) -> tuple[str, ...]:
        """The extras to install before this experiment can run (empty when it can)."""
        import importlib.util

        return tuple(dict.fromkeys(extra for module, extra in self.requires
                                   if importlib.util.find_spec(module) is None))


@dataclasses.dataclass(frozen=True)
class Review:
    """How a table compares with its experiment's record: ``failed_controls`` (the study is
    invalid) and ``changed`` verdicts as ``(key, measured verdict, recorded verdict)``."""

    failed_controls: tuple[str, ...]
    changed: tuple[tuple[str, str, str], ...]

    @property
    def ok(self) -> bool:
        return not self.failed_controls and not self.changed


def review(table: Table) -> Review:
    """Compare a table's controls and verdicts with the record of its experiment."""
    exp = get(table.experiment)
    failed = tuple(r.key for r in table.rows if r.kind == "control" and not r.holds)
    changed = []
    for r in table.rows:
        if r.kind != CLAIM:
            continue
        expected = recorded_verdict(exp, r.key, table.size)
        if r.verdict != expected:
            changed.append((r.key, r.verdict, expected))
    return Review(failed, tuple(changed))


def recorded_verdict(exp: Experiment, key: str, size: str) -> str:
    """The verdict recorded for claim ``key`` at ``size`` ("holds" when nothing is recorded)."""
    value = exp.recorded.get(key, (HOLDS, ""))
    if isinstance(value, dict):
        value = value.get(size, (HOLDS, ""))
    return value[0]


REGISTRY: dict[str, Experiment] = {}


def register(id: str, title: str, source: str, run: Callable[..., Table],
             plot: Callable[[Table], object] | None = None,
             recorded: dict | None = None, requires=()) -> Experiment:
    """Add an experiment (ids are unique; registering one twice replaces it).

    ``recorded`` maps claim keys to ``(verdict, reason)``: what the library's own run found,
    so that ``verify`` reports a change. Where the quick and full studies differ (a smaller
    budget can leave a claim inconclusive), the value is a dict ``{"quick": (verdict, reason),
    "full": (verdict, reason)}``; a size it does not name expects "holds". Nothing is recorded
    as "does not hold" while its row is inconclusive. ``requires`` lists ``(module, extra)``
    pairs: ``verify`` skips the experiment, naming the extra, where a module is missing.
    """
    def valid(value):
        return isinstance(value, tuple) and len(value) == 2 and value[0] in VERDICTS

    for key, value in (recorded or {}).items():
        per_size = value.values() if isinstance(value, dict) else [value]
        if (isinstance(value, dict) and not set(value) <= set(SIZES)) or \
                not all(valid(v) for v in per_size):
            raise ValueError(f"recorded[{key!r}] must be (verdict, reason) with a verdict in "
                             f"{VERDICTS}, or a dict of those keyed by size {SIZES}, got "
                             f"{value!r}")
    requires = tuple((str(m), str(e)) for m, e in requires)
    exp = Experiment(id, title, source, run, plot, dict(recorded or {}), requires)
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

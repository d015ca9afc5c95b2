"""The study protocol: how every claim earns its verdict.

A verdict is the main output of an experiment, so each one is earned the same way:

* **seeds**: every asserted quantity is measured over at least 3 seeds; a success rate comes
  with its Wilson interval (:func:`rate`), a median with its range over seeds (:func:`spread`);
* **null reference**: a sample metric (memorisation, distance to the support, MMD, ...) is also
  computed for fresh draws from the data law against the same training set; its 95% band
  (:func:`null_band`) is what a model is compared with, never a fixed number;
* **controls**: every claim has a positive control (a case that must show the effect) and a
  negative control (a case that must not); a failed control makes the study invalid, not the
  claim false;
* **optimisation certificate**: for a trained model, ``loss(selected) - loss(planted truth)`` on
  the same estimator; a diagnostic, never used to select; a positive gap is an optimiser
  failure and makes a failing row *inconclusive*, not "does not hold";
* **convergence**: training runs to a stated plateau criterion (:func:`plateaued`), or the row
  says it did not;
* **thresholds** are stated in the experiment's docstring before it runs, relative to the null
  where there is one;
* a **verdict** per claim row: ``"holds"``, ``"does not hold"`` or ``"inconclusive"``
  (:func:`verdict`), with its evidence in the table and the JSON.

An experiment builds its table with a :class:`Study`; ``manifold-scores verify`` then compares
every verdict with the one recorded for the claim in the registry and exits 0 when every control
passes and every verdict is the recorded one.

Example: a claim of one's own, end to end (the sample mean of ``n`` standard normal draws lies
within ``3 / sqrt(n)`` of zero), with seeds, a null band, both controls and a verdict:

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from manifold_scores.experiments import protocol
    >>> def mean_error(key, n, shift=0.0):
    ...     return jnp.abs(jnp.mean(jax.random.normal(key, (n,)) + shift))
    >>> keys = jax.random.split(jax.random.key(0), 5)                 # 5 seeds, vmapped
    >>> err = np.asarray(jax.vmap(lambda k: mean_error(k, 10_000))(keys))
    >>> null = np.asarray(jax.vmap(lambda k: mean_error(k, 10_000))(
    ...     jax.random.split(jax.random.key(1), 200)))              # fresh draws: the null
    >>> band = protocol.null_band(null)
    >>> study = protocol.Study("MEAN")
    >>> _ = study.control("a shift of 0.1 is detected", "positive",
    ...                   passed=bool(np.all(np.asarray(jax.vmap(
    ...                       lambda k: mean_error(k, 10_000, 0.1))(keys)) > band[1])))
    >>> _ = study.control("the null band holds fresh draws", "negative",
    ...                   passed=bool(np.mean((null >= band[0]) & (null <= band[1])) >= 0.9))
    >>> row = study.claim("mean error within 3 / sqrt(n)", key="mean",
    ...                   measured=protocol.spread(err), expected="< 0.03 on every seed",
    ...                   test=bool(np.all(err < 0.03)), seeds=len(err), null=band)
    >>> table = study.table()
    >>> row.verdict, table.valid, len(table.rows)
    ('holds', True, 3)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from manifold_scores.experiments._table import (
    CLAIM,
    CONTROL,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    OBSERVATION,
    VERDICTS,
    Row,
    Table,
)

__all__ = [
    "HOLDS",
    "FAILS",
    "INCONCLUSIVE",
    "VERDICTS",
    "MIN_SEEDS",
    "Rate",
    "Spread",
    "Study",
    "wilson",
    "rate",
    "spread",
    "null_band",
    "plateaued",
    "verdict",
    "transition",
]

#: every asserted quantity is measured over at least this many seeds
MIN_SEEDS = 3


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial rate (95% for ``z = 1.96``).

    Example:
        >>> from manifold_scores.experiments.protocol import wilson
        >>> lo, hi = wilson(9, 10)
        >>> round(lo, 3), round(hi, 3)
        (0.596, 0.982)
    """
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclasses.dataclass(frozen=True)
class Rate:
    """A success rate over ``n`` trials with its 95% Wilson interval."""

    value: float
    lo: float
    hi: float
    n: int

    def __str__(self) -> str:
        return f"{self.value:.2f} [{self.lo:.2f}, {self.hi:.2f}] of {self.n}"


@dataclasses.dataclass(frozen=True)
class Spread:
    """A median over seeds (or over ``unit``: runs pooled across settings) with the smallest
    and largest value."""

    median: float
    lo: float
    hi: float
    n: int
    unit: str = "seeds"

    def __str__(self) -> str:
        return f"{_num(self.median)} [{_num(self.lo)}, {_num(self.hi)}] ({self.n} {self.unit})"


def _num(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
        return f"{v:.2e}"
    return f"{v:.3g}"


def rate(successes: Sequence[bool] | np.ndarray) -> Rate:
    """The share of true entries with its Wilson interval."""
    s = np.asarray(successes, bool).ravel()
    lo, hi = wilson(int(s.sum()), s.size)
    return Rate(float(s.mean()) if s.size else math.nan, lo, hi, int(s.size))


def spread(values: Sequence[float] | np.ndarray, *, unit: str = "seeds") -> Spread:
    """Median and range of per-seed values (NaN stays NaN: a diverged seed is not dropped).

    ``unit`` names what is counted when the values pool more than seeds (``"runs"`` for seeds
    times settings), so that a printed count never passes for a number of seeds.
    """
    v = np.asarray(values, float).ravel()
    if v.size == 0 or np.any(np.isnan(v)):
        return Spread(math.nan, math.nan, math.nan, int(v.size), unit)
    return Spread(float(np.median(v)), float(v.min()), float(v.max()), int(v.size), unit)


def null_band(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` band of a null reference (repetitions with fresh draws)."""
    v = np.asarray(values, float).ravel()
    if v.size == 0 or np.any(np.isnan(v)):
        return (math.nan, math.nan)
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(v, [tail, 1.0 - tail])
    return (float(lo), float(hi))


def plateaued(losses: Sequence[float] | np.ndarray, *, window: int = 100,
              rel_tol: float = 0.01) -> bool:
    """The stated convergence criterion: the mean loss of the last ``window`` steps is within
    ``rel_tol`` (relative to the loss's range over the run) of the window before it.

    Robust to the noise of stochastic losses: it compares window means, and measures the change
    against how far the loss travelled, so a loss that still falls steadily is not called
    converged however noisy it is.
    """
    v = np.asarray(losses, float).ravel()
    if v.size < 2 * window or not np.all(np.isfinite(v[-2 * window:])):
        return False
    last, before = v[-window:].mean(), v[-2 * window: -window].mean()
    travelled = max(np.max(v) - np.min(v), 1e-30)
    return bool(abs(before - last) <= rel_tol * travelled)


def verdict(test: bool | None, *, controls_passed: bool = True,
            certificate_gap: float | None = None, converged: bool | None = None,
            gap_tol: float = 0.0) -> str:
    """A claim row's verdict from its test and its evidence.

    ``test`` True: ``"holds"``. ``test`` False: ``"does not hold"``, unless the evidence
    cannot support that: a failed control, an optimisation certificate above ``gap_tol`` (the
    selected solution is worse than the planted truth on the training loss: the optimiser
    failed, the claim was not tested) or a training run that did not converge; then
    ``"inconclusive"``. ``test`` None (not measurable): ``"inconclusive"``. A failed control
    makes any row inconclusive.
    """
    if not controls_passed or test is None:
        return INCONCLUSIVE
    if test:
        return HOLDS
    if certificate_gap is not None and not certificate_gap <= gap_tol:  # NaN too
        return INCONCLUSIVE
    if converged is False:
        return INCONCLUSIVE
    return FAILS


def transition(xs: Sequence[float], rates: Sequence[float], level: float = 0.5) -> float:
    """The smallest ``x`` from which the rate is at least ``level`` at every larger ``x``
    (``inf`` if the last one is below): a failure after the first success moves it right."""
    xs, rates = np.asarray(xs, float), np.asarray(rates, float)
    order = np.argsort(xs)
    xs, rates = xs[order], rates[order]
    ok = rates >= level
    if not ok.size or not ok[-1]:
        return math.inf
    below = np.nonzero(~ok)[0]
    return float(xs[below[-1] + 1] if below.size else xs[0])


class Study:
    """Collects one experiment's controls, claims and observations into a :class:`Table`.

    Controls come first in the table; a claim's evidence lists the controls that were in place
    when it was stated, and any failed control makes it inconclusive.
    """

    def __init__(self, experiment: str, size: str = "quick"):
        self.experiment = experiment
        self.size = size
        self._controls: list[Row] = []
        self._rows: list[Row] = []

    @property
    def controls_passed(self) -> bool:
        return all(r.holds for r in self._controls)

    def control(self, name: str, kind: str, *, passed: bool, measured: Any = None,
                expected: str = "", key: str | None = None) -> Row:
        """A positive (``kind="positive"``: must show the effect) or negative control."""
        if kind not in ("positive", "negative"):
            raise ValueError(f"kind must be 'positive' or 'negative', got {kind!r}")
        row = Row(f"[{kind} control] {name}", "yes" if measured is None else measured,
                  expected or "passes", bool(passed), verdict=None, kind=CONTROL,
                  key=key or name, evidence={"control": kind})
        self._controls.append(row)
        return row

    def claim(self, claim: str, *, key: str, measured: Any, expected: str, test: bool | None,
              seeds: int | None = None, null: tuple[float, float] | None = None,
              certificate_gap: float | None = None, converged: bool | None = None,
              gap_tol: float = 0.0, controls: Sequence[str] | None = None,
              **evidence: Any) -> Row:
        """A claim row; its verdict follows :func:`verdict` from ``test`` and the evidence.

        Args:
            key: a stable id, matched with the verdict recorded in the registry.
            measured, expected: what the table prints.
            test: whether the pre-stated criterion is met (``None``: not measurable).
            seeds: how many seeds the measured value pools (at least :data:`MIN_SEEDS` for a
                verdict other than inconclusive).
            null: the null reference's band, where the metric has one.
            certificate_gap: ``loss(selected) - loss(truth)`` for trained models.
            converged: whether training met the plateau criterion.
            controls: names of the controls this claim rests on (default: all so far).
            evidence: anything else worth keeping in the JSON.
        """
        rows = [c for c in self._controls if controls is None or c.key in controls]
        passed = all(c.holds for c in rows)
        enough = seeds is None or seeds >= MIN_SEEDS
        v = verdict(test if enough else None, controls_passed=passed,
                    certificate_gap=certificate_gap, converged=converged, gap_tol=gap_tol)
        ev = {"seeds": seeds, "null": None if null is None else [float(x) for x in null],
              "controls": {c.key: bool(c.holds) for c in rows},
              "certificate_gap": certificate_gap, "converged": converged}
        if not enough:
            ev["note"] = f"fewer than {MIN_SEEDS} seeds"
        ev.update(evidence)
        row = Row(claim, measured, expected, {HOLDS: True, FAILS: False}.get(v), verdict=v,
                  kind=CLAIM, key=key, evidence={k: x for k, x in ev.items() if x is not None})
        self._rows.append(row)
        return row

    def observe(self, claim: str, measured: Any, expected: str = "reported",
                **evidence: Any) -> Row:
        """A row that is reported, not asserted."""
        row = Row(claim, measured, expected, None, kind=OBSERVATION, evidence=evidence)
        self._rows.append(row)
        return row

    def table(self, data: dict | None = None) -> Table:
        return Table(self.experiment, self.size, tuple(self._controls + self._rows),
                     data or {})

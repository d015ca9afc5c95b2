"""The result type of every experiment: a table of rows with their verdicts and evidence.

A :class:`Row` is one of three kinds:

* a **claim**, with a verdict ``"holds"``, ``"does not hold"`` or ``"inconclusive"`` (see
  :mod:`manifold_scores.experiments.protocol`) and its evidence (seeds, null band, controls,
  optimisation certificate, convergence); ``holds`` is True / False / None accordingly;
* a **control** (``holds`` is whether it passed): a failed control makes the study invalid;
* an **observation**, shown but not asserted (``holds=None``).

Rows built the short way, ``Row(claim, measured, expected, holds)``, are claims whose verdict is
``holds`` (True / False), or observations (None). A :class:`Table` holds the rows of one run plus
the raw arrays its ``plot`` function draws (``data``), the size and the wall time.

Example:
    >>> from manifold_scores.experiments import Row, Table
    >>> t = Table("EX", "quick", (Row("slope is 2", 2.01, "2 +- 0.2", True),))
    >>> t.ok, t.valid, t.rows[0].verdict, t.rows[0].measured_text
    (True, True, 'holds', '2.010')
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

SIZES = ("quick", "full")

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)
CLAIM, CONTROL, OBSERVATION = "claim", "control", "observation"

#: the text width of the compact view of a table
WIDTH = 100


def check_size(size: str) -> str:
    """Validate an experiment size (``"quick"`` or ``"full"``)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return size


def _fmt(value) -> str:
    if isinstance(value, str):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return str(value)  # protocol.Rate / Spread print themselves
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if hasattr(value, "dtype") and np.ndim(value) == 0 and np.asarray(value).dtype.kind in "iu":
        return str(int(value))  # a rank or a count computed on arrays: no decimals
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
        return f"{v:.2e}"
    return f"{v:.3f}"


@dataclasses.dataclass(frozen=True)
class Row:
    """One row: a claim with its verdict, a control, or an observation (see the module).

    ``holds=None`` with no verdict marks an observation that is reported but not asserted.
    """

    claim: str
    measured: Any
    expected: str
    holds: bool | None
    verdict: str | None = None
    kind: str = CLAIM
    key: str | None = None
    evidence: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in (CLAIM, CONTROL, OBSERVATION):
            raise ValueError(f"kind must be one of claim, control, observation, got {self.kind!r}")
        if self.kind == CLAIM and self.verdict is None:
            if self.holds is None:
                object.__setattr__(self, "kind", OBSERVATION)
            else:
                object.__setattr__(self, "verdict", HOLDS if self.holds else FAILS)
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.key is None:
            object.__setattr__(self, "key", self.claim)

    @property
    def measured_text(self) -> str:
        return _fmt(self.measured)

    @property
    def holds_text(self) -> str:
        if self.kind == CONTROL:
            return "control ok" if self.holds else "CONTROL FAILED"
        if self.kind == OBSERVATION:
            return "n/a"
        return {HOLDS: "holds", FAILS: "does NOT hold", INCONCLUSIVE: "inconclusive"}[
            self.verdict]

    def to_dict(self) -> dict:
        m = self.measured
        if not isinstance(m, str):
            m = _jsonable(m)
        out = {"claim": self.claim, "measured": m, "expected": self.expected,
               "holds": None if self.holds is None else bool(self.holds)}
        if self.kind != CLAIM or self.evidence or self.key != self.claim:
            out.update(kind=self.kind, key=self.key, verdict=self.verdict,
                       evidence=_jsonable(self.evidence))
        elif self.verdict is not None:
            out["verdict"] = self.verdict
        return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {**_jsonable(dataclasses.asdict(obj)), "text": str(obj)}
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # JSON has no inf / nan
    if isinstance(obj, (np.ndarray, np.generic)) or hasattr(obj, "__array__"):
        arr = np.asarray(obj)
        return arr.tolist() if arr.ndim else arr.item()
    return obj


@dataclasses.dataclass(frozen=True)
class Table:
    """Rows of one experiment run, and the data its figure is drawn from."""

    experiment: str
    size: str
    rows: tuple[Row, ...]
    data: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    title: str = ""

    @property
    def ok(self) -> bool:
        """True when no claim is "does not hold" and no control failed."""
        return all(r.holds is not False for r in self.rows)

    @property
    def valid(self) -> bool:
        """True when every control passed: the study can support its verdicts."""
        return all(r.holds for r in self.rows if r.kind == CONTROL)

    @property
    def verdicts(self) -> dict[str, str]:
        """``key -> verdict`` of every claim row."""
        return {r.key: r.verdict for r in self.rows if r.kind == CLAIM}

    def to_dict(self, with_data: bool = False) -> dict:
        out = {"experiment": self.experiment, "title": self.title, "size": self.size,
               "seconds": round(self.seconds, 2), "ok": self.ok, "valid": self.valid,
               "rows": [r.to_dict() for r in self.rows]}
        if with_data:
            out["data"] = _jsonable(self.data)
        return out

    def to_json(self, with_data: bool = False) -> str:
        return json.dumps(self.to_dict(with_data), indent=2)

    def format(self, wide: bool = False, width: int = WIDTH) -> str:
        """The rows as text: wrapped to ``width`` columns, or one aligned line per row
        (``wide=True``); see :func:`format_rows`."""
        return format_rows([(self.experiment, r) for r in self.rows], wide=wide, width=width)

    def __str__(self) -> str:  # notebooks print the table
        return self.format()


def format_rows(rows, wide: bool = False, width: int = WIDTH) -> str:
    """``(experiment, Row)`` pairs as text.

    Compact (default): per row, ``exp  verdict  claim`` then ``measured ...; expected ...``
    beneath it, wrapped to ``width`` columns. Wide: one aligned line per row,
    ``exp | claim | measured | expected | verdict``, as wide as its longest cell.
    """
    if wide:
        return _format_wide(rows)
    import textwrap

    exp_w = max([3, *(len(e) for e, _ in rows)])
    verdict_w = max([7, *(len(r.holds_text) for _, r in rows)])
    indent = " " * (exp_w + verdict_w + 4)
    head = f"{'exp'.ljust(exp_w)}  {'verdict'.ljust(verdict_w)}  claim / measured; expected"
    lines = [head, "-" * min(width, max(len(head), 40))]
    for e, r in rows:
        first = f"{e.ljust(exp_w)}  {r.holds_text.ljust(verdict_w)}  "
        lines += textwrap.wrap(r.claim, width, initial_indent=first, subsequent_indent=indent,
                               break_on_hyphens=False) or [first.rstrip()]
        detail = f"measured {r.measured_text}; expected {r.expected}"
        lines += textwrap.wrap(detail, width, initial_indent=indent + "  ",
                               subsequent_indent=indent + "  ", break_on_hyphens=False)
    return "\n".join(lines)


def _format_wide(rows) -> str:
    cols = [("exp", [e for e, _ in rows]), ("claim", [r.claim for _, r in rows]),
            ("measured", [r.measured_text for _, r in rows]),
            ("expected", [r.expected for _, r in rows]),
            ("verdict", [r.holds_text for _, r in rows])]
    widths = [max(len(h), *(len(v) for v in vals)) if vals else len(h) for h, vals in cols]
    lines = [" | ".join(h.ljust(w) for (h, _), w in zip(cols, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    for i in range(len(rows)):
        lines.append(" | ".join(vals[i].ljust(w) for (_, vals), w in
                                zip(cols, widths, strict=True)))
    return "\n".join(lines)

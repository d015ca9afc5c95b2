"""The result type of every experiment: a table of rows (claim, measured, expected, holds).

A :class:`Row` states one claim; ``holds`` is ``True`` / ``False`` for an asserted claim and
``None`` for a row that is shown but not asserted (an observation, e.g. where a protocol departs
from the theorem's setting). A :class:`Table` holds the rows of one experiment run plus the raw
arrays its ``plot`` function draws (``data``), the size and the wall time.

Example:
    >>> from manifold_scores.experiments import Row, Table
    >>> t = Table("EX", "quick", (Row("slope is 2", 2.01, "2 +- 0.2", True),))
    >>> t.ok, t.rows[0].measured_text
    (True, '2.010')
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

SIZES = ("quick", "full")


def check_size(size: str) -> str:
    """Validate an experiment size (``"quick"`` or ``"full"``)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return size


def _fmt(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
        return f"{v:.2e}"
    return f"{v:.3f}"


@dataclasses.dataclass(frozen=True)
class Row:
    """One claim: what is claimed, the measured value, the expectation, whether it holds.

    ``holds=None`` marks an observation that is reported but not asserted.
    """

    claim: str
    measured: Any
    expected: str
    holds: bool | None

    @property
    def measured_text(self) -> str:
        return _fmt(self.measured)

    @property
    def holds_text(self) -> str:
        return "n/a" if self.holds is None else ("yes" if self.holds else "NO")

    def to_dict(self) -> dict:
        m = self.measured
        if not isinstance(m, str):
            m = _jsonable(m)
        return {"claim": self.claim, "measured": m, "expected": self.expected,
                "holds": None if self.holds is None else bool(self.holds)}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
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
        """True when no asserted claim fails."""
        return all(r.holds is not False for r in self.rows)

    def to_dict(self, with_data: bool = False) -> dict:
        out = {"experiment": self.experiment, "title": self.title, "size": self.size,
               "seconds": round(self.seconds, 2), "ok": self.ok,
               "rows": [r.to_dict() for r in self.rows]}
        if with_data:
            out["data"] = _jsonable(self.data)
        return out

    def to_json(self, with_data: bool = False) -> str:
        return json.dumps(self.to_dict(with_data), indent=2)

    def format(self) -> str:
        """``claim | measured | expected | holds`` as aligned text."""
        return format_rows([(self.experiment, r) for r in self.rows])

    def __str__(self) -> str:  # notebooks print the table
        return self.format()


def format_rows(rows) -> str:
    """Align ``(experiment, Row)`` pairs as ``exp | claim | measured | expected | holds``."""
    cols = [("exp", [e for e, _ in rows]), ("claim", [r.claim for _, r in rows]),
            ("measured", [r.measured_text for _, r in rows]),
            ("expected", [r.expected for _, r in rows]), ("holds", [r.holds_text for _, r in rows])]
    widths = [max(len(h), *(len(v) for v in vals)) if vals else len(h) for h, vals in cols]
    lines = [" | ".join(h.ljust(w) for (h, _), w in zip(cols, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    for i in range(len(rows)):
        lines.append(" | ".join(vals[i].ljust(w) for (_, vals), w in
                                zip(cols, widths, strict=True)))
    return "\n".join(lines)

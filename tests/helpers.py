"""Shared test helpers: comparisons that do not depend on the CPU's vector width.

Float32 results are compared relative to the norm of the reference vector, never element-wise
against a tiny ``atol``: a score element of size 7e-3 next to elements of size 10 carries the
round-off of the large ones, and how much depends on how the compiler vectorises the sums.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rel_err", "assert_rel_close"]


def rel_err(got, ref, axis=-1) -> float:
    """Worst ``|got - ref| / |ref|`` over the leading axes, norms taken along ``axis``.

    Scalars and 0-d arrays are compared by absolute value. A zero reference vector falls back
    to the absolute error.
    """
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        raise AssertionError(f"shapes differ: {got.shape} vs {ref.shape}")
    if ref.ndim == 0:
        den = abs(float(ref))
        num = abs(float(got - ref))
        return num / den if den > 0 else num
    num = np.linalg.norm(got - ref, axis=axis)
    den = np.linalg.norm(ref, axis=axis)
    out = np.where(den > 0, num / np.where(den > 0, den, 1.0), num)
    return float(np.max(out))


def assert_rel_close(got, ref, rtol: float, axis=-1, what: str = "") -> None:
    """Assert :func:`rel_err` ``<= rtol``; the message carries the measured error."""
    err = rel_err(got, ref, axis=axis)
    assert np.isfinite(err) and err <= rtol, f"{what} relative error {err:.3g} > {rtol:.3g}"

"""Data laws with exact noised ``log_prob``, ``score`` and ``denoise``."""

from manifold_scores.densities.base import Density, PrecisionWarning
from manifold_scores.densities.empirical import Empirical
from manifold_scores.densities.manifolds import (
    Circle,
    Ellipse,
    FlatTorus,
    Parametric,
    RingTorus,
    Sphere,
    SwissRoll,
    VonMises,
)
from manifold_scores.densities.molrg import MoLRG

__all__ = [
    "Circle",
    "Density",
    "PrecisionWarning",
    "Ellipse",
    "Empirical",
    "FlatTorus",
    "MoLRG",
    "Parametric",
    "RingTorus",
    "Sphere",
    "SwissRoll",
    "VonMises",
]

"""manifold_scores: exact scores, losses, models and samplers for data on manifolds, in JAX.

Example:
    >>> import jax, manifold_scores as ms
    >>> mix = ms.MoLRG.random(jax.random.key(0), dim=8, rank=2, num_components=2)
    >>> score = ms.score_fn(mix, ms.VP())
    >>> score(mix.sample(jax.random.key(1), 1)[0], 0.5).shape
    (8,)
"""

import importlib as _importlib

from manifold_scores import (
    datasets,
    likelihood,
    losses,
    metrics,
    mixtures,
    models,
    processes,
    sampling,
    scores,
    testing,
    training,
)
from manifold_scores.densities import (
    Circle,
    Density,
    Ellipse,
    Empirical,
    FlatTorus,
    MoLRG,
    Parametric,
    PrecisionWarning,
    RingTorus,
    Sphere,
    SwissRoll,
    VonMises,
)
from manifold_scores.mixtures import MixtureStats
from manifold_scores.processes import EDM, VE, VP, CosineVP, Flow, Process
from manifold_scores.scores import denoiser_fn, score_fn

__version__ = "0.1.0"

# Loaded on first use, not here: the experiments build on the whole library (importing them here
# would be the one import running upward in the layering), and their modules are needed only by
# `manifold-scores verify`, the notebooks and their tests.
_LAZY_SUBMODULES = ("experiments",)


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))


__all__ = [
    "Circle",
    "CosineVP",
    "Density",
    "EDM",
    "Ellipse",
    "Empirical",
    "FlatTorus",
    "Flow",
    "MixtureStats",
    "MoLRG",
    "PrecisionWarning",
    "Parametric",
    "Process",
    "RingTorus",
    "Sphere",
    "SwissRoll",
    "VE",
    "VP",
    "VonMises",
    "datasets",
    "denoiser_fn",
    "experiments",
    "metrics",
    "likelihood",
    "losses",
    "mixtures",
    "models",
    "processes",
    "sampling",
    "training",
    "score_fn",
    "scores",
    "testing",
]

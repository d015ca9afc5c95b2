"""Laws on curved manifolds with exact noised log-density, score and denoiser.

Every class is a data law ``X`` on a manifold ``M`` embedded in ``R^d`` by an orthonormal frame
``Q`` (``d x m``) and a centre ``c``, and gives the statistics of ``alpha X + sigma Z`` at one
point. One concept per module:

- :mod:`.spheres`: :class:`Sphere`, :class:`Circle`, :class:`VonMises`, exact in closed form
  (Bessel functions, :mod:`._special`; the noised von Mises-Fisher law, :mod:`._vmf`);
- :mod:`.tori`: :class:`FlatTorus` (exact, a product of circles) and :class:`RingTorus` (the ring
  angle in closed form, the tube angle by periodic quadrature);
- :mod:`.curves`: :class:`Ellipse` and :class:`SwissRoll`, by quadrature;
- :mod:`.parametric`: :class:`Parametric`, any chart by quadrature over a box.

Quadratures are weighted isotropic Gaussian mixtures evaluated by
:func:`manifold_scores.mixtures.isotropic` (rules and checks in :mod:`._quadrature`), exact to a
level set by the node spacing. The spacing is checked against ``sigma`` whenever the values are
concrete (eager calls): a grid too coarse raises a ``ValueError`` that says how many nodes, or
which sigma, would do (``on_coarse="warn"`` warns instead). Under ``jit`` the values are tracers
and the check is skipped; ``min_sigma(alpha)`` gives the limit to check by hand.

Each manifold also exposes its geometry (shared helpers in :mod:`._geometry`): ``project(x)``
(nearest point), ``distance(x)``, ``tangent_basis(x)`` and ``normal_projector(x)`` at the
nearest point.
"""

from manifold_scores.densities.manifolds.curves import Ellipse, SwissRoll
from manifold_scores.densities.manifolds.parametric import Parametric
from manifold_scores.densities.manifolds.spheres import Circle, Sphere, VonMises
from manifold_scores.densities.manifolds.tori import FlatTorus, RingTorus

__all__ = [
    "Circle",
    "Ellipse",
    "FlatTorus",
    "Parametric",
    "RingTorus",
    "Sphere",
    "SwissRoll",
    "VonMises",
]

"""Score models: each module has ``init(key, ...) -> params`` and ``apply(params, x, t)``.

* :mod:`~manifold_scores.models.kernel`: the WPO-informed kernel model (Zhang, Liu, Li,
  Katsoulakis, Osher, arXiv 2402.06162), closed form at every noise level.
* :mod:`~manifold_scores.models.lowrank`: the MoLRG-parameterised denoiser (Wang, Zhang et al.,
  arXiv 2409.02426) and its closed-form baselines (PCA, K-subspaces).
* :mod:`~manifold_scores.models.random_features`: random-feature score with a closed-form ridge
  fit of DSM (George and Macris, arXiv 2603.22962).
* :mod:`~manifold_scores.models.mlp`: a Flax MLP with EDM-style preconditioning.
* :mod:`~manifold_scores.models.unet`: a Flax U-Net for images (flat points with a static
  image shape), same preconditioning.

:func:`bind` turns ``(apply, params)`` into a callable PyTree ``score(x, t)`` for the samplers.
"""

from manifold_scores.models import kernel, lowrank, mlp, random_features, unet
from manifold_scores.models.base import Bound, bind

__all__ = ["Bound", "bind", "kernel", "lowrank", "mlp", "random_features", "unet"]

"""The one fast kernel: exact statistics of a noised Gaussian mixture at one point.

A clean law ``X ~ sum_k pi_k N(mu_k, Sigma_k)`` noised as ``Y = alpha X + sigma Z`` is again a
mixture. At a point ``x`` the kernels return, in one streamed pass over the components,
``log p(x)``, ``score(x)``, ``E[X | Y = x]``, ``tr Cov[X | Y = x]`` and ``div score``
(:class:`MixtureStats`), for two families of components, one module each:

* :mod:`~manifold_scores.mixtures.isotropic`: point masses (empirical laws, quadrature nodes,
  kernel centres), ``N(alpha y_i, sigma^2 I)``.
* :mod:`~manifold_scores.mixtures.lowrank`: low-rank plus isotropic covariances (MoLRG, the
  WPO kernel model), ``O(K r d)`` per point, never a ``d x d`` matrix.

:mod:`~manifold_scores.mixtures._stream` is the online log-sum-exp engine both use;
:mod:`~manifold_scores.mixtures.sharded` spreads the components over devices.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from manifold_scores import mixtures
    >>> pts = jax.random.normal(jax.random.key(0), (1000, 3))
    >>> st = mixtures.isotropic(jnp.zeros(3), pts, jnp.full(1000, -jnp.log(1000.)), 1.0, 0.5)
    >>> st.score.shape, st.mean.shape
    ((3,), (3,))
"""

from manifold_scores.mixtures._stream import DEFAULT_CHUNK_SIZE
from manifold_scores.mixtures.isotropic import isotropic, isotropic_logits, weighted_centre
from manifold_scores.mixtures.lowrank import lowrank, lowrank_logits
from manifold_scores.mixtures.sharded import isotropic_sharded, lowrank_sharded
from manifold_scores.mixtures.stats import MixtureStats, divergence

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MixtureStats",
    "divergence",
    "isotropic",
    "isotropic_logits",
    "isotropic_sharded",
    "lowrank",
    "lowrank_logits",
    "lowrank_sharded",
    "weighted_centre",
]

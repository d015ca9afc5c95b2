"""Mixture of low-rank Gaussians (MoLRG): the data model of Wang, Zhang et al., "Diffusion
Models Learn Low-Dimensional Distributions via Subspace Clustering", arXiv 2409.02426.

``X = mu_k + U_k (s_k * a) + tau xi`` with ``k ~ pi``, ``a ~ N(0, I_r)``, ``xi ~ N(0, I_d)`` and
``U_k`` a ``(d, r)`` orthonormal basis. The plain model of the paper has ``mu = 0``, ``s = 1`` and
``tau = 0``; with ``v = alpha^2 + sigma^2`` its posterior logits are
``l_k = log pi_k + alpha^2 |U_k^T x|^2 / (2 sigma^2 v) - (r/2) log(v / sigma^2)``.

Example:
    >>> import jax, manifold_scores as ms
    >>> mix = ms.MoLRG.random(jax.random.key(0), dim=16, rank=2, num_components=3)
    >>> x = mix.sample(jax.random.key(1), 4)
    >>> jax.vmap(mix.score, (0, None, None))(x, 1.0, 0.1).shape
    (4, 16)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from manifold_scores import _checks, mixtures
from manifold_scores._api import public_dir as _public_dir
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.densities.base import Density

__all__ = ["MoLRG"]


@pytree_dataclass
class MoLRG(Density):
    """Mixture of low-rank Gaussians with exact noised log-density, score and denoiser.

    Args:
        bases: ``(K, d, r)`` orthonormal columns ``U_k``.
        weights: ``(K,)`` mixture weights ``pi`` (a probability vector); uniform if omitted.
        means: optional ``(K, d)`` component means ``mu_k``.
        scales: optional ``(K, r)`` standard deviations along each basis direction (default 1).
        variances: alternative to ``scales``: ``(K, r)`` per-direction variances ``v``, possibly
            negative as long as ``v + noise_floor^2 > 0`` (the WPO kernel model's components).
            Such a law cannot be sampled by :meth:`sample` when some ``v < 0``.
        noise_floor: ``tau >= 0``, an isotropic noise level of the clean data: a scalar or one
            per component ``(K,)``. With ``tau > 0`` the law may be evaluated at ``sigma = 0``.
        chunk_size: components per streamed chunk (static).
    """

    bases: jax.Array
    weights: jax.Array | None = None
    means: jax.Array | None = None
    scales: jax.Array | None = None
    noise_floor: jax.Array | float = 0.0
    variances: jax.Array | None = None
    chunk_size: int | None = static_field(default=mixtures.DEFAULT_CHUNK_SIZE)

    def __post_init__(self):
        bases = _checks.as_float_array(self.bases, "bases")
        _checks.check_ndim(bases, 3, "bases", "(K, d, r)")
        _checks.check_nonempty(bases, "bases")
        k, d, r = bases.shape
        if r > d:
            raise ValueError(f"bases must have rank r <= d, got shape {bases.shape}")
        _checks.check_orthonormal(bases, "bases")
        weights = self.weights
        if weights is None:
            weights = jnp.full((k,), 1.0 / k, bases.dtype)
        else:
            weights = _checks.as_float_array(weights, "weights")
            if weights.shape != (k,):
                raise ValueError(f"weights must have shape ({k},), got {weights.shape}")
            _checks.check_probability_vector(weights, "weights")
        if self.scales is not None and self.variances is not None:
            raise ValueError("pass scales or variances, not both")
        for name, shape in (("means", (k, d)), ("scales", (k, r)), ("variances", (k, r))):
            value = getattr(self, name)
            if value is not None:
                value = _checks.as_float_array(value, name)
                if value.shape != shape:
                    raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
                object.__setattr__(self, name, value)
        if self.scales is not None:
            _checks.check_nonnegative(self.scales, "scales")
        if jnp.ndim(self.noise_floor) not in (0, 1) or (
                jnp.ndim(self.noise_floor) == 1 and jnp.shape(self.noise_floor) != (k,)):
            raise ValueError(f"noise_floor must be a scalar or have shape ({k},), got "
                             f"{jnp.shape(self.noise_floor)}")
        _checks.check_nonnegative(self.noise_floor, "noise_floor")
        if self.variances is not None and _checks.is_concrete(self.variances):
            tau2 = jnp.broadcast_to(jnp.square(jnp.asarray(self.noise_floor)), (k,))
            if bool(jnp.any(self.variances + tau2[:, None] <= 0)):
                raise ValueError("variances + noise_floor^2 must be positive")
        object.__setattr__(self, "bases", bases)
        object.__setattr__(self, "weights", weights)

    @classmethod
    def random(cls, key, dim: int, rank: int, num_components: int, *, orthogonal: bool = True,
               weights=None, dtype=None, **kwargs) -> MoLRG:
        """Random bases: Haar-distributed (``jnp.linalg.qr`` of a Gaussian matrix).

        With ``orthogonal=True`` the subspaces are mutually orthogonal (needs
        ``num_components * rank <= dim``), as in the paper's analysis; otherwise independent.
        """
        if min(dim, rank, num_components) < 1:
            raise ValueError("dim, rank and num_components must be positive")
        if rank > dim:
            raise ValueError(f"rank must be <= dim, got rank={rank}, dim={dim}")
        dtype = dtype or jnp.result_type(float)
        if orthogonal:
            if num_components * rank > dim:
                raise ValueError(
                    f"orthogonal=True needs num_components * rank <= dim, got "
                    f"{num_components} * {rank} > {dim}; pass orthogonal=False")
            g = jax.random.normal(key, (dim, num_components * rank), dtype)
            q, _ = jnp.linalg.qr(g)
            bases = q.reshape(dim, num_components, rank).transpose(1, 0, 2)
        else:
            g = jax.random.normal(key, (num_components, dim, rank), dtype)
            bases = jnp.linalg.qr(g)[0]
        return cls(bases, weights, **kwargs)

    @property
    def dim(self) -> int:
        return self.bases.shape[1]

    @property
    def rank(self) -> int:
        return self.bases.shape[2]

    @property
    def num_components(self) -> int:
        return self.bases.shape[0]

    @property
    def log_weights(self) -> jax.Array:
        return jnp.log(self.weights)

    def sample(self, key, n: int) -> jax.Array:
        """``n`` clean samples; one key per sample, so a sample does not depend on ``n``."""
        keys = jax.random.split(key, n)
        return jax.vmap(self._sample_one)(keys)

    def sample_with_labels(self, key, n: int):
        """Clean samples ``(n, d)`` and their component labels ``(n,)``."""
        keys = jax.random.split(key, n)
        return jax.vmap(self._sample_one_labelled)(keys)

    def _sample_one(self, key):
        return self._sample_one_labelled(key)[0]

    def _sample_one_labelled(self, key):
        k_comp, k_coef, k_floor = jax.random.split(key, 3)
        comp = jax.random.categorical(k_comp, self.log_weights)
        coef = jax.random.normal(k_coef, (self.rank,), self.bases.dtype)
        if self.scales is not None:
            coef = coef * self.scales[comp]
        elif self.variances is not None:  # NaN where a variance is negative: not a sampler
            coef = coef * jnp.sqrt(self.variances[comp])
        floor = jnp.broadcast_to(jnp.asarray(self.noise_floor), (self.num_components,))[comp]
        x = self.bases[comp] @ coef
        if self.means is not None:
            x = x + self.means[comp]
        x = x + floor * jax.random.normal(k_floor, (self.dim,), self.bases.dtype)
        return x, comp

    def stats(self, x, alpha, sigma) -> mixtures.MixtureStats:
        return mixtures.lowrank(x, self.bases, self.log_weights, alpha, sigma, means=self.means,
                                scales=self.scales, variances=self.variances,
                                noise_floor=self.noise_floor, chunk_size=self.chunk_size)

    def posterior_weights(self, x, alpha, sigma) -> jax.Array:
        """``P(k | alpha X + sigma Z = x)``, shape ``(K,)``."""
        return jax.nn.softmax(mixtures.lowrank_logits(
            x, self.bases, self.log_weights, alpha, sigma, means=self.means, scales=self.scales,
            variances=self.variances, noise_floor=self.noise_floor))

    def covariance(self) -> jax.Array:
        """Dense ``(K, d, d)`` clean covariances (for references and small d only)."""
        if self.variances is not None:
            s2 = self.variances
        elif self.scales is not None:
            s2 = self.scales**2
        else:
            s2 = jnp.ones((self.num_components, self.rank), self.bases.dtype)
        cov = jnp.einsum("kdr,kr,ker->kde", self.bases, s2, self.bases)
        tau2 = jnp.broadcast_to(jnp.square(jnp.asarray(self.noise_floor, cov.dtype)),
                                (self.num_components,))
        return cov + tau2[:, None, None] * jnp.eye(self.dim, dtype=cov.dtype)

__dir__ = _public_dir(__all__)

"""Any manifold given by a chart, by quadrature over a box of parameters (:class:`Parametric`)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp

from manifold_scores import _checks, mixtures
from manifold_scores._api import public_dir as _public_dir
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.densities.base import Density
from manifold_scores.densities.manifolds._geometry import (
    HIGHEST,
    normal_projector_from_tangent,
    safe_norm,
)
from manifold_scores.densities.manifolds._quadrature import (
    axis_rule,
    check_on_coarse,
    check_spacing,
)
from manifold_scores.mixtures import MixtureStats

__all__ = ["Parametric"]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _chart_nodes(chart, log_density, area: bool, params, log_w):
    """Embedded nodes and normalised log-weights ``log(density * sqrt(det J^T J) * w)``."""
    points = jax.vmap(chart)(params)
    if area:
        jac = jax.vmap(jax.jacfwd(chart))(params)
        gram = jnp.einsum("ndi,ndj->nij", jac, jac, precision=HIGHEST)
        log_w = log_w + 0.5 * jnp.linalg.slogdet(gram)[1]
    if log_density is not None:
        log_w = log_w + jax.vmap(log_density)(params).astype(log_w.dtype)
    return points, log_w - logsumexp(log_w)


@pytree_dataclass
class Parametric(Density):
    """Any manifold given by a chart, by quadrature over a box of parameters.

    ``X = chart(theta)``, ``theta`` in the box ``domain`` with density ``exp(log_density)``
    w.r.t. the surface measure (``measure="area"``; ``log_density=None`` is the uniform law on
    the surface) or w.r.t. Lebesgue measure on the box (``measure="parameter"``). The noised
    law is the isotropic mixture over a product grid: per axis the periodic trapezoid rule
    (``periodic``) or composite 16-point Gauss-Legendre, with log-weights
    ``log(density * sqrt(det(J^T J)) * cell weight)`` normalised to sum to one. Nodes are
    fixed at construction; the noised law is exact to ~1e-8 while
    ``alpha * spacing <= max_spacing_ratio * sigma`` (``spacing``: the largest distance between
    neighbouring embedded nodes). A coarser grid raises a ``ValueError`` (or warns, per
    ``on_coarse``) that says how many nodes or which sigma would do; the check needs concrete
    values, so under ``jit`` call :meth:`check_resolution` yourself.

    Args:
        chart: ``theta (m,) -> point (d,)``, differentiable (static; hashable).
        domain: ``(m, 2)`` box ``[[lo_1, hi_1], ...]`` (concrete).
        log_density: optional ``theta -> log density`` (unnormalised is fine; static).
        nodes: nodes per axis, an int or an ``m``-tuple (static). Gauss-Legendre axes round up
            to a multiple of 16.
        periodic: bool or ``m``-tuple: whether the chart is periodic along each axis (static).
        measure: ``"area"`` or ``"parameter"`` (static).
        on_coarse: ``"raise"``, ``"warn"`` or ``"ignore"`` (static).
        max_spacing_ratio: the largest ``alpha * spacing / sigma`` accepted (static).
        chunk_size: nodes per streamed chunk of the mixture kernel (static).

    Example:
        >>> import jax.numpy as jnp, manifold_scores as ms
        >>> circle = lambda th: jnp.stack([jnp.cos(th[0]), jnp.sin(th[0])])
        >>> m = ms.Parametric(circle, [[0.0, 2 * jnp.pi]], nodes=256, periodic=True)
        >>> bool(jnp.isfinite(m.log_prob(jnp.array([1.0, 0.0]), 1.0, 0.1)))
        True
    """

    chart: Callable = static_field()
    domain: jax.Array
    log_density: Callable | None = static_field(default=None)
    nodes: int | tuple = static_field(default=256)
    periodic: bool | tuple = static_field(default=False)
    measure: str = static_field(default="area")
    on_coarse: str = static_field(default="raise")
    max_spacing_ratio: float = static_field(default=1.0)
    chunk_size: int | None = static_field(default=mixtures.DEFAULT_CHUNK_SIZE)
    params: jax.Array | None = None  # computed: (N, m) quadrature nodes
    points: jax.Array | None = None  # computed: (N, d) embedded nodes
    log_weights: jax.Array | None = None  # computed: (N,) normalised log-weights
    spacing: jax.Array | None = None  # computed: largest neighbour distance

    def __post_init__(self):
        if self.points is not None:
            return  # rebuilt from leaves (tree_unflatten) or already computed
        if not callable(self.chart):
            raise ValueError("chart must be a callable theta (m,) -> point (d,)")
        if self.measure not in ("area", "parameter"):
            raise ValueError(f"measure must be 'area' or 'parameter', got {self.measure!r}")
        check_on_coarse(self.on_coarse)
        if not _checks.is_concrete(jnp.asarray(self.domain)):
            raise ValueError("domain must be concrete (the nodes are built at construction)")
        domain = np.asarray(self.domain, np.float64)
        if domain.ndim != 2 or domain.shape[1] != 2 or domain.shape[0] < 1:
            raise ValueError(f"domain must have shape (m, 2), got {domain.shape}")
        if not np.all(np.isfinite(domain)) or np.any(domain[:, 1] <= domain[:, 0]):
            raise ValueError(f"domain rows must be finite [lo, hi] with lo < hi, got {domain}")
        m = domain.shape[0]
        nodes = (self.nodes,) * m if isinstance(self.nodes, (int, np.integer)) else \
            tuple(self.nodes)
        periodic = (self.periodic,) * m if isinstance(self.periodic, bool) else \
            tuple(self.periodic)
        if len(nodes) != m or any(not isinstance(n, (int, np.integer)) or n < 2 for n in nodes):
            raise ValueError(f"nodes must be an int >= 2 or a tuple of {m} of them, got "
                             f"{self.nodes!r}")
        if len(periodic) != m:
            raise ValueError(f"periodic must be a bool or a tuple of {m}, got {self.periodic!r}")
        rules = [axis_rule(lo, hi, n, p)
                 for (lo, hi), n, p in zip(domain, nodes, periodic, strict=True)]
        shape = tuple(len(t) for t, _ in rules)
        grids = np.meshgrid(*[t for t, _ in rules], indexing="ij")
        wgrid = np.meshgrid(*[w for _, w in rules], indexing="ij")
        dtype = jnp.result_type(float)
        params = jnp.asarray(np.stack([g.reshape(-1) for g in grids], -1), dtype)
        log_w = jnp.asarray(sum(np.log(w.reshape(-1)) for w in wgrid), dtype)
        out = jax.eval_shape(jax.vmap(self.chart), params)
        if len(out.shape) != 2:
            raise ValueError(f"chart must map (m,) to (d,), got output shape {out.shape[1:]}")
        points, log_w = _chart_nodes(self.chart, self.log_density, self.measure == "area",
                                     params, log_w)
        grid_pts = np.asarray(points, np.float64).reshape(shape + (points.shape[1],))
        gaps = []
        for axis, p in enumerate(periodic):
            nxt = np.roll(grid_pts, -1, axis) if p else np.take(
                grid_pts, np.arange(1, shape[axis]), axis)
            cur = grid_pts if p else np.take(grid_pts, np.arange(shape[axis] - 1), axis)
            gaps.append(np.max(np.linalg.norm(nxt - cur, axis=-1)))
        object.__setattr__(self, "domain", jnp.asarray(domain, dtype))
        object.__setattr__(self, "nodes", shape if m > 1 else shape[0])
        object.__setattr__(self, "periodic", periodic if m > 1 else periodic[0])
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "log_weights", log_w)
        object.__setattr__(self, "spacing", jnp.asarray(max(gaps), dtype))

    @property
    def dim(self) -> int:
        return self.points.shape[1]

    @property
    def intrinsic_dim(self) -> int:
        return self.params.shape[1]

    def _periodic_tuple(self):
        m = self.intrinsic_dim
        return (self.periodic,) * m if isinstance(self.periodic, bool) else tuple(self.periodic)

    def min_sigma(self, alpha=1.0) -> jax.Array:
        """The smallest sigma the grid resolves: ``alpha * spacing / max_spacing_ratio``."""
        return alpha * self.spacing / self.max_spacing_ratio

    def check_resolution(self, alpha, sigma) -> None:
        """Raise (or warn, per ``on_coarse``) if the grid is too coarse for ``sigma``."""
        check_spacing("Parametric", self.spacing, alpha, sigma, self.nodes,
                      self.max_spacing_ratio, self.on_coarse)

    def stats(self, x, alpha, sigma) -> MixtureStats:
        """``(log p, score, E[X|x], tr Cov[X|x])`` of the quadrature mixture."""
        _checks.check_point(x, self.dim)
        alpha, sigma = _checks.check_noise_levels(alpha, sigma)
        self.check_resolution(alpha, sigma)
        return self._stats(x, alpha, sigma)

    @jax.jit
    def _stats(self, x, alpha, sigma) -> MixtureStats:
        return mixtures.isotropic(x, self.points, self.log_weights, alpha, sigma,
                                  chunk_size=self.chunk_size)

    @functools.partial(jax.jit, static_argnames="n")
    def sample(self, key, n: int) -> jax.Array:
        """``n`` points: a node drawn by weight, its parameters jittered within the cell."""
        lo, hi = self.domain[:, 0], self.domain[:, 1]
        cell = (hi - lo) / jnp.asarray(
            self.nodes if isinstance(self.nodes, tuple) else (self.nodes,), lo.dtype)

        def one(kk):
            k1, k2 = jax.random.split(kk)
            i = jax.random.categorical(k1, self.log_weights)
            jitter = (jax.random.uniform(k2, lo.shape, lo.dtype) - 0.5) * cell
            return self._wrap(self.params[i] + jitter)

        return jax.vmap(lambda kk: self.chart(one(kk)))(jax.random.split(key, n))

    def _wrap(self, theta):
        lo, hi = self.domain[:, 0], self.domain[:, 1]
        periodic = jnp.asarray(self._periodic_tuple())
        wrapped = lo + jnp.mod(theta - lo, hi - lo)
        return jnp.where(periodic, wrapped, jnp.clip(theta, lo, hi))

    @functools.partial(jax.jit, static_argnames="steps")
    def coordinates(self, x, steps: int = 30) -> jax.Array:
        """Parameters of the nearest point: nearest node, then clipped Gauss-Newton steps."""
        _checks.check_point(x, self.dim)
        diff = self.points - x
        theta = self.params[jnp.argmin(jnp.sum(diff * diff, -1))]
        lo, hi = self.domain[:, 0], self.domain[:, 1]
        cell = (hi - lo) / jnp.asarray(
            self.nodes if isinstance(self.nodes, tuple) else (self.nodes,), lo.dtype)

        def step(_, th):
            jac = jax.jacfwd(self.chart)(th)
            res = x - self.chart(th)
            gram = jnp.dot(jac.T, jac, precision=HIGHEST)
            delta = jnp.linalg.solve(gram, jnp.dot(jac.T, res, precision=HIGHEST))
            return self._wrap(th + jnp.clip(delta, -cell, cell))

        return lax.fori_loop(0, steps, step, theta)

    def project(self, x) -> jax.Array:
        """Nearest point ``chart(coordinates(x))``."""
        return self.chart(self.coordinates(x))

    def distance(self, x) -> jax.Array:
        """``|x - project(x)|``."""
        return safe_norm(x - self.project(x))[1]

    def tangent_basis(self, x) -> jax.Array:
        """``(d, m)`` orthonormal basis of the chart's tangent space at the nearest point."""
        jac = jax.jacfwd(self.chart)(self.coordinates(x))
        return jnp.linalg.qr(jac)[0]

    def normal_projector(self, x) -> jax.Array:
        """``(d, d)`` orthogonal projector onto the normal space at :meth:`project` ``(x)``."""
        return normal_projector_from_tangent(self.tangent_basis(x))

__dir__ = _public_dir(__all__)

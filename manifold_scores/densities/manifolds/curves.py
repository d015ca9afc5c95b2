"""Curves and surfaces integrated by quadrature: :class:`Ellipse` (arc-length or von Mises law)
and :class:`SwissRoll` (the height in closed form, the roll parameter by Gauss-Legendre panels).

Their noised laws are weighted isotropic Gaussian mixtures over the quadrature nodes, evaluated
by :func:`manifold_scores.mixtures.isotropic`; a grid too coarse for ``sigma`` is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import log_ndtr, logsumexp

from manifold_scores import _checks, mixtures
from manifold_scores._api import public_dir as _public_dir
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.densities.base import Density
from manifold_scores.densities.manifolds._geometry import (
    HIGHEST,
    LOG_2PI,
    check_inputs,
    make_centre,
    make_frame,
    nonnegative_scalar,
    normal_projector_from_tangent,
    positive_scalar,
    safe_norm,
)
from manifold_scores.densities.manifolds._quadrature import (
    check_on_coarse,
    check_spacing,
    curve_tangent,
    panel_rule,
    project_curve,
)
from manifold_scores.densities.manifolds._vmf import sample_vmf
from manifold_scores.mixtures import MixtureStats

__all__ = ["Ellipse", "SwissRoll"]


@pytree_dataclass
class Ellipse(Density):
    """A law on an ellipse ``c + Q (a cos t, b sin t)`` in a plane of ``R^d``, by quadrature.

    Two laws: uniform in arc length (``kappa=None``; density of ``t`` proportional to the speed
    ``sqrt(a^2 sin^2 t + b^2 cos^2 t)``) or von Mises in the parameter angle ``t``
    (``exp(kappa cos(t - mu))``). The noised law is the isotropic mixture over ``nodes``
    equispaced angles with weights ``p(t_i) 2 pi / nodes`` (the periodic trapezoid rule,
    spectrally accurate): exact to ~1e-8 while ``alpha max(a, b) 2 pi / nodes <= sigma``; a
    coarser grid is refused or warned about (``on_coarse``).

    Args:
        axes: semi-axes ``(a, b)``, both positive.
        dim: ambient dimension ``d >= 2`` (static).
        kappa: ``None`` for the arc-length law, else the von Mises concentration ``>= 0``.
        mu: von Mises mean angle (ignored for the arc-length law).
        nodes: quadrature nodes (static).
        frame, centre, key: as in :class:`Circle`.
        on_coarse: ``"raise"``, ``"warn"`` or ``"ignore"`` a grid too coarse for sigma (static).
        chunk_size: nodes per streamed chunk of the mixture kernel (static).

    Example:
        >>> import jax, jax.numpy as jnp, manifold_scores as ms
        >>> ell = ms.Ellipse(axes=(2.0, 1.0))
        >>> float(ell.distance(jnp.array([0.0, 3.0])))
        2.0
    """

    axes: jax.Array | tuple = (2.0, 1.0)
    dim: int = static_field(default=2)
    kappa: jax.Array | float | None = None
    mu: jax.Array | float = 0.0
    nodes: int = static_field(default=4096)
    frame: jax.Array | None = None
    centre: jax.Array | None = None
    on_coarse: str = static_field(default="raise")
    chunk_size: int | None = static_field(default=mixtures.DEFAULT_CHUNK_SIZE)
    key: dataclasses.InitVar[jax.Array | None] = None

    intrinsic_dim = 1

    def __post_init__(self, key):
        if not isinstance(self.nodes, (int, np.integer)) or self.nodes < 8:
            raise ValueError(f"nodes must be an integer >= 8, got {self.nodes!r}")
        check_on_coarse(self.on_coarse)
        axes = _checks.as_float_array(self.axes, "axes")
        if axes.shape != (2,):
            raise ValueError(f"axes must have shape (2,) (the semi-axes a, b), got {axes.shape}")
        _checks.check_positive(axes, "axes")
        dtype = _checks.float_dtype(self.frame, self.centre, axes)
        frame = make_frame(self.dim, 2, self.frame, key, dtype)
        object.__setattr__(self, "frame", frame)
        object.__setattr__(self, "centre", make_centre(self.dim, self.centre, frame.dtype))
        object.__setattr__(self, "axes", axes.astype(frame.dtype))
        if self.kappa is not None:
            object.__setattr__(self, "kappa", nonnegative_scalar(self.kappa, "kappa", dtype))
        mu = _checks.as_float_array(self.mu, "mu")
        _checks.check_scalar(mu, "mu")
        object.__setattr__(self, "mu", mu.astype(frame.dtype))

    @property
    def spacing(self) -> jax.Array:
        """Largest distance between neighbouring nodes (at most ``max(a, b) 2 pi / nodes``)."""
        return jnp.max(self.axes) * (2.0 * math.pi / self.nodes)

    def min_sigma(self, alpha=1.0) -> jax.Array:
        """The smallest sigma the grid resolves exactly: ``alpha * spacing``."""
        return alpha * self.spacing

    def _plane(self, t):
        return self.axes * jnp.stack([jnp.cos(t), jnp.sin(t)], -1)

    def point(self, t) -> jax.Array:
        """The point at parameter angle ``t``."""
        t = jnp.asarray(t, self.frame.dtype)
        return self.centre + jnp.dot(self._plane(t), self.frame.T, precision=HIGHEST)

    def _log_density_unnormalised(self, t):
        if self.kappa is None:
            a, b = self.axes[0], self.axes[1]
            return 0.5 * jnp.log((a * jnp.sin(t)) ** 2 + (b * jnp.cos(t)) ** 2)
        return self.kappa * jnp.cos(t - self.mu)

    def _nodes(self, dtype):
        t = jnp.arange(self.nodes, dtype=dtype) * (2.0 * math.pi / self.nodes)
        lw = self._log_density_unnormalised(t).astype(dtype)
        return t, lw - logsumexp(lw)

    def log_prob_angle(self, t) -> jax.Array:
        """Clean log density of the parameter angle ``t`` w.r.t. ``dt`` (normalised by the rule)."""
        nodes = jnp.arange(self.nodes, dtype=self.frame.dtype) * (2.0 * math.pi / self.nodes)
        log_norm = logsumexp(self._log_density_unnormalised(nodes))
        return self._log_density_unnormalised(t) - log_norm - math.log(2.0 * math.pi / self.nodes)

    def stats(self, x, alpha, sigma) -> MixtureStats:
        """``(log p, score, E[X|x], tr Cov[X|x])`` of the quadrature mixture."""
        x, alpha, sigma = check_inputs(self, x, alpha, sigma)
        check_spacing("Ellipse", self.spacing, alpha, sigma, self.nodes, 1.0, self.on_coarse)
        return self._stats(x, alpha, sigma)

    @jax.jit
    def _stats(self, x, alpha, sigma) -> MixtureStats:
        t, lw = self._nodes(x.dtype)
        pts = self.centre.astype(x.dtype) + jnp.dot(
            self._plane(t).astype(x.dtype), self.frame.astype(x.dtype).T, precision=HIGHEST)
        return mixtures.isotropic(x, pts, lw, alpha, sigma, chunk_size=self.chunk_size)

    @functools.partial(jax.jit, static_argnames="n")
    def sample(self, key, n: int) -> jax.Array:
        """``n`` exact draws; one key per sample.

        Arc length: ``t`` uniform, accepted with probability ``speed(t) / max(a, b)``; von Mises:
        the Wood (1994) sampler.
        """
        dtype = self.frame.dtype
        if self.kappa is not None:
            mean_dir = jnp.stack([jnp.cos(self.mu), jnp.sin(self.mu)]).astype(dtype)
            kappa = jnp.asarray(self.kappa, dtype)
            plane = jax.vmap(lambda kk: sample_vmf(kk, mean_dir, kappa, 2, dtype))(
                jax.random.split(key, n))
            return self.point(jnp.arctan2(plane[:, 1], plane[:, 0]))
        a, b = self.axes[0], self.axes[1]
        top = jnp.maximum(a, b)

        def one(kk):
            def body(state):
                key, _, _ = state
                key, k1, k2 = jax.random.split(key, 3)
                t = jax.random.uniform(k1, (), dtype, 0.0, 2.0 * math.pi)
                speed = jnp.sqrt((a * jnp.sin(t)) ** 2 + (b * jnp.cos(t)) ** 2)
                return key, t, jax.random.uniform(k2, (), dtype) * top <= speed

            init = (kk, jnp.zeros((), dtype), jnp.array(False))
            return lax.while_loop(lambda st: ~st[2], body, init)[1]

        return self.point(jax.vmap(one)(jax.random.split(key, n)))

    @jax.jit
    def angle(self, x) -> jax.Array:
        """Parameter angle ``t`` of the nearest point of ``x`` (in ``[-pi, pi)``)."""
        _checks.check_point(x, self.dim)
        y = jnp.dot(self.frame.T, x - self.centre, precision=HIGHEST)
        t = project_curve(self._plane, y, -math.pi, math.pi, True, 1024)
        return jnp.mod(t + math.pi, 2.0 * math.pi) - math.pi

    def project(self, x) -> jax.Array:
        """Nearest point (grid search plus Newton steps in the angle)."""
        return self.point(self.angle(x))

    def distance(self, x) -> jax.Array:
        """``|x - project(x)|``."""
        diff = x - self.project(x)
        return safe_norm(diff)[1]

    def tangent_basis(self, x) -> jax.Array:
        """``(d, 1)`` unit tangent at the nearest point."""
        tan = curve_tangent(self._plane, self.angle(x))
        return jnp.dot(self.frame, tan, precision=HIGHEST)[:, None]

    def normal_projector(self, x) -> jax.Array:
        """``(d, d)`` orthogonal projector onto the normal space at :meth:`project` ``(x)``."""
        return normal_projector_from_tangent(self.tangent_basis(x))


# ---------------------------------------------------------------------------------------------
# Swiss roll: the height in closed form, the roll parameter by quadrature
# ---------------------------------------------------------------------------------------------


def _log_ndtr_diff(a, b):
    """``log(Phi(b) - Phi(a))`` for ``a < b``, from the tail where both are small."""
    upper = a + b > 0  # use Phi(-a) - Phi(-b) there
    hi = jnp.where(upper, -a, b)
    lo = jnp.where(upper, -b, a)
    l_hi, l_lo = log_ndtr(hi), log_ndtr(lo)
    return l_hi + jnp.log(-jnp.expm1(l_lo - l_hi))


_SEGMENT_GL = np.polynomial.legendre.leggauss(24)


def _segment(y, alpha, sigma, length):
    """Noised uniform law on a segment ``[0, L]``: ``alpha V + sigma Z`` with ``V ~ U(0, L)``.

    Returns ``(log p(y), d log p / dy, E[V|y], Var[V|y])``. When ``alpha L >= sigma`` the
    density is ``(Phi(b) - Phi(a)) / (alpha L)`` with ``a = -y/sigma``, ``b = (alpha L - y)/sigma``
    (log space, stable tails); below that the Gaussian is wider than the segment and a 24-node
    Gauss-Legendre rule in ``V`` is exact to rounding (it also covers ``alpha = 0``).
    """
    s2 = sigma * sigma
    wide = alpha * length >= sigma
    # closed form, at a safe alpha where it does not apply
    al = jnp.where(wide, alpha, sigma / length)
    a = -y / sigma
    b = (al * length - y) / sigma
    log_diff = _log_ndtr_diff(a, b)
    log_w = log_diff - jnp.log(al * length)
    half_log_2pi = 0.5 * LOG_2PI
    pa = jnp.exp(-0.5 * a * a - half_log_2pi - log_diff)  # phi(a) / (Phi(b) - Phi(a))
    pb = jnp.exp(-0.5 * b * b - half_log_2pi - log_diff)
    d_w = (pa - pb) / sigma
    dd_w = (a * pa - b * pb) / s2 - d_w * d_w
    mean_w = (y + s2 * d_w) / al
    var_w = jnp.maximum((s2 + s2 * s2 * dd_w) / (al * al), 0.0)
    # Gauss-Legendre in V
    g, gw = (jnp.asarray(v, y.dtype) for v in _SEGMENT_GL)
    v = 0.5 * length * (g + 1.0)
    diff = alpha * v - y
    logits = jnp.log(0.5 * gw) - diff * diff / (2.0 * s2) - 0.5 * jnp.log(2.0 * math.pi * s2)
    log_n = logsumexp(logits)
    post = jnp.exp(logits - log_n)
    mean_n = post @ v
    var_n = jnp.maximum(post @ (v * v) - mean_n * mean_n, 0.0)
    return (jnp.where(wide, log_w, log_n), jnp.where(wide, d_w, post @ diff / s2),
            jnp.where(wide, mean_w, mean_n), jnp.where(wide, var_w, var_n))



@pytree_dataclass
class SwissRoll(Density):
    """The swiss roll of scikit-learn's ``make_swiss_roll``, embedded in ``R^d``.

    ``X = c + s Q (t cos t, h, t sin t)`` with ``t in [t_min, t_max]`` (default
    ``[1.5 pi, 4.5 pi]``) and height ``h in [0, height]`` (default 21), ``s`` the ``scale``.
    Two laws: ``measure="parameter"`` (uniform in ``(t, h)``, as scikit-learn samples it) and
    ``measure="area"`` (uniform w.r.t. surface area, density in ``t`` proportional to
    ``sqrt(1 + t^2)``). The height is integrated in closed form (a difference of normal CDFs,
    in log space); ``t`` by composite Gauss-Legendre quadrature with ``nodes`` nodes, exact to
    ~1e-8 while ``alpha * spacing <= sigma`` (checked, see ``on_coarse``).

    Args:
        dim: ambient dimension ``d >= 3`` (static).
        scale: ``s > 0``, multiplies all coordinates.
        height: ``> 0``, the height range before scaling.
        t_min, t_max: the roll parameter's range, ``0 <= t_min < t_max``.
        measure: ``"parameter"`` or ``"area"`` (static).
        nodes: quadrature nodes in ``t`` (static).
        frame, centre, key: as in :class:`Sphere` (frame ``(d, 3)``; column 2 is the height).
        on_coarse: ``"raise"``, ``"warn"`` or ``"ignore"`` a grid too coarse for sigma (static).
        chunk_size: nodes per streamed chunk of the mixture kernel (static).

    Example:
        >>> import jax, manifold_scores as ms
        >>> roll = ms.SwissRoll(scale=0.1, measure="area")
        >>> x = roll.sample(jax.random.key(0), 2)
        >>> jax.vmap(roll.score, (0, None, None))(x, 1.0, 0.1).shape
        (2, 3)
    """

    dim: int = static_field(default=3)
    scale: jax.Array | float = 1.0
    height: jax.Array | float = 21.0
    t_min: jax.Array | float = 1.5 * math.pi
    t_max: jax.Array | float = 4.5 * math.pi
    measure: str = static_field(default="parameter")
    nodes: int = static_field(default=8192)
    frame: jax.Array | None = None
    centre: jax.Array | None = None
    on_coarse: str = static_field(default="raise")
    chunk_size: int | None = static_field(default=mixtures.DEFAULT_CHUNK_SIZE)
    key: dataclasses.InitVar[jax.Array | None] = None

    intrinsic_dim = 2

    def __post_init__(self, key):
        if self.measure not in ("area", "parameter"):
            raise ValueError(f"measure must be 'area' or 'parameter', got {self.measure!r}")
        if not isinstance(self.nodes, (int, np.integer)) or self.nodes < 16:
            raise ValueError(f"nodes must be an integer >= 16, got {self.nodes!r}")
        check_on_coarse(self.on_coarse)
        dtype = _checks.float_dtype(self.frame, self.centre, self.scale, self.height)
        frame = make_frame(self.dim, 3, self.frame, key, dtype)
        object.__setattr__(self, "frame", frame)
        object.__setattr__(self, "centre", make_centre(self.dim, self.centre, frame.dtype))
        for name in ("scale", "height"):
            object.__setattr__(self, name, positive_scalar(getattr(self, name), name, dtype))
        t_min = nonnegative_scalar(self.t_min, "t_min", dtype)
        t_max = positive_scalar(self.t_max, "t_max", dtype)
        if _checks.is_concrete(t_min) and _checks.is_concrete(t_max) and t_max <= t_min:
            raise ValueError(f"t_max must exceed t_min, got t_min={t_min}, t_max={t_max}")
        object.__setattr__(self, "t_min", t_min)
        object.__setattr__(self, "t_max", t_max)

    @property
    def spacing(self) -> jax.Array:
        """Largest distance between neighbouring nodes: top speed times the largest ``t`` gap."""
        gap = panel_rule(self.nodes)[2] * (self.t_max - self.t_min)
        return self.scale * jnp.sqrt(1.0 + self.t_max**2) * gap

    def min_sigma(self, alpha=1.0) -> jax.Array:
        """The smallest sigma the grid resolves exactly: ``alpha * spacing``."""
        return alpha * self.spacing

    def _roll(self, t):
        """In-frame coordinates ``s (t cos t, 0, t sin t)``."""
        zero = jnp.zeros_like(t)
        return self.scale * jnp.stack([t * jnp.cos(t), zero, t * jnp.sin(t)], -1)

    def _log_density_t(self, t):
        if self.measure == "area":
            return 0.5 * jnp.log1p(t * t)
        return jnp.zeros_like(t)

    def _nodes(self, dtype):
        u, w, _ = panel_rule(self.nodes)
        t_min, t_max = jnp.asarray(self.t_min, dtype), jnp.asarray(self.t_max, dtype)
        t = t_min + (t_max - t_min) * jnp.asarray(u, dtype)
        lw = jnp.log(jnp.asarray(w, dtype)) + self._log_density_t(t)
        return t, lw - logsumexp(lw)

    def point(self, t, h) -> jax.Array:
        """The point at roll parameter ``t`` and height ``h`` (before scaling)."""
        y = self._roll(jnp.asarray(t, self.frame.dtype)) + jnp.stack(
            [0.0, self.scale * h, 0.0]).astype(self.frame.dtype)
        return self.centre + jnp.dot(self.frame, y, precision=HIGHEST)

    def stats(self, x, alpha, sigma) -> MixtureStats:
        """``(log p, score, E[X|x], tr Cov[X|x])``: height closed form, quadrature in ``t``."""
        x, alpha, sigma = check_inputs(self, x, alpha, sigma)
        check_spacing("SwissRoll", self.spacing, alpha, sigma, self.nodes, 1.0,
                      self.on_coarse)
        return self._stats(x, alpha, sigma)

    @jax.jit
    def _stats(self, x, alpha, sigma) -> MixtureStats:
        q = self.frame.astype(x.dtype)
        z = x - alpha * self.centre.astype(x.dtype)
        axis = q[:, 1]
        y_h = jnp.dot(axis, z, precision=HIGHEST)
        z_roll = z - y_h * axis  # nodes have no height component, so it separates
        t, lw = self._nodes(x.dtype)
        pts = jnp.dot(self._roll(t).astype(x.dtype), q.T, precision=HIGHEST)
        mix = mixtures.isotropic(z_roll, pts, lw, alpha, sigma, chunk_size=self.chunk_size)
        length = (self.scale * self.height).astype(x.dtype)
        log_h, d_h, mean_h, var_h = _segment(y_h, alpha, sigma, length)
        # the mixture counted the height direction as N(0; 0, sigma^2); swap in the segment law
        log_p = mix.log_prob + 0.5 * (LOG_2PI + 2.0 * jnp.log(sigma)) + log_h
        score = mix.score + d_h * axis
        mean = self.centre.astype(x.dtype) + mix.mean + mean_h * axis
        return MixtureStats(log_p, score, mean, mix.cov_trace + var_h)

    @functools.partial(jax.jit, static_argnames="n")
    def sample(self, key, n: int) -> jax.Array:
        """``n`` exact draws: ``h`` uniform; ``t`` uniform, for the area law accepted with
        probability ``sqrt(1 + t^2) / sqrt(1 + t_max^2)``."""
        dtype = self.frame.dtype
        t_min, t_max = jnp.asarray(self.t_min, dtype), jnp.asarray(self.t_max, dtype)

        def uniform_t(kk):
            return jax.random.uniform(kk, (), dtype, t_min, t_max)

        if self.measure == "parameter":
            draw_t = uniform_t
        else:
            def draw_t(kk):
                def body(state):
                    key, _, _ = state
                    key, k1, k2 = jax.random.split(key, 3)
                    t = uniform_t(k1)
                    u = jax.random.uniform(k2, (), dtype)
                    return key, t, u * jnp.sqrt(1.0 + t_max**2) <= jnp.sqrt(1.0 + t * t)

                init = (kk, jnp.zeros((), dtype), jnp.array(False))
                return lax.while_loop(lambda st: ~st[2], body, init)[1]

        def one(kk):
            k1, k2 = jax.random.split(kk)
            return self.point(draw_t(k1), jax.random.uniform(k2, (), dtype) * self.height)

        return jax.vmap(one)(jax.random.split(key, n))

    @jax.jit
    def coordinates(self, x) -> jax.Array:
        """``(t, h)`` of the nearest point."""
        _checks.check_point(x, self.dim)
        y = jnp.dot(self.frame.T, x - self.centre, precision=HIGHEST)
        h = jnp.clip(y[1] / self.scale, 0.0, self.height)
        plane = jnp.stack([y[0], y[2]])

        def curve(t):
            r = self._roll(t)
            return jnp.stack([r[0], r[2]])

        t = project_curve(curve, plane, self.t_min, self.t_max, False, 4096)
        return jnp.stack([t, h])

    def project(self, x) -> jax.Array:
        """Nearest point: ``h`` clipped, ``t`` by grid search plus Newton steps."""
        th = self.coordinates(x)
        return self.point(th[0], th[1])

    def distance(self, x) -> jax.Array:
        """``|x - project(x)|``."""
        return safe_norm(x - self.project(x))[1]

    def tangent_basis(self, x) -> jax.Array:
        """``(d, 2)``: the roll direction and the height direction at the nearest point."""
        t = self.coordinates(x)[0]
        tan = curve_tangent(self._roll, t)
        e_h = jnp.zeros((3,), tan.dtype).at[1].set(1.0)
        return jnp.dot(self.frame, jnp.stack([tan, e_h], 1), precision=HIGHEST)

    def normal_projector(self, x) -> jax.Array:
        """``(d, d)`` orthogonal projector onto the normal space at :meth:`project` ``(x)``."""
        return normal_projector_from_tangent(self.tangent_basis(x))

__dir__ = _public_dir(__all__)

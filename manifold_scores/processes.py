"""Noising processes ``x_t = alpha(t) x_0 + sigma(t) eps``.

Every density in the library works at ``(alpha, sigma)``; a process only turns a time ``t`` into
that pair, and supplies the SDE coefficients

    f(t) = d log alpha / dt,        g(t)^2 = d sigma^2 / dt - 2 f(t) sigma(t)^2,

so that ``dx = f x dt + g dW`` has the marginals above, and the log signal-to-noise ratio
``lambda(t) = log(alpha^2 / sigma^2)`` with its inverse (used by DPM-Solver and log-SNR grids).

Example:
    >>> import manifold_scores as ms
    >>> proc = ms.VP(beta_min=0.1, beta_max=20.0)
    >>> a, s = proc.alpha(0.5), proc.sigma(0.5)
    >>> bool(abs(a**2 + s**2 - 1) < 1e-6)
    True
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from manifold_scores import _checks
from manifold_scores._api import public_dir as _public_dir
from manifold_scores._pytree import pytree_dataclass

__all__ = ["Process", "VE", "VP", "CosineVP", "EDM", "Flow"]


class Process:
    """Protocol shared by the processes; subclasses define the closed forms.

    Attributes ``t_min`` and ``t_max`` give the default time interval used by samplers.
    :attr:`time_domain` is the open interval of times where ``sigma > 0``, ``alpha > 0`` and the
    SDE coefficients are finite; :meth:`check_interval` validates a sampler's interval against
    it (eagerly, when the values are concrete).
    """

    t_min: float
    t_max: float
    #: ``(lo, hi, lo_inclusive)``: valid times satisfy ``lo < t < hi`` (``lo <= t`` if inclusive).
    time_domain: tuple[float, float, bool] = (0.0, math.inf, False)

    def check_time(self, t, name: str = "t") -> None:
        """Raise ``ValueError`` naming ``name`` unless ``t`` lies in :attr:`time_domain`
        (traced values are skipped)."""
        if not _checks.is_concrete(t):
            return
        lo, hi, inclusive = self.time_domain
        value = float(t)
        below = value < lo if inclusive else value <= lo
        if not math.isfinite(value) or below or value >= hi:
            left = "[" if inclusive else "("
            raise ValueError(f"{name} must lie in {left}{lo:g}, {hi:g}) for "
                             f"{type(self).__name__}, got {value:g}")

    def check_interval(self, t_min, t_max) -> None:
        """Raise ``ValueError`` unless ``t_min < t_max`` both lie in :attr:`time_domain`.

        Traced values are skipped (a sampler checks ``sigma > 0`` on its grid at run time).
        """
        self.check_time(t_min, "t_min")
        self.check_time(t_max, "t_max")
        if _checks.is_concrete(t_min) and _checks.is_concrete(t_max) and \
                not float(t_min) < float(t_max):
            raise ValueError(f"t_min must be < t_max, got t_min={float(t_min):g}, "
                             f"t_max={float(t_max):g}")

    def alpha(self, t):
        raise NotImplementedError

    def sigma(self, t):
        raise NotImplementedError

    def drift(self, t):
        """``f(t) = d log alpha / dt``."""
        raise NotImplementedError

    def diffusion(self, t):
        """``g(t) = sqrt(d sigma^2/dt - 2 f sigma^2)``."""
        return jnp.sqrt(self.diffusion_squared(t))

    def diffusion_squared(self, t):
        raise NotImplementedError

    def log_snr(self, t):
        """``lambda(t) = log(alpha(t)^2 / sigma(t)^2)``."""
        return 2.0 * (jnp.log(self.alpha(t)) - jnp.log(self.sigma(t)))

    def t_from_sigma(self, sigma):
        raise NotImplementedError(f"{type(self).__name__} has no inverse of sigma(t)")

    def t_from_log_snr(self, log_snr):
        raise NotImplementedError(f"{type(self).__name__} has no inverse of log_snr(t)")

    def coefficients(self, t):
        """``(alpha(t), sigma(t))`` in one call."""
        return self.alpha(t), self.sigma(t)


def _positive(obj, *names):
    """Constructor check: the named fields are positive and finite (when concrete)."""
    for name in names:
        value = getattr(obj, name)
        if _checks.is_concrete(value) and (not math.isfinite(float(value)) or float(value) <= 0):
            raise ValueError(f"{type(obj).__name__}: {name} must be positive and finite, got "
                             f"{float(value)}")


def _ordered(obj, lo_name, hi_name, strict=True):
    lo, hi = getattr(obj, lo_name), getattr(obj, hi_name)
    if _checks.is_concrete(lo) and _checks.is_concrete(hi):
        ok = float(lo) < float(hi) if strict else float(lo) <= float(hi)
        if not ok:
            raise ValueError(f"{type(obj).__name__}: {lo_name} must be "
                             f"{'<' if strict else '<='} {hi_name}, got {lo_name}={float(lo)}, "
                             f"{hi_name}={float(hi)}")


def _default_interval(obj):
    """The default ``(t_min, t_max)`` must be a valid interval of the process itself."""
    obj.check_interval(obj.t_min, obj.t_max)


def _t(t):
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.result_type(float))
    return t


@pytree_dataclass
class VE(Process):
    """Variance exploding: ``alpha = 1``, ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t_min: float = 0.0
    t_max: float = 1.0
    time_domain = (0.0, math.inf, True)  # sigma(0) = sigma_min > 0

    def __post_init__(self):
        _positive(self, "sigma_min", "sigma_max")
        _ordered(self, "sigma_min", "sigma_max")
        _default_interval(self)

    def _log_ratio(self):
        return jnp.log(self.sigma_max) - jnp.log(self.sigma_min)

    def alpha(self, t):
        return jnp.ones_like(_t(t))

    def sigma(self, t):
        return self.sigma_min * jnp.exp(_t(t) * self._log_ratio())

    def drift(self, t):
        return jnp.zeros_like(_t(t))

    def diffusion_squared(self, t):
        return 2.0 * self._log_ratio() * self.sigma(t) ** 2

    def log_snr(self, t):
        return -2.0 * jnp.log(self.sigma(t))

    def t_from_sigma(self, sigma):
        return (jnp.log(sigma) - jnp.log(self.sigma_min)) / self._log_ratio()

    def t_from_log_snr(self, log_snr):
        return self.t_from_sigma(jnp.exp(-0.5 * log_snr))


@pytree_dataclass
class VP(Process):
    """Variance preserving, linear ``beta``: ``alpha = exp(-B(t)/2)``, ``sigma^2 = 1 - alpha^2``.

    ``B(t) = beta_min t + (beta_max - beta_min) t^2 / 2``; ``f = -beta(t)/2``, ``g^2 = beta(t)``.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-3
    t_max: float = 1.0

    def __post_init__(self):
        _positive(self, "beta_min", "beta_max")
        _ordered(self, "beta_min", "beta_max", strict=False)
        _default_interval(self)

    def _integral(self, t):
        t = _t(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def _beta(self, t):
        return self.beta_min + (self.beta_max - self.beta_min) * _t(t)

    def alpha(self, t):
        return jnp.exp(-0.5 * self._integral(t))

    def sigma(self, t):
        # -expm1 keeps sigma accurate when B(t) is tiny (small t).
        return jnp.sqrt(-jnp.expm1(-self._integral(t)))

    def drift(self, t):
        return -0.5 * self._beta(t)

    def diffusion_squared(self, t):
        return self._beta(t)

    def log_snr(self, t):
        b = self._integral(t)
        return -b - jnp.log(-jnp.expm1(-b))

    def _t_from_integral(self, b):
        # Root of B(t) = b written as 2b / (beta_min + sqrt(...)): no cancellation as b -> 0.
        db = self.beta_max - self.beta_min
        return 2.0 * b / (self.beta_min + jnp.sqrt(self.beta_min**2 + 2.0 * db * b))

    def t_from_sigma(self, sigma):
        return self._t_from_integral(-jnp.log1p(-jnp.square(sigma)))

    def t_from_log_snr(self, log_snr):
        # sigma^2 = sigmoid(-lambda), so B = -log(1 - sigma^2) = softplus(-lambda).
        return self._t_from_integral(jax.nn.softplus(-log_snr))


@pytree_dataclass
class CosineVP(Process):
    """Cosine schedule (Nichol & Dhariwal): ``alpha = cos(theta(t)) / cos(theta(0))``.

    ``theta(t) = (t + s) / (1 + s) * pi / 2``, ``sigma^2 = 1 - alpha^2``; ``f = -theta' tan theta``,
    ``g^2 = -2 f``. Near ``t = 1`` every quantity is written through the complementary angle
    ``phi = pi/2 - theta = (1 - t) / (1 + s) * pi / 2``, formed from ``1 - t`` (exact in floating
    point near 1), so float32 keeps its relative precision where ``alpha -> 0``.
    """

    s: float = 0.008
    t_min: float = 1e-3
    t_max: float = 0.999
    time_domain = (0.0, 1.0, False)

    def __post_init__(self):
        _positive(self, "s")
        _default_interval(self)

    def _phi(self, t):
        return (1.0 - _t(t)) / (1.0 + self.s) * (0.5 * math.pi)

    def _theta(self, t):
        return (_t(t) + self.s) / (1.0 + self.s) * (0.5 * math.pi)

    def _theta0(self):
        return self.s / (1.0 + self.s) * (0.5 * math.pi)

    def alpha(self, t):
        return jnp.sin(self._phi(t)) / jnp.cos(self._theta0())

    def sigma(self, t):
        # 1 - alpha^2 = (cos^2 th0 - cos^2 th) / cos^2 th0
        #             = sin(th - th0) sin(th + th0) / cos^2 th0, accurate as alpha -> 1.
        th, th0 = self._theta(t), self._theta0()
        return jnp.sqrt(jnp.sin(th - th0) * jnp.sin(th + th0)) / jnp.cos(th0)

    def drift(self, t):
        # tan(theta) = 1 / tan(phi)
        return -(0.5 * math.pi) / (1.0 + self.s) / jnp.tan(self._phi(t))

    def diffusion_squared(self, t):
        return -2.0 * self.drift(t)

    def _t_from(self, alpha, sigma):
        # cos(theta) = alpha cos(th0); sin(theta)^2 = sin^2 th0 + sigma^2 cos^2 th0: both sides
        # accurate, so atan2 is well conditioned at either end of the interval.
        c0, s0 = jnp.cos(self._theta0()), jnp.sin(self._theta0())
        th = jnp.arctan2(jnp.sqrt(s0 * s0 + jnp.square(sigma) * c0 * c0), alpha * c0)
        return th * (1.0 + self.s) / (0.5 * math.pi) - self.s

    def t_from_sigma(self, sigma):
        sigma = jnp.asarray(sigma)
        return self._t_from(jnp.sqrt((1.0 - sigma) * (1.0 + sigma)), sigma)

    def t_from_log_snr(self, log_snr):
        return self._t_from(jnp.sqrt(jax.nn.sigmoid(log_snr)), jnp.sqrt(jax.nn.sigmoid(-log_snr)))


@pytree_dataclass
class EDM(Process):
    """Karras et al. (2022): ``alpha = 1``, ``sigma = t``; ``f = 0``, ``g^2 = 2 t``."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def __post_init__(self):
        _positive(self, "sigma_min", "sigma_max")
        _ordered(self, "sigma_min", "sigma_max")

    @property
    def t_min(self):
        return self.sigma_min

    @property
    def t_max(self):
        return self.sigma_max

    def alpha(self, t):
        return jnp.ones_like(_t(t))

    def sigma(self, t):
        return _t(t)

    def drift(self, t):
        return jnp.zeros_like(_t(t))

    def diffusion_squared(self, t):
        return 2.0 * _t(t)

    def log_snr(self, t):
        return -2.0 * jnp.log(_t(t))

    def t_from_sigma(self, sigma):
        return jnp.asarray(sigma)

    def t_from_log_snr(self, log_snr):
        return jnp.exp(-0.5 * log_snr)


@pytree_dataclass
class Flow(Process):
    """Rectified-flow interpolation: ``alpha = 1 - t``, ``sigma = t``.

    ``f = -1 / (1 - t)``, ``g^2 = 2 t / (1 - t)``; singular at ``t = 1``, hence ``t_max < 1``.
    """

    t_min: float = 1e-3
    t_max: float = 0.999
    time_domain = (0.0, 1.0, False)

    def __post_init__(self):
        _default_interval(self)

    def alpha(self, t):
        return 1.0 - _t(t)

    def sigma(self, t):
        return _t(t)

    def drift(self, t):
        return -1.0 / (1.0 - _t(t))

    def diffusion_squared(self, t):
        t = _t(t)
        return 2.0 * t / (1.0 - t)

    def t_from_sigma(self, sigma):
        return jnp.asarray(sigma)

    def t_from_log_snr(self, log_snr):
        # lambda = 2 log((1 - t) / t)  =>  t = sigmoid(-lambda / 2)
        return jax.nn.sigmoid(-0.5 * log_snr)

__dir__ = _public_dir(__all__)

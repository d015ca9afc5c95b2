"""A Flax MLP score network with a noise embedding and EDM-style preconditioning.

With ``sigma~ = sigma / alpha`` (the variance-exploding noise of ``x / alpha``) the network
``F`` enters the denoiser as in Karras et al. (2022, "Elucidating the design space of
diffusion-based generative models"):

    D(x, t) = c_skip x / alpha + c_out F(c_in x / alpha, c_noise),
    c_skip = sd^2 / (sigma~^2 + sd^2),  c_out = sigma~ sd / sqrt(sigma~^2 + sd^2),
    c_in = 1 / sqrt(sigma~^2 + sd^2),   c_noise = log(sigma~) / 4,

and ``D`` is converted to the requested target (``"score"``, ``"eps"``, ``"x0"``, ``"v"``).
Without preconditioning the network output is the target itself, with inputs ``x`` and
``c_noise``. The noise level enters through random Fourier features of ``c_noise``.

Example:
    >>> import jax, jax.numpy as jnp, manifold_scores as ms
    >>> from manifold_scores.models import mlp
    >>> p = mlp.init(jax.random.key(0), dim=2, process=ms.VE(), width=16, depth=2)
    >>> mlp.apply(p, jnp.ones(2), 0.5).shape
    (2,)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from manifold_scores._api import public_dir as _public_dir
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.losses import _check_count, _check_process
from manifold_scores.models._edm import noise_embedding, predict
from manifold_scores.scores import PARAMETERISATIONS

__all__ = ["MLPParams", "Net", "init", "apply"]


class Net(nn.Module):
    """``F(x, c_noise)``: Fourier embedding of ``c_noise``, ``depth`` SiLU layers of ``width``."""

    dim: int
    width: int = 128
    depth: int = 3
    emb_dim: int = 32
    emb_scale: float = 4.0

    @nn.compact
    def __call__(self, x, c_noise):
        emb = noise_embedding(self, c_noise, self.emb_dim, self.emb_scale, x.dtype)
        emb = nn.silu(nn.Dense(self.width, param_dtype=x.dtype)(emb))
        h = nn.Dense(self.width, param_dtype=x.dtype)(x)
        for _ in range(self.depth):
            h = nn.silu(h + nn.Dense(self.width, param_dtype=x.dtype)(emb))
            h = nn.Dense(self.width, param_dtype=x.dtype)(h)
        h = nn.silu(h)
        return nn.Dense(self.dim, param_dtype=x.dtype, kernel_init=nn.initializers.zeros)(h)


@pytree_dataclass
class MLPParams:
    """Network variables (the leaves) and the static configuration."""

    variables: Any
    dim: int = static_field()
    process: Any = static_field()
    width: int = static_field(default=128)
    depth: int = static_field(default=3)
    emb_dim: int = static_field(default=32)
    target: str = static_field(default="score")
    precondition: bool = static_field(default=True)
    sigma_data: float = static_field(default=0.5)

    def net(self) -> Net:
        return Net(self.dim, self.width, self.depth, self.emb_dim)


def init(key, dim: int, process, *, width: int = 128, depth: int = 3, emb_dim: int = 32,
         target: str = "score", precondition: bool = True, sigma_data: float = 0.5,
         dtype=None) -> MLPParams:
    """Initial parameters; the last layer starts at zero (so ``D = c_skip x`` at first).

    ``emb_dim`` is the size of the Fourier embedding of the noise level (sines and cosines of
    ``emb_dim / 2`` frequencies): even and at least 2. ``process`` turns ``t`` into
    ``(alpha, sigma)`` in :func:`apply`.
    """
    if target not in PARAMETERISATIONS:
        raise ValueError(f"target must be one of {PARAMETERISATIONS}, got {target!r}")
    _check_process(process)
    for name, value, least in (("dim", dim, 1), ("width", width, 1), ("depth", depth, 0)):
        _check_count(value, name, least)
    if _check_count(emb_dim, "emb_dim", 2) % 2:
        raise ValueError(f"emb_dim must be an even integer >= 2 (sines and cosines of "
                         f"emb_dim / 2 frequencies), got {emb_dim!r}")
    dtype = dtype or jnp.result_type(float)
    net = Net(dim, width, depth, emb_dim)
    variables = net.init(key, jnp.zeros((dim,), dtype), jnp.zeros((), dtype))
    return MLPParams(variables, dim, process, width, depth, emb_dim, target, precondition,
                     float(sigma_data))


def apply(params: MLPParams, x, t):
    """The prediction in ``params.target`` at one point ``x`` (shape ``(d,)``) and time ``t``."""
    if jnp.shape(x) != (params.dim,):
        raise ValueError(f"x must have shape ({params.dim},), got {jnp.shape(x)}")
    net = params.net()
    return predict(params, lambda xi, c: net.apply(params.variables, xi, c), x, t)

__dir__ = _public_dir(__all__)

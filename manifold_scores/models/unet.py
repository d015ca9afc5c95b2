"""A Flax U-Net score network for images, with a noise embedding and EDM preconditioning.

The model follows the conventions of :mod:`~manifold_scores.models.mlp`: ``init(key, shape,
process, ...) -> UNetParams`` and ``apply(params, x, t)`` on *one flat point* ``x`` of shape
``(d,)`` with ``d = H * W * C`` (what the losses, ``fit``, :func:`~manifold_scores.models.bind`
and the samplers use: they ``vmap`` over points). ``apply`` reshapes ``x`` to the static image
``shape = (H, W, C)`` (row-major, as :mod:`manifold_scores.datasets` flattens images), runs the
network and flattens the result. With ``sigma~ = sigma / alpha`` the denoiser is (Karras,
Aittala, Aila, Laine, "Elucidating the design space of diffusion-based generative models",
arXiv 2206.00364)

    D(x, t) = c_skip x / alpha + c_out F(c_in x / alpha, c_noise),
    c_skip = sd^2 / (sigma~^2 + sd^2),  c_out = sigma~ sd / sqrt(sigma~^2 + sd^2),
    c_in = 1 / sqrt(sigma~^2 + sd^2),   c_noise = log(sigma~) / 4,

converted to the requested target (``"score"``, ``"eps"``, ``"x0"``, ``"v"``). At
``sigma -> 0``, ``c_skip -> 1`` and ``c_out -> 0``: the denoiser tends to the identity.

The network ``F`` (:class:`Net`): random Fourier features of ``c_noise`` (fixed frequencies)
through a two-layer SiLU MLP give the noise embedding; a 3 x 3 convolution lifts the image to
``channels[0]``; each resolution level ``l`` has ``blocks`` residual blocks of ``channels[l]``
channels (GroupNorm, SiLU, 3 x 3 convolution, plus a per-channel shift from the embedding,
GroupNorm, SiLU, 3 x 3 convolution, and a 1 x 1 skip where the width changes), then a 2 x 2
average pooling and a 3 x 3 convolution halve the resolution (not after the last level); two
residual blocks at the bottom; the decoder mirrors the encoder with ``blocks + 1`` blocks per
level that take the matching encoder activation concatenated (the U-Net skips), and a
nearest-neighbour doubling plus 3 x 3 convolution between levels; GroupNorm, SiLU and a
zero-initialised 3 x 3 convolution to ``C`` channels end it (so ``D = c_skip x / alpha`` at
initialisation, as for the MLP). The convolutions are :func:`conv2d` (fast gradients inside
the compiled training loop on CPU).

Two levels (the default ``channels=(32, 64)``) suit 8 x 8 images (8 x 8 then 4 x 4); three or
four levels (e.g. ``channels=(64, 128, 256)``) suit 32 x 32 on a GPU. ``H`` and ``W`` must be
divisible by ``2 ** (len(channels) - 1)``.

Example:
    >>> import jax, jax.numpy as jnp, manifold_scores as ms
    >>> from manifold_scores.models import unet
    >>> p = unet.init(jax.random.key(0), (8, 8, 1), ms.VE(), channels=(8, 16))
    >>> unet.apply(p, jnp.ones(64), 0.5).shape
    (64,)
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from manifold_scores._api import public_dir as _public_dir
from manifold_scores._pytree import pytree_dataclass, static_field
from manifold_scores.losses import _check_count, _check_process
from manifold_scores.models._edm import noise_embedding, preconditioning, predict
from manifold_scores.scores import PARAMETERISATIONS

__all__ = ["UNetParams", "Net", "apply", "conv2d", "init", "num_params", "preconditioning"]


_DIMS = ("NHWC", "HWIO", "NHWC")


def _patches(x, k: int):
    """``(N, H, W, k * k * C)``: the ``k x k`` neighbourhoods of every pixel (zero padding)."""
    p = k // 2
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    h, w = x.shape[1], x.shape[2]
    return jnp.concatenate([xp[:, dy:dy + h, dx:dx + w] for dy in range(k) for dx in range(k)],
                           -1)


@jax.custom_jvp
def conv2d(x, kernel):
    """``'SAME'`` stride-1 convolution of ``x`` (``(N, H, W, C)``) with ``kernel`` (``(k, k, C,
    O)``, odd ``k``): ``lax.conv_general_dilated`` forward, derivatives as matrix products.

    XLA:CPU runs the transposed convolutions of a gradient 10 to 40 times slower inside a
    ``lax.scan`` or ``while`` loop (such as :func:`manifold_scores.training.make_loop`) than
    outside one; the forward convolution is not affected. The tangent rule writes the
    convolution as neighbourhoods times a matrix, whose transposes are matrix products, pads
    and slices; forward mode (``jax.jvp``) works too.

    Known problem: on XLA:CPU (jax 0.10.2), ``jax.vmap(jax.jacfwd(...))`` of a whole U-Net over
    8 or more points returned values of order 1e31 where ``jax.jacrev``, ``jax.lax.map`` over
    the points, or fewer points agree with finite differences (a single convolution is
    right under the same transforms). Take Jacobians with ``jax.jacrev`` or one point at a
    time until this is resolved.
    """
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DIMS)


@conv2d.defjvp
def _conv2d_jvp(primals, tangents):
    x, kernel = primals
    dx, dk = tangents
    k, _, c, o = kernel.shape
    out = conv2d(x, kernel)
    mat = kernel.reshape(k * k * c, o)
    tan = _patches(dx, k) @ mat + _patches(x, k) @ dk.reshape(k * k * c, o)
    return out, tan


class _Conv(nn.Module):
    """A ``k x k`` ``'SAME'`` convolution with bias (the layout of ``flax.linen.Conv``)."""

    features: int
    k: int = 3
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (self.k, self.k, x.shape[-1],
                                                         self.features), x.dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), x.dtype)
        return conv2d(x, kernel) + bias


def _groups(channels: int, groups: int) -> int:
    """The largest divisor of ``channels`` not above ``groups`` (GroupNorm needs one)."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


class _ResBlock(nn.Module):
    channels: int
    groups: int

    @nn.compact
    def __call__(self, x, emb):
        dt = x.dtype
        h = nn.GroupNorm(_groups(x.shape[-1], self.groups), param_dtype=dt)(x)
        h = _Conv(self.channels)(nn.silu(h))
        h = h + nn.Dense(self.channels, param_dtype=dt)(emb)  # per-channel shift
        h = nn.GroupNorm(_groups(self.channels, self.groups), param_dtype=dt)(h)
        h = _Conv(self.channels)(nn.silu(h))
        if x.shape[-1] != self.channels:
            x = nn.Dense(self.channels, param_dtype=dt)(x)
        return (x + h) / math.sqrt(2.0)


class Net(nn.Module):
    """``F(x, c_noise)`` on one image ``x`` of shape ``(H, W, C)``; see the module docstring."""

    out_channels: int
    channels: tuple[int, ...] = (32, 64)
    blocks: int = 1
    emb_dim: int = 32
    emb_scale: float = 4.0
    groups: int = 8

    @nn.compact
    def __call__(self, x, c_noise):
        dt = x.dtype
        emb = noise_embedding(self, c_noise, self.emb_dim, self.emb_scale, dt)
        width = 4 * self.channels[0]
        emb = nn.silu(nn.Dense(width, param_dtype=dt)(emb))
        emb = nn.silu(nn.Dense(width, param_dtype=dt)(emb))

        h = _Conv(self.channels[0])(x[None])  # a batch of one
        skips = [h]
        last = len(self.channels) - 1
        for level, ch in enumerate(self.channels):
            for _ in range(self.blocks):
                h = _ResBlock(ch, self.groups)(h, emb)
                skips.append(h)
            if level < last:
                n, hh, ww, c = h.shape  # 2 x 2 average pooling, then a convolution
                h = _Conv(ch)(h.reshape(n, hh // 2, 2, ww // 2, 2, c).mean((2, 4)))
                skips.append(h)
        for _ in range(2):
            h = _ResBlock(self.channels[-1], self.groups)(h, emb)
        for level in range(last, -1, -1):
            ch = self.channels[level]
            for _ in range(self.blocks + 1):
                h = _ResBlock(ch, self.groups)(jnp.concatenate([h, skips.pop()], -1), emb)
            if level > 0:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest-neighbour x 2
                h = _Conv(h.shape[-1])(h)
        h = nn.silu(nn.GroupNorm(_groups(h.shape[-1], self.groups), param_dtype=dt)(h))
        h = _Conv(self.out_channels, kernel_init=nn.initializers.zeros)(h)
        return h[0]


@pytree_dataclass
class UNetParams:
    """Network variables (the leaves) and the static configuration."""

    variables: Any
    shape: tuple[int, int, int] = static_field()
    process: Any = static_field()
    channels: tuple[int, ...] = static_field(default=(32, 64))
    blocks: int = static_field(default=1)
    emb_dim: int = static_field(default=32)
    groups: int = static_field(default=8)
    target: str = static_field(default="score")
    precondition: bool = static_field(default=True)
    sigma_data: float = static_field(default=0.5)

    @property
    def dim(self) -> int:
        """``H * W * C``: the size of the flat points ``apply`` takes."""
        return math.prod(self.shape)

    def net(self) -> Net:
        return Net(self.shape[-1], self.channels, self.blocks, self.emb_dim, groups=self.groups)


def _check_shape(shape, levels: int) -> tuple[int, int, int]:
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"shape must be (H, W, C), got {shape!r}") from None
    if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                              for s in shape):
        raise ValueError(f"shape must be (H, W, C) of positive integers, got {shape!r}")
    step = 2 ** (levels - 1)
    if shape[0] % step or shape[1] % step:
        raise ValueError(f"shape: H and W must be divisible by 2 ** (len(channels) - 1) = "
                         f"{step} for {levels} levels, got {shape!r}")
    return shape


def init(key, shape, process, *, channels=(32, 64), blocks: int = 1, emb_dim: int = 32,
         groups: int = 8, target: str = "score", precondition: bool = True,
         sigma_data: float = 0.5, dtype=None) -> UNetParams:
    """Initial parameters; the last convolution starts at zero (so ``D = c_skip x / alpha``).

    Args:
        key: PRNG key.
        shape: the image shape ``(H, W, C)`` of one flat point (e.g. a dataset's
            ``info["image_shape"]``).
        process: turns ``t`` into ``(alpha, sigma)`` in :func:`apply`.
        channels: channels per resolution level (its length is the number of levels).
        blocks: residual blocks per level in the encoder (the decoder has ``blocks + 1``).
        emb_dim: size of the Fourier embedding of the noise level (even, at least 2).
        groups: GroupNorm groups (the largest divisor of each width not above it).
        target, precondition, sigma_data, dtype: as in :func:`manifold_scores.models.mlp.init`.
    """
    if target not in PARAMETERISATIONS:
        raise ValueError(f"target must be one of {PARAMETERISATIONS}, got {target!r}")
    _check_process(process)
    try:
        channels = tuple(channels)
    except TypeError:
        raise ValueError(f"channels must be a sequence of positive integers, got "
                         f"{channels!r}") from None
    if not channels:
        raise ValueError("channels must name at least one level, got ()")
    for c in channels:
        _check_count(c, "channels", 1)
    channels = tuple(int(c) for c in channels)
    shape = _check_shape(shape, len(channels))
    _check_count(blocks, "blocks", 1)
    _check_count(groups, "groups", 1)
    if _check_count(emb_dim, "emb_dim", 2) % 2:
        raise ValueError(f"emb_dim must be an even integer >= 2 (sines and cosines of "
                         f"emb_dim / 2 frequencies), got {emb_dim!r}")
    try:
        sd = float(sigma_data)
    except (TypeError, ValueError):
        raise ValueError(f"sigma_data must be a positive number, got {sigma_data!r}") from None
    if not sd > 0 or not math.isfinite(sd):
        raise ValueError(f"sigma_data must be a positive number, got {sigma_data!r}")
    dtype = dtype or jnp.result_type(float)
    net = Net(shape[-1], channels, int(blocks), int(emb_dim), groups=int(groups))
    variables = net.init(key, jnp.zeros(shape, dtype), jnp.zeros((), dtype))
    return UNetParams(variables, shape, process, channels, int(blocks), int(emb_dim),
                      int(groups), target, bool(precondition), sd)


def num_params(params: UNetParams) -> int:
    """Number of trained parameters (the fixed Fourier frequencies excluded)."""
    total = sum(int(leaf.size) for leaf in jax.tree.leaves(params.variables))
    return total - params.emb_dim // 2


def apply(params: UNetParams, x, t):
    """The prediction in ``params.target`` at one flat point ``x`` (shape ``(d,)``,
    ``d = H * W * C``) and time ``t``."""
    if jnp.shape(x) != (params.dim,):
        raise ValueError(f"x must have shape ({params.dim},) (a flat {params.shape} image), "
                         f"got {jnp.shape(x)}")
    net = params.net()

    def network(xi, c_noise):
        return net.apply(params.variables, xi.reshape(params.shape), c_noise).reshape(-1)

    return predict(params, network, x, t)


__dir__ = _public_dir(__all__)

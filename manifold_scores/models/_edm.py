"""What the network models share: EDM preconditioning and the Fourier noise embedding.

With ``sigma~ = sigma / alpha`` (Karras, Aittala, Aila, Laine, arXiv 2206.00364):
``D(x, t) = c_skip x / alpha + c_out F(c_in x / alpha, c_noise)``, then converted to the
model's target. :func:`predict` is that formula for any network ``F``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from manifold_scores import _checks
from manifold_scores.scores import convert


def preconditioning(sigma_tilde, sigma_data: float = 0.5):
    """``(c_skip, c_out, c_in, c_noise)`` at the variance-exploding noise ``sigma_tilde``."""
    st = jnp.asarray(sigma_tilde)
    norm = jnp.sqrt(st * st + sigma_data * sigma_data)
    return (sigma_data**2 / (norm * norm), st * sigma_data / norm, 1.0 / norm,
            0.25 * jnp.log(st))


def noise_embedding(module, c_noise, emb_dim: int, emb_scale: float, dtype):
    """Random Fourier features of ``c_noise`` (fixed frequencies, the parameter ``"freqs"`` of
    ``module``, a Flax module in its ``@nn.compact`` call): ``(emb_dim,)``."""
    freqs = module.param("freqs", jax.nn.initializers.normal(emb_scale), (emb_dim // 2,), dtype)
    freqs = jax.lax.stop_gradient(freqs)  # fixed random features of the noise level
    ang = 2.0 * math.pi * freqs * c_noise
    return jnp.concatenate([jnp.sin(ang), jnp.cos(ang)])


def predict(params, network, x, t):
    """The prediction in ``params.target`` at one point ``x`` (float) and time ``t``, with
    ``network(x_in, c_noise)`` the network ``F`` (same shape as ``x``); ``params`` carries
    ``process``, ``precondition``, ``sigma_data`` and ``target``. Without preconditioning the
    network's output is the target itself, with inputs ``x`` and ``c_noise``."""
    # integer points would cast alpha and sigma to integers below
    x = _checks.as_float_array(x, "x")
    alpha = jnp.asarray(params.process.alpha(t), x.dtype)
    sigma = jnp.asarray(params.process.sigma(t), x.dtype)
    st = sigma / alpha
    if not params.precondition:
        return network(x, 0.25 * jnp.log(st))
    c_skip, c_out, c_in, c_noise = preconditioning(st, params.sigma_data)
    xs = x / alpha
    d = c_skip * xs + c_out * network(c_in * xs, c_noise)
    return convert(d, x, alpha, sigma, source="x0", target=params.target)

"""Bad input raises a ValueError that names the argument."""

import os
import subprocess
import sys
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores import _checks, mixtures

#: what a failed run-time check raises under jax.jit (documented in manifold_scores._checks)
JIT_ERRORS = (ValueError, jax.errors.JaxRuntimeError)


@pytest.fixture
def mix():
    return ms.MoLRG.random(jax.random.key(0), dim=6, rank=2, num_components=2)


def test_wrong_point_shapes(mix):
    with pytest.raises(ValueError, match=r"x must have shape \(6,\)"):
        mix.score(jnp.ones(5), 1.0, 0.1)
    with pytest.raises(ValueError, match="jax.vmap"):
        mix.score(jnp.ones((3, 6)), 1.0, 0.1)
    emp = ms.Empirical(jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="x must have shape"):
        emp.log_prob(jnp.ones(4), 1.0, 0.1)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan")])
def test_sigma_must_be_positive(mix, sigma):
    with pytest.raises(ValueError, match="sigma"):
        mix.score(jnp.ones(6), 1.0, sigma)
    with pytest.raises(ValueError, match="sigma"):
        ms.Empirical(jnp.ones((4, 6))).denoise(jnp.ones(6), 1.0, sigma)


def test_noise_levels_must_be_scalars(mix):
    with pytest.raises(ValueError, match="sigma must be a scalar"):
        mix.score(jnp.ones(6), 1.0, jnp.ones(6))
    with pytest.raises(ValueError, match="alpha must be a scalar"):
        mix.score(jnp.ones(6), jnp.ones(2), 0.1)
    with pytest.raises(ValueError, match="alpha"):
        mix.score(jnp.ones(6), -1.0, 0.1)


def test_bases_must_be_orthonormal():
    with pytest.raises(ValueError, match="bases must have orthonormal columns"):
        ms.MoLRG(2.0 * jnp.eye(4)[None, :, :2])
    with pytest.raises(ValueError, match=r"bases must have shape \(K, d, r\)"):
        ms.MoLRG(jnp.eye(4)[:, :2])
    with pytest.raises(ValueError, match="rank"):
        ms.MoLRG(jnp.ones((1, 2, 3)))


def test_weights_must_be_probability_vector():
    bases = jnp.stack([jnp.eye(4)[:, :2], jnp.eye(4)[:, 2:]])
    with pytest.raises(ValueError, match="weights must sum to one"):
        ms.MoLRG(bases, jnp.array([0.5, 0.6]))
    with pytest.raises(ValueError, match="weights must be non-negative"):
        ms.MoLRG(bases, jnp.array([1.5, -0.5]))
    with pytest.raises(ValueError, match=r"weights must have shape \(2,\)"):
        ms.MoLRG(bases, jnp.array([1.0]))
    with pytest.raises(ValueError, match="weights must sum to one"):
        ms.Empirical(jnp.ones((3, 2)), weights=jnp.array([0.2, 0.2, 0.2]))


def test_other_molrg_fields():
    bases = jnp.eye(4)[None, :, :2]
    with pytest.raises(ValueError, match=r"means must have shape \(1, 4\)"):
        ms.MoLRG(bases, means=jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"scales must have shape \(1, 2\)"):
        ms.MoLRG(bases, scales=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="noise_floor"):
        ms.MoLRG(bases, noise_floor=-0.1)
    with pytest.raises(ValueError, match="orthogonal=False"):
        ms.MoLRG.random(jax.random.key(0), dim=4, rank=2, num_components=3)


def test_empty_point_set():
    with pytest.raises(ValueError, match="points must hold at least one point"):
        ms.Empirical(jnp.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"points must have shape \(N, d\)"):
        ms.Empirical(jnp.zeros(3))
    with pytest.raises(ValueError, match="points"):
        mixtures.isotropic(jnp.zeros(3), jnp.zeros((0, 3)), jnp.zeros(0), 1.0, 1.0)


def test_kernel_argument_shapes():
    with pytest.raises(ValueError, match="log_weights must have shape"):
        mixtures.isotropic(jnp.zeros(3), jnp.zeros((5, 3)), jnp.zeros(4), 1.0, 1.0)
    with pytest.raises(ValueError, match="chunk_size"):
        mixtures.isotropic(jnp.zeros(3), jnp.zeros((5, 3)), jnp.zeros(5), 1.0, 1.0, chunk_size=0)
    with pytest.raises(ValueError, match="log_weights must have shape"):
        mixtures.lowrank(jnp.zeros(4), jnp.eye(4)[None, :, :2], jnp.zeros(2), 1.0, 1.0)


def test_shapes_are_checked_under_jit(mix):
    with pytest.raises(ValueError, match="x must have shape"):
        jax.jit(mix.score)(jnp.ones(7), 1.0, 0.1)


def test_valid_input_is_accepted_without_copies():
    pts = np.random.default_rng(0).normal(size=(10, 3))
    emp = ms.Empirical(pts)  # NumPy input is fine
    assert emp.points.shape == (10, 3)
    assert np.isfinite(float(emp.log_prob(jnp.zeros(3), 1.0, 0.5)))


def _traced_densities():
    key = jax.random.key(0)
    return {
        "molrg": ms.MoLRG.random(key, dim=6, rank=2, num_components=2),
        "empirical": ms.Empirical(jax.random.normal(key, (32, 6))),
        "sphere": ms.Sphere(dim=6, intrinsic_dim=2, key=key),
        "ellipse": ms.Ellipse(dim=6, axes=(1.0, 0.5), key=key),
    }


@pytest.mark.parametrize("name", ["molrg", "empirical", "sphere", "ellipse"])
def test_traced_noise_levels_are_checked_under_jit(name):
    """Under jit, sigma = 0, sigma < 0 and NaN raise at run time (never a silent NaN, never the
    answer at |sigma|); valid values still run, also under vmap and grad."""
    density = _traced_densities()[name]
    f = jax.jit(jax.vmap(density.score, (0, None, None)))
    xs = jnp.ones((3, 6))
    assert np.all(np.isfinite(np.asarray(f(xs, 1.0, 0.5))))
    for sigma in (0.0, -0.1, float("nan")):
        with pytest.raises(JIT_ERRORS, match="sigma must be positive"):
            jax.block_until_ready(f(xs, 1.0, sigma))
    with pytest.raises(JIT_ERRORS, match="alpha must be non-negative"):
        jax.block_until_ready(f(xs, -1.0, 0.5))
    grad = jax.jit(jax.grad(lambda s: density.log_prob(xs[0], 1.0, s)))(0.5)
    assert np.isfinite(float(grad))


@pytest.mark.parametrize("n", [-1, 2.5, "3"])
def test_sample_count_must_be_a_non_negative_integer(mix, n):
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        mix.sample(jax.random.key(0), n)
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        ms.Circle(dim=2).sample(jax.random.key(0), n)
    assert mix.sample(jax.random.key(0), 0).shape == (0, 6)


def _first_lines(exc: BaseException) -> tuple[str, str]:
    """The first line of ``str(exc)`` and of the traceback's final line, as a user sees them."""
    return str(exc).splitlines()[0], traceback.format_exception_only(exc)[0].splitlines()[0]


def _sphere_calls():
    sph = ms.Sphere(dim=3, intrinsic_dim=1, radius=1.0)
    x = jnp.ones(3)
    score = lambda a, s: sph.score(x, a, s)
    log_prob = lambda a, s: sph.log_prob(x, a, s)
    good, bad = jnp.array([0.5, 1.0]), jnp.array([0.5, -1.0])
    return {
        "vmap": lambda sig: jax.vmap(score, (None, 0))(1.0, sig),
        "grad": lambda sig: jax.vmap(jax.grad(log_prob, 1), (None, 0))(1.0, sig),
        "jvp": lambda sig: jax.jvp(lambda s: jax.vmap(score, (None, 0))(1.0, s), (sig,), (sig,)),
        "grad of vmap": lambda sig: jax.grad(
            lambda s: jnp.sum(jax.vmap(log_prob, (None, 0))(1.0, s)))(sig),
    }, good, bad


@pytest.mark.parametrize("transform", ["vmap", "grad", "jvp", "grad of vmap"])
def test_eager_transforms_raise_value_error_with_the_message_first(transform):
    """Outside jit the traced values are known while tracing: a plain ValueError, message first."""
    calls, good, bad = _sphere_calls()
    f = calls[transform]
    jax.block_until_ready(f(good))
    with pytest.raises(ValueError) as info:
        f(bad)
    assert type(info.value) is ValueError
    assert _first_lines(info.value) == ("sigma must be positive and finite",
                                        "ValueError: sigma must be positive and finite")


def test_eager_checks_name_alpha_and_a_scalar_sigma_under_grad():
    sph = ms.Sphere(dim=3, intrinsic_dim=1, radius=1.0)
    with pytest.raises(ValueError) as info:
        jax.vmap(lambda a: sph.score(jnp.ones(3), a, 0.5))(jnp.array([1.0, -1.0]))
    assert _first_lines(info.value)[0] == "alpha must be non-negative and finite"
    with pytest.raises(ValueError) as info:
        jax.grad(lambda s: sph.log_prob(jnp.ones(3), 1.0, s))(-1.0)
    assert _first_lines(info.value)[0] == "sigma must be positive and finite"


@pytest.mark.parametrize("warm", [False, True], ids=["first call", "after a good call"])
def test_jit_failures_carry_the_message(warm):
    """Under jit the runtime builds the error (its text starts with the runtime's prefix): the
    documented types catch it, with and without jax's fast path, and under grad."""
    sph = ms.Sphere(dim=3, intrinsic_dim=1, radius=1.0)
    x = jnp.ones(3)
    calls = [jax.jit(lambda s: sph.score(x, 1.0, s)),
             jax.jit(jax.grad(lambda s: sph.log_prob(x, 1.0, s)))]
    for f in calls:
        if warm:
            jax.block_until_ready(f(0.5))
        with pytest.raises(JIT_ERRORS) as info:
            jax.block_until_ready(f(-1.0))
        lines = str(info.value).splitlines()
        assert any(line.endswith("sigma must be positive and finite") for line in lines)


def test_validated_skips_the_checks_under_eager_transforms_too():
    sph = ms.Sphere(dim=3, intrinsic_dim=1, radius=1.0)
    with _checks.validated():
        out = jax.vmap(lambda s: sph.score(jnp.ones(3), 1.0, s))(jnp.array([0.5, -1.0]))
    assert out.shape == (2, 3)


def test_eqx_on_error_nan_turns_jit_failures_into_nans():
    """EQX_ON_ERROR=nan (read when equinox is imported, so in a fresh process)."""
    code = (
        "import jax, jax.numpy as jnp, numpy as np, manifold_scores as ms\n"
        "s = ms.Sphere(dim=3, intrinsic_dim=1, radius=1.0)\n"
        "out = jax.jit(lambda sg: s.score(jnp.ones(3), 1.0, sg))(-1.0)\n"
        "assert np.all(np.isnan(np.asarray(out))), out\n"
        "try:\n"
        "    jax.vmap(lambda sg: s.score(jnp.ones(3), 1.0, sg))(jnp.array([1.0, -1.0]))\n"
        "except ValueError as e:\n"
        "    assert str(e) == 'sigma must be positive and finite'\n"
        "else:\n"
        "    raise AssertionError('eager vmap did not raise')\n"
    )
    env = {**os.environ, "EQX_ON_ERROR": "nan", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_float32_density_called_in_float64_warns_and_float64_density_does_not():
    import warnings

    import jax
    import jax.numpy as jnp

    import manifold_scores as ms

    built32 = ms.Sphere(dim=6, intrinsic_dim=2, key=jax.random.key(0))
    with jax.enable_x64(True):
        x = jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float64)
        with pytest.warns(ms.PrecisionWarning, match="jax_enable_x64"):
            jax.jit(built32.score)(x, 1.0, 0.1)
        built64 = ms.Sphere(dim=6, intrinsic_dim=2, key=jax.random.key(0))
        with warnings.catch_warnings():
            warnings.simplefilter("error", ms.PrecisionWarning)
            s64 = jax.jit(built64.score)(x, 1.0, 0.1)
            ref = jax.grad(built64.log_prob)(x, 1.0, 0.1)  # the float64 reference
    assert float(jnp.linalg.norm(s64 - ref) / jnp.linalg.norm(ref)) < 1e-10

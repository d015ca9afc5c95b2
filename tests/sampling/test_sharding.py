"""Samplers on a batch sharded over 4 (forced host) devices equal the single-device results.

The device count is fixed when JAX starts, so the check runs in a fresh interpreter with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import manifold_scores as ms
    from manifold_scores import sampling
    # float64: the comparison then measures the sharding, not the float32 round-off that the
    # small-sigma end of a path amplifies where two components' posteriors nearly tie.
    jax.config.update("jax_enable_x64", True)
    assert jax.device_count() == 4, jax.device_count()
    proc = ms.VP()
    mix = ms.MoLRG.random(jax.random.key(0), dim=6, rank=2, num_components=3)
    score = ms.score_fn(mix, proc)
    key = jax.random.key(1)
    n, d = 16, 6
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    batch = NamedSharding(mesh, P("batch"))

    def check_sharded(x):
        assert len(x.sharding.device_set) == 4, x.sharding
        shapes = {s.data.shape for s in x.addressable_shards}
        assert shapes == {(n // 4, d)}, shapes

    x0 = sampling.prior_sample(jax.random.key(2), proc, (n, d))
    x0_sharded = jax.device_put(x0, batch)
    check_sharded(x0_sharded)
    cases = [
        ("ode", lambda x, **kw: sampling.sample_ode(None, score, proc, steps=20, method="heun",
                                                    x_init=x, **kw)),
        ("sde", lambda x, **kw: sampling.sample_sde(key, score, proc, steps=20, method="ddpm",
                                                    x_init=x, **kw)),
    ]
    for name, run in cases:
        ref = run(x0)  # one device
        assert len(ref.sharding.device_set) == 1, name
        got = run(x0_sharded)  # the input carries the sharding, the sampler keeps it
        check_sharded(got)
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-6, atol=1e-6,
                                   err_msg=name)
    # From the prior: sharding= places the draws, the path noise and the output.
    ref = sampling.sample_sde(key, score, proc, (n, d), steps=20)
    got = sampling.sample_sde(key, score, proc, (n, d), steps=20, sharding=batch)
    check_sharded(got)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-6, atol=1e-6)
    # A mesh from jax.make_mesh has Explicit axes: the samplers take it too.
    explicit = NamedSharding(jax.make_mesh((4,), ("batch",)), P("batch"))
    got = sampling.sample_ode(key, score, proc, (n, d), steps=20, sharding=explicit)
    check_sharded(got)
    ref = sampling.sample_ode(key, score, proc, (n, d), steps=20)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-6, atol=1e-6)
    print("ok")
""")


@pytest.mark.slow
def test_sharded_samplers_match_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")

"""Components sharded over 4 (forced host) devices, combined by a cross-device log-sum-exp
(isotropic and low-rank kernels) against the single-device kernels.

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
    from jax.sharding import Mesh
    from manifold_scores import mixtures
    jax.config.update("jax_enable_x64", True)
    assert jax.device_count() == 4, jax.device_count()
    n = 10_001  # not a multiple of the shard count: the last shard is padded
    pts = jax.random.normal(jax.random.key(0), (n, 5))
    lw = jnp.log(jax.random.dirichlet(jax.random.key(1), jnp.ones(n)))
    xs = pts[:8] + 0.1
    ref = jax.vmap(mixtures.isotropic, (0, None, None, None, None))(xs, pts, lw, 0.9, 0.2)
    devices = np.array(jax.devices())
    for mesh, batch_axis in [(Mesh(devices, ("points",)), None),
                             (Mesh(devices.reshape(2, 2), ("batch", "points")), "batch")]:
        got = mixtures.isotropic_sharded(xs, pts, lw, 0.9, 0.2, mesh=mesh, points_axis="points",
                                         batch_axis=batch_axis, chunk_size=1000)
        np.testing.assert_allclose(got.log_prob, ref.log_prob, rtol=1e-12)
        np.testing.assert_allclose(got.score, ref.score, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got.mean, ref.mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got.cov_trace, ref.cov_trace, rtol=1e-9)
    # each device holds a quarter of the components
    shard_shapes = {s.data.shape for s in jax.device_put(
        pts[:10_000], jax.sharding.NamedSharding(Mesh(devices, ("points",)),
                                                 jax.sharding.PartitionSpec("points"))
    ).addressable_shards}
    assert shard_shapes == {(2500, 5)}, shard_shapes
    # low-rank components (K = 7, not a multiple of 4) with means, scales, per-component floors
    k, d, r = 7, 12, 3
    u = jnp.linalg.qr(jax.random.normal(jax.random.key(2), (k, d, r)))[0]
    lwk = jnp.log(jax.random.dirichlet(jax.random.key(3), jnp.ones(k)))
    kw = dict(means=jax.random.normal(jax.random.key(4), (k, d)),
              scales=jax.random.uniform(jax.random.key(5), (k, r), minval=0.3, maxval=2.0),
              noise_floor=jnp.linspace(0.05, 0.3, k))
    qs = jax.random.normal(jax.random.key(6), (8, d))
    for a, s in [(0.9, 0.2), (1.0, 0.0)]:
        ref = jax.vmap(lambda q: mixtures.lowrank(q, u, lwk, a, s, **kw))(qs)
        for mesh, batch_axis in [(Mesh(devices, ("k",)), None),
                                 (Mesh(devices.reshape(2, 2), ("batch", "k")), "batch")]:
            got = mixtures.lowrank_sharded(qs, u, lwk, a, s, mesh=mesh, components_axis="k",
                                           batch_axis=batch_axis, chunk_size=1, **kw)
            for f in ("log_prob", "score", "mean", "cov_trace", "divergence"):
                g, e = np.asarray(getattr(got, f)), np.asarray(getattr(ref, f))
                err = np.max(np.abs(g - e)) / max(np.max(np.abs(e)), 1e-300)
                assert err < 1e-6, (f, a, s, err)
    # float32 at small sigma: the refinement's cond runs inside shard_map
    u32, lw32, q32 = u.astype(jnp.float32), lwk.astype(jnp.float32), qs.astype(jnp.float32)
    ref = jax.vmap(lambda q: mixtures.lowrank(q, u32, lw32, 1.0, 1e-3))(q32)
    got = mixtures.lowrank_sharded(q32, u32, lw32, 1.0, 1e-3, mesh=Mesh(devices, ("k",)),
                                   components_axis="k", chunk_size=1)
    assert got.score.dtype == jnp.float32
    err = np.max(np.linalg.norm(np.asarray(got.score, np.float64) - np.asarray(ref.score), axis=1)
                 / np.linalg.norm(np.asarray(ref.score, np.float64), axis=1))
    assert err < 1e-5, err
    print("ok")
""")


@pytest.mark.slow
def test_sharded_components_match_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")

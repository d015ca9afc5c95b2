"""E9: the data laws, the shared initialisation, the kernel sampler, the copying statistic and
the null-relative memorisation rule; the quick run in the slow suite."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.experiments import e9_wpo_kernel as e9
from manifold_scores.experiments._plotting import style_problems
from manifold_scores.models import kernel


def test_official_roll_matches_its_definition():
    # make_swiss_roll(noise=1.0)[:, [0, 2]] / 5: the curve (t cos t, t sin t) / 5 plus N(0, 0.2^2)
    data = e9.Data("roll 2-D (noisy)", jax.random.key(0))
    x = data.sample(jax.random.key(1), 4000)
    r = np.linalg.norm(np.asarray(x), axis=1)
    assert 0.2 < r.min() and r.max() < 4.5 * math.pi / 5 + 1.0
    # distance to the curve: |N(0, 0.2^2 I_2)| projected on the normal, mean 0.2 sqrt(2/pi)
    dist = float(jnp.mean(data.distance(x)))
    assert abs(dist - 0.2 * math.sqrt(2 / math.pi)) < 0.02
    clean = e9.Data("roll 2-D (curve)", jax.random.key(0))
    assert float(jnp.max(clean.distance(clean.sample(jax.random.key(2), 200)))) < 5e-3


def test_six_d_variant_structure():
    data = e9.Data("roll 6-D (noisy)", jax.random.key(0))
    x = np.asarray(data.sample(jax.random.key(1), 4000))
    for col, lin in ((2, 2 * x[:, 0]), (3, x[:, 0] + x[:, 1]), (4, x[:, 0] - 2 * x[:, 1])):
        assert abs(np.std(x[:, col] - lin) - 0.1) < 0.01
    assert abs(np.std(x[:, 5]) - 1.0) < 0.05


def test_shared_init_is_uniform_fan_in():
    p = e9.init_kernel(jax.random.key(0), jnp.ones((5, 2)))
    for layer in p.factor["params"].values():
        bound = 1 / math.sqrt(layer["kernel"].shape[0])
        for leaf in (layer["kernel"], layer["bias"]):
            a = np.abs(np.asarray(leaf))
            assert a.max() <= bound and a.max() > 0.5 * bound
    m = e9.init_mlp(jax.random.key(0), 2, 1.0)
    kernels = [v["kernel"] for v in m.variables["params"].values() if isinstance(v, dict)]
    assert all(float(jnp.max(jnp.abs(k))) <= 1 / math.sqrt(k.shape[0]) for k in kernels)
    assert float(jnp.max(jnp.abs(kernels[-1]))) > 0  # not the zero output layer of mlp.init


def test_kernel_sampler_covariance():
    # one centre: the draws' covariance is Gamma^{-1} = (L L^T + eps I)^{-1}
    p = e9.init_kernel(jax.random.key(3), jnp.array([[0.3, -0.2]]))
    x = np.asarray(e9.sample_kernel(jax.random.key(4), p, n=40_000))
    lmat = np.asarray(kernel.factors(p))[0]
    cov = np.linalg.inv(lmat @ lmat.T + e9.EPS * np.eye(2))
    err = np.linalg.norm(np.cov(x.T) - cov) / np.linalg.norm(cov)
    assert err < 0.05
    assert np.linalg.norm(x.mean(0) - [0.3, -0.2]) < 0.05 * math.sqrt(np.trace(cov))


def test_mmd2_agrees_with_metrics():
    x = jax.random.normal(jax.random.key(0), (200, 3))
    y = jax.random.normal(jax.random.key(1), (150, 3)) + 0.3
    bw = (0.5, 1.0, 2.0)
    a, b = float(e9.mmd2(x, y, bw)), float(ms.metrics.mmd(x, y, bw))
    assert abs(a - b) <= 1e-4 * abs(b)


def test_copy_statistic():
    rng = np.random.default_rng(0)
    held = rng.exponential(1.0, 500)
    assert abs(e9.copy_z(rng.exponential(1.0, 500), held)) < 3.5
    assert e9.copy_z(rng.exponential(0.5, 500), held) < -3  # closer than fresh: copying
    # against scipy's Mann-Whitney U
    from scipy.stats import mannwhitneyu

    a, b = rng.normal(size=300), rng.normal(0.2, 1, size=400)
    u = mannwhitneyu(a, b).statistic
    z = (u - 300 * 400 / 2) / math.sqrt(300 * 400 * 701 / 12)
    assert abs(e9.copy_z(a, b) - z) < 1e-9


def test_memorises_rule():
    band = np.array([[0.08, 0.14]])
    assert e9.memorises([0.20], band, [0.11]).tolist() == [True]
    assert e9.memorises([0.15], band, [0.11]).tolist() == [False]  # above the band, excess < 0.05
    assert e9.memorises([0.05], band, [0.11]).tolist() == [False]


def test_data_rejects_unknown_name():
    with pytest.raises(ValueError, match="name"):
        e9.Data("spiral", jax.random.key(0))


@pytest.mark.slow
def test_quick_run_matches_its_record():
    table = ms.experiments.run("E9", "quick")
    from manifold_scores.experiments._registry import review

    rev = review(table)
    assert rev.ok, (rev, table.format())
    assert style_problems(ms.experiments.plot(table)) == []

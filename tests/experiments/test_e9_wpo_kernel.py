"""E9: data sets and distances; the quick run in the slow suite."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import manifold_scores as ms
from manifold_scores.experiments import e9_wpo_kernel as e9
from tests.helpers import slow_except


@pytest.mark.parametrize("name", slow_except(e9.DATASETS, e9.DATASETS[:1]))
def test_data_lies_on_its_manifold(name):
    data = e9._Data(name, jax.random.key(0))
    x = data.sample(jax.random.key(1), 64)
    dist = data.distance(x)
    floor = 0.25 if name == "swiss roll 6-D" else 1e-3  # the 6-D variant has 0.1 noise
    assert x.shape[0] == 64 and float(jnp.mean(dist)) < floor
    far = x + 0.5 * jnp.eye(x.shape[1])[0]
    assert float(jnp.mean(data.distance(far))) > float(jnp.mean(dist))


def test_six_d_variant_structure():
    data = e9._Data("swiss roll 6-D", jax.random.key(0))
    x = data.sample(jax.random.key(1), 2000)
    resid = x[:, 2] - 2 * x[:, 0]
    assert abs(float(jnp.std(resid)) - 0.1) < 0.01
    assert abs(float(jnp.std(x[:, 5])) - 1.0) < 0.1


# A measured disagreement with the paper, not a bug: the claim rows are computed honestly and
# do not hold at quick size. strict: the day they hold, this test fails and asks to be updated.
@pytest.mark.xfail(strict=True, reason=(
    "E9: the kernel model memorises on the 2-D swiss roll and trains slower "
    "than the MLP; see notebooks/e9_wpo_kernel.ipynb"))
@pytest.mark.slow
def test_quick_run_claims():
    table = ms.experiments.run("E9", "quick")
    assert table.ok, table.format()

"""The optional diffrax bridge follows the exact PF-ODE flow of a Gaussian."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores import sampling
from tests.helpers import slow_except
from tests.sampling.test_ode import exact_flow, molrg_one


@pytest.mark.parametrize("solver", slow_except(["tsit5", "dopri5"], ["dopri5"]))
def test_diffrax_bridge(x64, solver):
    pytest.importorskip("diffrax")
    proc = ms.VP()
    mix, basis, var = molrg_one()
    score = ms.score_fn(mix, proc)
    x = jax.random.normal(jax.random.key(0), (4, mix.dim))
    out, stats = sampling.integrate_ode_adaptive(score, proc, x, 1.0, 0.1, solver=solver,
                                                 rtol=1e-8, atol=1e-8, return_stats=True)
    np.testing.assert_allclose(out, exact_flow(proc, basis, var, x, 1.0, 0.1), atol=1e-6)
    assert int(stats["num_steps"]) > 1


def test_diffrax_bridge_bad_inputs():
    proc = ms.VP()
    score = lambda x, t: -x
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="solver"):
        sampling.integrate_ode_adaptive(score, proc, x, 1.0, 0.1, solver="euler")
    with pytest.raises(ValueError, match="rtol"):
        sampling.integrate_ode_adaptive(score, proc, x, 1.0, 0.1, rtol=0.0)
    with pytest.raises(ValueError, match="t0 and t1"):
        sampling.integrate_ode_adaptive(score, proc, x, 0.5, 0.5)
    with pytest.raises(ValueError, match="sigma"):
        sampling.integrate_ode_adaptive(score, proc, x, 1.0, 0.0)
    with pytest.raises(ValueError, match="x_init"):
        sampling.integrate_ode_adaptive(score, proc, np.ones(3), 1.0, 0.1)

"""E1 at quick size under the study protocol: every claim row carries its verdict, at least 3
seeds and its controls; the must-fail controls fail as they must (slow: about 15 s)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.experiments import _plotting
from tests.helpers import assert_on_protocol

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def table():
    return ms.experiments.run("E1", "quick")


@pytest.mark.slow
def test_every_claim_has_verdict_seeds_and_controls(table):
    claims = assert_on_protocol(table, 9)
    assert len(claims) == 9


@pytest.mark.slow
def test_must_fail_controls_fail_as_they_must(table):
    ctrl = {r.key: r for r in table.rows if r.kind == "control"}
    assert sum(k.startswith("must_fail.") for k in ctrl) == 4
    slopes = {k: r.measured.median for k, r in ctrl.items()
              if k.startswith("must_fail.") and "uniform" not in k}
    # independent references: thickened data -> residual tends to delta (negative slope);
    # wrong radius -> residual tends to 0.01 (slope ~ 0); sigma^-1.9 error -> slope ~ 0.1
    assert slopes["must_fail.thickened data (tau = 1e-3)"] < -1.0
    assert abs(slopes["must_fail.wrong manifold (radius 1.01)"]) < 0.05
    assert abs(slopes["must_fail.injected normal error sigma^-1.9"] - 0.1) < 0.02


@pytest.mark.slow
def test_prefactor_matches_next_term(table):
    d = table.data
    sig = np.asarray(d["sigmas"])
    lo, hi = d["radius_range"]
    excess = np.asarray(d["ratio"]) - 1.0  # largest ratio per sigma and seed
    assert np.all(excess <= sig**2 / (4 * lo) * 1.01 + 1e-9)
    assert np.all(excess >= sig**2 / (4 * hi) * 0.99 - 1e-9)


@pytest.mark.slow
def test_figure_style(table):
    assert _plotting.style_problems(ms.experiments.plot(table)) == []


def test_molrg_points_keep_their_distance_from_the_intersection():
    import jax
    import jax.numpy as jnp

    from manifold_scores.experiments import e1_geometry as e1

    with jax.enable_x64(True):
        m = ms.MoLRG.random(jax.random.key(3), dim=20, rank=2, num_components=3)
        xs, p = e1._offset_points(m, jax.random.key(4), 256)
        norms = np.asarray(jnp.linalg.norm(p, axis=1))
        # on the union (each p lies in one subspace), the offset is DELTA and normal to all
        own = np.max(np.linalg.norm(np.einsum("kdr,nd->nkr", np.asarray(m.bases), np.asarray(p)),
                                    axis=2), axis=1)
        off = np.linalg.norm(np.asarray(xs - p), axis=1)
    assert norms.min() >= e1.R_MIN
    np.testing.assert_allclose(own, norms, rtol=1e-10)
    np.testing.assert_allclose(off, e1.DELTA, rtol=1e-10)

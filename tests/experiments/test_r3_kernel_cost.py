"""R3: the time- and samples-to-quality logic on synthetic records, the data split, the
bandwidths and the permutation null against direct references, the table and figure on
synthetic results; the quick run in the slow suite."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.experiments import r3_kernel_cost as r3
from manifold_scores.experiments._plotting import style_problems

INF = math.inf


def _records(mmds, seconds_per_step=0.01, steps=(0, 50, 200)):
    return [dict(step=s, seconds=s * seconds_per_step, mmd=v) for s, v in zip(steps, mmds,
                                                                               strict=True)]


def test_time_to_quality_is_the_first_checkpoint_below_the_level():
    recs = _records([0.5, 0.02, 0.001])
    assert r3.time_to_quality(recs, 0.03) == (0.5, 50)
    assert r3.time_to_quality(recs, 0.01) == (2.0, 200)
    assert r3.time_to_quality(recs, 1e-4) == (INF, INF)  # beyond the budget
    # a later checkpoint above the level again does not undo the first success
    assert r3.time_to_quality(_records([0.5, 0.001, 0.3]), 0.01) == (0.5, 50)
    # a NaN MMD^2 (diverged samples) never qualifies
    assert r3.time_to_quality(_records([0.5, math.nan, 0.001]), 0.01) == (2.0, 200)


def test_samples_to_quality_needs_every_larger_n():
    ns = (64, 256, 1024)
    fin = np.ones(3)
    times = np.array([[INF, INF, 1.0], [1.0, 2.0, INF], fin])  # N=64: 1 of 3 seeds
    assert r3.samples_to_quality(ns, times) == 256
    times = np.array([fin, [INF, INF, 1.0], fin])  # success at 64, failure at 256
    assert r3.samples_to_quality(ns, times) == 1024
    times = np.array([fin, fin, [INF, INF, 1.0]])  # the largest N fails: beyond the budget
    assert r3.samples_to_quality(ns, times) == INF
    assert r3.samples_to_quality(ns, np.ones((3, 3))) == 64


def test_comparison_rules():
    assert r3.compare_times(1.0, 2.0) == "kernel"
    assert r3.compare_times(3.0, 2.0) == "U-Net"
    # one model beyond its budget: a win for the other only if it trained longer than the
    # other needed (otherwise it might get there with more steps)
    assert r3.compare_times(1.0, INF, 5.0, 0.5) == "budget"
    assert r3.compare_times(1.0, INF, 5.0, 3.0) == "kernel"
    assert r3.compare_times(INF, 2.0, 1.0, 9.0) == "budget"
    assert r3.compare_times(INF, 2.0, 3.0, 9.0) == "U-Net"
    assert r3.compare_times(INF, INF, 1.0, 1.0) is None
    assert r3.time_verdict(["kernel", None, "kernel"]) is True
    assert r3.time_verdict(["kernel", "budget"]) is None
    assert r3.time_verdict(["budget", "U-Net"]) is False
    assert r3.time_verdict([None, None]) is None
    assert r3.samples_verdict(64, 256) is True
    assert r3.samples_verdict(256, 256) is False
    ns = (64, 256, 1024)
    assert r3.samples_verdict(64, INF, ns, ["budget", "kernel", "kernel"]) is None
    assert r3.samples_verdict(256, INF, ns, [None, "kernel", "kernel"]) is True
    assert r3.samples_verdict(INF, 256, ns, [None, "U-Net", "U-Net"]) is False
    assert r3.samples_verdict(INF, 256, ns, [None, "U-Net", "budget"]) is None
    assert r3.samples_verdict(INF, INF, ns, [None, None, None]) is None


def test_dequantise_is_one_grey_level_uniform_and_checked():
    x = jnp.zeros((4000, 64))
    y = np.asarray(r3.dequantise(jax.random.key(0), x), np.float64)
    assert np.abs(y).max() <= 1 / 16 and y.std() == pytest.approx(1 / 16 / math.sqrt(3),
                                                                   rel=0.01)
    assert abs(y.mean()) < 1e-3
    with pytest.raises(ValueError, match="x"):
        r3.dequantise(jax.random.key(0), jnp.zeros(3, jnp.int32))


def test_split_is_disjoint_and_checked():
    ref, twin, pool = r3.split(jax.random.key(0), 20, 50)
    assert ref.shape == (20, 64) and twin.shape == (20, 64) and pool.shape == (50, 64)
    # the three sets are consecutive blocks of one permutation of all 1797 digits
    full = r3._digits()
    assert full.shape == (1797, 64) and full.min() >= -1 and full.max() <= 1
    perm = np.asarray(jax.random.permutation(jax.random.key(0), 1797))
    assert np.array_equal(np.concatenate([ref, twin, pool]), full[perm[:90]])
    with pytest.raises(ValueError, match="n_pool"):
        r3.split(jax.random.key(0), 500, 1000)


def test_bandwidths_and_permutation_null_against_direct_references():
    rng = np.random.default_rng(0)
    held = rng.normal(size=(40, 3)).astype(np.float32)
    bw = r3.bandwidths(held)
    from scipy.spatial.distance import pdist

    h = math.sqrt(np.median(pdist(held.astype(np.float64), "sqeuclidean")) / 2)
    assert np.allclose(bw, (0.5 * h, h, 2 * h), rtol=1e-6)
    null = r3.permutation_null(jax.random.key(1), jnp.asarray(held), 5, bw)
    # the first split, recomputed with a dense numpy MMD^2
    keys = jax.random.split(jax.random.key(1), 5)
    p = np.asarray(jax.random.permutation(keys[0], 40))
    a, b = held[p[:20]].astype(np.float64), held[p[20:]].astype(np.float64)

    def k(x, y):
        d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
        return sum(np.exp(-d2 / (2 * s * s)) for s in bw)

    kaa, kbb = k(a, a), k(b, b)
    ref = ((kaa.sum() - np.trace(kaa)) / 380 + (kbb.sum() - np.trace(kbb)) / 380
           - 2 * k(a, b).mean())
    assert abs(null[0] - ref) <= 1e-4 * max(abs(ref), np.abs(kaa).mean() / 20)
    assert r3.quality_level(null) == pytest.approx(2 * np.quantile(null, 0.975))


def _fake_results(kernel_mmds, unet_mmds, ns=(64, 256), seeds=3, twin=0.001, step0=0.5):
    """A results dict as ``_run`` builds it: per (N, seed) the MMD^2 at checkpoints 0, 50, 200
    (step 0 replaced by ``step0``), seconds 0.01 / step (kernel) and 0.02 / step (U-Net)."""
    shape = (len(ns), seeds)
    res = {"quality": np.full(seeds, 0.01), "edge": np.full(seeds, 0.005),
           "null_band": np.tile([-0.003, 0.005], (seeds, 1)), "twin": np.full(seeds, twin),
           "copies": np.full(shape, 0.008), "bandwidths": [(1.0, 2.0, 4.0)] * seeds,
           "records": {}, "losses": {}, "compile": {m: np.ones(shape) for m in r3.MODELS},
           "plateaued": {m: np.zeros(shape, bool) for m in r3.MODELS},
           "final_loss": {m: np.zeros(shape) for m in r3.MODELS},
           "stopped": {m: np.zeros(shape, bool) for m in r3.MODELS},
           "precision": np.ones(shape + (2,)), "constant": np.full(shape, 3),
           "raw": {"stopped": np.array([True] + [False] * (seeds - 1)),
                   "step": np.array([30] + [200] * (seeds - 1)),
                   "final_loss": np.full(seeds, -1e6), "precision": np.ones((seeds, 2))},
           "samples": {"kernel": np.zeros((r3.GRID, 64)), "U-Net": np.ones((r3.GRID, 64)),
                       "held-out": -np.ones((r3.GRID, 64)), "N": ns[-1]}}
    for m, mmds, sps in (("kernel", kernel_mmds, 0.01), ("U-Net", unet_mmds, 0.02)):
        res["records"][m] = [[_records([step0] + list(mmds[j]), sps) for _ in range(seeds)]
                             for j in range(len(ns))]
        res["losses"][m] = [[np.linspace(1, 0, 200) for _ in range(seeds)] for _ in ns]
    cfg = dict(ns=ns, checkpoints={m: [(0, 50, 200)] * len(ns) for m in r3.MODELS},
               seeds=seeds, n_eval=150, null_repeats=100)
    return cfg, res


def test_tiny_table_and_figure():
    import matplotlib

    matplotlib.use("Agg")
    # kernel at quality after 50 steps at N=256 only; the U-Net after 50 steps at N=64 and
    # 200 steps at N=256
    cfg, res = _fake_results([[0.05, 0.03], [0.005, 0.004]], [[0.009, 0.009], [0.02, 0.002]])
    table = r3._study("quick", cfg, res)
    assert table.valid
    rows = {r.key: r for r in table.rows if r.kind == "claim"}
    # N=64: U-Net only, at 1 s, while the kernel trained 2 s (a U-Net win); N=256: kernel
    # 0.5 s < U-Net 4 s
    assert rows["time_to_quality"].verdict == "does not hold"
    assert rows["time_to_quality"].evidence["outcomes"] == ["U-Net", "kernel"]
    # the U-Net at 200 steps (4 s) at N=64 is beyond the kernel's 2 s: no comparison there
    assert rows["samples_to_quality"].verdict == "does not hold"  # N* 256 vs 64
    assert rows["samples_to_quality"].evidence["seeds"] == 3
    fig = r3.plot(table)
    assert style_problems(fig) == []
    assert "N=256" in table.format() or "256" in r3.summary(table)
    cfg, res = _fake_results([[0.05, 0.03], [0.005, 0.004]], [[0.05, 0.009], [0.02, 0.002]])
    rows = {r.key: r for r in r3._study("quick", cfg, res).rows if r.kind == "claim"}
    assert rows["time_to_quality"].verdict == "inconclusive"
    # the U-Net beyond the budget everywhere after 4 s of training, the kernel at quality in
    # 0.5 s: kernel wins (the U-Net trained longer than the kernel needed)
    cfg, res = _fake_results([[0.005, 0.004], [0.005, 0.004]], [[0.05, 0.04], [0.05, 0.04]])
    rows = {r.key: r for r in r3._study("quick", cfg, res).rows if r.kind == "claim"}
    assert rows["time_to_quality"].verdict == "holds"
    assert rows["samples_to_quality"].verdict == "holds"
    assert "beyond the budget" in rows["time_to_quality"].measured


def test_controls_fail_on_bad_references():
    cfg, res = _fake_results([[0.05, 0.03], [0.005, 0.004]], [[0.009, 0.009], [0.02, 0.002]],
                             twin=0.02, step0=0.001)
    table = r3._study("quick", cfg, res)
    controls = {r.key: r.holds for r in table.rows if r.kind == "control"}
    assert controls == {"held_out": False, "untrained": False}
    assert not table.valid
    assert all(r.verdict == "inconclusive" for r in table.rows if r.kind == "claim")


@pytest.mark.slow
def test_quick_run_matches_its_record():
    from tests.helpers import assert_on_protocol

    table = ms.experiments.run("R3", "quick")
    claims = assert_on_protocol(table, 2, controls_pass=True)
    assert {r.key for r in claims} == {"time_to_quality", "samples_to_quality"}
    assert table.data["seeds"] >= 3
    assert style_problems(ms.experiments.plot(table)) == []

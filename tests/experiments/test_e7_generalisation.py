"""E7 and the batched training helpers: the outcome rules, the far padding, the null and the
reference samplers on small cases, the figure on a synthetic table, vmapped MLP training; the
quick run (against the recorded verdicts) in the slow suite."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores.experiments import _batched, _registry
from manifold_scores.experiments import e7_generalisation as e7
from manifold_scores.experiments._plotting import style_problems
from manifold_scores.experiments._table import Table


def test_outcome_needs_the_null_and_the_support():
    band = np.array([[0.85, 0.92]] * 4)
    med = np.full(4, 0.89)
    out = e7.classify([0.30, 0.88, 0.95, 0.88], band, med, [0.01, 0.02, 0.05, 0.30])
    # a score above the band is not memorised; blurred samples are not generalising
    assert out.tolist() == ["memorised", "generalising", "generalising", "off support"]
    # a band hugging 1 (large r): 1% of near-copies is significant but below the excess
    # tolerance, 10% is memorised
    assert e7.classify([0.99, 0.90], [[0.998, 1.0]] * 2, [1.0, 1.0], [0.01, 0.01]).tolist() == [
        "generalising", "memorised"]
    assert e7.classify([math.nan], [[0.8, 0.9]], [0.85], [0.01]).tolist() == ["diverged"]


def test_collapse_factor_is_not_measurable_beyond_the_grid():
    assert e7.collapse_factor([16, 16, 32]) == 2.0
    assert e7.collapse_factor([16, math.inf]) is None


def test_far_padding_leaves_the_scores_unchanged():
    keys = jax.random.split(jax.random.key(0), 3)
    small = np.asarray(jax.random.normal(keys[0], (6, 4)))
    large = np.asarray(jax.random.normal(keys[1], (40, 4)))
    samples = jnp.concatenate([jnp.asarray(large[:10]) + 1e-3,
                               jax.random.normal(keys[2], (20, 4))])
    train, mask = e7._pad_far([small, large], scale=2.0)
    assert train.shape == (2, 40, 4) and np.asarray(mask.sum(1)).tolist() == [6, 40]
    got = np.asarray(e7._scores(jnp.stack([samples, samples]), train))
    want = [float(ms.metrics.generalization_score(samples, x)) for x in (small, large)]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_training_sets_are_nested_and_on_the_support():
    mix = e7._law(jax.random.key(1), 8, 2)
    small, large = e7._training_sets(jax.random.key(2), mix, [2, 8])
    assert small.shape == (2 * 2, 8) and large.shape == (2 * 8, 8)
    assert np.allclose(large[:2], small[:2]) and np.allclose(large[8:10], small[2:])
    assert float(jnp.max(ms.metrics.distance_to_manifold(mix, large))) < 1e-5
    # every coordinate has RMS SIGMA_DATA under the law
    rms = float(jnp.sqrt(jnp.mean(mix.sample(jax.random.key(3), 4000) ** 2)))
    assert rms == pytest.approx(e7.SIGMA_DATA, rel=0.05)


@pytest.mark.slow
def test_null_and_reference_samplers_on_a_small_law():
    """Fresh draws score about 1 - 3^-r; the exact score's samples lie on the support and are
    scored like fresh draws; the empirical score's samples are copies of the training set."""
    mix = e7._law(jax.random.key(4), 8, 2)
    sets = e7._training_sets(jax.random.key(5), mix, [3, 30])
    train, mask = e7._pad_far(sets, scale=e7.SIGMA_DATA * math.sqrt(8))
    null = np.asarray(e7._null_scores(jax.random.key(6), mix, train, n=128, repeats=8))
    assert null.shape == (2, 8) and 0.75 < null[1].mean() < 0.98
    keys = jax.random.split(jax.random.key(7), 2)
    ex = e7._sample_exact(keys, mix, n=128, steps=16)
    assert float(np.max(e7._rel_distance(mix, ex))) < 1e-4
    assert abs(float(e7._scores(ex, train)[1]) - np.median(null[1])) < 0.1
    em = e7._sample_empirical(keys, train, mask, n=64, steps=16)
    assert np.asarray(e7._scores(em, train)).max() < 0.05


def _synthetic_table():
    ranks, ratios, seeds = [2, 8], [1, 4, 16, 64], 3
    shape = (len(ranks), len(ratios), seeds)
    score = np.broadcast_to(np.array([0.02, 0.4, 0.9, 0.95])[None, :, None], shape)
    band = np.stack([np.full(shape, 0.87), np.full(shape, 0.93)], -1)
    status = np.where(score < 0.8, "memorised", "generalising")
    rate = {str(r): [0.0, 0.0, 1.0, 1.0] for r in ranks}
    data = {"dim": 16, "ranks": ranks, "ratios": ratios, "seeds": seeds, "score": score,
            "band": band, "null_median": np.full(shape, 0.9), "dist": np.full(shape, 0.04),
            "status": status, "exact_dist": np.full(shape, 1e-7), "rate": rate,
            "rate_lo": {k: [max(0.0, x - 0.4) for x in v] for k, v in rate.items()},
            "rate_hi": {k: [min(1.0, x + 0.4) for x in v] for k, v in rate.items()},
            "transitions": {"2": 16.0, "8": math.inf}, "on_support": e7.ON_SUPPORT,
            "level": e7.LEVEL}
    return Table("E7", "quick", (), data)


def test_figure_is_labelled_and_readable():
    plt = pytest.importorskip("matplotlib.pyplot")
    table = _synthetic_table()
    fig = e7.plot(table)
    try:
        assert style_problems(fig) == []
        for ax in fig.axes:
            assert ax.get_legend() is not None
            assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "4", "16", "64"]
    finally:
        plt.close(fig)
    assert "generalising" in e7.summary(table)


def test_padded_batches_draw_valid_rows_only():
    data, counts = _batched.pad_sets([np.ones((3, 2)), 2 * np.ones((5, 2))])
    assert data.shape == (2, 5, 2) and counts.tolist() == [3, 5]
    rows = _batched.batch_rows(jax.random.key(0), data[0], counts[0], 500)
    assert bool(jnp.all(rows == 1.0))


@pytest.mark.slow
def test_vmapped_mlps_train_and_sample():
    """Two tiny denoisers (one per padded set) train to finite losses and sample; the Heun
    sampler with the exact denoiser of N(0, I) follows the exact PF-ODE flow."""
    x = np.asarray(jax.random.normal(jax.random.key(1), (64, 2)))
    data, counts = _batched.pad_sets([x[:16], x])
    params, hist = _batched.train_mlps(jax.random.key(2), data, counts, width=16, depth=1,
                                       steps=200, batch_size=32, sigma_data=1.0)
    hist = np.asarray(hist)
    assert hist.shape == (200, 2)
    assert np.all(np.isfinite(hist))
    xs = _batched.sample_edm(jax.random.key(3), params, n=8, steps=8)
    assert xs.shape == (2, 8, 2) and bool(jnp.all(jnp.isfinite(xs)))
    # exact denoiser of N(0, I): D(x) = x / (1 + sigma^2); the PF-ODE x(sigma) is proportional
    # to sqrt(1 + sigma^2), and the last step returns D(x(sigma_min), sigma_min). Heun is
    # second order: doubling the steps divides the error by about 4.
    z = jax.random.normal(jax.random.key(4), (1000, 1))
    errs = []
    for steps in (32, 64):
        sig = jnp.asarray(_batched.edm_sigmas(steps))
        out = _batched.heun_edm(lambda y, s: y / (1 + s * s), sig[0] * z, sig)
        ref = sig[0] * z / jnp.sqrt(1 + sig[0] ** 2) / jnp.sqrt(1 + sig[-1] ** 2)
        errs.append(float(jnp.max(jnp.abs(out - ref))) / float(jnp.max(jnp.abs(ref))))
    assert errs[1] < 1e-2 and errs[0] / errs[1] > 3.0, errs


@pytest.mark.slow
def test_quick_run_passes_its_controls_and_matches_the_record():
    table = ms.experiments.run("E7", "quick")
    review = _registry.review(table)
    assert table.valid and review.ok, (review, table.format())

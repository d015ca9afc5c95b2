"""Shared test helpers: comparisons that do not depend on the CPU's vector width.

Float32 results are compared relative to the norm of the reference vector, never element-wise
against a tiny ``atol``: a score element of size 7e-3 next to elements of size 10 carries the
round-off of the large ones, and how much depends on how the compiler vectorises the sums.
"""

from __future__ import annotations

import numpy as np
import pytest

__all__ = [
    "assert_geometry_and_rate_separation",
    "assert_noised_law_exact",
    "assert_on_protocol",
    "assert_rel_close",
    "assert_transformations_compose",
    "brute_force_nearest",
    "hadamard_frame",
    "histogram_tv",
    "quadrature_log_prob",
    "rel_err",
    "slow_except",
]


def slow_except(values, fast, ids=None) -> list:
    """Parameters for ``pytest.mark.parametrize``: those in ``fast`` run in the fast suite.

    The others carry the ``slow`` mark (CI runs them too): one representative per concept keeps
    the README's test command quick, the full sweep still runs. ``fast`` holds values (or ids,
    when ``ids`` is given); tuples are unpacked for multi-argument parametrisations.
    """
    out = []
    for i, v in enumerate(values):
        key = v if ids is None else ids[i]
        marks = () if key in fast else (pytest.mark.slow,)
        args = v if isinstance(v, tuple) else (v,)
        out.append(pytest.param(*args, marks=marks, id=None if ids is None else ids[i]))
    return out


def rel_err(got, ref, axis=-1) -> float:
    """Worst ``|got - ref| / |ref|`` over the leading axes, norms taken along ``axis``.

    Scalars and 0-d arrays are compared by absolute value. A zero reference vector falls back
    to the absolute error.
    """
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        raise AssertionError(f"shapes differ: {got.shape} vs {ref.shape}")
    if ref.ndim == 0:
        den = abs(float(ref))
        num = abs(float(got - ref))
        return num / den if den > 0 else num
    num = np.linalg.norm(got - ref, axis=axis)
    den = np.linalg.norm(ref, axis=axis)
    out = np.where(den > 0, num / np.where(den > 0, den, 1.0), num)
    return float(np.max(out))


def assert_rel_close(got, ref, rtol: float, axis=-1, what: str = "") -> None:
    """Assert :func:`rel_err` ``<= rtol``; the message carries the measured error."""
    err = rel_err(got, ref, axis=axis)
    assert np.isfinite(err) and err <= rtol, f"{what} relative error {err:.3g} > {rtol:.3g}"


# ---------------------------------------------------------------------------------------------
# Manifold references (tests/densities): numpy only, sharing no code with the implementation
# ---------------------------------------------------------------------------------------------


def hadamard_frame(seed, d, k):
    """A random orthonormal ``(d, k)`` frame that is exact in float32 and float64.

    Signed permutations of a block-diagonal Hadamard matrix (entries 0, +-1/2, +-1): the same
    frame in both precisions, orthonormal to the last bit.
    """
    rng = np.random.default_rng(seed)
    h2 = np.array([[1.0, 1.0], [1.0, -1.0]])
    h4 = np.kron(h2, h2) / 2.0
    blocks = d // 4
    full = np.eye(d)
    full[: 4 * blocks, : 4 * blocks] = np.kron(np.eye(blocks), h4)
    full = full[rng.permutation(d)] * rng.choice([-1.0, 1.0], d)[:, None]
    return full[:, rng.permutation(d)[:k]]


def quadrature_log_prob(x, nodes, log_w, alpha, sigma) -> float:
    """``log sum_i w_i N(x; alpha y_i, sigma^2 I)`` in float64 (weights normalised here)."""
    from scipy.special import logsumexp

    log_w = log_w - logsumexp(log_w)
    quad = np.sum((x - alpha * nodes) ** 2, axis=1)
    return float(logsumexp(log_w - quad / (2 * sigma**2))
                 - 0.5 * x.shape[0] * np.log(2 * np.pi * sigma**2))


def brute_force_nearest(chart, box, periodic, x, levels=6):
    """Nearest point of a numpy ``chart`` over a parameter box by zooming grid searches.

    Returns ``(point, distance)``; no derivatives, nothing shared with the implementation.
    """
    box = np.asarray(box, np.float64)
    m = len(box)
    n = 4000 if m == 1 else 500
    lo, hi = box[:, 0].copy(), box[:, 1].copy()
    best = None
    for _ in range(levels):
        axes = [np.linspace(lo[i], hi[i], n) for i in range(m)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, m)
        i = np.argmin(np.sum((chart(grid) - x) ** 2, -1))
        best = grid[i]
        cell = (hi - lo) / (n - 1)
        lo, hi = best - 3 * cell, best + 3 * cell
        for j in range(m):  # stay inside non-periodic boxes
            if not periodic[j]:
                lo[j], hi[j] = max(lo[j], box[j, 0]), min(hi[j], box[j, 1])
        n = 200 if m == 1 else 60
    p = chart(best[None])[0]
    return p, float(np.linalg.norm(x - p))


def assert_noised_law_exact(manifold, nodes, log_w, clean, *, exact: bool, seed=0,
                            sigmas=(1.0, 0.3, 0.1, 0.03), alpha_ref=0.8, ref_log_prob=None):
    """log p against a brute-force quadrature (``nodes``, ``log_w``, or a callable
    ``ref_log_prob(x, alpha, sigma)``); score = grad log p; denoise agrees through Tweedie.
    ``exact`` manifolds also run at sigma 1e-3 and 1e-4.

    Tolerances (float64): log p within 1e-6 nats; grad and Tweedie within 1e-9 of
    ``max(|score|, 1/sigma)``. Run under ``jax.enable_x64``.
    """
    import jax

    rng = np.random.default_rng(seed)

    @jax.jit
    def run(xs, alpha, sigma):
        over = (0, None, None)
        st = jax.vmap(manifold.stats, over)(xs, alpha, sigma)  # what log_prob/score/denoise read
        grad = jax.vmap(jax.grad(manifold.log_prob), over)(xs, alpha, sigma)
        return st.log_prob, st.score, grad, st.mean

    worst = {"log_prob": 0.0, "grad": 0.0, "tweedie": 0.0}
    for alpha in (alpha_ref, 1.0):
        for sigma in tuple(sigmas) + ((1e-3, 1e-4) if exact else ()):
            noisy = alpha * clean + sigma * rng.standard_normal(clean.shape)
            far = alpha * clean[:1] + 0.5 * rng.standard_normal(clean[:1].shape)
            xs = np.concatenate([noisy, far])
            log_p, score, grad, mean = (np.asarray(v) for v in run(xs, alpha, sigma))
            assert np.all(np.isfinite(score))
            scale = np.maximum(np.linalg.norm(score, axis=-1), 1.0 / sigma)[:, None]
            tweedie = (alpha * mean - xs) / sigma**2
            worst["grad"] = max(worst["grad"], float(np.max(np.abs(grad - score) / scale)))
            worst["tweedie"] = max(worst["tweedie"],
                                   float(np.max(np.abs(tweedie - score) / scale)))
            if alpha == alpha_ref and sigma in sigmas:
                ref = np.array([quadrature_log_prob(x, nodes, log_w, alpha, sigma)
                                if ref_log_prob is None else ref_log_prob(x, alpha, sigma)
                                for x in xs])
                worst["log_prob"] = max(worst["log_prob"], float(np.max(np.abs(log_p - ref))))
    assert worst["log_prob"] < 1e-6, worst
    assert worst["grad"] < 1e-9, worst
    assert worst["tweedie"] < 1e-9, worst


def assert_geometry_and_rate_separation(manifold, clean, chart, box, periodic):
    """project/distance against :func:`brute_force_nearest` (1e-6); the rate separation
    ``|sigma^2 s + x - proj x| ~ sigma^2`` (log-log slope in [1.8, 2.2]). Run under x64."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(3)
    projectors = np.asarray(jax.jit(jax.vmap(manifold.normal_projector))(jnp.asarray(clean)))

    def tube(points, projs, deltas):  # points at distance delta along random normals
        out = []
        for y, proj in zip(points, projs, strict=True):
            for delta in deltas:
                n = proj @ rng.standard_normal(len(y))
                out.append(y + delta * n / np.linalg.norm(n))
        return np.asarray(out)

    @jax.jit
    def geometry(xs):
        return jax.vmap(manifold.project)(xs), jax.vmap(manifold.distance)(xs)

    xs = tube(clean[:3], projectors[:3], (0.02, 0.15))
    near = tube(clean, projectors, (0.03,))
    proj, dist = (np.asarray(v) for v in geometry(jnp.asarray(np.concatenate([xs, near]))))
    for x, p, d in zip(xs, proj, dist, strict=False):
        p_ref, d_ref = brute_force_nearest(chart, box, periodic, x)
        assert np.linalg.norm(p - p_ref) < 1e-6, (x, p, p_ref)
        assert abs(d - d_ref) < 1e-6, (d, d_ref)

    # rate separation: geometry lives at order sigma^-2, the density at order one
    proj = proj[len(xs):]
    score = jax.jit(jax.vmap(manifold.score, (0, None, None)))
    # quadrature manifolds: only sigmas their grid resolves (alpha * spacing <= sigma)
    low = max(0.01, float(getattr(manifold, "spacing", 0.0)))
    sigmas = np.geomspace(low, 4 * low, 5)
    gaps = []
    for sigma in sigmas:
        residual = sigma**2 * score(jnp.asarray(near), 1.0, sigma) + (near - proj)
        gaps.append(float(np.mean(np.linalg.norm(residual, axis=1))))
    slope = np.polyfit(np.log(sigmas), np.log(gaps), 1)[0]
    assert 1.8 <= slope <= 2.2, (slope, gaps)


def assert_transformations_compose(manifold, x, alpha=0.9, sigma=0.2):
    """A density is a PyTree: jit with it as an argument, vmap, jacfwd of the score against the
    closed-form divergence (1e-6), projector idempotent, unflattened copy gives the same score.
    Run under x64."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def run(m, x):
        score = m.score(x, alpha, sigma)
        batch = jax.vmap(m.score, (0, None, None))(jnp.stack([x, 2 * x]), alpha, sigma)
        div = jnp.trace(jax.jacfwd(m.score)(x, alpha, sigma))
        return score, batch, div, m.score_divergence(x, alpha, sigma), m.normal_projector(x)

    score, batch, div, closed_div, proj = run(manifold, x)
    np.testing.assert_allclose(batch[0], score, rtol=1e-12)
    np.testing.assert_allclose(closed_div, div, rtol=1e-6)
    np.testing.assert_allclose(proj @ proj, proj, atol=1e-12)
    leaves, tree = jax.tree_util.tree_flatten(manifold)
    np.testing.assert_allclose(run(jax.tree_util.tree_unflatten(tree, leaves), x)[0], score)


def histogram_tv(values, lo, hi, density, bins=12) -> float:
    """Total variation between a histogram of ``values`` and a numpy ``density`` on ``[lo, hi]``."""
    counts, _ = np.histogram(np.asarray(values), bins=bins, range=(lo, hi))
    fine = np.linspace(lo, hi, bins * 64 + 1)
    mid = 0.5 * (fine[1:] + fine[:-1])
    mass = density(mid).reshape(bins, 64).sum(1)
    return float(0.5 * np.abs(counts / counts.sum() - mass / mass.sum()).sum())


def assert_on_protocol(table, min_claims: int = 1, *, controls_pass: bool = False) -> list:
    """A study as ``verify`` needs it: every control passed, every verdict the recorded one,
    at least ``min_claims`` claim rows, each with a verdict, at least ``MIN_SEEDS`` seeds and
    the controls it rests on (all passed when ``controls_pass``). Returns the claim rows."""
    from manifold_scores.experiments import protocol, review

    assert table.valid and review(table).ok, (review(table), table.format())
    claims = [r for r in table.rows if r.kind == "claim"]
    assert len(claims) >= min_claims, (len(claims), min_claims)
    for r in claims:
        assert r.verdict in protocol.VERDICTS, r.key
        assert r.evidence["seeds"] >= protocol.MIN_SEEDS, r.key
        assert r.evidence["controls"], r.key
        if controls_pass:
            assert all(r.evidence["controls"].values()), r.key
    return claims

"""Core: exact-versus-reference checks of the library's kernels (the former ``demo`` checks).

MoLRG scores against autodiff and dense linear algebra (float64), the streamed empirical-mixture
kernel against the naive one, float32 accuracy at small sigma, and the process identities
``f = dlog(alpha)/dt`` and ``g^2 = d(sigma^2)/dt - 2 f sigma^2``. Each row holds when the measured
error is below its tolerance. Not a claim of a paper: the ground the experiments stand on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import manifold_scores as ms
from manifold_scores.experiments._registry import register
from manifold_scores.experiments._table import Row, Table, check_size
from manifold_scores.testing import dense_mixture_stats, molrg_dense_parts, naive_isotropic_stats

Check = tuple[str, float, float]  # (check, measured, tolerance); holds iff measured <= tolerance


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)))


def _molrg_checks() -> list[Check]:
    """Float64 MoLRG at sigma in [1e-4, 1e2] (VE) and VP noise levels."""
    worst_grad, worst_dense = 0.0, 0.0
    with jax.enable_x64(True):
        for seed in range(3):
            rng = np.random.default_rng(seed)
            k, r = int(rng.integers(1, 6)), int(rng.integers(1, 9))
            d = int(rng.integers(r + 1, 129))
            mix = ms.MoLRG.random(jax.random.key(seed), d, r, k, orthogonal=False,
                                  weights=jnp.asarray(rng.dirichlet(np.ones(k))))
            vp = ms.VP()
            levels = [(1.0, s) for s in (1e-4, 1e-2, 1.0, 1e2)]
            levels += [(float(vp.alpha(t)), float(vp.sigma(t))) for t in (0.01, 0.5)]
            x0 = mix.sample(jax.random.key(seed + 10), 2)
            eps = jax.random.normal(jax.random.key(seed + 20), x0.shape)

            @jax.jit
            def stats_and_grad(x, a, s, mix=mix):
                return mix.stats(x, a, s), jax.grad(mix.log_prob)(x, a, s)

            means, covs, lw = molrg_dense_parts(mix)
            for a, s in levels:
                for x in a * x0 + s * eps:
                    st, grad = stats_and_grad(x, a, s)
                    ref = dense_mixture_stats(x, means, covs, lw, a, s)
                    worst_grad = max(worst_grad, _rel(st.score, grad))
                    if s >= 1e-2:
                        worst_dense = max(
                            worst_dense,
                            abs(float(st.log_prob) - ref.log_prob) / abs(ref.log_prob),
                            _rel(st.score, ref.score), _rel(st.mean, ref.mean))
    return [("MoLRG score vs jax.grad(log_prob), float64", worst_grad, 1e-9),
            ("MoLRG log_prob/score/denoise vs dense linalg", worst_dense, 1e-8)]


def _empirical_checks() -> list[Check]:
    rows = []
    with jax.enable_x64(True):
        pts = jax.random.normal(jax.random.key(0), (20_000, 8))
        lw = jnp.full(20_000, -jnp.log(20_000.0))
        xs = pts[:16] + 0.05 * jax.random.normal(jax.random.key(1), (16, 8))
        emp = ms.Empirical(pts, chunk_size=2048)
        got = jax.jit(jax.vmap(emp.score, (0, None, None)))(xs, 1.0, 0.05)
        ref = jax.jit(jax.vmap(lambda x: naive_isotropic_stats(x, pts, lw, 1.0, 0.05).score))(xs)
        rows.append(("Empirical streamed vs naive score, N=20k, float64", _rel(got, ref), 1e-12))
    # float32 at sigma = 1e-3, points on a circle (dense neighbours), queries within 3 sigma
    sigma, rng = 1e-3, np.random.default_rng(0)
    th = rng.uniform(0, 2 * np.pi, 4000)
    frame = np.linalg.qr(rng.normal(size=(16, 2)))[0]
    pts32 = (np.stack([np.cos(th), np.sin(th)], 1) @ frame.T).astype(np.float32)
    off = rng.normal(size=(32, 16))
    off *= 3 * sigma * rng.uniform(size=(32, 1)) / np.linalg.norm(off, axis=1, keepdims=True)
    xs32 = (pts32[:32] + off).astype(np.float32)
    got = jax.vmap(ms.Empirical(jnp.asarray(pts32)).score, (0, None, None))(xs32, 1.0, sigma)
    with jax.enable_x64(True):
        ref = jax.vmap(ms.Empirical(jnp.asarray(pts32, jnp.float64)).score, (0, None, None))(
            jnp.asarray(xs32, jnp.float64), 1.0, sigma)
    rows.append(("Empirical float32 vs float64 score, sigma=1e-3", _rel(got, ref), 1e-3))
    return rows


def _process_checks() -> list[Check]:
    def rel(a, b):
        return float(jnp.max(jnp.abs(a - b) / (jnp.abs(b) + 1e-300)))

    worst = 0.0
    with jax.enable_x64(True):
        for proc in (ms.VE(), ms.VP(), ms.CosineVP(), ms.EDM(), ms.Flow()):
            ts = jnp.linspace(max(float(proc.t_min), 1e-3), float(proc.t_max) * 0.99, 9)
            f = jax.vmap(jax.grad(lambda t, p=proc: jnp.log(p.alpha(t))))(ts)
            var = jax.vmap(jax.grad(lambda t, p=proc: p.sigma(t) ** 2))(ts)
            g2 = var - 2 * f * jax.vmap(proc.sigma)(ts) ** 2
            worst = max(worst, rel(jax.vmap(proc.drift)(ts), f),
                        rel(jax.vmap(proc.diffusion_squared)(ts), g2))
    return [("process f = dlog(alpha)/dt, g^2 identity", worst, 1e-9)]


CHECKS = (_molrg_checks, _empirical_checks, _process_checks)


def run(size: str = "quick", *, seed: int = 0) -> Table:
    """All core checks (the same at both sizes)."""
    check_size(size)
    rows = []
    for check in CHECKS:
        for name, measured, tol in check():
            rows.append(Row(name, measured, f"<= {tol:.0e}",
                            bool(np.isfinite(measured) and measured <= tol)))
    return Table("core", size, tuple(rows))


register("core", "Exact-vs-reference checks of the core", "library", run, None)

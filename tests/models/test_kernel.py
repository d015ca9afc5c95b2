"""WPO kernel model against a dense reference (per-centre full covariances through jnp.linalg).

The reference forms ``C_i = alpha^2 (L_i L_i^T + eps I)^{-1} + sigma^2 I`` densely, takes
``log p`` by log-sum-exp of Gaussian log-densities, and the score and Laplacian by ``jax.grad``
and ``jax.hessian``: an independent algorithm (no Woodbury identities, no streaming).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_scores as ms
from manifold_scores import losses
from manifold_scores.models import kernel
from tests.helpers import assert_rel_close, slow_except


def _dense_logp(params, alpha, sigma):
    lmat = kernel.factors(params)
    z = params.centres
    n, d = z.shape
    gam = jnp.einsum("ndq,neq->nde", lmat, lmat) + params.eps * jnp.eye(d)
    prior = jnp.linalg.inv(gam)
    cov = alpha**2 * prior + sigma**2 * jnp.eye(d)

    def logp(y):
        u = y - alpha * z
        sol = jnp.linalg.solve(cov, u[..., None])[..., 0]
        quad = jnp.sum(u * sol, -1)
        logdet = jnp.linalg.slogdet(cov)[1]
        return jax.scipy.special.logsumexp(-0.5 * (quad + logdet + d * jnp.log(2 * jnp.pi))) \
            - jnp.log(n)

    def mean_and_trace(y):
        u = y - alpha * z
        logits = -0.5 * (jnp.sum(u * jnp.linalg.solve(cov, u[..., None])[..., 0], -1)
                         + jnp.linalg.slogdet(cov)[1])
        w = jax.nn.softmax(logits)
        gain = alpha * jnp.einsum("nde,nef->ndf", prior, jnp.linalg.inv(cov))
        m = z + jnp.einsum("nde,ne->nd", gain, u)
        post = prior - alpha * jnp.einsum("nde,nef->ndf", gain, prior)
        mean = w @ m
        tr = w @ (jnp.trace(post, axis1=1, axis2=2) + jnp.sum(m * m, -1)) - mean @ mean
        return mean, tr

    return logp, mean_and_trace


def _params(rank, kind, chunk):
    z = jax.random.normal(jax.random.key(0), (37, 5))
    p = kernel.init(jax.random.key(1), z, rank=rank, kind=kind, eps=0.5, init_scale=1.3,
                    chunk_size=chunk, width=16, depth=3)
    if kind == "free":  # move away from the symmetric initialisation
        p = jax.tree.map(lambda a: a, p)
        object.__setattr__(p, "factor", p.factor + 0.5 * jax.random.normal(
            jax.random.key(3), p.factor.shape))
        if rank is None:
            object.__setattr__(p, "factor", jnp.tril(p.factor))
    return p


@pytest.mark.parametrize("rank,kind", slow_except(
    [(None, "mlp"), (None, "free"), (2, "mlp"), (3, "free")], [(None, "free"), (3, "free")]))
def test_matches_dense_reference(x64, rank, kind):
    p = _params(rank, kind, chunk=8)
    xs = jax.random.normal(jax.random.key(2), (4, 5)) * 1.5

    @jax.jit
    def both(p, xs, alpha, sigma):
        st = jax.vmap(kernel.stats, (None, 0, None, None))(p, xs, alpha, sigma)
        logp, mean_tr = _dense_logp(p, alpha, sigma)
        score = jax.vmap(jax.grad(logp))(xs)
        lap = jax.vmap(lambda y: jnp.trace(jax.hessian(logp)(y)))(xs)
        mean, tr = jax.vmap(mean_tr)(xs)
        ism_ref = jnp.mean(0.5 * jnp.sum(score**2, -1) + lap)
        return st, kernel.ism_loss(p, xs, alpha, sigma), (jax.vmap(logp)(xs), score, lap, mean,
                                                          tr, ism_ref)

    for alpha, sigma in [(1.0, 0.0), (0.8, 0.6), (0.1, 2.0), (0.0, 1.0)]:
        st, ism, (logp, score, lap, mean, tr, ism_ref) = both(p, xs, alpha, sigma)
        np.testing.assert_allclose(st.log_prob, logp, rtol=1e-10)
        assert_rel_close(st.score, score, 1e-8)
        np.testing.assert_allclose(st.divergence, lap, rtol=1e-8)
        if alpha > 0:
            assert_rel_close(st.mean, mean, 1e-8)
            np.testing.assert_allclose(st.cov_trace, tr, rtol=1e-8, atol=1e-12)
        # the ISM loss of the model equals the dense reference's
        np.testing.assert_allclose(ism, ism_ref, rtol=1e-8)
        if sigma == 0.0:
            dense_at_zero = (logp, score, lap, mean, tr, ism_ref)
    # sigma = 0 as a number (not traced, as in ism_loss's default) takes the noiseless algebra
    logp, score, lap, mean, tr, ism_ref = dense_at_zero
    st = jax.vmap(kernel.stats, (None, 0, None, None))(p, xs, 1.0, 0.0)
    np.testing.assert_allclose(st.log_prob, logp, rtol=1e-10)
    assert_rel_close(st.score, score, 1e-8)
    np.testing.assert_allclose(st.divergence, lap, rtol=1e-8)
    assert_rel_close(st.mean, mean, 1e-8)
    np.testing.assert_allclose(st.cov_trace, tr, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(kernel.ism_loss(p, xs), ism_ref, rtol=1e-8)


@pytest.mark.slow
def test_gradient_of_ism_matches_dense(x64):
    p = _params(2, "free", chunk=16)
    xs = jax.random.normal(jax.random.key(4), (6, 5))

    def dense_ism(factor):
        q = jax.tree.map(lambda a: a, p)
        object.__setattr__(q, "factor", factor)
        logp, _ = _dense_logp(q, 1.0, 0.0)
        s = jax.vmap(jax.grad(logp))(xs)
        lap = jax.vmap(lambda y: jnp.trace(jax.hessian(logp)(y)))(xs)
        return jnp.mean(0.5 * jnp.sum(s * s, -1) + lap)

    g = jax.jit(jax.grad(lambda pp: kernel.ism_loss(pp, xs)))(p).factor
    assert_rel_close(g.reshape(-1), jax.jit(jax.grad(dense_ism))(p.factor).reshape(-1), 1e-8)


@pytest.mark.slow
def test_ism_through_losses_and_autodiff_divergence(x64):
    import manifold_scores as ms
    p = _params(None, "mlp", chunk=10)
    p = dataclasses.replace(p, process=ms.VP())
    xs = jax.random.normal(jax.random.key(5), (5, 5))
    closed = jax.jit(lambda pp, x: losses.ism(None, kernel.apply, pp, x, 0.0,
                                              divergence=kernel.score_and_divergence))(p, xs)
    auto = jax.jit(lambda pp, x: losses.ism(None, kernel.apply, pp, x, 0.0,
                                            divergence="exact"))(p, xs)
    np.testing.assert_allclose(closed, auto, rtol=1e-9)
    np.testing.assert_allclose(closed, kernel.ism_loss(p, xs), rtol=1e-12)


@pytest.mark.slow
def test_samples_have_the_mixture_moments(x64):
    p = _params(2, "free", chunk=8)
    xs = kernel.sample(jax.random.key(6), p, 40000)
    lmat = kernel.factors(p)
    prior = jnp.linalg.inv(jnp.einsum("ndq,neq->nde", lmat, lmat) + p.eps * jnp.eye(5))
    mean = p.centres.mean(0)
    cov = prior.mean(0) + jnp.cov(p.centres.T, bias=True)
    emp_cov = jnp.cov(xs.T, bias=True)
    assert float(jnp.max(jnp.abs(xs.mean(0) - mean))) < 5 * float(jnp.sqrt(jnp.max(
        jnp.diag(cov)) / 40000))
    assert float(jnp.max(jnp.abs(emp_cov - cov))) < 0.05 * float(jnp.max(jnp.diag(cov)))


def _avals(jaxpr):
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            yield v.aval
        for prm in eqn.params.values():
            for sub in prm if isinstance(prm, (tuple, list)) else (prm,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _avals(inner)


def test_lowrank_ism_step_never_forms_batch_by_centres_by_dim():
    """d = 3072, 1000 centres, q = 16, batch 64: no (B, N, d) and no (N, d, d) array in the
    jaxpr of one ISM value-and-gradient step (forward and backward)."""
    n, d, q, b = 1000, 3072, 16, 64
    centres = jnp.zeros((n, d))
    p = kernel.init(jax.random.key(0), centres, rank=q, eps=1.0, chunk_size=250)
    fn = jax.value_and_grad(lambda pp, x: kernel.ism_loss(pp, x))
    jaxpr = jax.make_jaxpr(fn)(p, jnp.zeros((b, d))).jaxpr
    sizes = [int(np.prod(a.shape)) for a in _avals(jaxpr) if hasattr(a, "shape")]
    largest = max(sizes)
    assert largest <= n * d * q, largest  # the stacked factors themselves
    assert largest < b * n * d and largest < n * d * d


def test_validation():
    z = jnp.zeros((5, 2))
    with pytest.raises(ValueError, match="rank"):
        kernel.init(jax.random.key(0), z, rank=3)
    with pytest.raises(ValueError, match="kind"):
        kernel.init(jax.random.key(0), z, kind="dense")
    p = kernel.init(jax.random.key(0), z, width=4, depth=2)
    with pytest.raises(ValueError, match="both be zero"):
        kernel.stats(p, jnp.zeros(2), 0.0, 0.0)
    with pytest.raises(ValueError, match="x must have shape"):
        kernel.stats(p, jnp.zeros(3), 1.0, 0.0)
    with pytest.raises(ValueError, match="process"):
        kernel.apply(p, jnp.zeros(2), 0.5)


def test_small_cholesky_and_inverse_match_lapack(x64):
    """The plain-XLA q x q Cholesky and SPD inverse equal jnp.linalg's, values and gradients."""
    a = jax.random.normal(jax.random.key(0), (3, 4, 7, 7))
    a = a @ jnp.swapaxes(a, -1, -2) + 0.1 * jnp.eye(7)
    chol = kernel._cholesky(a)
    assert_rel_close(chol.reshape(-1), jnp.linalg.cholesky(a).reshape(-1), 1e-12)
    assert_rel_close(kernel._spd_inverse(chol).reshape(-1), jnp.linalg.inv(a).reshape(-1), 1e-10)

    def logdet(f):
        return lambda m: jnp.sum(jnp.log(jnp.diagonal(f(m), axis1=-2, axis2=-1)))

    assert_rel_close(jax.grad(logdet(kernel._cholesky))(a).reshape(-1),
                     jax.grad(logdet(jnp.linalg.cholesky))(a).reshape(-1), 1e-10)

    # the closed-form derivative of (log det, inverse), forward and reverse, against LAPACK's
    def both(f):
        return lambda m: jnp.sum(f(m)[0] ** 2) + jnp.sum(jnp.sin(f(m)[1]))

    def lapack(m):
        return jnp.linalg.slogdet(m)[1], jnp.linalg.inv(m)

    ours = kernel._spd_logdet_inv
    for i, r in zip(ours(a), lapack(a), strict=True):
        assert_rel_close(i.reshape(-1), r.reshape(-1), 1e-10)
    assert_rel_close(jax.grad(both(ours))(a).reshape(-1), jax.grad(both(lapack))(a).reshape(-1),
                     1e-9)
    t = jax.random.normal(jax.random.key(1), a.shape)
    t = t + jnp.swapaxes(t, -1, -2)
    assert_rel_close(jax.jvp(both(ours), (a,), (t,))[1], jax.jvp(both(lapack), (a,), (t,))[1],
                     1e-9)


@pytest.mark.slow
def test_ism_step_returns_on_two_threads():
    """Regression: with LAPACK's potrf/trsm in the graph, XLA:CPU on 2+ threads deadlocked in
    this step (500 centres, d = 256, q = 16, batch 64); run in a subprocess with a time limit."""
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        from manifold_scores.models import kernel
        data = np.random.default_rng(0).standard_normal((564, 256)).astype(np.float32)
        p = kernel.init(jax.random.key(0), jnp.asarray(data[:500]), rank=16, eps=1.0,
                        chunk_size=250)
        g = jax.jit(jax.grad(kernel.ism_loss))(p, jnp.asarray(data[500:]))
        assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(g))
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


# Run-time checks under jit raise through a host callback; its exception type is the runtime's.
RUNTIME_ERRORS = (ValueError, RuntimeError)


def test_traced_noise_levels_are_checked_under_jit():
    """sigma < 0, alpha < 0, NaN or alpha = sigma = 0 raise at run time (they gave the answer at
    |sigma|, a finite value or a NaN); sigma = 0 with alpha > 0 is the model itself and runs."""
    z = jax.random.normal(jax.random.key(0), (12, 3))
    p = kernel.init(jax.random.key(1), z, rank=2, kind="free", chunk_size=None,
                    process=ms.Flow())
    x = jnp.asarray([0.3, -0.2, 0.5])
    both = jax.jit(lambda p, a, s: kernel.stats(p, x, a, s).score)
    # sigma = 0 as a number: the cheaper noiseless algebra
    noiseless = jax.jit(lambda p: kernel.stats(p, x, 1.0, 0.0).score)(p)
    assert_rel_close(both(p, 1.0, 0.0), noiseless, 1e-5)
    # Flow: sigma(0) = 0 exactly, the terminal time the model is trained at
    assert_rel_close(jax.jit(kernel.apply)(p, x, 0.0), noiseless, 1e-5)
    assert np.all(np.isfinite(np.asarray(both(p, 0.0, 0.5))))
    nan = float("nan")
    for a, s in [(1.0, -0.5), (-1.0, 0.5), (0.0, 0.0), (1.0, nan), (nan, 0.5)]:
        with pytest.raises(RUNTIME_ERRORS, match="must be non-negative and finite"):
            jax.block_until_ready(both(p, a, s))
    sigma_only = jax.jit(lambda p, s: kernel.stats(p, x, 1.0, s).score)
    for s in (-0.5, nan):
        with pytest.raises(RUNTIME_ERRORS, match="sigma must be non-negative and finite"):
            jax.block_until_ready(sigma_only(p, s))
    alpha_only = jax.jit(lambda p, a: kernel.stats(p, x, a, 0.0).score)
    for a in (-1.0, 0.0):
        with pytest.raises(RUNTIME_ERRORS, match="alpha must be non-negative and finite"):
            jax.block_until_ready(alpha_only(p, a))


def test_float32_score_and_divergence_far_from_the_origin():
    """Centres and queries at |x| ~ 1e4 and 1e5: the float32 score and closed-form divergence
    agree with float64 at the same (float32) inputs, and with float32 autodiff (they were 0 or
    of the wrong sign: |x|^2 - 2 x.z + |z|^2 cancelled). alpha = 1 (training) and 0.5 make
    alpha c exact; another alpha adds the rounding of alpha c, one ulp of the input."""

    def run(p, x1, x_half, autodiff):
        out = []
        for x, alpha, sigma in ((x1, 1.0, 0.0), (x1, 1.0, 0.3), (x_half, 0.5, 0.1)):
            # sigma = 0 is a number here: the noiseless algebra the model is trained with
            st = kernel.stats(p, x, alpha, sigma)
            score = lambda y, a=alpha, s=sigma: kernel.stats(p, y, a, s).score  # noqa: E731
            div = jnp.trace(jax.jacfwd(score)(x)) if autodiff else st.divergence
            out.append((st.score, st.divergence, div))
        return out

    run = jax.jit(run, static_argnums=3)
    for offset in (1e4, 1e5):
        with jax.enable_x64(True):
            z = jax.random.normal(jax.random.key(0), (30, 3), jnp.float64) + offset
            p = kernel.init(jax.random.key(1), z, kind="free", eps=0.5, init_scale=1.3,
                            chunk_size=None)
            p = dataclasses.replace(p, factor=jnp.tril(p.factor + 0.3 * jax.random.normal(
                jax.random.key(2), p.factor.shape)))
            p32 = jax.tree.map(lambda a: np.asarray(a, np.float32), p)
            # queries near the data: z at alpha = 1, alpha z at alpha = 0.5
            xs = [np.asarray(alpha * z[3] + jnp.asarray([0.1, -0.2, 0.05]), np.float32)
                  for alpha in (1.0, 0.5)]
            p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), p32)
            refs = run(p64, *(jnp.asarray(x, jnp.float64) for x in xs), False)
        got = run(jax.tree.map(jnp.asarray, p32), *(jnp.asarray(x) for x in xs), True)
        for (score, div, autodiff), (score_ref, div_ref, _) in zip(got, refs, strict=True):
            assert score.dtype == jnp.float32
            assert_rel_close(score, score_ref, 1e-5, what=f"score at {offset:g}")
            assert abs(float(div) / float(div_ref) - 1) < 1e-5, (offset, div, div_ref)
            assert abs(float(autodiff) / float(div_ref) - 1) < 1e-5, (offset, autodiff, div_ref)


def test_unreadable_errors_are_value_errors_naming_the_argument():
    z = jax.random.normal(jax.random.key(0), (6, 2))
    key = jax.random.key(1)
    for kw, match in [(dict(width=0), "width must be"), (dict(depth=0), "depth must be"),
                      (dict(width=2.5), "width must be"), (dict(chunk_size=0), "chunk_size"),
                      (dict(chunk_size=-1), "chunk_size"), (dict(chunk_size=2.5), "chunk_size"),
                      (dict(process="VP"), "process must be")]:
        with pytest.raises(ValueError, match=match):
            kernel.init(key, z, **kw)
    p = kernel.init(key, z, rank=1, kind="free")
    with pytest.raises(ValueError, match="chunk_size"):
        kernel.stats(dataclasses.replace(p, chunk_size=0), jnp.zeros(2), 1.0, 0.5)
    for n in (-1, 2.5, "3"):
        with pytest.raises(ValueError, match="n must be a non-negative integer"):
            kernel.sample(key, p, n)
    with pytest.raises(ValueError, match="alpha must be non-negative"):
        kernel.sample(key, p, 3, alpha=-1.0)
    with pytest.raises(ValueError, match="sigma must be non-negative"):
        kernel.sample(key, p, 3, sigma=-0.5)
    assert kernel.sample(key, p, 0).shape == (0, 2)

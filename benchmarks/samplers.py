"""1000-step samplers (Euler, Heun, Euler-Maruyama) against diffrax with the same fixed steps.

Each sampler integrates the VP process on the EDM time grid of ``ms.sampling.time_grid`` with
the exact score of a MoLRG law or of an empirical law, for a batch of ``n`` samples. For each
method one case alternates:

* ``ours``: ``ms.sampling.sample_ode`` / ``sample_sde`` (one ``lax.scan``);
* ``diffrax``: ``diffrax.diffeqsolve`` with ``StepTo`` on the same grid (time reversed as
  ``u = -t`` so that it runs forward), the whole batch as one state:
  ODE ``Euler()`` / ``Heun()``; SDE ``Euler()`` with a ``VirtualBrownianTree`` (``tol`` half the
  smallest step) and with an ``UnsafeBrownianPath``.

Both take the density as a jit argument and compile from ``jax.jit(fn).lower(...)``; compile
times are reported per implementation (one compile each). ODE cases start both from the same
``x_init`` and report the relative difference of the results; SDE paths differ (noise draws).
Our Heun takes an Euler last step (EDM convention): 2 x steps - 1 score calls, diffrax's 2 x steps.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

import manifold_scores as ms
from benchmarks.common import alternate, compile_impl, drop_outputs, rel_err, summarize

# per size: steps, rounds, MoLRG (n, d, r, K), empirical (n, N, d)
SIZES = {
    "tiny": {"steps": 20, "rounds": 3, "molrg": (8, 8, 2, 2), "empirical": (8, 100, 4)},
    "quick": {"steps": 1000, "rounds": 3, "molrg": (128, 64, 4, 8), "empirical": (64, 1000, 16)},
    "full": {"steps": 1000, "rounds": 3, "molrg": (128, 64, 4, 8),
             "empirical": (64, 1000, 16)},
    "large": {"steps": 1000, "rounds": 5, "molrg": (1024, 64, 4, 8),
              "empirical": (256, 2000, 16)},
}


def _pf_field(score, proc):
    batched = jax.vmap(score, in_axes=(0, None))

    def field(x, t):
        return proc.drift(t) * x - 0.5 * proc.diffusion_squared(t) * batched(x, t)

    return field


def _diffrax_ode(diffrax, method, proc, ts, steps):
    solver = {"euler": diffrax.Euler, "heun": diffrax.Heun}[method]()

    def run(x0, dens):
        field = _pf_field(ms.score_fn(dens, proc), proc)
        term = diffrax.ODETerm(lambda u, y, args: -field(y, -u))
        sol = diffrax.diffeqsolve(term, solver, -ts[0], -ts[-1], None, x0,
                                  stepsize_controller=diffrax.StepTo(-ts),
                                  saveat=diffrax.SaveAt(t1=True), max_steps=steps)
        return sol.ys[-1]

    return run


def _diffrax_sde(diffrax, brownian, proc, ts, steps, shape, tol):
    import lineax

    n, d = shape

    def run(key, dens):
        batched = jax.vmap(ms.score_fn(dens, proc), in_axes=(0, None))

        def drift(u, y, args):
            t = -u
            x = y.reshape(n, d)
            out = proc.drift(t) * x - proc.diffusion_squared(t) * batched(x, t)
            return -out.reshape(-1)

        def diffusion(u, y, args):
            return lineax.DiagonalLinearOperator(proc.diffusion(-u) * jnp.ones_like(y))

        k0, k1 = jax.random.split(key)
        if brownian == "vbt":
            bm = diffrax.VirtualBrownianTree(-ts[0], -ts[-1], tol=tol, shape=(n * d,), key=k1)
        else:
            bm = diffrax.UnsafeBrownianPath(shape=(n * d,), key=k1)
        # UnsafeBrownianPath needs ForwardMode; the others keep diffrax's default adjoint
        adjoint = (diffrax.RecursiveCheckpointAdjoint() if brownian == "vbt"
                   else diffrax.ForwardMode())
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
        y0 = ms.sampling.prior_sample(k0, proc, shape, dtype=ts.dtype).reshape(-1)
        sol = diffrax.diffeqsolve(terms, diffrax.Euler(), -ts[0], -ts[-1], None, y0,
                                  stepsize_controller=diffrax.StepTo(-ts),
                                  saveat=diffrax.SaveAt(t1=True), max_steps=steps,
                                  adjoint=adjoint)
        return sol.ys[-1].reshape(n, d)

    return run


def _densities(cfg, dtype):
    n, d, r, k = cfg["molrg"]
    mix = ms.MoLRG.random(jax.random.key(0), d, r, k, dtype=dtype)
    ne, npts, de = cfg["empirical"]
    rng = np.random.default_rng(0)
    pts = jnp.asarray(rng.standard_normal((npts, de)) / math.sqrt(de), dtype)
    return [("MoLRG", mix, (n, d), f"K={k} r={r}"), ("empirical", ms.Empirical(pts), (ne, de),
                                                      f"N={npts}")]


def run_density(name, dens, shape, label, steps, rounds, dtype, diffrax, log=print):
    proc = ms.VP()
    ts = ms.sampling.time_grid(proc, steps, "edm", dtype=dtype)
    x0 = ms.sampling.prior_sample(jax.random.key(7), proc, shape, dtype=dtype)
    key = jax.random.key(3)
    results = []
    base = {"family": "samplers", "shape": {"score": name, "n": shape[0], "d": shape[1],
                                            "detail": label, "steps": steps}}

    def ours_ode(method):
        def run(x, dens):
            return ms.sampling.sample_ode(None, ms.score_fn(dens, proc), proc, steps=steps,
                                          method=method, x_init=x)
        return run

    def ours_sde(k, dens):
        return ms.sampling.sample_sde(k, ms.score_fn(dens, proc), proc, shape, steps=steps,
                                      method="euler_maruyama", dtype=dtype)

    for method in ("euler", "heun"):
        log(f"  samplers {name} ODE {method}")
        impls = [compile_impl("ours", ours_ode(method), x0, dens,
                              note=f"sample_ode(method={method!r})")]
        notes = []
        if diffrax is None:
            notes.append("diffrax skipped: not installed")
        else:
            impls.append(compile_impl("diffrax", _diffrax_ode(diffrax, method, proc, ts, steps),
                                      x0, dens, note=f"diffeqsolve {method.title()}, StepTo"))
        times = alternate(impls, rounds)
        rows = summarize(impls, times, "ours", lambda a, o: rel_err(a, np.asarray(o)))
        drop_outputs(impls)
        results.append({**base, "case": f"ODE {method}", "rows": rows, "notes": notes})

    log(f"  samplers {name} SDE euler_maruyama")
    impls = [compile_impl("ours", ours_sde, key, dens, note="sample_sde(euler_maruyama)")]
    notes = []
    if diffrax is None:
        notes.append("diffrax skipped: not installed")
    else:
        tol = float(jnp.min(jnp.abs(jnp.diff(ts)))) / 2
        impls.append(compile_impl(
            "diffrax VirtualBrownianTree",
            _diffrax_sde(diffrax, "vbt", proc, ts, steps, shape, tol), key, dens,
            note=f"Euler, VirtualBrownianTree tol={tol:.1e}"))
        impls.append(compile_impl(
            "diffrax UnsafeBrownianPath",
            _diffrax_sde(diffrax, "unsafe", proc, ts, steps, shape, tol), key, dens,
            note="Euler, UnsafeBrownianPath, ForwardMode adjoint"))
    times = alternate(impls, rounds)
    rows = summarize(impls, times, "ours")  # different noise: no output comparison
    drop_outputs(impls)
    results.append({**base, "case": "SDE euler_maruyama", "rows": rows, "notes": notes})
    return results


def run(size, dtype, torch=None, log=print):
    cfg = SIZES[size]
    try:
        import diffrax
    except ImportError:
        diffrax = None
    dt = jnp.dtype(dtype)
    results = []
    for name, dens, shape, label in _densities(cfg, dt):
        results += run_density(name, dens, shape, label, cfg["steps"], cfg["rounds"], dt,
                               diffrax, log)
    return results

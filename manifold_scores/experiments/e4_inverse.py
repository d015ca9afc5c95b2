"""E4: the maximum-entropy prior is more robust to prior-score errors (Theorem 6.1).

Claim (Li, Shen, Hsieh, He, "When Scores Learn Geometry: Rate Separations under the Manifold
Hypothesis", arXiv 2509.24912, Theorem 6.1): in a Bayesian inverse problem with likelihood
potential ``v(x) = |A x - y|^2 / (2 s^2)``, the tempered sampler
``dX = [-grad v + sigma^a (s_sigma + e)] dt + sqrt(2) dW`` targets, as sigma -> 0, the
maximum-entropy (uniform) prior's posterior ``exp(-v) dVol_M`` and tolerates prior-score errors
``e`` of size ``sigma^-g`` for every ``g < a``, ``a < 2`` (errors up to ``sigma^-2``); a generic
prior's posterior needs the untempered sampler (``a = 0``), which tolerates only ``g < 0``.

Set-up. ``x`` on the unit circle in ``R^2``, ``A = (1, 0)``, ``s = 0.3``, ``y = 0.5`` (a bimodal
posterior). Priors with exact noised scores (``ms.VonMises``, closed form): the uniform law
(kappa = 0, the maximum-entropy prior) and a von Mises law (kappa = 2, mu = 1, a generic prior).
Samplers (:func:`manifold_scores.sampling.langevin` with ``potential_grad = grad v``, started at
``(-1, 0)``), each sigma with its own step ``h = min(0.2 sigma^(2 - a), 0.1 s^2)`` (below the
normal and the likelihood stiffness) and the same number of steps, so that every chain runs
for a time of at least ``max(5, 2.5 sigma^2)`` (in the plain sampler the normal direction
relaxes at the rate ``sigma^-2``):

* **tempered**, ``a = 1.8``: sigma in {1e-2, 1e-8} (quick) or {1e-2, 1e-5, 1e-8} (full). The
  normal spread ``sigma^(1 - a/2)`` is 0.63 at sigma = 1e-2 and 0.16 at 1e-8 (reported): the
  price of ``a`` near 2;
* **plain**, ``a = 0``: sigma in {3, 0.1} (quick) or {3, 0.55, 0.1} (full). The range is a
  factor 30 because the plain sampler cannot go lower on a CPU and g = -1 must be resolvable:
  over a factor 10 (sigma from 1) the g = -1 error's predicted effect at the smallest sigma
  (TV 0.026) sat at half the sampling floor, and one seed in five (seed 3) missed control
  (ii); over a factor 30 it is 0.009. At sigma = 3 the chains run for a time of 22.5.

Errors: ``e = c (sigma / sigma_max)^-g e_2`` (a gradient), with ``c = C0 sigma_max^-a``, so that
the error's drift ``sigma^a e = C0 (sigma / sigma_max)^(a - g) e_2`` equals ``C0 = 0.7`` at the
largest sigma of each sweep for every ``g``; tempered g in {1, 1.5, 1.8, 2.1}, plain g in
{-1, 0, 1}. ``C0`` was chosen from the quadrature of the laws with error, before any chain ran:
the drift tilts the stationary law by ``exp(t x_2)``; TV to the untilted law 0.25-0.3 at
``t = C0`` (tempered, visible; 0.55-0.6 for the plain sampler at sigma = 3), under 0.01 at
``t = C0 / 30`` (plain, g = -1), 0.09-0.24 at ``t = C0`` (plain, g = 0, at sigma = 0.1) and under
0.005 at ``t = 0.016 C0`` (tempered, g = 1.5).

Exact references by quadrature (:func:`e3_tempered.stationary_bins`): the sampler's exact
stationary law ``∝ exp(-v(x)) p_sigma(x)^(sigma^a)`` on ``R^2`` (no expansion in sigma), and the
posteriors on the circle ``exp(-v(theta)) prior(theta)``. Angle laws are compared by TV over 16
bins; ``n`` chains (quick 1000, full 3000), 3 seeds; each TV is the median over seeds; the null
``hi`` is the 95% upper end of the TV of ``n`` exact draws from the reference (multinomial, 2000
repetitions).

Decision rule, stated before the run: for a prior, sampler and ``g``, the error **vanishes** when
the TV to the exact-score stationary law at the smallest sigma is ``<= hi``; it is **visible**
when that TV at the largest sigma is ``> hi``; a row whose error is not visible is inconclusive
(no power). The **tolerated set** is the set of ``g`` that vanish.

Claims: (1) the uniform prior through the tempered sampler: each g < a vanishes, each g >= a
does not (one row per g); (2) the von Mises prior through the plain sampler: g < 0 vanishes,
g >= 0 does not (one row per g); (3) the comparison: the tolerated sets are {g < 1.8} and
{g < 0}: the maximum-entropy prior through the tempered sampler tolerates errors larger by
``sigma^-a``; (4) the uniform prior's tempered samples at the smallest sigma are within ``hi`` of
its posterior on the circle.

Controls: positive, **sampler**: every exact-score run is within ``hi`` of its exact stationary
law; positive, **power**: every error is visible at the largest sigma; negative, **(i) a generic
prior through the tempered sampler misses its posterior**: the von Mises prior's tempered
samples at the smallest sigma are ``> hi`` from the von Mises posterior and ``<= hi`` from the
uniform prior's tempered stationary law (tempering discards the prior's tangential
information); negative, **(ii) the plain sampler does not carry the robustness**: the uniform
prior through the plain sampler tolerates exactly {g < 0} of its grid.

Differs from the paper: a toy circle with exact prior scores and injected errors; each sampler
over the sigma range it can reach on a CPU (the plain one needs ``h ~ sigma^2``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

import manifold_scores as ms
from manifold_scores.experiments import _plotting, protocol
from manifold_scores.experiments._registry import register
from manifold_scores.experiments._table import Table, check_size
from manifold_scores.experiments.e3_tempered import (
    BINS,
    law_bins,
    null_tv,
    stationary_bins,
    tv_bins,
)

OBS, NOISE = 0.5, 0.3
C0 = 0.7
TEMPER = 1.8
HORIZON = 5.0
SEEDS = 3
PRIORS = {"uniform": (0.0, 0.0), "von Mises": (2.0, 1.0)}  # (kappa, mu)
GS = {"tempered": (1.0, 1.5, 1.8, 2.1), "plain": (-1.0, 0.0, 1.0)}
TEMPERS = {"tempered": TEMPER, "plain": 0.0}


def _sizes(size):
    if size == "quick":
        return {"sigmas": {"tempered": (1e-2, 1e-8), "plain": (3.0, 0.1)}, "n": 1000}
    return {"sigmas": {"tempered": (1e-2, 1e-5, 1e-8), "plain": (3.0, 0.55, 0.1)}, "n": 3000}


def potential(x1, x2):
    """The likelihood potential ``v = (x_1 - y)^2 / (2 s^2)`` (numpy or jax arrays)."""
    return (x1 - OBS) ** 2 / (2 * NOISE**2)


def _grad_v(x):
    return jnp.zeros_like(x).at[0].set((x[0] - OBS) / NOISE**2)


def posterior_log_angle(kappa: float, mu: float):
    """Log-density (unnormalised) of the posterior angle on the circle:
    ``-v(cos theta) + kappa cos(theta - mu)``."""
    return lambda t: -potential(np.cos(t), 0.0) + kappa * np.cos(np.asarray(t) - mu)


def step_size(a: float, sigma: float) -> float:
    """``h = min(0.2 sigma^(2 - a), 0.1 s^2)``: below the normal and the likelihood stiffness."""
    return min(0.2 * sigma ** (2.0 - a), 0.1 * NOISE**2)


def horizon(sigma: float) -> float:
    """At least ``HORIZON``, and ``2.5 sigma^2`` where the normal direction relaxes slowly (its
    rate is ``sigma^-2`` in the plain sampler: the variance's residual is ``exp(-5)``)."""
    return max(HORIZON, 2.5 * sigma * sigma)


def error_scale(a: float, g: float, sigma_max: float) -> float:
    """``c`` with ``sigma^a c sigma^-g = C0 (sigma / sigma_max)^(a - g)``."""
    return C0 * sigma_max ** (g - a)


@functools.partial(jax.jit, static_argnames=("n", "steps"))
def _chains(keys, kappas, mus, sigmas, tempers, gs, cs, hs, *, n, steps):
    """Posterior Langevin per configuration (vmapped): prior score ``+ c sigma^-g e_2``."""

    def one(key, kappa, mu, sigma, a, g, c, h):
        prior = ms.VonMises(kappa=kappa, mu=mu, dim=2)

        def score(x, s):
            return prior.score(x, 1.0, s).at[1].add(c * s ** (-g))

        x0 = jnp.tile(jnp.array([-1.0, 0.0]), (n, 1))
        return ms.sampling.langevin(key, score, x0, steps=steps, step_size=h, sigma=sigma,
                                    temper=a, potential_grad=_grad_v)

    return jax.vmap(one)(keys, kappas, mus, sigmas, tempers, gs, cs, hs)


def _configs(sampler, sigmas):
    """(prior, g, sigma) for one sampler: exact scores for both priors, errors for the priors
    the sampler is asked about."""
    out = [(p, None, s) for p in PRIORS for s in sigmas]
    priors = ("uniform",) if sampler == "tempered" else ("von Mises", "uniform")
    out += [(p, g, s) for p in priors for g in GS[sampler] for s in sigmas]
    return out


def run(size: str = "quick", *, seed: int = 0) -> Table:
    """Posterior TV against the prior-score error exponent g: the maximum-entropy prior through
    the tempered sampler, a generic prior through the plain one, and the two controls."""
    check_size(size)
    cfg = _sizes(size)
    n = cfg["n"]
    key = jax.random.key(seed)
    tv, hi, dist, ref = {}, {}, {}, {}
    for si, (sampler, sigmas) in enumerate(cfg["sigmas"].items()):
        a = TEMPERS[sampler]
        configs = _configs(sampler, sigmas)
        hs = np.asarray([step_size(a, x) for _, _, x in configs])
        steps = max(int(math.ceil(horizon(x) / step_size(a, x))) for x in sigmas)
        kap = jnp.asarray([PRIORS[p][0] for p, _, _ in configs])
        mus = jnp.asarray([PRIORS[p][1] for p, _, _ in configs])
        sig = jnp.asarray([s for _, _, s in configs])
        tem = jnp.full(len(configs), a)
        gs = jnp.asarray([0.0 if g is None else g for _, g, _ in configs])
        cs = jnp.asarray([0.0 if g is None else error_scale(a, g, sigmas[0])
                          for _, g, _ in configs])
        xs = []
        for s in range(SEEDS):
            keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, si), s),
                                    len(configs))
            xs.append(np.asarray(_chains(keys, kap, mus, sig, tem, gs, cs, jnp.asarray(hs), n=n,
                                         steps=steps)))
        xs = np.stack(xs, 1)  # (configs, seeds, n, 2)
        ang = np.arctan2(xs[..., 1], xs[..., 0])
        hist = np.stack([[ms.metrics.angle_histogram(x, BINS) for x in row] for row in ang])
        for p in PRIORS:
            for s in sigmas:
                kappa, mu = PRIORS[p]
                ref[sampler, p, s] = stationary_bins(s, s**a, kappa=kappa, mu=mu,
                                                     potential=potential)
                hi[sampler, p, s] = protocol.null_band(
                    null_tv(ref[sampler, p, s], n, seed=seed + 1))[1]
        for i, (p, g, s) in enumerate(configs):
            tv[sampler, p, g, s] = tv_bins(hist[i], ref[sampler, p, s])
            if g is None:
                dist[sampler, p, s] = float(np.median(np.mean(
                    np.abs(np.linalg.norm(xs[i], axis=-1) - 1.0), axis=-1)))
                tv["post", sampler, p, s] = tv_bins(
                    hist[i], law_bins(posterior_log_angle(*PRIORS[p])))
                if p == "von Mises":
                    tv["to_uniform", sampler, s] = tv_bins(hist[i], ref[sampler, "uniform", s])
    post = {p: law_bins(posterior_log_angle(*PRIORS[p])) for p in PRIORS}
    band_post = {p: protocol.null_band(null_tv(post[p], n, seed=seed + 2)) for p in PRIORS}
    hi_post = {p: band_post[p][1] for p in PRIORS}
    med = {k: float(np.median(v)) for k, v in tv.items()}

    def vanishing(sampler, prior):
        sig = cfg["sigmas"][sampler]
        return {g: (med[sampler, prior, g, sig[-1]] <= hi[sampler, prior, sig[-1]],
                    med[sampler, prior, g, sig[0]] > hi[sampler, prior, sig[0]])
                for g in GS[sampler]}

    study = protocol.Study("E4", size)
    worst = max((med[k] / hi[k[0], k[1], k[3]], k) for k in med
                if len(k) == 4 and k[2] is None)
    study.control("sampler: every exact-score run reaches its exact stationary law", "positive",
                  passed=worst[0] <= 1.0, key="sampler",
                  measured=f"worst TV / hi = {worst[0]:.2f} ({worst[1][0]}, {worst[1][1]} "
                           f"prior, sigma={worst[1][3]:.2g})", expected="<= 1")
    van = {("tempered", "uniform"): vanishing("tempered", "uniform"),
           ("plain", "von Mises"): vanishing("plain", "von Mises"),
           ("plain", "uniform"): vanishing("plain", "uniform")}
    power = all(vis for v in van.values() for _, vis in v.values())
    study.control("power: every injected error is visible at the largest sigma", "positive",
                  passed=power, key="power",
                  measured="; ".join(
                      f"{s} / {p}: " + ", ".join(
                          f"g={g:g}: {med[s, p, g, cfg['sigmas'][s][0]]:.3f}" for g in GS[s])
                      for s, p in van),
                  expected=f"> hi (~{hi['plain', 'uniform', cfg['sigmas']['plain'][0]]:.3f})")
    t_min = cfg["sigmas"]["tempered"][-1]
    own = med["post", "tempered", "von Mises", t_min]
    to_u = float(np.median(tv["to_uniform", "tempered", t_min]))
    study.control("(i) a generic (von Mises) prior through the tempered sampler misses its "
                  "posterior", "negative", key="generic_tempered_misses",
                  passed=own > hi_post["von Mises"] and to_u <= hi["tempered", "uniform", t_min],
                  measured=f"TV to its posterior {own:.3f}; to the uniform prior's tempered "
                           f"law {to_u:.3f} (sigma={t_min:g})",
                  expected=f"> {hi_post['von Mises']:.3f}; <= "
                           f"{hi['tempered', 'uniform', t_min]:.3f}")
    tol_plain_u = sorted(g for g, (v, _) in van["plain", "uniform"].items() if v)
    exp_plain = [g for g in GS["plain"] if g < 0]
    study.control("(ii) the uniform prior through the plain sampler (a = 0) tolerates only "
                  "g < 0", "negative", key="uniform_plain_only_g_below_0",
                  passed=tol_plain_u == exp_plain,
                  measured=f"vanishing g: {tol_plain_u}",
                  expected=f"{exp_plain} of {list(GS['plain'])}")

    def per_g(sampler, prior, bound):
        sig = cfg["sigmas"][sampler]
        for g in GS[sampler]:
            vanish, visible = van[sampler, prior][g]
            tolerated = g < bound
            study.claim(
                f"{prior} prior, {sampler} sampler (a={TEMPERS[sampler]:g}), error "
                f"~ sigma^-g, g={g:g}: " + ("vanishes" if tolerated else "does not vanish"),
                key=f"{sampler}_{prior.replace(' ', '_')}_g{g:g}", seeds=SEEDS,
                measured=f"TV {med[sampler, prior, g, sig[0]]:.3f} -> "
                         f"{med[sampler, prior, g, sig[-1]]:.3f} (sigma {sig[0]:g} -> "
                         f"{sig[-1]:g})",
                expected=("<= " if tolerated else "> ") + f"hi = {hi[sampler, prior, sig[-1]]:.3f}"
                         " at the smallest sigma",
                test=(vanish == tolerated) if visible else None,
                controls=("sampler", "power"),
                tv=[protocol.spread(tv[sampler, prior, g, s]).__str__() for s in sig])

    per_g("tempered", "uniform", TEMPER)
    per_g("plain", "von Mises", 0.0)
    tol_t = sorted(g for g, (v, _) in van["tempered", "uniform"].items() if v)
    tol_p = sorted(g for g, (v, _) in van["plain", "von Mises"].items() if v)
    exp_t = [g for g in GS["tempered"] if g < TEMPER]
    study.claim("comparison: the maximum-entropy prior through the tempered sampler tolerates "
                f"g < a = {TEMPER:g}, the generic prior through the plain sampler g < 0",
                key="comparison", seeds=SEEDS,
                measured=f"vanishing g: tempered uniform {tol_t}; plain von Mises {tol_p}",
                expected=f"{exp_t} and {[g for g in GS['plain'] if g < 0]}",
                test=tol_t == exp_t and tol_p == [g for g in GS["plain"] if g < 0])
    u_post = med["post", "tempered", "uniform", t_min]
    study.claim(f"the uniform prior's tempered samples at sigma={t_min:g} match its posterior "
                "on the circle", key="maxent_posterior", seeds=SEEDS,
                null=band_post["uniform"],
                measured=u_post, expected=f"<= hi = {hi_post['uniform']:.3f}",
                test=u_post <= hi_post["uniform"], controls=("sampler",))
    for sampler, sigmas in cfg["sigmas"].items():
        study.observe(f"{sampler} sampler: mean distance of the samples to the circle "
                      "(uniform prior)", ", ".join(f"sigma={s:g}: {dist[sampler, 'uniform', s]:.3f}"
                                                   for s in sigmas),
                      f"spread ~ sigma^(1 - a/2), a = {TEMPERS[sampler]:g}")
        study.observe(f"{sampler} sampler: quadrature TV of the exact-score law to the posterior"
                      " on the circle (uniform / von Mises prior)",
                      ", ".join(f"sigma={s:g}: "
                                f"{tv_bins(ref[sampler, 'uniform', s], post['uniform']):.3f} / "
                                f"{tv_bins(ref[sampler, 'von Mises', s], post['von Mises']):.3f}"
                                for s in sigmas), "finite-sigma bias")
    data = {
        "sigmas": cfg["sigmas"], "gs": GS, "tempers": TEMPERS, "n": n, "c0": C0,
        "tv": {f"{s}|{p}|{g}": [tv[s, p, g, x].tolist() for x in cfg["sigmas"][s]]
               for s in cfg["sigmas"] for p in PRIORS
               for g in (None, *GS[s]) if (s, p, g, cfg["sigmas"][s][0]) in tv},
        "hi": {f"{s}|{p}": [hi[s, p, x] for x in cfg["sigmas"][s]]
               for s in cfg["sigmas"] for p in PRIORS},
        "post_tv": {f"{s}|{p}": [tv["post", s, p, x].tolist() for x in cfg["sigmas"][s]]
                    for s in cfg["sigmas"] for p in PRIORS},
        "hi_post": hi_post,
        "dist": {s: [dist[s, "uniform", x] for x in cfg["sigmas"][s]] for s in cfg["sigmas"]},
    }
    return study.table(data)


def _bars(ax, x, v, **kw):
    v = np.asarray(v)
    m = np.median(v, 1)
    ax.errorbar(x, m, yerr=[m - v.min(1), v.max(1) - m], capsize=2, **kw)


def plot(table: Table):
    """TV to the exact-score stationary law against sigma per g: the uniform prior through the
    tempered sampler, the von Mises prior through the plain one, and the uniform prior through
    the plain one (control ii); then the tempered von Mises prior against its posterior
    (control i)."""
    import matplotlib.pyplot as plt

    d = table.data
    fig, axes = _plotting.subplots(1, 4, figsize=(18, 5.6))
    panels = (("tempered", "uniform", "claim: max-entropy prior, tempered"),
              ("plain", "von Mises", "claim: generic prior, plain"),
              ("plain", "uniform", "control (ii): max-entropy prior, plain"))
    for ax, (s, p, title) in zip(axes[:3], panels, strict=True):
        sig = np.asarray(d["sigmas"][s])
        gs = d["gs"][s]
        cols = plt.cm.viridis(np.linspace(0, 0.9, len(gs)))
        for col, g in zip(cols, gs, strict=True):
            _bars(ax, sig, d["tv"][f"{s}|{p}|{g}"], fmt="o-", color=col, label=f"g={g:g}")
        _bars(ax, sig, d["tv"][f"{s}|{p}|None"], fmt="k^:", label="exact prior score")
        ax.plot(sig, d["hi"][f"{s}|{p}"], "r--", lw=1, label="null 95% upper end")
        ax.set(xscale="log", yscale="log", xlabel="sigma",
               ylabel="TV to the exact-score stationary law",
               title=f"{title} (a={d['tempers'][s]:g})", ylim=(8e-3, 1.5))
        ax.invert_xaxis()
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    ax = axes[3]
    sig = np.asarray(d["sigmas"]["tempered"])
    _bars(ax, sig, d["post_tv"]["tempered|von Mises"], fmt="s-", color="C3",
          label="von Mises prior vs its posterior")
    _bars(ax, sig, d["post_tv"]["tempered|uniform"], fmt="o-", color="C0",
          label="uniform prior vs its posterior")
    _bars(ax, sig, d["tv"]["tempered|von Mises|None"], fmt="s:", color="C1",
          label="von Mises prior vs exact tempered law")
    ax.axhline(d["hi_post"]["von Mises"], color="gray", ls="--", lw=1,
               label="null 95% upper end (von Mises posterior)")
    ax.set(xscale="log", yscale="log", xlabel="sigma", ylabel="TV",
           title=f"control (i): tempered sampler (a={d['tempers']['tempered']:g})")
    ax.set_ylim(8e-3, 1.5)
    ax.invert_xaxis()
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1)
    return _plotting.finish(fig, f"E4: posterior on the circle under prior-score errors "
                                 f"C0 (sigma / sigma_max)^(a - g), C0 = {d['c0']:g}; "
                                 f"{d['n']} chains, 3 seeds")


register(
    "E4", "Max-entropy prior robustness in inverse problems", "arXiv 2509.24912, Theorem 6.1",
    run, plot, recorded={
        "comparison": (
            "holds", "quick, seeds 0-4: tolerated g = {1, 1.5} for the uniform prior through "
            "the tempered sampler (a = 1.8; g = 1.5: TV 0.30-0.32 -> 0.02-0.05, hi ~0.056; "
            "g = 1.8 stays at 0.23-0.25), {-1} for the von Mises prior through the plain one"),
        "maxent_posterior": (
            "holds", "quick, seeds 0-4: TV 0.035-0.053 to the uniform prior's posterior at "
            "sigma = 1e-8 (null hi 0.057; quadrature bias of the finite-sigma law 0.015)"),
    })

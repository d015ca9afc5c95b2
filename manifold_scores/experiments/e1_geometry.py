"""E1: geometry lives at order sigma^-2, the density at order 1.

Claim (Li, Shen, Hsieh, He, "When Scores Learn Geometry: Rate Separations under the Manifold
Hypothesis", arXiv 2509.24912, section 3): near a manifold ``M``,
``log p_sigma(x) = -dist(x, M)^2 / (2 sigma^2) + log p_data(proj x) + ...``, so
``|sigma^2 s(x) + x - proj x| = O(sigma^2)`` (a log-log slope of 2 in sigma), the score's normal
part grows like ``sigma^-2``, and its tangential part tends to an ``O(1)`` limit that carries the
density: the derivative of ``log p_data`` along ``M``.

Set-up. Exact scores (closed form or quadrature, float64), no learning, at fixed points
``x = p + delta n`` off the manifold (``p`` drawn from the law on ``M``, ``n`` a random unit
normal, ``delta = DELTA = 0.05``), for ``sigma`` log-spaced on ``[1e-3, 2e-2]``. A *seed* draws the
random frames of the manifolds, the points ``p`` and the normals ``n``; every asserted quantity is
computed on each of ``SEEDS`` seeds. Slopes are least-squares fits in log-log of the mean over
the points.

Closed forms (derived, then checked by the run):

* **circle prefactor**. For the uniform unit circle in ``R^2`` the score is
  ``s = -x / sigma^2 + A(kappa) x / (|x| sigma^2)`` with ``A = I_1 / I_0`` and
  ``kappa = |x| / sigma^2``, so ``sigma^2 s + x - proj x = (A(kappa) - 1) x / |x|`` and, from
  ``1 - A(kappa) = 1/(2 kappa) + 1/(8 kappa^2) + O(kappa^-3)``,
  ``|sigma^2 s + x - proj x| * 2 |x| / sigma^2 = 1 + sigma^2 / (4 |x|) + O(sigma^4)``.
  The normalised prefactor tends to exactly 1 (it is the circle's curvature term ``k / (2 |x|)``
  with ``k = 1``); at ``sigma <= 2e-2`` and ``|x| >= 0.95`` the next term is below ``1.1e-4``;
* **tangential limit**. For a von Mises law ``p_data(theta) ~ exp(kappa cos(theta - mu))`` on a
  unit circle the score's component along the unit tangent ``e_theta`` at ``proj x`` is
  ``kappa (-sin(theta - mu)) A(K) / (sigma^2 K)`` with
  ``K = |u / sigma^2 + kappa (cos mu, sin mu)|`` (``u`` the in-plane coordinates of ``x``), which
  tends to ``(d/dtheta log p_data)(theta) / |u| = -kappa sin(theta - mu) / |u|`` as
  ``sigma -> 0`` (the chain rule through the angle: ``d theta / ds = 1 / |u|`` at radius
  ``|u|``), with a relative correction ``O(sigma^2 (kappa + 1))``. For the uniform law
  (``kappa = 0``) the limit is 0: the tangential limit tells the two laws apart, the leading
  ``sigma^-2`` term cannot.

Claims and thresholds (stated before the run; on every seed):

* ``slope.<manifold>``: the slope of the mean ``|sigma^2 s + x - proj x|`` is within
  ``SLOPE_TOL = 0.05`` of 2, on the circle, ``S^2`` in ``R^10``, a flat torus in ``R^6``, an
  ellipse ``(2, 1)`` in ``R^3`` (arc-length law, quadrature) and a MoLRG (union of subspaces,
  ``proj`` onto the nearest one);
* ``circle.prefactor``: ``max |ratio - 1| <= PREFACTOR_TOL = 2e-4`` over the points and every
  sigma, ``ratio = |sigma^2 s + x - proj x| 2 |x| / sigma^2``;
* ``vonmises.normal_slope``: the slope of the mean norm of the normal part of the von Mises score
  (``kappa = 2``, ``mu = 0.3``, a circle in ``R^3``) is within ``SLOPE_TOL`` of -2;
* ``vonmises.tangential_limit``: at ``sigma = 1e-3`` the tangential part of the score matches the
  closed-form limit ``-kappa sin(theta - mu) / |u| e_theta``: RMS error over the points at most
  ``LIMIT_TOL = 1e-3`` of the RMS of the limit;
* ``uniform.tangential_limit``: the same points, the uniform law on the same circle: the RMS of
  the tangential part is at most ``LIMIT_TOL`` of the von Mises limit's RMS (its limit is 0).

Controls:

* positive, **independent score**: the library's circle score equals the closed form above
  evaluated with ``scipy.special.ive`` (relative error ``<= 1e-9`` at every point and sigma);
* negative, must fail, each with ``|slope - 2| > SLOPE_TOL`` on every seed (the slope row can
  fail): **thickened data** (the circle convolved with ``N(0, tau^2 I)``, ``tau = 1e-3``: its
  noised law is the circle's at ``sqrt(sigma^2 + tau^2)``, the residual tends to ``delta``);
  **wrong manifold** (data on the circle of radius 1.01, ``proj`` onto the unit circle: the
  residual tends to 0.01); **injected normal error** ``sigma^-1.9 n`` added to the exact score
  (an ``o(sigma^-2)`` but not ``O(1)`` error: residual ``~ sigma^0.1``);
* negative, must fail: the uniform circle's tangential part compared with the von Mises
  closed form has a relative RMS error above 0.5 (the tangential row can fail).

Sizes: quick 16 points, 7 sigmas, 3 seeds; full 128 points, 13 sigmas, 5 seeds.
The MoLRG is not a manifold at the origin, where its subspaces meet (zero reach): the
expansion holds where ``sigma`` is small against the distance to the other subspaces, which for
a point ``p`` of one (orthogonal) subspace is ``|p|``. The theorem's hypothesis is a positive
reach, so the MoLRG points are drawn from the law conditioned on ``|p| >= R_MIN = 10 *
sigma_max = 0.2`` (98% of the law's mass): there the other components' posterior weight is
below ``exp(-R_MIN^2 / (2 sigma_max^2)) = e^-50`` at every sigma of the fit. Without the
condition a point near the origin (the full run drew one at ``|p| = 0.016``) bends the slope
(2.185), because the fit then straddles the scale where the subspaces stop being separate.
Differs from the paper: the paper proves the expansion; here it is measured on exact scores.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import manifold_scores as ms
from manifold_scores.experiments import _plotting, protocol
from manifold_scores.experiments._registry import register
from manifold_scores.experiments._table import Table, check_size

DELTA = 0.05
SLOPE_TOL = 0.05
PREFACTOR_TOL = 2e-4
LIMIT_TOL = 1e-3
TAU = 1e-3
WRONG_RADIUS = 1.01
INJECTED_POWER = 1.9
KAPPA, MU = 2.0, 0.3
SIGMA_RANGE = (1e-3, 2e-2)
R_MIN = 10 * SIGMA_RANGE[1]  # MoLRG points this far from the subspaces' intersection

MANIFOLDS = ("circle", "sphere S^2 in R^10", "flat torus in R^6", "ellipse (2, 1) in R^3",
             "MoLRG d=20 r=2 K=3")
CONTROLS = ("thickened data (tau = 1e-3)", "wrong manifold (radius 1.01)",
            "injected normal error sigma^-1.9")


class _Slopes(protocol.Spread):
    """A spread of slopes, printed with four decimals (three significant digits hide 2.0001)."""

    def __str__(self) -> str:
        return f"{self.median:.4f} [{self.lo:.4f}, {self.hi:.4f}] ({self.n} seeds)"


def _slopes(values) -> _Slopes:
    sp = protocol.spread(values)
    return _Slopes(sp.median, sp.lo, sp.hi, sp.n)


def _slope(sigmas, values) -> float:
    return float(np.polyfit(np.log(sigmas), np.log(values), 1)[0])


def _manifolds(key):
    ks = jax.random.split(key, 5)
    return {
        MANIFOLDS[0]: ms.Circle(dim=2),
        MANIFOLDS[1]: ms.Sphere(dim=10, intrinsic_dim=2, key=ks[0]),
        MANIFOLDS[2]: ms.FlatTorus(radii=(1.0, 0.5), dim=6, key=ks[1]),
        MANIFOLDS[3]: ms.Ellipse(axes=(2.0, 1.0), dim=3, nodes=16384, key=ks[2]),
        MANIFOLDS[4]: ms.MoLRG.random(ks[3], dim=20, rank=2, num_components=3),
    }


@functools.partial(jax.jit, static_argnums=2)
def _offset_points(m, key, n):
    """Points ``p + delta n`` and their projections ``p``."""
    k1, k2 = jax.random.split(key)
    z = jax.random.normal(k2, (n, m.dim), jnp.float64)
    if isinstance(m, ms.MoLRG):
        # the law conditioned on |p| >= R_MIN (positive local reach): 3n draws keep n with
        # probability 1 - O(1e-40) at P(|p| < R_MIN) = 2%; the first n that qualify, in order
        cand = m.sample(k1, 3 * n)
        far = jnp.linalg.norm(cand, axis=1) >= R_MIN
        p = cand[jnp.argsort(~far, stable=True)[:n]]
    else:
        p = m.sample(k1, n)
    if isinstance(m, ms.MoLRG):
        u = m.bases  # orthogonal subspaces: remove every subspace component from the offset
        z = z - jnp.einsum("kdr,nkr->nd", u, jnp.einsum("kdr,nd->nkr", u, z))
    else:
        z = jnp.einsum("nij,nj->ni", jax.vmap(m.normal_projector)(p), z)
    nrm = z / jnp.linalg.norm(z, axis=1, keepdims=True)
    return p + DELTA * nrm, p


@jax.jit
def _residuals(m, xs, proj, sigmas):
    """``|sigma^2 s + x - proj x|`` per sigma and point, ``(len(sigmas), n)``."""

    def at(sigma):
        s = jax.vmap(m.score, (0, None, None))(xs, 1.0, sigma)
        return jnp.linalg.norm(sigma**2 * s + xs - proj, axis=1)

    return jax.lax.map(at, sigmas)


@jax.jit
def _control_residuals(circle, wide, xs, sigmas):
    """Residuals on the unit circle for the three must-fail controls, ``(3, len(sigmas), n)``:
    thickened data, data on a wider circle, and the exact score plus ``sigma^-1.9 n``."""
    proj = xs / jnp.linalg.norm(xs, axis=1, keepdims=True)
    normal = (xs - proj) / jnp.linalg.norm(xs - proj, axis=1, keepdims=True)

    def at(sigma):
        thick = jax.vmap(circle.score, (0, None, None))(xs, 1.0, jnp.sqrt(sigma**2 + TAU**2))
        wrong = jax.vmap(wide.score, (0, None, None))(xs, 1.0, sigma)
        injected = (jax.vmap(circle.score, (0, None, None))(xs, 1.0, sigma)
                    + sigma ** (-INJECTED_POWER) * normal)
        return jnp.stack([jnp.linalg.norm(sigma**2 * s + xs - proj, axis=1)
                          for s in (thick, wrong, injected)])

    return jnp.moveaxis(jax.lax.map(at, sigmas), 0, 1)


@jax.jit
def _tangential(vm, xs, sigmas):
    """Tangential part of the score ``(len(sigmas), n, d)``, its normal-part norm, and the
    closed-form limit ``-kappa sin(theta - mu) / |u| e_theta`` at each point."""
    tb = jax.vmap(vm.tangent_basis)(xs)[..., 0]  # (n, d) unit tangents at proj x
    theta = jax.vmap(vm.angle)(xs)
    u = jnp.einsum("dk,nd->nk", vm.frame, xs - vm.centre)
    radius = jnp.linalg.norm(u, axis=1)
    e_theta = jnp.einsum("dk,nk->nd", vm.frame, jnp.stack([-jnp.sin(theta), jnp.cos(theta)], 1))
    limit = (-vm.kappa * jnp.sin(theta - vm.mu) / radius)[:, None] * e_theta

    def at(sigma):
        s = jax.vmap(vm.score, (0, None, None))(xs, 1.0, sigma)
        st = jnp.sum(s * tb, axis=1, keepdims=True) * tb
        return st, jnp.linalg.norm(s - st, axis=1)

    st, sn = jax.lax.map(at, sigmas)
    return st, sn, limit


def _rel_rms(a, b, scale):
    return float(np.sqrt(np.mean(np.sum((a - b) ** 2, -1))) /
                 np.sqrt(np.mean(np.sum(scale**2, -1))))


def _scipy_circle_residual(xs, sigmas):
    """The circle's residual ``1 - I_1 / I_0 (|x| / sigma^2)`` from scipy (the closed form)."""
    from scipy.special import ive

    r = np.linalg.norm(xs, axis=1)
    kappa = r[None, :] / np.asarray(sigmas)[:, None] ** 2
    return 1.0 - ive(1, kappa) / ive(0, kappa)


def _one_seed(s: int, n: int, sigmas: np.ndarray) -> dict:
    key = jax.random.key(s)
    sig = jnp.asarray(sigmas)
    out = {"residual": {}, "slope": {}}
    for i, (name, m) in enumerate(_manifolds(jax.random.fold_in(key, 1)).items()):
        xs, proj = _offset_points(m, jax.random.fold_in(key, 10 + i), n)
        res = np.asarray(_residuals(m, xs, proj, sig))
        out["residual"][name] = res.mean(1)
        out["slope"][name] = _slope(sigmas, res.mean(1))
        if i == 0:
            xs0 = np.asarray(xs)
            r = np.linalg.norm(xs0, axis=1)
            ratio = res * 2.0 * r[None, :] / sigmas[:, None] ** 2
            out["ratio"] = ratio
            out["radius"] = r
            ref = _scipy_circle_residual(xs0, sigmas)
            out["scipy_err"] = float(np.max(np.abs(res - ref) / ref))
            circle, circle_xs = m, xs
    wide = ms.Circle(dim=2, radius=WRONG_RADIUS)
    ctrl = np.asarray(_control_residuals(circle, wide, circle_xs, sig)).mean(-1)
    out["control_residual"] = dict(zip(CONTROLS, ctrl, strict=True))
    out["control_slope"] = {c: _slope(sigmas, v) for c, v in zip(CONTROLS, ctrl, strict=True)}
    vm = ms.VonMises(kappa=KAPPA, mu=MU, dim=3, key=jax.random.fold_in(key, 2))
    uni = ms.VonMises(kappa=0.0, mu=MU, dim=3, frame=vm.frame)
    xs, _ = _offset_points(vm, jax.random.fold_in(key, 3), n)
    st, sn, limit = (np.asarray(v) for v in _tangential(vm, xs, sig))
    st_u, _, _ = (np.asarray(v) for v in _tangential(uni, xs, sig))
    out["normal"] = sn.mean(1)
    out["normal_slope"] = _slope(sigmas, sn.mean(1))
    out["vm_err"] = np.array([_rel_rms(st[j], limit, limit) for j in range(len(sigmas))])
    out["uni_size"] = np.array([_rel_rms(st_u[j], 0.0, limit) for j in range(len(sigmas))])
    out["uni_vs_vm"] = _rel_rms(st_u[0], limit, limit)
    out["vm_tangent"] = np.sqrt(np.mean(np.sum(st**2, -1), -1))
    out["limit_rms"] = float(np.sqrt(np.mean(np.sum(limit**2, -1))))
    return out


def run(size: str = "quick", *, seed: int = 0) -> Table:
    """Slopes, the circle's prefactor, the tangential limit and the must-fail controls."""
    check_size(size)
    n, num, seeds = (16, 7, 3) if size == "quick" else (128, 13, 5)
    sigmas = np.geomspace(*SIGMA_RANGE, num)
    with jax.enable_x64(True):
        per = [_one_seed(seed + i, n, sigmas) for i in range(seeds)]
    study = protocol.Study("E1", size)

    scipy_err = max(p["scipy_err"] for p in per)
    study.control("circle score equals the Bessel closed form (scipy ive)", "positive",
                  passed=scipy_err <= 1e-9, measured=scipy_err,
                  expected="max relative error <= 1e-9", key="independent_score")
    for c in CONTROLS:
        slopes = np.array([p["control_slope"][c] for p in per])
        study.control(f"{c}: slope is not 2", "negative",
                      passed=bool(np.all(np.abs(slopes - 2.0) > SLOPE_TOL)),
                      measured=_slopes(slopes),
                      expected=f"|slope - 2| > {SLOPE_TOL} on every seed", key=f"must_fail.{c}")
    uni_vs_vm = np.array([p["uni_vs_vm"] for p in per])
    study.control("uniform circle's tangential score vs the von Mises limit", "negative",
                  passed=bool(np.all(uni_vs_vm > 0.5)), measured=protocol.spread(uni_vs_vm),
                  expected="relative RMS error > 0.5 on every seed",
                  key="must_fail.uniform_vs_vonmises")
    slope_controls = ["independent_score"] + [f"must_fail.{c}" for c in CONTROLS]

    for name in MANIFOLDS:
        slopes = np.array([p["slope"][name] for p in per])
        study.claim(f"slope of |sigma^2 s + x - proj x|, {name}", key=f"slope.{name}",
                    measured=_slopes(slopes), expected=f"2 +- {SLOPE_TOL}",
                    test=bool(np.all(np.abs(slopes - 2.0) <= SLOPE_TOL)), seeds=len(per),
                    controls=slope_controls, per_seed=slopes)
    dev = np.array([np.max(np.abs(p["ratio"] - 1.0)) for p in per])
    study.claim("circle: |sigma^2 s + x - proj x| 2|x| / sigma^2 -> 1 (closed form)",
                key="circle.prefactor", measured=protocol.spread(dev),
                expected=f"max |ratio - 1| <= {PREFACTOR_TOL:g}",
                test=bool(np.all(dev <= PREFACTOR_TOL)), seeds=len(per),
                controls=slope_controls, per_seed=dev)
    nslopes = np.array([p["normal_slope"] for p in per])
    study.claim("slope of |normal part of s|, von Mises on a circle",
                key="vonmises.normal_slope", measured=_slopes(nslopes),
                expected=f"-2 +- {SLOPE_TOL}",
                test=bool(np.all(np.abs(nslopes + 2.0) <= SLOPE_TOL)), seeds=len(per),
                controls=slope_controls, per_seed=nslopes)
    tan_controls = ["must_fail.uniform_vs_vonmises"]
    vm_err = np.array([p["vm_err"][0] for p in per])
    study.claim("von Mises: tangential score -> d/dtheta log p_data / |x| (closed form)",
                key="vonmises.tangential_limit", measured=protocol.spread(vm_err),
                expected=f"relative RMS error <= {LIMIT_TOL:g} at sigma = 1e-3",
                test=bool(np.all(vm_err <= LIMIT_TOL)), seeds=len(per), controls=tan_controls,
                per_seed=vm_err)
    uni = np.array([p["uni_size"][0] for p in per])
    study.claim("uniform circle: tangential score -> 0 (its closed form)",
                key="uniform.tangential_limit", measured=protocol.spread(uni),
                expected=f"RMS <= {LIMIT_TOL:g} of the von Mises limit at sigma = 1e-3",
                test=bool(np.all(uni <= LIMIT_TOL)), seeds=len(per), controls=tan_controls,
                per_seed=uni)
    study.observe("RMS of the von Mises tangential limit (O(1))",
                  protocol.spread([p["limit_rms"] for p in per]))

    def stack(k, sub=None):
        return np.array([p[k] if sub is None else p[k][sub] for p in per])

    data = {"sigmas": sigmas, "delta": DELTA, "seeds": len(per),
            "residuals": {m: stack("residual", m) for m in MANIFOLDS},
            "controls": {c: stack("control_residual", c) for c in CONTROLS},
            "ratio": np.array([p["ratio"].max(1) for p in per]),
            "ratio_min": np.array([p["ratio"].min(1) for p in per]),
            "radius_range": [float(min(p["radius"].min() for p in per)),
                             float(max(p["radius"].max() for p in per))],
            "vm_err": stack("vm_err"), "uni_size": stack("uni_size"),
            "vm_tangent": stack("vm_tangent"), "limit_rms": stack("limit_rms"),
            "normal": stack("normal")}
    return study.table(data)


def plot(table: Table):
    """Left: residuals per manifold with the must-fail controls; middle: the circle's normalised
    prefactor against its closed form; right: the tangential part against its limit."""
    d = table.data
    sig = np.asarray(d["sigmas"])
    fig, (a0, a1, a2) = _plotting.subplots(1, 3, figsize=(16, 4.8))
    import matplotlib.pyplot as plt

    colours = plt.cm.viridis(np.linspace(0, 0.85, len(d["residuals"])))
    for c, (name, res) in zip(colours, d["residuals"].items(), strict=True):
        res = np.asarray(res)
        a0.loglog(sig, np.median(res, 0), "o-", ms=3, color=c, label=name)
    for c, (name, res) in zip(("tab:red", "tab:orange", "tab:brown"), d["controls"].items(),
                              strict=True):
        a0.loglog(sig, np.median(np.asarray(res), 0), "s--", ms=3, color=c,
                  label=f"must fail: {name}")
    ref = np.median(np.asarray(d["residuals"]["circle"]), 0)
    a0.loglog(sig, ref[-1] * (sig / sig[-1]) ** 2, "k:", lw=1, label="slope 2")
    a0.set(xlabel="noise level sigma", ylabel="mean |sigma^2 s + x - proj x|",
           title=f"claims and must-fail controls (offset {d['delta']})")
    a0.legend(fontsize=7, loc="lower right")
    hi, lo = np.asarray(d["ratio"]), np.asarray(d["ratio_min"])
    a1.loglog(sig, hi.max(0) - 1.0, "o-", color="tab:blue", label="measured, largest")
    a1.loglog(sig, lo.min(0) - 1.0, "o-", color="tab:cyan", label="measured, smallest")
    r0, r1 = d["radius_range"]
    a1.loglog(sig, sig**2 / (4 * r0), "k--", lw=1, label="next term sigma^2/(4|x|), |x| min")
    a1.loglog(sig, sig**2 / (4 * r1), "k:", lw=1, label="next term, |x| max")
    a1.axhline(PREFACTOR_TOL, color="tab:red", lw=1, label=f"tolerance {PREFACTOR_TOL:g}")
    a1.set(xlabel="noise level sigma",
           ylabel="|sigma^2 s + x - proj x| 2|x| / sigma^2  -  1",
           title="uniform circle in R^2: prefactor -> 1")
    a1.legend(fontsize=7, loc="upper left")
    lim = np.median(np.asarray(d["limit_rms"]))
    a2.loglog(sig, np.median(np.asarray(d["vm_tangent"]), 0), "o-", color="tab:green",
              label="von Mises: RMS tangential part")
    a2.axhline(lim, color="tab:green", ls=":", lw=1.2, label="von Mises: closed-form limit")
    a2.loglog(sig, np.median(np.asarray(d["vm_err"]), 0) * lim, "^-", color="tab:olive",
              label="von Mises: RMS error to the limit")
    a2.loglog(sig, np.maximum(np.median(np.asarray(d["uni_size"]), 0) * lim, 1e-16), "s-",
              color="tab:purple", label="uniform: RMS tangential part (limit 0)")
    a2.loglog(sig, np.median(np.asarray(d["normal"]), 0), "d-", color="tab:gray",
              label="von Mises: mean |normal part|")
    a2.set(xlabel="noise level sigma", ylabel="score component norm",
           title="density at O(1): tangential part vs its limit")
    a2.legend(fontsize=7, loc="center right")
    return _plotting.finish(fig, "E1: geometry at sigma^-2, density at O(1) (medians over seeds)")


register("E1", "Geometry at sigma^-2, density at O(1)", "arXiv 2509.24912, section 3", run, plot)

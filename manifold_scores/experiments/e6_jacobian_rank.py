"""E6: the numerical rank of a trained denoiser's Jacobian against the noise level.

Claim (Wang, Zhang, Zhang, Chen, Ma, Qu, "Diffusion models learn low-dimensional distributions
via subspace clustering", arXiv 2409.02426): the Jacobian ``dD / dx`` of a diffusion model's
denoiser trained on a mixture of low-rank Gaussians (MoLRG) is low-rank: rank ``r`` at high SNR
(the posterior picks one subspace and the denoiser projects onto it) and ``K r`` at low SNR
(uniform posterior: the sum of the ``K`` projectors). The claim is about *trained* denoisers;
for the exact MoLRG denoiser it is linear algebra and serves here as the positive control.

Set-up. One MoLRG (drawn from ``seed``) with ``K = 3`` mutually orthogonal subspaces of rank
``r = 3`` in ``d = 32``, unit scales, so each coordinate has RMS ``sigma_data = sqrt(r / d)``.
Three seeds, trained together under ``jax.vmap``, differ in the network initialisation, the
training set (``N = 50 000`` draws) and the mini-batches. The network is the MLP of
:mod:`manifold_scores.models.mlp` (width 128, depth 3) with EDM preconditioning
``D = c_skip x + c_out F(c_in x, c_noise)``, trained with the EDM recipe of the paper's code:
DSM on ``x0`` with EDM weighting ``(sigma^2 + sigma_data^2) / (sigma sigma_data)^2``,
``log sigma ~ N(-1.2, 1.2^2)``, Adam (lr ``1e-3``, betas ``0.9, 0.999``), batch 512, and the
EMA of the weights with EDM's half-life rule (``min(500k, 0.05 x images seen)`` images), whose
weights are the ones measured. The learning rate is constant: EDM's 10 Mimg warm-up is longer
than the paper's 6 Mimg run, which never reaches the stated rate. Training runs in chunks of
1000 steps until the low-noise loss plateaus (below) or a step cap is reached; the full size
trains at least the paper's 6 Mimg (11 719 steps).

Measurements, at ``sigma`` in ``SIGMAS`` (the EDM sampler's range ``0.002 ... 80``), at fresh
noised points ``x = x0 + sigma eps`` (the law the denoiser sees at that level):

* rank: the smallest ``k`` with ``sqrt(sum_{i<=k} s_i^2) > 0.99 |J|_F``
  (:func:`manifold_scores.metrics.jacobian_rank`, the rule of the paper's code), median over
  points, per seed;
* the learned part ``(J_D - c_skip I) / c_out`` (the Jacobian of what the network adds to the
  skip connection) and its size relative to the learned part of the exact denoiser;
* the DSM loss per ``sigma`` in EDM units (``E |F - F_target|^2``; the exact denoiser scores
  about ``r`` at high SNR, the skip connection alone about ``d``) of the network, of the exact
  denoiser and of ``D = c_skip x`` on the same held-out draws: the **optimisation
  certificate** is ``loss(network) - loss(exact)``, with its paired standard error.

Thresholds, stated before the run:

* high SNR is ``sigma <= 0.2`` (SNR >= 25), low SNR ``sigma >= 2`` (SNR <= 1/4); between them the
  posterior moves from one subspace to all three and no rank is asserted (the exact denoiser
  has rank ``r`` at 97% of the points at ``sigma = 0.2`` but 61% at ``0.5``; rank ``K r`` at
  93% at ``sigma = 2``);
* the EDM recipe trains the noise levels in the central 95% of its log-normal,
  ``0.0287 <= sigma <= 3.18``: the claim rows assert the rank there (high SNR: ``sigma`` in
  ``0.05, 0.1, 0.2``; low SNR: ``2, 3``), plus one row at ``sigma = 0.002``, the sampler's
  last level, which the recipe almost never trains;
* a claim row holds when every seed's median rank equals ``r`` (high SNR) or ``K r`` (low SNR) at
  every ``sigma`` of the row;
* certificate: at every ``sigma`` of the row, the median over seeds of
  ``loss(network) - loss(exact)`` is within 2 paired standard errors of zero; otherwise the
  network has not reached the exact denoiser there (under-trained) and a failing row is
  *inconclusive*, not "does not hold";
* convergence (:func:`~manifold_scores.experiments.protocol.plateaued`): the held-out loss at
  each ``sigma`` of the row, recorded every 100 steps, changed by at most 1% of its travelled
  range between the last two windows of 1000 steps, on every seed; training stops when this
  holds at every trained high-SNR ``sigma`` (the low-noise loss);
* positive control: the exact MoLRG denoiser has median rank ``r`` at every high-SNR ``sigma``
  and ``K r`` at every low-SNR ``sigma``;
* negative controls (must not show the effect): the exact denoiser of the Gaussian with the
  mixture's covariance (one subspace of rank ``K r``) keeps rank ``K r`` at high SNR; the same
  network trained by the same recipe on that Gaussian (3 seeds) has median rank above ``r`` at
  every trained high-SNR ``sigma``; the untrained network (``D = c_skip x``: its last layer
  starts at zero) has rank ``d`` at every ``sigma``.

c_skip or under-training. As ``sigma -> 0``, ``c_skip -> 1`` and ``c_out ~ sigma``: the skip
connection alone is the identity (rank ``d``), and a projecting denoiser needs a network whose
Jacobian grows like ``1 / sigma``. The rows at ``sigma = 0.002`` report the loss per ``sigma``
(learned share ``(loss(c_skip x) - loss(network)) / (loss(c_skip x) - loss(exact))``) and the
size of the learned part: a full rank with an unlearned loss is under-training at a level the
recipe does not sample, not a property of the trained denoiser's Jacobian.

Sizes: ``full`` trains at least 11 719 steps and then until the plateau (at most 24 000), with
1024 held-out points and 48 Jacobian points per ``sigma``; ``quick`` is the same study with a
1000-step run (too short for the plateau criterion, so its claim rows are inconclusive by the
convergence rule), 256 held-out and 16 Jacobian points.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

import manifold_scores as ms
from manifold_scores import losses
from manifold_scores.experiments import _plotting, protocol
from manifold_scores.experiments._batched import batch_rows
from manifold_scores.experiments._registry import register
from manifold_scores.experiments._table import Table, check_size
from manifold_scores.models import mlp

DIM, RANK, COMPS = 32, 3, 3
SIGMA_DATA = math.sqrt(RANK / DIM)  # RMS of one coordinate of the MoLRG (unit scales)
P_MEAN, P_STD = -1.2, 1.2  # EDM's log-normal noise levels
SIGMAS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 40.0,
          80.0)
HIGH_SNR, LOW_SNR = 0.2, 2.0  # sigma <= HIGH_SNR: one subspace; sigma >= LOW_SNR: all of them
TRAINED = (math.exp(P_MEAN - 1.96 * P_STD), math.exp(P_MEAN + 1.96 * P_STD))
SIGMA_MIN = SIGMAS[0]
ENERGY = 0.99  # rank rule of the paper's code
LR, BATCH = 1e-3, 512
EMA_HALFLIFE, EMA_RAMPUP = 500_000, 0.05  # EDM: images, and share of the images seen
PAPER_STEPS = 11_719  # 6 Mimg at batch 512
MONITOR_EVERY, CHUNK = 100, 1000  # held-out loss every 100 steps; plateau windows of 1000
PLATEAU_WINDOW, PLATEAU_TOL = CHUNK // MONITOR_EVERY, 0.01
SEEDS = 3

_SIZES = {
    # quick: the same study with a shorter run (it stops at the step cap, unconverged) and fewer
    # evaluation points
    "quick": dict(min_steps=1000, max_steps=1000, n_train=50_000, n_eval=256, n_jac=16,
                  width=128, depth=3, batch=BATCH),
    "full": dict(min_steps=PAPER_STEPS, max_steps=24_000, n_train=50_000, n_eval=1024,
                 n_jac=48, width=128, depth=3, batch=BATCH),
}


def _sizes(size, overrides=None):
    cfg = dict(_SIZES[size])
    cfg.update(overrides or {})
    return cfg


def _index(sigmas):
    return [SIGMAS.index(s) for s in sigmas]


HIGH_TRAINED = tuple(s for s in SIGMAS if TRAINED[0] <= s <= HIGH_SNR)
LOW_TRAINED = tuple(s for s in SIGMAS if LOW_SNR <= s <= TRAINED[1])


def gaussian_twin(mix: ms.MoLRG) -> ms.MoLRG:
    """The Gaussian with the mixture's covariance ``(1/K) sum_k U_k U_k^T``: one component
    whose basis is all ``K r`` directions, each with variance ``1 / K``."""
    k, d, r = mix.bases.shape
    basis = jnp.transpose(mix.bases, (1, 0, 2)).reshape(1, d, k * r)
    return ms.MoLRG(basis, scales=jnp.full((1, k * r), 1.0 / math.sqrt(k), basis.dtype))


def _precond(sigma):
    s2, sd2 = sigma * sigma, SIGMA_DATA * SIGMA_DATA
    return sd2 / (s2 + sd2), sigma * SIGMA_DATA / jnp.sqrt(s2 + sd2)  # c_skip, c_out


def _point_loss(denoised, x0, sigma):
    """EDM-weighted x0 error of one point: ``|F - F_target|^2`` in the network's units."""
    w = (sigma * sigma + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2
    return w * jnp.sum(jnp.square(denoised - x0), -1)


def _net_losses(params, x0, eps, sigmas):
    """``(S, n)`` per-point losses of one network at every sigma (common noise ``eps``)."""

    def at(s):
        d = jax.vmap(lambda x: mlp.apply(params, x, s))(x0 + s * eps)
        return _point_loss(d, x0, s)

    return jax.vmap(at)(sigmas)


_EDM_WEIGHT = losses.edm_weighting(SIGMA_DATA)


@functools.partial(jax.jit, static_argnames=("width", "depth", "dtype"))
def _init(keys, *, width, depth, dtype):
    params = jax.vmap(lambda k: mlp.init(k, DIM, ms.EDM(), width=width, depth=depth,
                                         target="x0", sigma_data=SIGMA_DATA, dtype=dtype))(keys)
    opt_state = jax.vmap(optax.adam(LR).init)(params)
    return params, opt_state, params, jnp.zeros((), jnp.int32)


@functools.partial(jax.jit, static_argnames=("steps", "batch"))
def _train_chunk(state, keys, data, x0e, epse, sigmas, *, steps, batch):
    """``steps`` EDM training steps of every model (vmapped), from ``state``; returns the new
    state, the training loss ``(steps, M)`` and the EMA network's held-out loss
    ``(steps // MONITOR_EVERY, M, S)``."""
    proc = ms.EDM()
    opt = optax.adam(LR)

    def loss_fn(p, key, x):
        return losses.dsm(key, mlp.apply, p, x, proc, target="x0", weighting=_EDM_WEIGHT,
                          time_sampler="edm")

    def one(p, s, e, key, x, beta):
        k_b, k_l = jax.random.split(key)
        loss, g = jax.value_and_grad(loss_fn)(p, k_l, batch_rows(k_b, x, x.shape[0], batch))
        upd, s = opt.update(g, s, p)
        p = optax.apply_updates(p, upd)
        e = jax.tree.map(lambda a, b: beta * a + (1.0 - beta) * b, e, p)
        return p, s, e, loss

    def step(carry, _):
        p, s, e, i = carry
        # EDM's EMA: half-life min(500k, 0.05 x images seen) images, before this step's images
        half = jnp.minimum(EMA_HALFLIFE, EMA_RAMPUP * i * batch)
        beta = 0.5 ** (batch / jnp.maximum(half, 1e-8))
        ks = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
        p, s, e, loss = jax.vmap(one, (0, 0, 0, 0, 0, None))(p, s, e, ks, data, beta)
        return (p, s, e, i + 1), loss

    def monitored(carry, _):
        carry, loss = jax.lax.scan(step, carry, None, length=MONITOR_EVERY)
        held_out = jax.vmap(lambda p, x0, eps: jnp.mean(_net_losses(p, x0, eps, sigmas), -1))(
            carry[2], x0e, epse)
        return carry, (loss, held_out)

    state, (loss, held_out) = jax.lax.scan(monitored, state, None,
                                           length=steps // MONITOR_EVERY)
    return state, loss.reshape(-1, loss.shape[-1]), held_out


def _rank(jac):
    return ms.metrics.jacobian_rank(jac, ENERGY)


def _jac_stats(jac, jac_exact, sigma):
    """Rank, rank of the learned part, energy outside the top ``r`` directions, and sizes
    relative to the exact denoiser's learned part, for one point."""
    c_skip, c_out = _precond(sigma)
    eye = jnp.eye(DIM, dtype=jac.dtype)
    learned = jac - c_skip * eye
    needed = jac_exact - c_skip * eye
    s2 = jnp.linalg.svd(jac, compute_uv=False) ** 2
    tot = jnp.maximum(jnp.sum(s2), 1e-30)
    norm = jnp.maximum(jnp.linalg.norm(needed), 1e-30)
    return dict(rank=_rank(jac), learned_rank=_rank(learned / c_out),
                outside_r=1.0 - jnp.sum(s2[:RANK]) / tot,
                learned_size=jnp.linalg.norm(learned) / norm,
                error=jnp.linalg.norm(jac - jac_exact) / norm)


@jax.jit
def _exact(law, x0, eps, sigmas):
    """Jacobians ``(S, n, d, d)`` of the exact denoiser at ``x0 + sigma eps``, their ranks,
    the ranks of their learned parts and their energy outside the top ``r`` directions."""

    def at(s):
        jac = jax.vmap(jax.jacfwd(lambda y: law.denoise(y, 1.0, s)))(x0 + s * eps)
        c_skip, c_out = _precond(s)
        s2 = jnp.linalg.svd(jac, compute_uv=False) ** 2
        return dict(jac=jac, rank=_rank(jac),
                    learned_rank=_rank((jac - c_skip * jnp.eye(DIM, dtype=jac.dtype)) / c_out),
                    outside_r=1.0 - jnp.sum(s2[..., :RANK], -1) / jnp.sum(s2, -1))

    return jax.vmap(at)(sigmas)


@jax.jit
def _exact_losses(law, x0, eps, sigmas):
    def at(s):
        d = jax.vmap(lambda y: law.denoise(y, 1.0, s))(x0 + s * eps)
        return _point_loss(d, x0, s)

    return jax.vmap(at)(sigmas)


@jax.jit
def _networks(params, xs, jac_exact, sigmas):
    """Jacobian statistics of every (vmapped) network at points ``xs`` ``(M, S, n, d)``
    against the exact Jacobians ``(M, S, n, d, d)`` at the same points."""

    def model(p, xm, jm):
        def at(xb, jb, s):
            def point(x, je):
                return _jac_stats(jax.jacfwd(lambda y: mlp.apply(p, y, s))(x), je, s)

            return jax.vmap(point)(xb, jb)

        return jax.vmap(at)(xm, jm, sigmas)

    return jax.vmap(model)(params, xs, jac_exact)


@jax.jit
def _losses(params, x0e, epse, sigmas):
    return jax.vmap(_net_losses, (0, 0, 0, None))(params, x0e, epse, sigmas)


def _median_pts(a):
    return np.median(np.asarray(a), axis=-1)  # over points -> (M, S) or (S,)


def run(size: str = "quick", *, seed: int = 0, _overrides: dict | None = None) -> Table:
    """Train 3 networks on a MoLRG and 3 on its Gaussian twin (one vmapped run, EDM recipe)
    until the low-noise loss plateaus; Jacobian ranks against sigma with controls."""
    check_size(size)
    cfg = _sizes(size, _overrides)
    key = jax.random.key(seed)
    k_mix, k_data, k_init, k_fit = jax.random.split(key, 4)
    mix = ms.MoLRG.random(k_mix, dim=DIM, rank=RANK, num_components=COMPS)
    twin = gaussian_twin(mix)
    laws = [mix] * SEEDS + [twin] * SEEDS
    models = len(laws)
    sigmas = jnp.asarray(SIGMAS, jnp.float32)

    # One draw per law (each sample size would compile its own sampler): per seed a training
    # set and held-out points, then the Jacobian points shared by the law's seeds.
    n_tr, n_ev, n_j = cfg["n_train"], cfg["n_eval"], cfg["n_jac"]
    k_mix_x, k_twin_x, k_noise = jax.random.split(k_data, 3)
    clean = []
    for law, k in ((mix, k_mix_x), (twin, k_twin_x)):
        x = law.sample(k, SEEDS * (n_tr + n_ev) + n_j)
        clean.append((x[: SEEDS * (n_tr + n_ev)].reshape(SEEDS, n_tr + n_ev, DIM), x[-n_j:]))
    per_model = jnp.concatenate([clean[0][0], clean[1][0]])  # (M, n_tr + n_ev, d)
    data, x0e = per_model[:, :n_tr], per_model[:, n_tr:]  # x0e: held out (certificate, plateau)
    k_ne, k_nj = jax.random.split(k_noise)
    epse = jax.random.normal(k_ne, (models, n_ev, DIM))
    eps_j = jax.random.normal(k_nj, (n_j, DIM))
    x0_mix, x0_twin = clean[0][1], clean[1][1]

    # ---- training, in chunks until the low-noise loss plateaus
    state = _init(jax.random.split(k_init, models), width=cfg["width"], depth=cfg["depth"],
                  dtype=jnp.float32)
    init_params = state[0]
    fit_keys = jax.random.split(k_fit, models)
    chunk = min(CHUNK, cfg["max_steps"])
    train_loss, held = [], []
    steps = 0
    watch = _index(HIGH_TRAINED)
    converged_low_noise = False
    while steps < cfg["max_steps"]:
        state, tl, ho = _train_chunk(state, fit_keys, data, x0e, epse, sigmas, steps=chunk,
                                     batch=cfg["batch"])
        train_loss.append(np.asarray(tl))
        held.append(np.asarray(ho))
        steps += chunk
        hist = np.concatenate(held)
        converged_low_noise = all(_plateau(hist[:, m, j]) for m in range(SEEDS) for j in watch)
        if steps >= cfg["min_steps"] and converged_low_noise:
            break
    train_loss, held = np.concatenate(train_loss), np.concatenate(held)
    ema = state[2]

    # ---- losses on the held-out draws: network, exact denoiser, skip connection alone
    net_pts = np.asarray(_losses(ema, x0e, epse, sigmas))  # (M, S, n)
    exact_pts = np.stack([np.asarray(_exact_losses(law, x0e[m], epse[m], sigmas))
                          for m, law in enumerate(laws)])
    skip_pts = np.asarray(_losses(init_params, x0e, epse, sigmas))  # D = c_skip x at init
    diff = net_pts - exact_pts
    gap = diff.mean(-1)  # (M, S)
    gap_se = diff.std(-1, ddof=1) / math.sqrt(diff.shape[-1])
    loss_net, loss_exact, loss_skip = net_pts.mean(-1), exact_pts.mean(-1), skip_pts.mean(-1)
    learned_share = (loss_skip - loss_net) / np.maximum(loss_skip - loss_exact, 1e-12)

    # ---- Jacobians at fresh noised points
    exact_mix = _exact(mix, x0_mix, eps_j, sigmas)  # (S, n, ...)
    exact_twin = _exact(twin, x0_twin, eps_j, sigmas)
    jac_exact = jnp.stack([exact_mix["jac"]] * SEEDS + [exact_twin["jac"]] * SEEDS)
    noised = [x0_mix[None] + sigmas[:, None, None] * eps_j[None],
              x0_twin[None] + sigmas[:, None, None] * eps_j[None]]
    xs = jnp.stack([noised[0]] * SEEDS + [noised[1]] * SEEDS)  # (M, S, n, d)
    net = {k: _median_pts(v) for k, v in _networks(ema, xs, jac_exact, sigmas).items()}
    untrained = {k: _median_pts(v)
                 for k, v in _networks(init_params, xs, jac_exact, sigmas).items()}
    exact_rank_mix = _median_pts(exact_mix["rank"])
    exact_rank_twin = _median_pts(exact_twin["rank"])
    exact_learned_rank = _median_pts(exact_mix["learned_rank"])
    exact_outside_r = _median_pts(exact_mix["outside_r"])

    mol, gau = slice(0, SEEDS), slice(SEEDS, 2 * SEEDS)
    plateau = np.array([[_plateau(held[:, m, j]) for j in range(len(SIGMAS))]
                        for m in range(models)])
    hi_all = [j for j, s in enumerate(SIGMAS) if s <= HIGH_SNR]
    lo_all = [j for j, s in enumerate(SIGMAS) if s >= LOW_SNR]

    study = protocol.Study("E6", size)
    study.control(
        "exact MoLRG denoiser: rank r at every high-SNR sigma (<= 0.2) and K r at every "
        "low-SNR sigma (>= 2)", "positive",
        passed=bool(np.all(exact_rank_mix[hi_all] == RANK)
                    and np.all(exact_rank_mix[lo_all] == COMPS * RANK)),
        measured=f"{_range(exact_rank_mix[hi_all])} / {_range(exact_rank_mix[lo_all])}",
        expected=f"{RANK} / {COMPS * RANK}", key="exact_mixture")
    study.control(
        "exact denoiser of the Gaussian with the mixture's covariance: rank K r (not r) at "
        "high SNR", "negative",
        passed=bool(np.all(exact_rank_twin[hi_all] == COMPS * RANK)),
        measured=_range(exact_rank_twin[hi_all]), expected=f"{COMPS * RANK}",
        key="exact_gaussian")
    twin_hi = net["rank"][gau][:, _index(HIGH_TRAINED)]
    study.control(
        "network trained on that Gaussian (same recipe, 3 seeds): rank above r at trained "
        "high SNR", "negative", passed=bool(np.all(twin_hi > RANK)),
        measured=_range(twin_hi), expected=f"> {RANK} (exact: {COMPS * RANK})",
        key="network_gaussian")
    study.control(
        "untrained network (D = c_skip x): rank d at every sigma", "negative",
        passed=bool(np.all(untrained["rank"][mol] == DIM)),
        measured=_range(untrained["rank"][mol]), expected=f"{DIM}", key="network_untrained")

    def claim_row(text, key, row_sigmas, target):
        j = _index(row_sigmas)
        ranks = net["rank"][mol][:, j]  # (seeds, |row|)
        g = np.median(gap[mol][:, j], 0)
        tol = 2.0 * np.median(gap_se[mol][:, j], 0)
        worst = int(np.argmax(g - tol))
        conv = bool(np.all(plateau[mol][:, j]))
        return study.claim(
            text, key=key, measured=protocol.spread(
                ranks[np.arange(SEEDS), np.argmax(np.abs(ranks - target), 1)]),
            expected=f"{target} on every seed (exact: "
                     f"{_range(exact_rank_mix[j])})",
            test=bool(np.all(ranks == target)), seeds=SEEDS,
            certificate_gap=float(g[worst]), gap_tol=float(tol[worst]), converged=conv,
            sigmas=list(row_sigmas), ranks_per_seed=ranks, loss_gap=g, gap_tolerance=tol,
            learned_share=np.median(learned_share[mol][:, j], 0),
            controls=["exact_mixture", "exact_gaussian", "network_gaussian",
                      "network_untrained"])

    claim_row(f"trained network: rank r at trained high SNR (sigma = "
              f"{_list(HIGH_TRAINED)}; worst seed)", "network_high_snr", HIGH_TRAINED, RANK)
    claim_row(f"trained network: rank K r at trained low SNR (sigma = {_list(LOW_TRAINED)}; "
              f"worst seed)", "network_low_snr", LOW_TRAINED, COMPS * RANK)
    claim_row(f"trained network: rank r at the sampler's last level sigma = {SIGMA_MIN} "
              f"(untrained by the recipe)", "network_sigma_min", (SIGMA_MIN,), RANK)

    j0 = 0
    p_min = 0.5 * math.erfc(-(math.log(SIGMAS[1]) - P_MEAN) / (P_STD * math.sqrt(2)))
    study.observe(
        f"sigma = {SIGMA_MIN}: learned share of the DSM loss, (L(c_skip x) - L(net)) / "
        f"(L(c_skip x) - L(exact))", protocol.spread(learned_share[mol][:, j0]),
        f"1 if learned; the recipe draws sigma <= {SIGMAS[1]} with probability {p_min:.1e}")
    study.observe(
        f"sigma = {SIGMA_MIN}: learned part |J - c_skip I| / |J_exact - c_skip I|",
        protocol.spread(net["learned_size"][mol][:, j0]),
        f"1 if learned (learned-part rank: net {_range(net['learned_rank'][mol][:, j0])}, "
        f"exact {exact_learned_rank[j0]:.0f})")
    jm = SIGMAS.index(0.1)
    study.observe(
        "sigma = 0.1: learned share of the DSM loss",
        protocol.spread(learned_share[mol][:, jm]),
        "1 if learned; rank r needs about 0.998 (residual below 4.5% on d - r directions)")
    study.observe(
        "sigma = 0.1: Jacobian energy outside the top r directions",
        protocol.spread(net["outside_r"][mol][:, jm]),
        f"exact: {exact_outside_r[jm]:.1e}; rank r needs < 0.0199")
    study.observe(
        "training: steps, low-noise loss plateaued on every seed",
        f"{steps} steps, {'yes' if converged_low_noise else 'no'}",
        f"plateau within {PLATEAU_TOL:.0%} of the travelled range over {CHUNK} steps")

    data_out = {
        "sigmas": np.asarray(SIGMAS), "rank": RANK, "comps": COMPS, "dim": DIM,
        "trained": TRAINED, "high_snr": HIGH_SNR, "low_snr": LOW_SNR, "steps": steps,
        "exact_rank": exact_rank_mix, "exact_rank_gaussian": exact_rank_twin,
        "exact_learned_rank": exact_learned_rank,
        "network_rank": net["rank"][mol], "gaussian_network_rank": net["rank"][gau],
        "untrained_rank": untrained["rank"][mol],
        "network_learned_rank": net["learned_rank"][mol],
        "network_learned_size": net["learned_size"][mol],
        "network_error": net["error"][mol], "network_outside_r": net["outside_r"][mol],
        "loss_network": loss_net[mol], "loss_exact": loss_exact[mol][0],
        "loss_skip": loss_skip[mol][0], "loss_gap": gap[mol], "loss_gap_se": gap_se[mol],
        "loss_gaussian_network": loss_net[gau], "loss_gaussian_exact": loss_exact[gau][0],
        "learned_share": learned_share[mol], "plateaued": plateau,
        "held_out": held, "train_loss": train_loss, "monitor_every": MONITOR_EVERY,
    }
    return study.table(data_out)


def _plateau(v):
    return protocol.plateaued(v, window=PLATEAU_WINDOW, rel_tol=PLATEAU_TOL)


def _range(a) -> str:
    a = np.asarray(a, float)
    lo, hi = float(np.min(a)), float(np.max(a))
    return f"{lo:.0f}" if lo == hi else f"{lo:.0f}-{hi:.0f}"


def _list(values) -> str:
    return ", ".join(f"{v:g}" for v in values)


def plot(table: Table):
    """Three panels against sigma: Jacobian rank, DSM loss per sigma, and the held-out loss
    during training."""
    from matplotlib.ticker import FixedLocator, LogFormatterMathtext, LogLocator, NullFormatter

    d = table.data
    sig = np.asarray(d["sigmas"])
    r, k, dim = d["rank"], d["comps"], d["dim"]
    fig, axes = _plotting.subplots(1, 3, figsize=(16, 5))

    ax = axes[0]
    ax.axvspan(*d["trained"], color="0.92", zorder=0, label="noise levels EDM trains (95%)")
    ax.plot(sig, d["exact_rank"], "o-", color="k", lw=2, label="exact MoLRG denoiser")
    net = np.asarray(d["network_rank"])
    ax.plot(sig, np.median(net, 0), "s-", color="C0", label="trained MLP (median of seeds)")
    ax.fill_between(sig, net.min(0), net.max(0), color="C0", alpha=0.25,
                    label="trained MLP, range over seeds")
    ax.plot(sig, d["exact_rank_gaussian"], "--", color="C2",
            label="exact, Gaussian twin (control)")
    ax.plot(sig, np.median(np.asarray(d["gaussian_network_rank"]), 0), "^:", color="C2",
            label="MLP on Gaussian twin (control)")
    ax.plot(sig, np.median(np.asarray(d["untrained_rank"]), 0), ":", color="C3",
            label="untrained MLP: c_skip x (control)")
    for y, name in ((r, "r"), (k * r, "K r"), (dim, "d")):
        ax.axhline(y, color="0.5", lw=0.8, ls=(0, (1, 3)))
        ax.annotate(name, (1.0, y), xycoords=("axes fraction", "data"), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8, color="0.3")
    ax.set(xscale="log", xlabel="noise level sigma (SNR = 1 / sigma^2)",
           ylabel="Jacobian rank (0.99 Frobenius energy)", ylim=(0, dim + 2),
           title="rank of the denoiser Jacobian")
    ax.legend(fontsize=7, loc="upper center", framealpha=0.9)

    ax = axes[1]
    ax.axvspan(*d["trained"], color="0.92", zorder=0)
    lnet = np.asarray(d["loss_network"])
    ax.plot(sig, np.median(lnet, 0), "s-", color="C0", label="trained MLP (median of seeds)")
    ax.fill_between(sig, lnet.min(0), lnet.max(0), color="C0", alpha=0.25)
    ax.plot(sig, d["loss_exact"], "o-", color="k", label="exact denoiser (certificate)")
    ax.plot(sig, d["loss_skip"], ":", color="C3", label="c_skip x alone (untrained)")
    ax.set(xscale="log", yscale="log", xlabel="noise level sigma",
           ylabel="held-out DSM loss (EDM units)", title="loss per sigma")
    ax.legend(fontsize=7, loc="lower right", framealpha=0.9)

    ax = axes[2]
    held = np.asarray(d["held_out"])  # (rounds, models, sigmas)
    steps = (np.arange(held.shape[0]) + 1) * d["monitor_every"]
    seeds = net.shape[0]
    for s, c in zip((0.002, 0.05, 0.2, 2.0), ("C3", "C1", "C0", "C4"), strict=True):
        j = int(np.argmin(np.abs(sig - s)))
        for m in range(seeds):
            ax.plot(steps, held[:, m, j], ".-" if len(steps) < 20 else "-", color=c, lw=1,
                    label=f"sigma = {sig[j]:g}" if m == 0 else None)
        ax.axhline(d["loss_exact"][j], color=c, lw=0.8, ls="--")
    ax.set(yscale="log", xlabel="training step", ylabel="held-out DSM loss (EMA weights)",
           title="convergence, each seed (dashed: exact denoiser)")
    ax.legend(fontsize=7, loc="upper right", framealpha=0.9)

    ticks = FixedLocator([2, 3, 5, 10, 20, 30, 50, 100])
    for ax in axes:
        if ax.get_xscale() == "log":
            ax.xaxis.set_major_locator(LogLocator(base=10))
            ax.xaxis.set_major_formatter(LogFormatterMathtext())
        if ax.get_yscale() == "log":
            ax.yaxis.set_major_locator(ticks)
            ax.yaxis.set_major_formatter("{x:g}")
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="major")
    return _plotting.finish(fig, f"E6: denoiser Jacobian rank, MoLRG K = {k}, r = {r}, "
                            f"d = {dim} ({d['steps']} EDM training steps, {seeds} seeds; grey: "
                            f"noise levels the recipe trains)")


register(
    "E6", "Trained denoiser Jacobian rank against SNR", "arXiv 2409.02426, Figure 3", run,
    plot, recorded={
        "network_high_snr": (
            "inconclusive",
            "full run: the trained MLP has rank 11-14 where the exact denoiser has 3, but after "
            "the low-noise loss plateaued its held-out loss still exceeds the exact one by "
            "0.38-0.67 (2 SE: 0.05), 1.3-2.3% of the learnable loss: under-trained, not a "
            "counterexample"),
        "network_low_snr": (
            "inconclusive",
            "full run: rank 10-13 against K r = 9 at sigma = 2, 3, with the loss above the "
            "exact denoiser's by 0.13-0.16 (2 SE: 0.08-0.09): under-trained"),
        "network_sigma_min": (
            "inconclusive",
            "rank d at sigma = 0.002 is the skip connection c_skip x ~ x left uncorrected: the "
            "recipe almost never samples that level, the network learned none of the loss there "
            "and its learned part is 3% of the needed size (under-training)"),
    })

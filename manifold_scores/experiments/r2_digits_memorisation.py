"""R2: memorisation and generalisation on real data (the 8 x 8 digits), and the U-Net against
the MLP at equal wall time.

Claims. Kadkhodaie, Guth, Simoncelli, Mallat, "Generalization in diffusion models arises from
geometry-adaptive harmonic representations", arXiv 2310.02557: denoisers of one architecture
trained on two disjoint halves of a data set memorise (different functions) when the set is
small and converge to the same function once it is large enough. Zhang, Liu, Li, Katsoulakis,
Osher, "Wasserstein proximal operators describe score-based generative models and resolve
memorization", arXiv 2402.06162: the WPO kernel model, trained by implicit score matching,
resists the memorisation of the empirical score.

Data. :func:`manifold_scores.datasets.digits` (1,797 images, 8 x 8, in ``[-1, 1]``), its fixed
split into a training pool (1,438) and held-out digits (359). The held-out digits are split in
two fixed halves: the **null set** (179) and the **check set** (180); neither is ever trained
on. Per seed, a random permutation of the pool gives, for each ``N`` of the grid, two disjoint
halves ``A`` (the first ``N / 2`` digits) and ``B`` (the next ``N / 2``); the sets of different
``N`` are nested.

Models (every network: EDM preconditioning, x0 target, ``sigma_data = SIGMA_DATA``, EDM
log-normal noise levels and weighting, one sample = the Heun PF-ODE on the EDM grid of
``ODE_STEPS`` steps ending with the denoiser at ``sigma = 0.002``):

* **U-Net** (:mod:`manifold_scores.models.unet`, ``channels=(8, 16)``, 41k parameters):
  E9's optimiser (Adam at the constant rate ``2e-3``, no EMA), mini-batches drawn uniformly
  from the training digits, one compiled step per call (:func:`train_timed`; for this network
  it compiled in 17 s where :func:`manifold_scores.training.make_loop`'s loop took 31 s, both
  on the loaded machine that ran the study); three runs per ``(N, seed)``: on ``A``, on ``B``, and
  on ``A`` again from another initialisation and batch order (``A'``);
* **MLP** (:mod:`manifold_scores.models.mlp`, width 128, depth 3): the same three runs, all
  trained together by :func:`~manifold_scores.experiments._batched.train_mlps` (Adam from
  ``2e-3`` with a cosine decay, batch 64, a fixed number of steps);
* **kernel model** (:mod:`manifold_scores.models.kernel`, as in E9, low-rank precisions
  ``Gamma_i = L_i L_i^T + eps I`` of rank ``KERNEL_RANK``, ``L_i`` from an MLP of the centre):
  on ``A``, the first ``N / 4`` digits are the centres and the other ``N / 4`` the ISM samples;
  trained by ISM at the terminal time with E9's rule. The data are first divided by the
  bandwidth ``h`` of the best isotropic KDE on the same centres (the ISM loss of the ISM samples
  on a log grid of ``h``), and ``eps = 1``: the model starts at that KDE and can only sharpen
  it, in ``KERNEL_RANK`` directions per centre. Samples are drawn from the mixture (times ``h``);
* **empirical score** of ``A`` (no training, the same sampler): the memorising optimum of DSM.

Measurements.

1. **Memorisation** of ``NS`` samples of each model trained on ``A`` (``n = N / 2`` digits):
   the share whose nearest / second-nearest distinct training distance (against ``A``) is below
   1/3 (:func:`manifold_scores.metrics.memorization_fraction`). **Null**: held-out digits play
   the fresh draws: the null set's near-copy indicators against the same ``A``, resampled with
   replacement ``NULL_REPEATS`` times as sets of ``NS``, give the 95% band
   (:func:`protocol.null_band`) and the median. A run **memorises** when its fraction is above
   the band and more than ``MEM_EXCESS = 0.05`` above the null's median (E9's rule,
   :func:`manifold_scores.experiments.e9_wpo_kernel.memorises`); a model memorises at ``n``
   when at least half of its seeds do.
2. **Two halves.** For two denoisers ``D1``, ``D2`` at noise level ``sigma``, on the clean
   held-out digits ``x0`` of the null set with one fixed noise draw ``x = x0 + sigma z``:

       rel(sigma) = E |D1(x) - D2(x)|^2 / (E |D1(x) - x0|^2 / 2 + E |D2(x) - x0|^2 / 2)

   (the squared distance between the two denoisers in units of their own mean denoising error),
   on the grid ``SIGMAS`` (0.02 to 5, geometric); its summary is the mean over the grid.
   ``halves`` = ``rel`` of the runs on ``A`` and ``B``; the **floor** (the optimisation noise:
   the same data, another initialisation and batch order) = ``rel`` of ``A`` and ``A'``.
3. **U-Net against MLP at equal wall time.** On ``A`` at the largest ``N``: the U-Net's run
   (above), and an MLP (width 128, depth 3) with the U-Net's rule (:func:`train_timed`, the
   same batch size) trained for the U-Net's training wall time of the same seed. Both
   are evaluated by the DSM loss of the training objective (EDM weighting and noise levels, one
   fixed noise draw per point, the same draws for both) on all 359 held-out digits, at
   checkpoints; times are after compilation, evaluation excluded.

Thresholds, stated before the run:

* ``kernel_vs_networks``: at every ``n`` where a network (U-Net or MLP) memorises (at least half
  of its seeds), the kernel model does not (fewer than half of its seeds); not measurable (so
  inconclusive) when no network memorises at any ``n``;
* ``two_halves`` (U-Net) and ``two_halves_mlp``: at the largest ``N`` the median over seeds of
  ``halves`` is at most ``WITHIN = 1.5`` times the largest floor of that ``N`` (within the
  floor band), and at the smallest ``N`` the smallest ``halves`` over seeds is at least
  ``ABOVE = 3`` times the largest floor of that ``N`` (far above it);
* ``unet_vs_mlp``: at the U-Net's training wall time the median over seeds of the U-Net's
  held-out DSM loss is below the MLP's (the MLP's last checkpoint within that time);
* convergence: :func:`protocol.plateaued` on each training loss (window a tenth of the run);
  a failing claim whose networks did not all plateau is inconclusive.

Controls. Memorisation (for ``kernel_vs_networks``): positive, the empirical score memorises
on every training set (every ``N``, every seed); negative, a set of ``NS`` held-out digits drawn
(with replacement) from the check set is inside the null band as often as the band promises
(the Wilson interval of its inside rate reaches 0.9) and memorises on no training set.
Two-halves distance (for ``two_halves*``): positive, the empirical denoisers of ``A`` and ``B``
(two different memorising functions) are at ``rel >= DISTINCT = 0.5`` (mean over the grid) on
every ``(N, seed)``; negative, the Gaussian denoisers fitted to ``A`` and ``B`` (mean and
covariance: one generalising function up to estimation error) are at ``rel <= SAME = 0.2`` at
the largest ``N`` on every seed. Loss (for ``unet_vs_mlp``): positive, the held-out loss ranks
the Gaussian denoiser fitted to ``A`` below the untrained network (``D = c_skip x``) on every
seed.

Sizes: quick ``N in {32, 512}``, U-Net 50 steps at batch 32, MLP 400 steps, kernel 100 steps,
``NS = 100``; full ``N in {64, 256, 1024}``, U-Net 1200 steps at batch 32, MLP 3000 steps,
kernel 400 steps, ``NS = 200``; 3 seeds. (The quick grid's largest ``N`` is 512 because the
Gaussian control needs halves of a few hundred digits in 64 dimensions: at ``N = 128`` its
halves are at ``rel = 0.41``.) These budgets are far below the papers' (their networks train
to convergence on up to 10^5 images); the plateau flags say where training had not ended, and
a quick run is a check of the machinery, not of the claims.
"""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import manifold_scores as ms
from manifold_scores import datasets, losses
from manifold_scores.experiments import _plotting, protocol
from manifold_scores.experiments import e9_wpo_kernel as e9
from manifold_scores.experiments._batched import (
    batch_rows,
    sample_edm,
    sample_one,
    train_mlps,
)
from manifold_scores.experiments._registry import register
from manifold_scores.experiments._table import Table, check_size
from manifold_scores.models import kernel, mlp, unet

SHAPE = (8, 8, 1)
DIM = 64
SIGMA_DATA = 0.85  # per-pixel RMS of the digits in [-1, 1] (0.847)
EDM = e9.EDM  # one process object: the compiled loops are reused
OPTIMIZER = e9.OPTIMIZER  # Adam at the constant rate 2e-3 (E9's rule)
CHUNK = e9.CHUNK
MLP_WIDTH, MLP_DEPTH, MLP_BATCH = 128, 3, 64
KERNEL_RANK = 8
ODE_STEPS = 32
MEM_EXCESS = e9.MEM_EXCESS
INSIDE = 0.9
WITHIN, ABOVE = 1.5, 3.0
DISTINCT, SAME = 0.5, 0.2  # controls of the two-halves distance (mean over the sigma grid)
SIGMAS = tuple(float(s) for s in np.geomspace(0.02, 5.0, 9))
NULL_REPEATS = 200
MODELS = ("U-Net", "MLP", "kernel", "empirical")
NETWORKS = ("U-Net", "MLP")
HELD_KEY = 12345  # the fixed noise draws of the held-out DSM loss


def _sizes(size, overrides=None):
    if size == "quick":
        cfg = dict(ns=(32, 512), channels=(8, 16), unet_steps=50, unet_batch=32,
                   unet_evals=2, mlp_steps=400, kernel_steps=100, n_samples=100, seeds=3)
    else:
        cfg = dict(ns=(64, 256, 1024), channels=(8, 16), unet_steps=1200, unet_batch=32,
                   unet_evals=8, mlp_steps=3000, kernel_steps=400, n_samples=200, seeds=3)
    cfg.update(overrides or {})
    return cfg


# ---------------------------------------------------------------------------------------------
# losses, samplers and the timed training loop
# ---------------------------------------------------------------------------------------------


def _unet_loss(p, key, batch):
    return losses.dsm(key, unet.apply, p, batch, EDM, target="x0", weighting="edm",
                      time_sampler="edm")


def _mlp_loss(p, key, batch):
    return losses.dsm(key, mlp.apply, p, batch, EDM, target="x0", weighting="edm",
                      time_sampler="edm")


@functools.partial(jax.jit, static_argnames=("apply",))
def heldout_loss(params, x0, *, apply):
    """The training objective (EDM-weighted DSM, EDM noise levels) on ``x0`` with fixed draws."""
    return losses.dsm(jax.random.key(HELD_KEY), apply, params, x0, EDM, target="x0",
                      weighting="edm", time_sampler="edm")


def sample_net(key, params, *, apply, n):
    """``n`` Heun PF-ODE samples of one network (EDM grid, ``ODE_STEPS`` steps)."""
    return sample_one(key, apply, params, n=n, steps=ODE_STEPS)


@functools.partial(jax.jit, static_argnames=("apply",))
def denoise_grid(params, x0, z, sigmas, *, apply):
    """``(len(sigmas), n, d)``: the denoiser at ``x0 + sigma z`` for each ``sigma``."""
    per_point = jax.vmap(lambda x, s: apply(params, x, s), (0, None))
    return jax.lax.map(lambda s: per_point(x0 + s * z, s), sigmas)


def relative_distance(d1, d2, x0):
    """``E|D1 - D2|^2 / (E|D1 - x0|^2 / 2 + E|D2 - x0|^2 / 2)`` per noise level: ``d1``, ``d2``
    ``(S, n, d)`` denoised points, ``x0`` ``(n, d)`` the clean ones."""
    d1, d2, x0 = (np.asarray(a, np.float64) for a in (d1, d2, x0))
    num = np.mean(np.sum((d1 - d2) ** 2, -1), -1)
    den = 0.5 * (np.mean(np.sum((d1 - x0) ** 2, -1), -1) + np.mean(np.sum((d2 - x0) ** 2, -1),
                                                                     -1))
    return num / den


def gaussian_fit(x):
    """``(mean, eigenvectors, eigenvalues)`` of the Gaussian fitted to the rows of ``x``
    (float64 NumPy: no decomposition in compiled code)."""
    x = np.asarray(x, np.float64)
    mu = x.mean(0)
    lam, vec = np.linalg.eigh(np.cov(x.T, bias=True))
    return (jnp.asarray(mu, jnp.float32), jnp.asarray(vec, jnp.float32),
            jnp.asarray(np.maximum(lam, 0.0), jnp.float32))


def gaussian_apply(params, x, t):
    """The Gaussian law's denoiser ``mu + V diag(lam / (lam + sigma^2)) V^T (x - mu)``
    (EDM: ``sigma = t``), an ``apply`` for the losses and :func:`denoise_grid`."""
    mu, vec, lam = params
    return mu + vec @ (lam / (lam + t * t) * (vec.T @ (x - mu)))


def empirical_apply(train, x, t):
    """The empirical score's denoiser (the training set's posterior mean) as an ``apply``."""
    return ms.Empirical(train).denoise(x, 1.0, t)


@functools.partial(jax.jit, static_argnames=("loss_fn", "batch"))
def _adam_step(params, opt_state, key, rows, *, loss_fn, batch):
    k_b, k_l = jax.random.split(key)
    x = batch_rows(k_b, rows, rows.shape[0], batch)
    loss, grad = jax.value_and_grad(loss_fn)(params, k_l, x)
    upd, opt_state = OPTIMIZER.update(grad, opt_state, params)
    return optax.apply_updates(params, upd), opt_state, loss


def train_timed(loss_fn, params, key, rows, *, batch, steps=None, seconds=None, every=CHUNK,
                evaluate=None):
    """Adam at the constant rate ``2e-3`` (E9's), ``batch`` rows drawn uniformly from ``rows``
    at each step, one compiled step per call; until ``steps`` steps or ``seconds`` of training
    wall time (after compilation; the clock is read every ``CHUNK`` steps, evaluations
    excluded).

    ``evaluate(params)`` runs every ``every`` steps (a multiple of ``CHUNK``) and at the end.
    Returns ``(params, records, losses, compile_seconds)``; a record is
    ``(step, seconds, value)``. A non-finite loss stops the run.
    """
    if steps is None and seconds is None:
        raise ValueError("steps or seconds must be given")
    opt_state = OPTIMIZER.init(params)
    step_fn = functools.partial(_adam_step, loss_fn=loss_fn, batch=batch)
    t0 = time.perf_counter()
    jax.block_until_ready(step_fn(params, opt_state, key, rows))  # compiles; result dropped
    compile_s = time.perf_counter() - t0
    records, hist, spent, step = [], [], 0.0, 0
    while (steps is None or step < steps) and (seconds is None or spent < seconds):
        todo = CHUNK if steps is None else min(CHUNK, steps - step)
        chunk = []
        t0 = time.perf_counter()
        for i in range(todo):
            params, opt_state, loss = step_fn(params, opt_state, jax.random.fold_in(key, step + i),
                                              rows)
            chunk.append(loss)
        chunk = np.asarray(jax.block_until_ready(jnp.stack(chunk)))
        spent += time.perf_counter() - t0
        hist.append(chunk)
        step += todo
        if not np.all(np.isfinite(chunk)):
            break
        done = (steps is not None and step >= steps) or (seconds is not None
                                                         and spent >= seconds)
        if evaluate is not None and (step % every == 0 or done):
            records.append((step, spent, float(evaluate(params))))
    return params, records, np.concatenate(hist) if hist else np.zeros(0), compile_s


# ---------------------------------------------------------------------------------------------
# memorisation and its null
# ---------------------------------------------------------------------------------------------


def near_copies(x, train):
    """Per row of ``x``: nearest / second-nearest distinct training distance below 1/3 (NaN
    where a row is not finite)."""
    d = np.asarray(ms.metrics.nearest_distances(jnp.asarray(x), jnp.asarray(train)), float)
    out = (d[:, 0] < d[:, 1] / 3.0).astype(float)
    return np.where(np.all(np.isfinite(d), 1), out, np.nan)


def fraction(samples, train):
    """The memorisation fraction of ``samples`` against ``train``; NaN when a sample is not
    finite (a diverged sampler is neither memorising nor not: the table prints nan)."""
    hits = near_copies(samples, train)
    return math.nan if np.any(np.isnan(hits)) else float(np.mean(hits))


def null_fractions(hits, n, repeats, rng):
    """Memorisation fractions of ``repeats`` sets of ``n`` rows resampled (with replacement)
    from the held-out rows' near-copy indicators ``hits``: the fresh-draw null."""
    hits = np.asarray(hits, float)
    if hits.size == 0 or np.any(np.isnan(hits)):
        raise ValueError("hits must be a non-empty array of 0 / 1 indicators")
    return hits[rng.integers(0, hits.size, (repeats, n))].mean(1)


#: E9's rule: above the null band and more than ``MEM_EXCESS`` above its median
memorises = e9.memorises


# ---------------------------------------------------------------------------------------------
# the kernel model on digits
# ---------------------------------------------------------------------------------------------


@jax.jit
def _kde_ism(centres, x, precisions):
    """ISM loss ``mean_x |s|^2 / 2 + div s`` of isotropic Gaussian KDEs on ``centres`` with
    each precision ``p``: ``s = -p (x - m)``, ``div s = -p d + p^2 tr Cov_w``."""
    d = centres.shape[1]

    def one(p):
        def at(xx):
            logits = -0.5 * p * jnp.sum((centres - xx) ** 2, -1)
            w = jax.nn.softmax(logits)
            m = w @ centres
            var = w @ jnp.sum(centres * centres, -1) - m @ m
            s = -p * (xx - m)
            return 0.5 * s @ s - p * d + p * p * var

        return jnp.mean(jax.vmap(at)(x))

    return jax.lax.map(one, precisions)


def kde_bandwidth(centres, ism):
    """Bandwidth of the isotropic KDE on ``centres`` with the smallest ISM loss on ``ism``
    (a log grid from 0.03 to 3)."""
    hs = np.geomspace(0.03, 3.0, 41)
    vals = np.asarray(_kde_ism(jnp.asarray(centres), jnp.asarray(ism),
                               jnp.asarray(1.0 / hs**2, jnp.float32)))
    if not np.any(np.isfinite(vals)):
        raise ValueError("centres: no finite ISM loss on the bandwidth grid")
    return float(hs[int(np.nanargmin(vals))])


def _train_kernel(key, train, steps, rows_to):
    """Kernel model on ``train`` (first half centres, second half ISM samples), in units of the
    best KDE bandwidth; returns ``(params, h, losses)``."""
    q = train.shape[0] // 2
    centres, ism = train[:q], train[q:]
    h = kde_bandwidth(centres, ism)
    p0 = kernel.init(key, jnp.asarray(centres / h), rank=KERNEL_RANK, eps=1.0, init_scale=0.1)
    reps = max(1, rows_to // len(ism))
    rows = jnp.tile(jnp.asarray(ism / h), (reps, 1))
    params, _, hist, _ = e9.train_with_checkpoints(
        "kernel", p0, jax.random.fold_in(key, 1), rows, (steps,), lambda p: {})
    return params, h, hist


# ---------------------------------------------------------------------------------------------
# the study
# ---------------------------------------------------------------------------------------------


def run(size: str = "quick", *, seed: int = 0, _overrides: dict | None = None) -> Table:
    """Memorisation of four models against the held-out null, the two-halves test and the
    U-Net against the MLP at equal wall time, on the digits."""
    check_size(size)
    return _run(size, _sizes(size, _overrides), seed)


def _run(size, cfg, seed):
    key = jax.random.key(seed)
    ds = ms.datasets.digits(jax.random.key(0))
    pool, held = np.asarray(ds.train), np.asarray(ds.test)
    null_set, check_set = held[: len(held) // 2], held[len(held) // 2:]
    ns, seeds, n_s = tuple(cfg["ns"]), cfg["seeds"], cfg["n_samples"]
    if max(ns) > len(pool):
        raise ValueError(f"ns: at most {len(pool)} digits, got {max(ns)}")
    rng = np.random.default_rng(seed)
    sig = jnp.asarray(SIGMAS, jnp.float32)
    z = np.asarray(jax.random.normal(jax.random.fold_in(key, 7), null_set.shape), np.float32)
    shape = (len(ns), seeds)
    rows_to = max(ns) // 2

    sets = {}
    for s in range(seeds):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, 100 + s), len(pool)))
        for j, n in enumerate(ns):
            sets[j, s] = (pool[perm[: n // 2]], pool[perm[n // 2: n]])

    # --- MLPs: runs A, B, A' of every (N, seed), trained together
    mlp_sets, mlp_index = [], {}
    for (j, s), (a, b) in sets.items():
        for tag, x in (("A", a), ("B", b), ("A'", a)):
            mlp_index[j, s, tag] = len(mlp_sets)
            mlp_sets.append(x)
    data = jnp.asarray(np.stack([np.resize(x, (rows_to, DIM)) for x in mlp_sets]))
    counts = jnp.asarray([len(x) for x in mlp_sets], jnp.int32)
    t0 = time.perf_counter()
    mlp_params, mlp_hist = train_mlps(jax.random.fold_in(key, 1), data, counts,
                                      width=MLP_WIDTH, depth=MLP_DEPTH,
                                      steps=cfg["mlp_steps"], batch_size=MLP_BATCH,
                                      sigma_data=SIGMA_DATA)
    jax.block_until_ready(mlp_params)
    mlp_seconds = time.perf_counter() - t0
    mlp_hist = np.asarray(mlp_hist)
    window = max(1, cfg["mlp_steps"] // 10)
    mlp_plateau = np.array([protocol.plateaued(mlp_hist[:, i], window=window)
                            for i in range(len(mlp_sets))])
    mlp_samples = np.asarray(sample_edm(jax.random.fold_in(key, 2), mlp_params, n=n_s,
                                        steps=ODE_STEPS))
    mlp_den = np.asarray(jax.vmap(lambda p: denoise_grid(p, jnp.asarray(null_set),
                                                         jnp.asarray(z), sig,
                                                         apply=mlp.apply))(mlp_params))

    mem = {m: np.full(shape, np.nan) for m in MODELS}
    band, median = np.zeros(shape + (2,)), np.zeros(shape)
    check_frac = np.zeros(shape)
    halves = {m: np.zeros(shape + (len(SIGMAS),)) for m in NETWORKS}
    floor = {m: np.zeros(shape + (len(SIGMAS),)) for m in NETWORKS}
    unet_plateau = np.zeros(shape + (3,), bool)
    kernel_plateau = np.zeros(shape, bool)
    kernel_h = np.zeros(shape)
    unet_curves, mlp_curves, unet_time = [], [], np.zeros(seeds)
    unet_compile = []
    emp_halves, gauss_halves = np.zeros(shape + (len(SIGMAS),)), np.zeros(shape + (len(SIGMAS),))
    gauss_loss, init_loss = np.zeros(seeds), np.zeros(seeds)
    grids = {}
    for s in range(seeds):
        ks = jax.random.fold_in(key, 200 + s)
        for j, n in enumerate(ns):
            a, b = sets[j, s]
            kn = jax.random.fold_in(ks, j)
            # null and check set against A
            hits = near_copies(null_set, a)
            null = null_fractions(hits, n_s, NULL_REPEATS, rng)
            band[j, s], median[j, s] = protocol.null_band(null), float(np.median(null))
            check_hits = near_copies(check_set, a)
            check_frac[j, s] = float(np.mean(check_hits[rng.integers(0, len(check_hits),
                                                                     n_s)]))
            # empirical score
            emp = np.asarray(e9.sample_empirical(jax.random.fold_in(kn, 1), jnp.asarray(a),
                                                 n=n_s))
            mem["empirical"][j, s] = fraction(emp, a)
            # U-Net runs A, B, A'
            dens, samples = {}, {}
            for r, (tag, x) in enumerate((("A", a), ("B", b), ("A'", a))):
                kr = jax.random.fold_in(kn, 10 + r)
                p0 = unet.init(kr, SHAPE, EDM, channels=tuple(cfg["channels"]), target="x0",
                               sigma_data=SIGMA_DATA)
                rows = jnp.asarray(np.resize(x, (rows_to, DIM)))
                timed = tag == "A" and j == len(ns) - 1
                if timed:
                    init_loss[s] = float(heldout_loss(p0, jnp.asarray(held), apply=unet.apply))
                every = max(CHUNK, CHUNK * round(cfg["unet_steps"] / cfg["unet_evals"] / CHUNK))
                p, recs, hist, comp = train_timed(
                    _unet_loss, p0, jax.random.fold_in(kr, 1), rows, batch=cfg["unet_batch"],
                    steps=cfg["unet_steps"], every=every,
                    evaluate=(lambda q: heldout_loss(q, jnp.asarray(held), apply=unet.apply))
                    if timed else None)
                unet_compile.append(comp)
                unet_plateau[j, s, r] = protocol.plateaued(hist, window=max(1, len(hist) // 10))
                dens[tag] = np.asarray(denoise_grid(p, jnp.asarray(null_set), jnp.asarray(z),
                                                    sig, apply=unet.apply))
                if tag == "A":
                    samples["U-Net"] = np.asarray(sample_net(jax.random.fold_in(kn, 2), p,
                                                             apply=unet.apply, n=n_s))
                    mem["U-Net"][j, s] = fraction(samples["U-Net"], a)
                if timed:
                    unet_curves.append(recs)
                    unet_time[s] = recs[-1][1]
            x_null, z_null = jnp.asarray(null_set), jnp.asarray(z)
            ed = [denoise_grid(jnp.asarray(x), x_null, z_null, sig, apply=empirical_apply)
                  for x in (a, b)]
            emp_halves[j, s] = relative_distance(ed[0], ed[1], null_set)
            gfit = [gaussian_fit(x) for x in (a, b)]
            gd = [denoise_grid(g, x_null, z_null, sig, apply=gaussian_apply) for g in gfit]
            gauss_halves[j, s] = relative_distance(gd[0], gd[1], null_set)
            if j == len(ns) - 1:
                gauss_loss[s] = float(heldout_loss(gfit[0], jnp.asarray(held),
                                                   apply=gaussian_apply))
            halves["U-Net"][j, s] = relative_distance(dens["A"], dens["B"], null_set)
            floor["U-Net"][j, s] = relative_distance(dens["A"], dens["A'"], null_set)
            md = {t: mlp_den[mlp_index[j, s, t]] for t in ("A", "B", "A'")}
            halves["MLP"][j, s] = relative_distance(md["A"], md["B"], null_set)
            floor["MLP"][j, s] = relative_distance(md["A"], md["A'"], null_set)
            samples["MLP"] = mlp_samples[mlp_index[j, s, "A"]]
            mem["MLP"][j, s] = fraction(samples["MLP"], a)
            # kernel model on A
            kp, h, khist = _train_kernel(jax.random.fold_in(kn, 3), a, cfg["kernel_steps"],
                                         rows_to // 2)
            kernel_h[j, s] = h
            kernel_plateau[j, s] = protocol.plateaued(khist, window=max(1, len(khist) // 10))
            samples["kernel"] = h * np.asarray(e9.sample_kernel(jax.random.fold_in(kn, 4), kp,
                                                                n=n_s))
            mem["kernel"][j, s] = fraction(samples["kernel"], a)
            samples["empirical"] = emp
            if s == 0:
                grids[n] = {m: _pairs(v, a) for m, v in samples.items()}
        # MLP with the U-Net's rule for the U-Net's wall time, on A of the largest N
        a = sets[len(ns) - 1, s][0]
        p0 = mlp.init(jax.random.fold_in(ks, 50), DIM, EDM, width=MLP_WIDTH, depth=MLP_DEPTH,
                      target="x0", sigma_data=SIGMA_DATA)
        _, recs, _, _ = train_timed(
            _mlp_loss, p0, jax.random.fold_in(ks, 51), jnp.asarray(np.resize(a, (rows_to, DIM))),
            batch=cfg["unet_batch"], seconds=unet_time[s], every=CHUNK,
            evaluate=lambda q: heldout_loss(q, jnp.asarray(held), apply=mlp.apply))
        mlp_curves.append(recs)

    res = dict(mem=mem, band=band, median=median, check=check_frac, halves=halves,
               floor=floor, unet_plateau=unet_plateau, mlp_plateau=mlp_plateau,
               kernel_plateau=kernel_plateau, kernel_h=kernel_h, unet_curves=unet_curves,
               mlp_curves=mlp_curves, unet_time=unet_time, grids=grids,
               mlp_index=mlp_index, mlp_seconds=mlp_seconds,
               unet_compile=np.asarray(unet_compile), emp_halves=emp_halves,
               gauss_halves=gauss_halves, gauss_loss=gauss_loss, init_loss=init_loss)
    return _study(size, cfg, res)


def _pairs(samples, train, k=6):
    """The first ``k`` finite samples and their nearest training digits."""
    x = np.asarray(samples)[: 4 * k]
    x = x[np.all(np.isfinite(x), 1)][:k]
    if not len(x):
        return dict(samples=np.zeros((0, DIM)), nearest=np.zeros((0, DIM)))
    d2 = ((x[:, None, :] - np.asarray(train)[None]) ** 2).sum(-1)
    return dict(samples=x, nearest=np.asarray(train)[np.argmin(d2, 1)])


def _loss_at(recs, seconds):
    """The held-out loss at the last record within ``seconds`` (NaN when none)."""
    vals = [v for _, t, v in recs if t <= seconds * (1 + 1e-9)]
    return vals[-1] if vals else math.nan


def _study(size, cfg, res):
    ns, seeds = tuple(cfg["ns"]), cfg["seeds"]
    n_train = [n // 2 for n in ns]
    mem, band, median = res["mem"], res["band"], res["median"]
    memo = {m: memorises(mem[m], band, median) for m in MODELS}
    study = protocol.Study("R2", size)

    emp = memo["empirical"]
    study.control(
        "the empirical score (the exact score of the training set) memorises on every training "
        "set", "positive", passed=bool(emp.all()),
        measured=f"memorises on {int(emp.sum())}/{emp.size}; fraction "
                 f"{protocol.spread(mem['empirical'])}",
        expected="every (N, seed)", key="empirical")
    inside = protocol.rate((res["check"] >= band[..., 0]) & (res["check"] <= band[..., 1]))
    check_mem = memorises(res["check"], band, median)
    study.control(
        "held-out digits of the check set are scored as fresh draws: inside the null band, not "
        "memorising", "negative",
        passed=bool(inside.hi >= INSIDE and not check_mem.any()),
        measured=f"inside {inside}; memorising {int(check_mem.sum())}; null median "
                 f"{protocol.spread(median)}",
        expected=f"inside-rate interval reaches {INSIDE}; none memorising", key="fresh")

    eh = res["emp_halves"].mean(-1)
    study.control(
        "the two-halves distance sees different functions: the empirical denoisers of halves A "
        "and B (memorising by construction) are far apart at every N", "positive",
        passed=bool(np.all(eh >= DISTINCT)),
        measured=f"mean over sigma {protocol.spread(eh)}",
        expected=f">= {DISTINCT:g} on every (N, seed)", key="distance")
    gh = res["gauss_halves"].mean(-1)
    study.control(
        "the two-halves distance sees one function: the Gaussian denoisers fitted to halves A and "
        f"B (generalising by construction) are close at N = {ns[-1]}", "negative",
        passed=bool(np.all(gh[-1] <= SAME)),
        measured=f"mean over sigma {protocol.spread(gh[-1])} (N = {ns[0]}: "
                 f"{protocol.spread(gh[0])})",
        expected=f"<= {SAME:g} on every seed", key="gaussian")
    gl, il = res["gauss_loss"], res["init_loss"]
    study.control(
        "the held-out DSM loss orders a known pair: the Gaussian denoiser fitted to half A is "
        "below the untrained network (D = c_skip x)", "positive",
        passed=bool(np.all(gl < il)),
        measured=f"Gaussian {protocol.spread(gl)} / untrained {protocol.spread(il)}",
        expected="Gaussian lower on every seed", key="loss")

    # memorisation per model and n
    at = {m: [float(np.mean(memo[m][j])) for j in range(len(ns))] for m in MODELS}
    net_cells = [j for j in range(len(ns)) if any(at[m][j] >= 0.5 for m in NETWORKS)]
    k_ok = [at["kernel"][j] < 0.5 for j in net_cells]
    plateau_note = (f"U-Net {int(res['unet_plateau'].sum())}/{res['unet_plateau'].size}, MLP "
                    f"{int(res['mlp_plateau'].sum())}/{res['mlp_plateau'].size}, kernel "
                    f"{int(res['kernel_plateau'].sum())}/{res['kernel_plateau'].size}")
    study.claim(
        "the kernel model does not memorise where the networks do: at every n where the U-Net "
        "or the MLP memorises (at least half of the seeds), the kernel model memorises in fewer "
        "than half", key="kernel_vs_networks",
        measured="n where a network memorises: "
                 + (", ".join(f"{n_train[j]} (kernel {int(memo['kernel'][j].sum())}/{seeds})"
                              for j in net_cells) or "none"),
        expected="kernel below half at each such n (none: not measurable)",
        test=None if not net_cells else all(k_ok), seeds=seeds,
        null=(float(np.min(band[..., 0])), float(np.max(band[..., 1]))),
        plateaued=plateau_note, controls=["empirical", "fresh"])

    # two halves
    def halves_claim(m, key, plateau):
        hv = res["halves"][m].mean(-1)
        fl = res["floor"][m].mean(-1)
        big, small = len(ns) - 1, 0
        within = float(np.median(hv[big])) <= WITHIN * float(np.max(fl[big]))
        above = float(np.min(hv[small])) >= ABOVE * float(np.max(fl[small]))
        study.claim(
            f"{m}: the denoisers of two disjoint halves become the same function as N grows: "
            f"at N = {ns[-1]} the halves' distance is within the same-half floor, at "
            f"N = {ns[0]} far above it", key=key,
            measured=f"N = {ns[0]}: halves {protocol.spread(hv[small])}, floor max "
                     f"{np.max(fl[small]):.3g}; N = {ns[-1]}: halves "
                     f"{protocol.spread(hv[big])}, floor max {np.max(fl[big]):.3g}",
            expected=f"largest N: median <= {WITHIN:g} x floor max; smallest N: min >= "
                     f"{ABOVE:g} x floor max", test=bool(within and above), seeds=seeds,
            converged=bool(np.all(plateau)), controls=["distance", "gaussian"], within=within,
            above=above)

    halves_claim("U-Net", "two_halves", res["unet_plateau"])
    mlp_pl = np.array([res["mlp_plateau"][i] for i in res["mlp_index"].values()])
    halves_claim("MLP", "two_halves_mlp", mlp_pl)

    # U-Net against MLP at equal wall time
    t_u = res["unet_time"]
    lu = np.array([c[-1][2] for c in res["unet_curves"]])
    lm = np.array([_loss_at(c, t) for c, t in zip(res["mlp_curves"], t_u, strict=True)])
    study.claim(
        "at equal training wall time the U-Net reaches a lower held-out DSM loss than the MLP "
        f"(N = {ns[-1]}, half A)", key="unet_vs_mlp",
        measured=f"U-Net {protocol.spread(lu)} / MLP {protocol.spread(lm)} after "
                 f"{protocol.spread(t_u)} s",
        expected="median U-Net < median MLP",
        test=bool(np.median(lu) < np.median(lm)) if np.all(np.isfinite(lm)) else None,
        seeds=seeds, controls=["loss"],
        converged=bool(res["unet_plateau"][-1, :, 0].all()))

    for m in MODELS:
        study.observe(
            f"{m}: memorisation fraction (median [range] over seeds) / runs memorising, by n",
            "; ".join(f"n={nn}: {np.median(mem[m][j]):.3f} [{np.min(mem[m][j]):.3f}, "
                      f"{np.max(mem[m][j]):.3f}] / {int(memo[m][j].sum())}/{seeds}"
                      for j, nn in enumerate(n_train)),
            "null band (median): " + ", ".join(
                f"[{np.median(band[j, :, 0]):.3f}, {np.median(band[j, :, 1]):.3f}]"
                for j in range(len(ns))))
    for m in NETWORKS:
        study.observe(
            f"{m}: two-halves / same-half distance (mean over sigma, median over seeds), by N",
            "; ".join(f"N={n}: {np.median(res['halves'][m][j].mean(-1)):.3g} / "
                      f"{np.median(res['floor'][m][j].mean(-1)):.3g}" for j, n in enumerate(ns)))
    study.observe("runs that reached the plateau criterion", plateau_note,
                  "all (else failing claims are inconclusive)")
    study.observe("MLP steps in the U-Net's wall time (median over seeds) / U-Net steps",
                  f"{np.median([c[-1][0] for c in res['mlp_curves']]):.0f} / "
                  f"{cfg['unet_steps']}")
    study.observe("U-Net training step: first compilation seconds (not counted in the times); "
                  "all MLPs' training seconds (vmapped, compilation included)",
                  f"{np.max(res['unet_compile']):.1f}; {res['mlp_seconds']:.1f}")
    study.observe("kernel model: best isotropic KDE bandwidth h (units of the data), by n",
                  "; ".join(f"n={nn}: {np.median(res['kernel_h'][j]):.3f}"
                            for j, nn in enumerate(n_train)))
    data = dict(ns=list(ns), n_train=n_train, seeds=seeds, sigmas=list(SIGMAS),
                mem={m: v for m, v in mem.items()}, band=band, median=median,
                memorises={m: v.astype(int) for m, v in memo.items()},
                halves=res["halves"], floor=res["floor"],
                unet_curves=[np.asarray(c, float) for c in res["unet_curves"]],
                mlp_curves=[np.asarray(c, float) for c in res["mlp_curves"]],
                emp_halves=res["emp_halves"], gauss_halves=res["gauss_halves"],
                grids=res["grids"], channels=list(cfg["channels"]),
                unet_steps=cfg["unet_steps"], mlp_steps=cfg["mlp_steps"])
    return study.table(data)


def summary(table: Table) -> str:
    """One line per ``N``: memorisation fraction of each model (median over seeds) with the
    null band, and the two-halves / same-half distances of both networks (mean over sigma,
    median over seeds)."""
    d = table.data
    lines = ["    N     n  " + "  ".join(f"{m:>9}" for m in MODELS)
             + "  null band        U-Net halves/floor  MLP halves/floor"]
    for j, (n, nt) in enumerate(zip(d["ns"], d["n_train"], strict=True)):
        mem = "  ".join(f"{np.median(np.asarray(d['mem'][m])[j]):9.3f}" for m in MODELS)
        band = np.median(np.asarray(d["band"])[j], 0)
        hf = "  ".join(f"{np.median(np.asarray(d['halves'][m])[j].mean(-1)):8.3g} / "
                       f"{np.median(np.asarray(d['floor'][m])[j].mean(-1)):<7.3g}"
                       for m in NETWORKS)
        lines.append(f"{n:5d} {nt:5d}  {mem}  [{band[0]:.3f}, {band[1]:.3f}]   {hf}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# figure
# ---------------------------------------------------------------------------------------------

COLOURS = {"U-Net": "C0", "MLP": "C3", "kernel": "C2", "empirical": "C1"}


def _mosaic(grid_by_n, m):
    """Rows: samples of model ``m`` and, under each, its nearest training digit; one pair of
    rows per ``N``, separated by a blank line."""
    width = 6 * 9 - 1
    blocks = []
    for g in grid_by_n.values():
        for part in ("samples", "nearest"):
            blocks += [_plotting.tile(np.asarray(g[m][part])[:6], 6, rows=1),
                       np.full((1, width), np.nan)]
        blocks[-1] = np.full((4, width), np.nan)
    return np.concatenate(blocks[:-1], 0)


def plot(table: Table):
    """Row 1: samples (upper row of each pair) over their nearest training digits, per model,
    at each N (seed 0). Row 2: memorisation against n with the held-out null band; the
    two-halves distance against sigma for the U-Net and the MLP; held-out DSM loss against
    training wall time."""
    from matplotlib.lines import Line2D

    d = table.data
    ns, n_train = d["ns"], d["n_train"]
    fig, axes = _plotting.subplots(2, 4, figsize=(17, 8.5), squeeze=False)
    for i, m in enumerate(MODELS):
        ax = axes[0, i]
        ax.imshow(_mosaic(d["grids"], m), cmap="gray_r", vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        ax.set_title(f"{m}: samples (upper rows) over\ntheir nearest training digit, n = "
                     + ", ".join(str(v) for v in n_train))
    a_m, a_u, a_l, a_t = axes[1]
    markers = {"U-Net": "o-", "MLP": "s--", "kernel": "^-.", "empirical": "D:"}
    for i, m in enumerate(MODELS):
        v = np.asarray(d["mem"][m], float)
        shift = np.asarray(n_train, float) * 1.06 ** (i - 1.5)  # overlapping curves stay visible
        a_m.plot(shift, np.median(v, 1), markers[m], color=COLOURS[m], ms=5, label=m)
        a_m.vlines(shift, v.min(1), v.max(1), color=COLOURS[m], lw=2, alpha=0.6)
    band = np.asarray(d["band"], float)
    a_m.fill_between(n_train, np.median(band[..., 0], 1), np.median(band[..., 1], 1),
                     color="0.4", alpha=0.3, lw=0, label="held-out null band (95%)")
    a_m.set(xscale="log", xlabel="training digits n (half A)",
            ylabel="memorisation fraction (median, bar: seed range)", ylim=(-0.03, 1.03),
            title="memorisation against the held-out null")
    a_m.set_xticks(n_train)
    a_m.set_xticklabels([str(v) for v in n_train])
    a_m.minorticks_off()
    a_m.legend(fontsize=7, loc="center right")
    sig = np.asarray(d["sigmas"])
    shades = np.linspace(0.35, 1.0, len(ns))
    for ax, m in ((a_u, "U-Net"), (a_l, "MLP")):
        hv, fl = np.asarray(d["halves"][m]), np.asarray(d["floor"][m])
        for j in range(len(ns)):
            c = (0.0, 0.0, 0.0, shades[j])
            ax.plot(sig, np.median(hv[j], 0), "o-", color=c, ms=3)
            ax.plot(sig, np.median(fl[j], 0), "--", color=c)
        ax.set(xscale="log", yscale="log", xlabel="noise level sigma",
               ylabel="relative squared distance of two denoisers",
               title=f"{m}: two halves (solid) and same half (dashed)")
        ax.legend(handles=[Line2D([], [], color=(0, 0, 0, shades[j]), label=f"N = {n}")
                           for j, n in enumerate(ns)]
                  + [Line2D([], [], color="k", ls="-", marker="o", ms=3,
                            label="halves A, B (median)"),
                     Line2D([], [], color="k", ls="--", label="same half A, A' (floor)")],
                  fontsize=7)
    for m, curves in (("U-Net", d["unet_curves"]), ("MLP", d["mlp_curves"])):
        for c in curves:
            c = np.asarray(c, float)
            if len(c):
                a_t.plot(np.maximum(c[:, 1], 1e-3), c[:, 2], "o-" if m == "U-Net" else "-",
                         color=COLOURS[m], ms=3, alpha=0.8)
    a_t.set(xscale="log", xlabel="training wall time after compilation (s)",
            ylabel="held-out DSM loss (EDM weighting)",
            title=f"U-Net vs MLP on n = {n_train[-1]} digits")
    a_t.legend(handles=[Line2D([], [], color=COLOURS[m], label=f"{m} (one line per seed)")
                        for m in NETWORKS], fontsize=7)
    return _plotting.finish(fig, f"R2: memorisation and generalisation on the 8 x 8 digits, "
                                 f"{d['seeds']} seeds")


register(
    "R2", "Memorisation and generalisation on digits; U-Net against MLP",
    "arXiv 2310.02557, arXiv 2402.06162", run, plot, requires=datasets.REQUIRES, recorded={
        "kernel_vs_networks": {
            # full: holds: the U-Net memorises at n = 32 (fraction 0.31, 3/3 seeds, null band
            # [0, 0]) and nowhere else, the MLP nowhere, the kernel model in 0/9 runs
            "quick": ("inconclusive", "U-Net 50 steps, MLP 400: no network memorises at n = 16 "
                      "or 256 (fractions 0.00, null bands within [0, 0.02]): there is no n to "
                      "compare at")},
        "two_halves": (
            "inconclusive", "quick: halves 0.13 (N = 32) and 0.094 (N = 512) against floors "
            "0.11 and 0.097 (50 steps). Full: within the floor at N = 1024 (0.16 against 1.5 x "
            "0.15) but at N = 64 the smallest halves' distance is 0.60, 2.8x the floor's 0.22, "
            "short of 3x; 12/27 U-Nets plateaued, so not 'does not hold'"),
        "two_halves_mlp": (
            "inconclusive", "quick: halves 0.41 (N = 32) to 0.16 (N = 512) against floors 0.28 "
            "and 0.15. Full: within at N = 1024 (0.13 against 1.5 x 0.11), at N = 64 the "
            "smallest is 0.71, 2.6x the floor's 0.28, short of 3x; 26/27 MLPs plateaued"),
        "unet_vs_mlp": {
            # full: holds: after the U-Net's 22-29 s (1200 steps) its held-out loss is 37
            # against the MLP's 46 (about 17,500 steps in the same time); timing-dependent by
            # construction
            "quick": ("inconclusive", "after the U-Net's 1.3 s (50 steps) the MLP (750 steps) "
                      "is lower, 60 against 64, and the U-Net had not plateaued")},
    })

"""Training: the compiled loop against a hand-written scanned loop and a per-step loop; one
DSM step of the MLP score network; one ISM step of the WPO kernel model against PyTorch.

* ``training loop``: ``ms.training.fit`` (the compiled loop, ``steps_per_call`` steps per
  dispatch, progress bar off) for ``S`` steps, against (a) the floor: a hand-written
  ``lax.scan`` over the same ``S`` steps with the same loss and Adam, batches of indices from
  ``jax.random.randint`` (the cheapest draw) and no guard, EMA or host round trip; and (b) a
  per-step Python loop (one jitted step per dispatch with the batch drawn eagerly by
  ``jax.random.choice``, as ``fit`` trained before the compiled loop). For the MLP (DSM on a
  noisy 2-D swiss roll, MLP defaults, batch 256), the low-rank MoLRG denoiser (EDM DSM, x0
  target) and the WPO kernel model (ISM, swiss roll). Every timed call starts from the same
  initial state, so each impl does the same work in every round.

* ``DSM step (MLP)``: ``value_and_grad`` of ``ms.losses.dsm`` for ``ms.models.mlp`` plus one
  ``optax.adam`` update, jitted (timed alone: the issue names no baseline).
* ``ISM step (WPO kernel)``: the kernel model of Zhang, Liu, Li, Katsoulakis, Osher ("Wasserstein
  proximal operators describe score-based generative models and resolve memorization",
  arXiv 2402.06162) with full lower-triangular precision factors from the centre MLP, trained by
  implicit score matching at the terminal condition: ``value_and_grad`` of
  ``ms.models.kernel.ism_loss`` (closed-form divergence, streamed centres) plus one Adam update.
  Baseline: PyTorch written as the official code computes it, with the same weights: the MLP
  gives ``L(z_i)``, ``Gamma_i = L L^T + eps I``, a ``torch.distributions.MultivariateNormal``
  with ``precision_matrix=Gamma_i`` per centre, ``log pi = logsumexp_i log N_i - log N``, the
  score by ``torch.autograd.grad`` and the Laplacian by one more ``grad`` per dimension
  (``create_graph=True``), then ``backward`` and ``torch.optim.Adam``. ``loss_rel_diff`` compares
  the two losses at the initial parameters. Every timed step starts from the initial weights
  (the JAX step is pure), and torch flushes denormals to zero as XLA does on CPU.

Runs only when ``manifold_scores.models`` and ``manifold_scores.losses`` exist (the family is
skipped otherwise); the PyTorch baseline is skipped with a message when torch is missing.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import manifold_scores as ms
from benchmarks.common import alternate, compile_impl, drop_outputs, python_impl, summarize

try:  # the models land in a separate change: guard so the suite runs without them
    from manifold_scores import losses, training
    from manifold_scores.models import kernel, lowrank, mlp
except ImportError as err:  # pragma: no cover - depends on the tree's state
    raise ImportError(f"training benchmarks need manifold_scores.models and .losses ({err})") \
        from err

# per size: rounds, DSM (n, d, width, depth), ISM cases [(name, d, centres, batch)],
# loop: steps per timed call S, steps per dispatch, and per model its sizes
SIZES = {
    "tiny": {"rounds": 3, "dsm": (32, 4, 16, 2), "ism": [("swiss roll", 2, 20, 8)],
             "width": 8, "depth": 2,
             "loop": {"steps": 8, "per_call": 4, "n": 64, "mlp_batch": 16, "mlp": (16, 2),
                      "lowrank": (8, 2, 2, 16), "kernel": (20, 8, 8, 2)}},
    "quick": {"rounds": 5,
              "loop": {"steps": 128, "per_call": 32, "n": 1024, "mlp_batch": 256,
                       "mlp": (None, None), "lowrank": (64, 4, 3, 256),
                       "kernel": (200, 64, 64, 5)},
              "dsm": (256, 16, 128, 3),
              "ism": [("swiss roll", 2, 200, 64), ("gaussian d=64", 64, 16, 4)],
              "width": 64, "depth": 5},
    # d = 64 with 1000 centres is out of reach on 2 shared CPU cores: one PyTorch step took
    # 90 s at 200 centres and 8 points, and ~60 s at 16 centres and 4 points under load.
    "full": {"rounds": 7,
             "loop": {"steps": 256, "per_call": 32, "n": 4096, "mlp_batch": 256,
                      "mlp": (None, None), "lowrank": (256, 8, 4, 512),
                      "kernel": (1000, 64, 64, 5)},
             "dsm": (1024, 64, 256, 3),
             "ism": [("swiss roll", 2, 1000, 256), ("gaussian d=64", 64, 16, 4, 2)],
             "width": 64, "depth": 5},
    "large": {"rounds": 3,
              "loop": {"steps": 256, "per_call": 64, "n": 16384, "mlp_batch": 1024,
                       "mlp": (None, None), "lowrank": (1024, 16, 10, 1024),
                       "kernel": (1000, 256, 64, 5)},
              "dsm": (1024, 64, 256, 3),
              "ism": [("swiss roll", 2, 1000, 1000), ("gaussian d=64", 64, 1000, 64)],
              "width": 64, "depth": 5},
}


def _swiss_roll(rng, n):
    t = 1.5 * math.pi * (1 + 2 * rng.random(n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], -1) / 5.0
    return x + 0.05 * rng.standard_normal(x.shape)


def dsm_case(n, d, width, depth, rounds, dtype):
    proc = ms.VP()
    x0 = ms.MoLRG.random(jax.random.key(0), d, max(1, d // 8), 3, orthogonal=False,
                         dtype=dtype).sample(jax.random.key(1), n)
    params = mlp.init(jax.random.key(2), d, proc, width=width, depth=depth, dtype=dtype)
    opt = optax.adam(1e-3)
    state = opt.init(params)

    def step(params, state, key, x):
        loss, grads = jax.value_and_grad(
            lambda p: losses.dsm(key, mlp.apply, p, x, proc))(params)
        upd, state = opt.update(grads, state, params)
        return optax.apply_updates(params, upd), state, loss

    impls = [compile_impl("ours", step, params, state, jax.random.key(3), x0,
                          note="value_and_grad(losses.dsm) + optax.adam")]
    times = alternate(impls, rounds)
    rows = summarize(impls, times, "ours")
    drop_outputs(impls)
    return {"family": "training", "case": "DSM step (MLP)",
            "shape": {"n": n, "d": d, "width": width, "depth": depth}, "rows": rows,
            "notes": ["no baseline named by the issue: timed alone"]}


def _torch_ism(torch, params, x_np, eps):
    """The PyTorch step as the official code computes it, with the JAX model's weights."""
    variables = params.factor["params"]
    names = sorted(variables, key=lambda s: int(s.split("_")[-1]))
    layers = []
    for name in names:
        w = torch.tensor(np.array(variables[name]["kernel"]).T.copy(), requires_grad=True)
        b = torch.tensor(np.array(variables[name]["bias"]).copy(), requires_grad=True)
        layers.append((w, b))
    torch.set_flush_denormal(True)  # as XLA on CPU does; denormals slow torch down 100x
    centres = torch.tensor(np.array(params.centres))
    x = torch.tensor(np.array(x_np))
    n, d = centres.shape
    opt = torch.optim.Adam([p for wb in layers for p in wb], lr=1e-3)
    eye = torch.eye(d, dtype=centres.dtype)

    def factor(z):
        h = z
        for w, b in layers[:-1]:
            h = torch.tanh(h @ w.T + b)
        w, b = layers[-1]
        return torch.tril((h @ w.T + b).reshape(-1, d, d))

    initial = [p.detach().clone() for wb in layers for p in wb]

    def step():
        # every timed step starts from the same weights, as the pure JAX step does
        with torch.no_grad():
            for p, p0 in zip((p for wb in layers for p in wb), initial, strict=True):
                p.copy_(p0)
        opt.zero_grad()
        lmat = factor(centres)
        gamma = lmat @ lmat.transpose(-1, -2) + eps * eye
        mvn = torch.distributions.MultivariateNormal(centres, precision_matrix=gamma)
        xr = x.clone().requires_grad_(True)
        logp = torch.logsumexp(mvn.log_prob(xr[:, None, :]), dim=1) - math.log(n)
        score = torch.autograd.grad(logp.sum(), xr, create_graph=True)[0]
        lap = 0.0
        for j in range(d):
            lap = lap + torch.autograd.grad(score[:, j].sum(), xr, create_graph=True)[0][:, j]
        loss = torch.mean(0.5 * torch.sum(score * score, -1) + lap)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def ism_adam_step(params, lr=1e-3):
    """``(step, state)``: one ISM value-and-gradient of the kernel model plus an Adam update."""
    opt = optax.adam(lr)

    def step(params, state, x):
        loss, grads = jax.value_and_grad(kernel.ism_loss)(params, x)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return step, opt.init(params)


def ism_case(name, d, centres_n, batch, width, depth, rounds, dtype, torch):
    rng = np.random.default_rng(0)
    if d == 2:
        data = _swiss_roll(rng, centres_n + batch)
    else:  # a standard Gaussian blob
        data = rng.standard_normal((centres_n + batch, d))
    data = data.astype(np.dtype(dtype))
    centres, x = jnp.asarray(data[:centres_n]), jnp.asarray(data[centres_n:])
    params = kernel.init(jax.random.key(6), centres, width=width, depth=depth)
    step, state = ism_adam_step(params)
    impls = [compile_impl("ours", step, params, state, x,
                          note="value_and_grad(kernel.ism_loss) + optax.adam, full precisions")]
    notes = []
    if torch is None:
        notes.append("torch MultivariateNormal skipped: PyTorch is not installed "
                     "(pip install 'manifold-scores[bench]')")
    else:
        impls.append(python_impl("torch MultivariateNormal",
                                 _torch_ism(torch, params, np.asarray(x), params.eps),
                                 note=f"autograd Laplacian ({d} grads), torch.optim.Adam"))
    jax_loss = float(impls[0].output[2])
    times = alternate(impls, rounds)
    rows = summarize(impls, times, "ours")
    rows[0]["loss"] = jax_loss
    if torch is not None:
        torch_loss = float(impls[1].output)
        rows[1]["loss"] = torch_loss
        rows[1]["loss_rel_diff"] = abs(torch_loss - jax_loss) / max(abs(jax_loss), 1e-30)
        rows[1]["rel_err"] = rows[1]["loss_rel_diff"]
    drop_outputs(impls)
    return {"family": "training", "case": "ISM step (WPO kernel)",
            "shape": {"data": name, "d": d, "centres": centres_n, "batch": batch},
            "rows": rows, "notes": notes}


def _loop_problem(model, cfg, dt):
    """(params, loss, data, batch, note) of one model of the loop benchmark."""
    n = cfg["n"]
    if model == "MLP":
        proc = ms.VP()
        width, depth = cfg["mlp"]
        kw = {} if width is None else {"width": width, "depth": depth}
        data = jnp.asarray(_swiss_roll(np.random.default_rng(0), n), dt)
        params = mlp.init(jax.random.key(2), 2, proc, dtype=dt, **kw)
        loss = lambda p, k, b: losses.dsm(k, mlp.apply, p, b, proc)  # noqa: E731
        shape = {"data": "swiss roll", "n": n, "d": 2, "batch": cfg["mlp_batch"],
                 "model": "MLP " + ("defaults" if width is None else f"{width}x{depth}")}
        return params, loss, data, cfg["mlp_batch"], shape
    if model == "low-rank denoiser":
        d, r, k, batch = cfg["lowrank"]
        proc = ms.EDM()
        mix = ms.MoLRG.random(jax.random.key(0), d, r, k, dtype=dt)
        data = mix.sample(jax.random.key(1), n)
        params = lowrank.init(jax.random.key(2), d, r, k, proc, dtype=dt)
        loss = lambda p, key, b: losses.dsm(key, lowrank.apply, p, b, proc,  # noqa: E731
                                            target="x0", weighting="edm",
                                            time_sampler="edm")
        shape = {"data": "MoLRG", "n": n, "d": d, "r": r, "K": k, "batch": batch,
                 "model": "low-rank denoiser"}
        return params, loss, data, batch, shape
    centres_n, batch, width, depth = cfg["kernel"]
    rng = np.random.default_rng(0)
    centres = jnp.asarray(_swiss_roll(rng, centres_n), dt)
    data = jnp.asarray(_swiss_roll(rng, n), dt)
    params = kernel.init(jax.random.key(6), centres, width=width, depth=depth)
    loss = lambda p, key, b: kernel.ism_loss(p, b)  # noqa: E731
    shape = {"data": "swiss roll", "n": n, "d": 2, "centres": centres_n, "batch": batch,
             "model": "WPO kernel"}
    return params, loss, data, batch, shape


def loop_case(model, cfg, rounds, dt):
    """Steps per second of ``fit`` against the scanned floor and the per-step loop."""
    params, loss, data, batch, shape = _loop_problem(model, cfg, dt)
    steps, per_call = cfg["steps"], cfg["per_call"]
    opt = optax.adam(1e-3)
    state = training.init_state(params, opt)
    key = jax.random.key(3)
    n = data.shape[0]

    def run_fit():
        out, _ = training.fit(key, state, loss, data, steps=steps, batch_size=batch,
                              progress=False, steps_per_call=per_call)
        return jax.block_until_ready(out.params)

    def floor(params, opt_state, key, data):
        def body(carry, i):
            params, opt_state = carry
            kb, kl = jax.random.split(jax.random.fold_in(key, i))
            idx = jax.random.randint(kb, (batch,), 0, n)
            value, grads = jax.value_and_grad(loss)(params, kl, data[idx])
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, opt_state), values = jax.lax.scan(body, (params, opt_state),
                                                   jnp.arange(steps))
        return params, values

    step = training.make_step(loss)

    def per_step():
        s = state
        for i in range(steps):
            k_batch, k_loss = jax.random.split(jax.random.fold_in(key, i))
            idx = jax.random.choice(k_batch, n, (batch,), replace=False)
            s, _ = step(s, k_loss, data[idx])
        return jax.block_until_ready(s.params)

    # compile_impl clears JAX's caches: build the floor first, then let fit compile
    floor_impl = compile_impl("scanned floor", floor, params, state.opt_state, key, data,
                              note=f"one lax.scan of {steps} steps, randint batches")
    t0 = time.perf_counter()
    fit_impl = python_impl("fit (compiled loop)", run_fit,
                           note=f"{steps} steps, {per_call} per dispatch")
    fit_impl.compile_s = time.perf_counter() - t0  # first call: compile and one run
    impls = [fit_impl, floor_impl,
             python_impl("per-step loop", per_step,
                         note="a jitted step per dispatch, eager batch draw (fit before)")]
    times = alternate(impls, rounds)
    for im in impls:  # per step, so that steps per second read directly
        times[im.name] = [t / steps for t in times[im.name]]
    rows = summarize(impls, times, "fit (compiled loop)")
    for row in rows:
        row["steps_per_s"] = 1.0 / row["median_s"]
    drop_outputs(impls)
    return {"family": "training", "case": "training loop (per step)", "shape": shape,
            "rows": rows, "notes": ["ratios: time per step of the baseline / fit's"]}


def run(size, dtype, torch=None, log=print):
    cfg = SIZES[size]
    dt = jnp.dtype(dtype)
    out = []
    for model in ("MLP", "low-rank denoiser", "WPO kernel"):
        log(f"  training loop: {model}")
        out.append(loop_case(model, cfg["loop"], cfg["rounds"], dt))
    n, d, width, depth = cfg["dsm"]
    log(f"  training DSM MLP n={n} d={d}")
    out.append(dsm_case(n, d, width, depth, cfg["rounds"], dt))
    for name, d, nc, b, *rounds in cfg["ism"]:  # optional per-case rounds (slow baselines)
        log(f"  training ISM kernel {name} d={d} centres={nc} batch={b}")
        out.append(ism_case(name, d, nc, b, cfg["width"], cfg["depth"],
                            rounds[0] if rounds else cfg["rounds"], dt, torch))
    return out

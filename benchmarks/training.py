"""One training step: DSM of the MLP score network, ISM of the WPO kernel model vs PyTorch.

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

import jax
import jax.numpy as jnp
import numpy as np
import optax

import manifold_scores as ms
from benchmarks.common import alternate, compile_impl, drop_outputs, python_impl, summarize

try:  # the models land in a separate change: guard so the suite runs without them
    from manifold_scores import losses
    from manifold_scores.models import kernel, mlp
except ImportError as err:  # pragma: no cover - depends on the tree's state
    raise ImportError(f"training benchmarks need manifold_scores.models and .losses ({err})") \
        from err

# per size: rounds, DSM (n, d, width, depth), ISM cases [(name, d, centres, batch)]
SIZES = {
    "tiny": {"rounds": 3, "dsm": (32, 4, 16, 2), "ism": [("swiss roll", 2, 20, 8)],
             "width": 8, "depth": 2},
    "quick": {"rounds": 3, "dsm": (256, 16, 128, 3),
              "ism": [("swiss roll", 2, 200, 64), ("gaussian d=64", 64, 16, 4)],
              "width": 64, "depth": 5},
    # d = 64 with 1000 centres is out of reach on 2 shared CPU cores: one PyTorch step took
    # 90 s at 200 centres and 8 points, and ~60 s at 16 centres and 4 points under load.
    "full": {"rounds": 3, "dsm": (1024, 64, 256, 3),
             "ism": [("swiss roll", 2, 1000, 256), ("gaussian d=64", 64, 16, 4, 2)],
             "width": 64, "depth": 5},
    "large": {"rounds": 3, "dsm": (1024, 64, 256, 3),
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


def run(size, dtype, torch=None, log=print):
    cfg = SIZES[size]
    dt = jnp.dtype(dtype)
    out = []
    n, d, width, depth = cfg["dsm"]
    log(f"  training DSM MLP n={n} d={d}")
    out.append(dsm_case(n, d, width, depth, cfg["rounds"], dt))
    for name, d, nc, b, *rounds in cfg["ism"]:  # optional per-case rounds (slow baselines)
        log(f"  training ISM kernel {name} d={d} centres={nc} batch={b}")
        out.append(ism_case(name, d, nc, b, cfg["width"], cfg["depth"],
                            rounds[0] if rounds else cfg["rounds"], dt, torch))
    return out

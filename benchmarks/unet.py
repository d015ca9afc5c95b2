"""The U-Net on images: one training step through the compiled loop and 1000-step sampling,
against the same U-Net written in PyTorch, on the same device.

* ``U-Net training step``: ``ms.training.make_loop`` (DSM with EDM weighting and log-normal
  noise levels, ``optax.adam``, EMA, non-finite guard) running ``S`` steps per call on 8 x 8
  digits-shaped data (``ms.datasets.digits`` when the ``data`` extra is installed, Gaussian
  data of that shape otherwise); time per step = time of one call / ``S``. Baseline: the same
  network in PyTorch (same weights, same layer order; ``torch.nn.functional`` convolutions,
  GroupNorm, SiLU) with the same EDM preconditioning and loss, ``backward`` and
  ``torch.optim.Adam``, ``S`` steps in a Python loop. Every JAX call starts from the same
  initial state (the loop is pure); torch keeps stepping (the cost of a step does not depend on
  the weights).
* ``U-Net sampling``: ``ms.sampling.sample_ode(method="euler")`` with the bound U-Net, 1000
  steps on the EDM grid, against a PyTorch loop of the same Euler steps under
  ``torch.no_grad()`` on the same grid from the same start. ``rel_err`` compares the samples.
* ``U-Net denoiser``: ``rel_err`` of the torch network's denoiser against ``unet.apply`` at
  random inputs (checks that the baseline computes the same function; weights perturbed from
  the initialisation so the zero last layer does not hide a mismatch).

Rounds alternate (each implementation once per round, the order reversed every other round),
so load from other processes hits both; ratios are per round (median and quartiles, plus the
range). Compile times are reported separately. The cases carry ``family="unet"``: the suite's
report gives them their own table and checks the goal (PyTorch / ours >= 1, at least as fast).
Runs as the ``unet`` family of
``python -m benchmarks`` or alone: ``python -m benchmarks.unet [--size quick|full]`` writes
``benchmarks/results/unet_<platform>.json`` atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import manifold_scores as ms
from benchmarks.common import (
    alternate,
    compile_impl,
    drop_outputs,
    python_impl,
    rel_err,
    summarize,
)
from manifold_scores import losses, training
from manifold_scores.models import unet

# per size: rounds, channels, batch, steps per loop call, sampling (n, steps)
SIZES = {
    "tiny": {"rounds": 2, "channels": (4, 8), "batch": 8, "per_call": 4, "sample": (2, 10)},
    "quick": {"rounds": 3, "channels": (16, 32), "batch": 64, "per_call": 16,
              "sample": (16, 1000)},
    "full": {"rounds": 5, "channels": (32, 64), "batch": 128, "per_call": 16,
             "sample": (32, 1000)},
    "large": {"rounds": 3, "channels": (64, 128), "batch": 256, "per_call": 16,
              "sample": (128, 1000)},
}
SHAPE = (8, 8, 1)
P_MEAN, P_STD = -1.2, 1.2  # EDM's log-normal noise levels


def _data(n, dtype):
    try:
        x = ms.datasets.digits(jax.random.key(0)).train
    except ImportError:  # no data extra: Gaussian data of the digits' shape
        x = np.random.default_rng(0).standard_normal((n, math.prod(SHAPE)))
    return jnp.asarray(x[:n], dtype)


def _perturbed(p, key, scale=0.05):
    leaves, tree = jax.tree.flatten(p.variables)
    keys = jax.random.split(key, len(leaves))
    leaves = [v + scale * jax.random.normal(k, v.shape, v.dtype)
              for v, k in zip(leaves, keys, strict=True)]
    return unet.UNetParams(jax.tree.unflatten(tree, leaves), p.shape, p.process, p.channels,
                           p.blocks, p.emb_dim, p.groups, p.target, p.precondition,
                           p.sigma_data)


# ---------------------------------------------------------------------------------------------
# The same network in PyTorch
# ---------------------------------------------------------------------------------------------


class _TorchUNet:
    """``unet.Net`` written with ``torch.nn.functional``, reading the Flax variables in the
    order Flax named them (a counter per module type in each scope)."""

    def __init__(self, torch, params: unet.UNetParams):
        self.torch = torch
        self.F = torch.nn.functional
        self.p = params
        variables = params.variables["params"]
        self.freqs = torch.tensor(np.array(variables["freqs"]))
        self.leaves = []
        self.tree = self._convert(variables)

    def _convert(self, tree):
        out = {}
        for name, value in tree.items():
            if name == "freqs":
                continue
            if isinstance(value, dict):
                out[name] = self._convert(value)
                continue
            a = np.array(value)
            if name == "kernel" and a.ndim == 4:
                a = a.transpose(3, 2, 0, 1)  # HWIO -> OIHW
            t = self.torch.tensor(np.ascontiguousarray(a), requires_grad=True)
            self.leaves.append(t)
            out[name] = t
        return out

    class _Scope:
        def __init__(self, tree):
            self.tree, self.count = tree, {}

        def take(self, kind):
            i = self.count.get(kind, 0)
            self.count[kind] = i + 1
            return self.tree[f"{kind}_{i}"]

    def _dense(self, w, x):
        return x @ w["kernel"] + w["bias"]

    def _conv(self, w, x):
        k = w["kernel"].shape[-1]
        return self.F.conv2d(x, w["kernel"], w["bias"], padding=k // 2)

    def _norm(self, w, x):
        c = x.shape[1]
        g = min(self.p.groups, c)
        while c % g:
            g -= 1
        return self.F.group_norm(x, g, w["scale"], w["bias"], eps=1e-6)

    def _res(self, w, x, emb, ch):
        s = self._Scope(w)
        silu = self.F.silu
        h = self._conv(s.take("_Conv"), silu(self._norm(s.take("GroupNorm"), x)))
        h = h + self._dense(s.take("Dense"), emb)[:, :, None, None]
        h = self._conv(s.take("_Conv"), silu(self._norm(s.take("GroupNorm"), h)))
        if x.shape[1] != ch:
            x = self._dense(s.take("Dense"), x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return (x + h) / math.sqrt(2.0)

    def net(self, x, c_noise):
        """``F`` on a batch: ``x`` of shape ``(N, C, H, W)``, ``c_noise`` of shape ``(N,)``."""
        torch, silu = self.torch, self.F.silu
        s = self._Scope(self.tree)
        ang = 2.0 * math.pi * self.freqs[None, :] * c_noise[:, None]
        emb = torch.cat([torch.sin(ang), torch.cos(ang)], -1)
        emb = silu(self._dense(s.take("Dense"), emb))
        emb = silu(self._dense(s.take("Dense"), emb))
        h = self._conv(s.take("_Conv"), x)
        skips = [h]
        chans = self.p.channels
        last = len(chans) - 1
        for level, ch in enumerate(chans):
            for _ in range(self.p.blocks):
                h = self._res(s.take("_ResBlock"), h, emb, ch)
                skips.append(h)
            if level < last:
                h = self._conv(s.take("_Conv"), self.F.avg_pool2d(h, 2))
                skips.append(h)
        for _ in range(2):
            h = self._res(s.take("_ResBlock"), h, emb, chans[-1])
        for level in range(last, -1, -1):
            for _ in range(self.p.blocks + 1):
                h = self._res(s.take("_ResBlock"), torch.cat([h, skips.pop()], 1), emb,
                              chans[level])
            if level > 0:
                h = self._conv(s.take("_Conv"), self.F.interpolate(h, scale_factor=2,
                                                                   mode="nearest"))
        h = silu(self._norm(s.take("GroupNorm"), h))
        return self._conv(s.take("_Conv"), h)

    def denoise(self, x, sigma):
        """EDM-preconditioned denoiser on flat ``x`` ``(N, d)`` at ``sigma`` ``(N,)`` (VE)."""
        sd = self.p.sigma_data
        H, W, C = self.p.shape
        norm = self.torch.sqrt(sigma * sigma + sd * sd)[:, None]
        xin = (x / norm).reshape(-1, H, W, C).permute(0, 3, 1, 2)
        f = self.net(xin, 0.25 * self.torch.log(sigma)).permute(0, 2, 3, 1).reshape(x.shape)
        return (sd * sd / norm**2) * x + (sigma[:, None] * sd / norm) * f


def _torch_train(torch, tnet, data_np, batch, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    data = torch.tensor(np.array(data_np))
    opt = torch.optim.Adam(tnet.leaves, lr=1e-3)
    sd = tnet.p.sigma_data

    def run():
        for _ in range(steps):
            idx = torch.randint(0, data.shape[0], (batch,), generator=gen)
            x0 = data[idx]
            sigma = torch.exp(P_MEAN + P_STD * torch.randn(batch, generator=gen))
            eps = torch.randn(x0.shape, generator=gen)
            d = tnet.denoise(x0 + sigma[:, None] * eps, sigma)
            lam = (sigma**2 + sd * sd) / (sigma * sd) ** 2
            loss = torch.mean(lam * torch.sum((d - x0) ** 2, -1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return float(loss.detach())

    return run


def _torch_sample(torch, tnet, x_init, ts):
    x0 = torch.tensor(np.array(x_init))
    ts = [float(t) for t in np.array(ts)]

    def run():
        with torch.no_grad():
            x = x0.clone()
            n = x.shape[0]
            for t, t_next in zip(ts[:-1], ts[1:], strict=True):
                d = tnet.denoise(x, torch.full((n,), t, dtype=x.dtype))
                x = x + (t_next - t) * (x - d) / t  # Euler on dx/dt = -t score
            return x.numpy()

    return run


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------


def _setup(cfg, dtype):
    proc = ms.EDM()
    p = unet.init(jax.random.key(1), SHAPE, proc, channels=cfg["channels"], dtype=dtype)
    return proc, p


def train_case(cfg, dtype, torch):
    proc, p = _setup(cfg, dtype)
    b, s = cfg["batch"], cfg["per_call"]
    data = _data(max(4 * b, 256), dtype)

    def loss(params, key, batch):
        return losses.dsm(key, unet.apply, params, batch, proc, weighting="edm",
                          time_sampler="edm")

    state = training.init_state(p, optax.adam(1e-3), ema=True)
    loop = training.make_loop(loss, batch_size=b, steps_per_call=s)

    def run_loop(state, key, data):
        return loop(state, key, data, s)

    impl = compile_impl("ours", run_loop, state, jax.random.key(2), data,
                        note=f"training.make_loop, {s} steps per call, Adam + EMA")
    impl.scale = 1.0 / s
    impls = [impl]
    notes = []
    if torch is None:
        notes.append("torch baseline skipped: PyTorch not installed")
    else:
        torch.set_flush_denormal(True)  # as XLA does on CPU
        tnet = _TorchUNet(torch, p)
        run = _torch_train(torch, tnet, data, b, s)
        t0 = time.perf_counter()
        tim = python_impl("torch", run, note=f"{s} steps, autograd + torch.optim.Adam, "
                                             f"{torch.get_num_threads()} threads")
        tim.scale = 1.0 / s
        notes.append(f"torch first call (warm-up) {time.perf_counter() - t0:.2f} s")
        impls.append(tim)
    times = alternate(impls, cfg["rounds"])
    rows = summarize(impls, times, "ours")
    _add_range(rows, times)
    drop_outputs(impls)
    return {"family": "unet", "case": "U-Net training step",
            "shape": {"image": "8x8x1", "channels": str(cfg["channels"]), "batch": b,
                      "params": unet.num_params(p)},
            "rows": rows, "notes": notes + ["time per step (one call / steps per call)"]}


def sample_case(cfg, dtype, torch):
    proc, p = _setup(cfg, dtype)
    p = _perturbed(p, jax.random.key(5))
    n, steps = cfg["sample"]
    ts = ms.sampling.time_grid(proc, steps, "edm", dtype=dtype)
    x_init = proc.t_max * jax.random.normal(jax.random.key(6), (n, p.dim), dtype)

    def ours(params, x):
        return ms.sampling.sample_ode(None, ms.models.bind(unet.apply, params), proc,
                                      steps=steps, method="euler", x_init=x)

    impls = [compile_impl("ours", ours, p, x_init, note="sample_ode(method='euler')")]
    notes = []
    if torch is None:
        notes.append("torch baseline skipped: PyTorch not installed")
    else:
        tnet = _TorchUNet(torch, p)
        impls.append(python_impl("torch", _torch_sample(torch, tnet, x_init, ts),
                                 note="Euler loop under torch.no_grad()"))
    times = alternate(impls, cfg["rounds"])
    rows = summarize(impls, times, "ours", check=rel_err)
    _add_range(rows, times)
    drop_outputs(impls)
    return {"family": "unet", "case": "U-Net sampling",
            "shape": {"image": "8x8x1", "channels": str(cfg["channels"]), "n": n,
                      "steps": steps, "params": unet.num_params(p)},
            "rows": rows, "notes": notes}


def denoiser_check(cfg, dtype, torch):
    if torch is None:
        return None
    proc, p = _setup(cfg, dtype)
    p = _perturbed(p, jax.random.key(5))
    x = jax.random.normal(jax.random.key(7), (8, p.dim), dtype)
    sig = jnp.exp(jnp.linspace(-3.0, 2.0, 8)).astype(dtype)
    ours = jax.jit(jax.vmap(unet.apply, (None, 0, 0)))(  # score -> denoiser: x + s^2 score
        p, x, sig) * sig[:, None] ** 2 + x
    tnet = _TorchUNet(torch, p)
    with torch.no_grad():
        theirs = tnet.denoise(torch.tensor(np.array(x)), torch.tensor(np.array(sig))).numpy()
    return rel_err(ours, theirs)


def _add_range(rows, times):
    ref = times[rows[0]["impl"]]
    for row in rows[1:]:
        ratios = [a / b for a, b in zip(times[row["impl"]], ref, strict=False)]
        row["speedup_min"], row["speedup_max"] = min(ratios), max(ratios)
        row["ratios"] = ratios


def run(size, dtype, torch=None, log=print):
    cfg = SIZES[size]
    dt = jnp.dtype(dtype)
    log(f"  U-Net denoiser check, channels {cfg['channels']}")
    err = denoiser_check(cfg, dt, torch)
    log(f"  U-Net training step, batch {cfg['batch']}")
    train = train_case(cfg, dt, torch)
    train["denoiser_rel_err"] = err
    log(f"  U-Net sampling, n {cfg['sample'][0]}, {cfg['sample'][1]} steps")
    return [train, sample_case(cfg, dt, torch)]


def main(argv=None) -> dict:
    from benchmarks.common import environment
    from manifold_scores._files import atomic_write

    parser = argparse.ArgumentParser(prog="python -m benchmarks.unet",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=tuple(SIZES), default="full")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    env = environment("float32")
    t0 = time.perf_counter()
    results = run(args.size, "float32", torch=torch, log=lambda m: print(m, flush=True))
    out = {"benchmark": "unet", "size": args.size, "environment": env, "results": results,
           "loadavg_end": list(os.getloadavg()), "total_s": time.perf_counter() - t0}
    for case in results:
        for row in case["rows"][1:]:
            print(f"{case['case']}: {row['impl']} / ours = {row['speedup']:.3g} "
                  f"[{row['speedup_q1']:.3g}, {row['speedup_q3']:.3g}], range "
                  f"[{row['speedup_min']:.3g}, {row['speedup_max']:.3g}]")
        print(f"{case['case']}: ours {case['rows'][0]['median_s'] * 1e3:.3g} ms, compile "
              f"{case['rows'][0]['compile_s']:.3g} s")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"unet_{env['platform']}.json")
        atomic_write(path, (json.dumps(out, indent=1, default=float) + "\n").encode())
        print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()

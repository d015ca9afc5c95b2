"""Training: the compiled loop, exact resume, non-finite stops, interrupts, argument checks,
atomic checkpoints that refuse what they should, and data-parallel training on 4 host devices."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import manifold_scores as ms
from manifold_scores import losses, training
from manifold_scores.models import kernel, lowrank, mlp


def _quadratic_loss(p, key, batch):
    return jnp.mean(jnp.sum((batch - p["w"]) ** 2, -1))


def _assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(la, lb, strict=True):
        assert u.dtype == v.dtype
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def _swiss_roll(n, seed=0):
    rng = np.random.default_rng(seed)
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], -1) / 5.0
    return jnp.asarray((x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32))


# ---------------------------------------------------------------------------------------------
# fit and the compiled loop
# ---------------------------------------------------------------------------------------------


def test_fit_converges_shows_progress_and_logs_metrics(capsys):
    data = jnp.ones((16, 3)) * jnp.array([1.0, 2.0, 3.0])
    state = training.init_state({"w": jnp.zeros(3)}, optax.sgd(0.25), ema=True)
    state, hist = training.fit(jax.random.key(0), state, _quadratic_loss, data, steps=40,
                               batch_size=8, metrics=lambda p: {"w0": p["w"][0]},
                               metrics_every=10, progress=True, ema_decay=0.5)
    np.testing.assert_allclose(state.params["w"], [1.0, 2.0, 3.0], atol=1e-5)
    np.testing.assert_allclose(state.ema["w"], [1.0, 2.0, 3.0], atol=1e-4)
    assert hist["loss"].shape == (40,) and hist["loss"][-1] < 1e-8
    assert [s for s, _ in hist["metrics"]] == [10, 20, 30, 40]
    assert hist["status"] == "completed" and hist["stopped_at"] is None
    err = capsys.readouterr().err
    assert "fit" in err and "40/40" in err  # the tqdm bar


def test_step_is_pure_and_compiled_once():
    step = training.make_step(_quadratic_loss)
    state = training.init_state({"w": jnp.zeros(2)}, optax.adam(0.1))
    s1, _ = step(state, jax.random.key(0), jnp.ones((4, 2)))
    s1b, _ = step(state, jax.random.key(0), jnp.ones((4, 2)))  # same input, same output
    np.testing.assert_array_equal(s1.params["w"], s1b.params["w"])
    step(s1, jax.random.key(1), jnp.ones((4, 2)))
    assert step._cache_size() == 1
    assert int(s1.step) == 1


def test_loop_equals_the_plain_step_on_its_batches():
    """The compiled loop is the plain step applied to the documented batches and keys."""
    data = jax.random.normal(jax.random.key(0), (10, 2))
    loss = lambda p, k, b: jnp.mean((b - p) ** 2) + 0.1 * jax.random.normal(k) * p.sum()
    state = training.init_state(jnp.zeros(2), optax.adam(0.1))
    key = jax.random.key(1)
    out, info = training.make_loop(loss, batch_size=4, steps_per_call=8)(state, key, data, 6)
    assert int(info.count) == 6 and bool(info.finite)
    assert np.all(np.isnan(np.asarray(info.losses[6:])))
    step = training.make_step(loss)
    key_batch, key_loss = jax.random.split(key)
    ref, per_epoch = state, 10 // 4
    for i in range(6):
        perm = jax.random.permutation(jax.random.fold_in(key_batch, i // per_epoch), 10)
        idx = perm[(i % per_epoch) * 4: (i % per_epoch + 1) * 4]
        ref, ref_loss = step(ref, jax.random.fold_in(key_loss, i), data[idx])
        np.testing.assert_allclose(info.losses[i], ref_loss, rtol=1e-6)
    np.testing.assert_allclose(out.params, ref.params, rtol=1e-6)


def test_every_example_once_per_epoch():
    data = jnp.arange(12.0)[:, None]
    seen = []

    def loss(p, k, b):
        jax.debug.callback(lambda v: seen.append(np.asarray(v).ravel()), b)
        return jnp.sum(p * b)

    state = training.init_state(jnp.zeros(1), optax.sgd(0.0))
    training.fit(jax.random.key(0), state, loss, data, steps=6, batch_size=4, progress=False)
    epochs = np.concatenate(seen).reshape(2, 12)  # 3 batches of 4 per epoch, 2 epochs
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(12.0))
    assert not np.array_equal(epochs[0], epochs[1])


@pytest.mark.parametrize("which", ["mlp", "kernel"])
def test_five_then_five_equals_ten_through_a_checkpoint(tmp_path, which):
    """Resuming from a checkpoint reproduces an uninterrupted run bit for bit (float32)."""
    x = _swiss_roll(256)
    if which == "mlp":
        proc = ms.VP()
        params = mlp.init(jax.random.key(2), 2, proc, width=32, depth=2)
        loss = lambda p, k, b: losses.dsm(k, mlp.apply, p, b, proc)
    else:
        params = kernel.init(jax.random.key(2), x[:32], width=16, depth=2)
        loss = lambda p, k, b: kernel.ism_loss(p, b)
    state = training.init_state(params, optax.adam(1e-3), ema=True)
    key = jax.random.key(3)
    ten, _ = training.fit(key, state, loss, x, steps=10, batch_size=64, progress=False,
                          steps_per_call=4)
    path = tmp_path / "run.ckpt"
    five, _ = training.fit(key, state, loss, x, steps=5, batch_size=64, progress=False,
                           steps_per_call=4, checkpoint=path)
    # a new process would rebuild the template from init and read the file
    saved = training.load(path, training.Checkpoint(state, key))
    _assert_trees_equal(saved.state, five)
    again, hist = training.fit(key, saved.state, loss, x, steps=5, batch_size=64,
                               progress=False, steps_per_call=4)
    assert int(again.step) == 10 and hist["loss"].shape == (5,)
    _assert_trees_equal(again, ten)
    # the same run re-launched with resume=True continues from the file to the same end
    resumed, hist = training.fit(key, state, loss, x, steps=10, batch_size=64, progress=False,
                                 steps_per_call=3, checkpoint=path, resume=True)
    assert hist["loss"].shape == (5,)
    _assert_trees_equal(resumed, ten)


def test_resume_refuses_another_runs_key(tmp_path):
    state = training.init_state({"w": jnp.zeros(3)}, optax.sgd(0.1))
    path = tmp_path / "run.ckpt"
    training.fit(jax.random.key(0), state, _quadratic_loss, jnp.ones((4, 3)), steps=2,
                 progress=False, checkpoint=path)
    with pytest.raises(ValueError, match="another key"):
        training.fit(jax.random.key(1), state, _quadratic_loss, jnp.ones((4, 3)), steps=2,
                     progress=False, checkpoint=path, resume=True)


def _explodes_at_3(p, key, batch):
    # sgd(1) on -p moves p by +1 per step: p = 3 at step 3, where the loss becomes NaN
    return jnp.where(p > 2.5, jnp.nan, -p)


@pytest.mark.parametrize("steps_per_call", [2, 16])
def test_nonfinite_loss_stops_with_the_last_finite_state(tmp_path, steps_per_call):
    state = training.init_state(jnp.zeros(()), optax.sgd(1.0))
    path = tmp_path / "run.ckpt"
    with pytest.warns(training.NonFiniteLossWarning, match="step 3"):
        out, hist = training.fit(jax.random.key(0), state, _explodes_at_3, jnp.zeros((4, 1)),
                                 steps=10, progress=False, steps_per_call=steps_per_call,
                                 checkpoint=path)
    assert hist["status"] == "nonfinite" and hist["stopped_at"] == 3
    assert int(out.step) == 3 and float(out.params) == 3.0
    np.testing.assert_array_equal(hist["loss"][:3], [0.0, -1.0, -2.0])
    assert np.isnan(hist["loss"][3]) and hist["loss"].shape == (4,)
    saved = training.load(path, training.Checkpoint(state, jax.random.key(0)))
    assert int(saved.state.step) == 3 and float(saved.state.params) == 3.0


def test_nonfinite_parameters_also_stop():
    """A finite loss whose gradient overflows leaves the parameters at their last finite value."""
    loss = lambda p, k, b: jnp.where(p > 1.5, 1e30 * p * p, -p)  # grad inf in float32 at p = 2
    state = training.init_state(jnp.zeros(()), optax.sgd(1e10))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, hist = training.fit(jax.random.key(0), state, loss, jnp.zeros((2, 1)), steps=5,
                                 progress=False)
    assert any(issubclass(w.category, training.NonFiniteLossWarning) for w in caught)
    assert np.isfinite(float(out.params)) and hist["status"] == "nonfinite"
    assert int(out.step) == hist["stopped_at"]


def test_ctrl_c_returns_and_saves_the_state_so_far(tmp_path):
    data = jnp.ones((8, 3))
    state = training.init_state({"w": jnp.zeros(3)}, optax.sgd(0.1))
    path = tmp_path / "run.ckpt"

    def interrupt_at_20(params):
        if abs(float(params["w"][0]) - (1 - 0.8**20)) < 1e-6:
            raise KeyboardInterrupt
        return {}

    out, hist = training.fit(jax.random.key(0), state, _quadratic_loss, data, steps=100,
                             progress=False, metrics=interrupt_at_20, metrics_every=10,
                             checkpoint=path)
    assert hist["status"] == "interrupted" and int(out.step) == 20
    saved = training.load(path, training.Checkpoint(state, jax.random.key(0)))
    _assert_trees_equal(saved.state, out)


def test_an_exception_saves_the_state_and_says_where(tmp_path):
    state = training.init_state({"w": jnp.zeros(3)}, optax.sgd(0.1))
    path = tmp_path / "run.ckpt"

    def boom(params):
        raise RuntimeError("metrics failed")

    with pytest.raises(RuntimeError, match="metrics failed") as info:
        training.fit(jax.random.key(0), state, _quadratic_loss, jnp.ones((8, 3)), steps=30,
                     progress=False, metrics=boom, metrics_every=10, checkpoint=path)
    assert any("step 10" in note and str(path) in note for note in info.value.__notes__)
    saved = training.load(path, training.Checkpoint(state, jax.random.key(0)))
    assert int(saved.state.step) == 10


def test_loop_is_vmappable_over_runs():
    data = jax.random.normal(jax.random.key(0), (3, 8, 2))  # three data sets
    state = training.init_state(jnp.zeros(2), optax.adam(0.1))
    states = jax.tree.map(lambda a: jnp.stack([a] * 3), state)
    loop = training.make_loop(lambda p, k, b: jnp.mean((b - p) ** 2), batch_size=4,
                              steps_per_call=5)
    keys = jax.random.split(jax.random.key(1), 3)
    out, info = jax.vmap(loop, (0, 0, 0, None))(states, keys, data, 5)
    for i in range(3):
        one, _ = loop(state, keys[i], data[i], 5)
        np.testing.assert_allclose(out.params[i], one.params, rtol=1e-6)
    assert info.losses.shape == (3, 5)


def _bad_fit(**kwargs):
    args = dict(key=jax.random.key(0),
                state=training.init_state({"w": jnp.zeros(3)}, optax.sgd(0.1)),
                loss_fn=_quadratic_loss, data=jnp.ones((8, 3)), steps=2, progress=False)
    args.update(kwargs)
    key, state, loss_fn, data = (args.pop(k) for k in ("key", "state", "loss_fn", "data"))
    return training.fit(key, state, loss_fn, data, **args)


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": -1}, "batch_size"),
    ({"batch_size": 9}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"data": jnp.ones((0, 3))}, "data"),
    ({"data": {"a": jnp.ones((8, 3)), "b": jnp.ones((7, 3))}}, "same number of rows"),
    ({"data": jnp.float32(1.0)}, "leading"),
    ({"ema_decay": 2.0}, "ema_decay"),
    ({"ema_decay": float("nan")}, "ema_decay"),
    ({"metrics_every": 0}, "metrics_every"),
    ({"steps": None}, "steps"),
    ({"steps": -1}, "steps"),
    ({"steps_per_call": 0}, "steps_per_call"),
    ({"checkpoint_every": 5}, "checkpoint"),
    ({"resume": True}, "checkpoint"),
    ({"state": {"w": jnp.zeros(3)}}, "TrainState"),
    ({"mesh": "data"}, "mesh"),
])
def test_fit_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _bad_fit(**kwargs)


def test_init_state_and_make_step_check_their_arguments():
    with pytest.raises(ValueError, match="optimizer"):
        training.init_state(jnp.zeros(2), "adam")
    with pytest.raises(ValueError, match="ema_decay"):
        training.make_step(_quadratic_loss, ema_decay=-0.1)


@pytest.mark.slow
def test_post_update_keeps_bases_orthonormal():
    mix = ms.MoLRG.random(jax.random.key(0), dim=8, rank=2, num_components=2)
    x0 = mix.sample(jax.random.key(1), 64)
    proc = ms.EDM()
    p = lowrank.init(jax.random.key(2), 8, 2, 2, proc, orthonormalize="none")
    loss = lambda p, k, b: losses.dsm_fixed_sigma(k, lowrank.apply, p, b, proc, 0.3, target="x0")
    state = training.init_state(p, optax.sgd(0.05))
    state, _ = training.fit(jax.random.key(3), state, loss, x0, steps=3, progress=False,
                            post_update=lowrank.retract)
    u = state.params.raw
    np.testing.assert_allclose(jnp.einsum("kdr,kds->krs", u, u),
                               np.broadcast_to(np.eye(2), (2, 2, 2)), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["mlp", "kernel", "lowrank"])
def test_save_load_round_trip_is_bit_exact(tmp_path, which):
    key = jax.random.key(0)
    if which == "mlp":
        params = mlp.init(key, 3, ms.VP(), width=8, depth=2)
    elif which == "kernel":
        params = kernel.init(key, jax.random.normal(key, (10, 2)), width=8, depth=3)
    else:
        params = lowrank.init(key, 6, 2, 2, ms.VE(), learn_weights=True)
    state = training.init_state(params, optax.adam(1e-3), ema=True)
    path = tmp_path / "state.ckpt"
    ckpt = training.Checkpoint(state, jax.random.key(7))
    training.save(path, ckpt)
    back = training.load(path, training.Checkpoint(state, jax.random.key(0)))
    _assert_trees_equal(back.state, state)
    assert back.state.optimizer is state.optimizer  # static: from the template
    np.testing.assert_array_equal(jax.random.key_data(back.key),
                                  jax.random.key_data(jax.random.key(7)))


def test_float64_round_trip(x64, tmp_path):
    params = {"a": jax.random.normal(jax.random.key(0), (5,), jnp.float64), "b": jnp.arange(3)}
    training.save(tmp_path / "p", params)
    back = training.load(tmp_path / "p", params)
    assert back["a"].dtype == jnp.float64
    np.testing.assert_array_equal(back["a"], params["a"])


def _previous_checkpoint(tmp_path):
    path = tmp_path / "params.ckpt"
    params = {"w": jnp.arange(1000.0), "b": jnp.ones(3)}
    training.save(path, params)
    return path, params, path.read_bytes()


def test_a_save_that_fails_to_serialise_leaves_the_previous_file(tmp_path):
    path, params, before = _previous_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="cannot be saved"):
        training.save(path, {"w": jnp.zeros(1000), "b": object()})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["params.ckpt"]  # no temporary file left behind
    _assert_trees_equal(training.load(path, params), params)


def test_a_write_that_raises_midway_leaves_the_previous_file(tmp_path, monkeypatch):
    path, params, before = _previous_checkpoint(tmp_path)
    real_fsync = os.fsync

    def failing_fsync(fd):  # after the bytes went to the temporary file, before the rename
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        training.save(path, {"w": jnp.zeros(1000), "b": jnp.zeros(3)})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["params.ckpt"]


def test_a_full_disk_leaves_the_previous_file(tmp_path):
    """A real short write: the file-size limit stops the new file midway (as a full disk)."""
    path, _, before = _previous_checkpoint(tmp_path)
    script = textwrap.dedent(f"""
        import resource, signal
        import jax.numpy as jnp
        from manifold_scores import training
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({len(before) + 1000}, resource.RLIM_INFINITY))
        try:
            training.save({str(path)!r}, {{"w": jnp.zeros(100_000), "b": jnp.zeros(3)}})
        except OSError as err:
            print("OSError", err.errno)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert "OSError" in out.stdout, out.stderr
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["params.ckpt"]


def test_corrupted_and_foreign_checkpoints_are_refused(tmp_path):
    path, params, before = _previous_checkpoint(tmp_path)
    for position in (3, 20, len(before) // 2, len(before) - 1):  # header, digest, body, end
        flipped = bytearray(before)
        flipped[position] ^= 0x01
        bad = tmp_path / f"flipped_{position}.ckpt"
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match=str(bad)):
            training.load(bad, params)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(before[:100])
    with pytest.raises(ValueError, match="truncated"):
        training.load(truncated, params)
    with pytest.raises(ValueError, match=f"{path}.*paths differ"):  # a renamed key
        training.load(path, {"w": jnp.zeros(1000), "bias": jnp.ones(3)})
    with pytest.raises(ValueError, match=f"{path}.*leaf"):
        training.load(path, {"w": jnp.zeros(999), "b": jnp.ones(3)})


def test_another_model_with_the_same_shapes_is_refused(tmp_path):
    key = jax.random.key(0)
    vp = mlp.init(key, 3, ms.VP(), width=8, depth=2)
    ve = mlp.init(key, 3, ms.VE(), width=8, depth=2)  # same leaves, another process
    assert [a.shape for a in jax.tree.leaves(vp)] == [a.shape for a in jax.tree.leaves(ve)]
    path = tmp_path / "vp.ckpt"
    training.save(path, vp)
    with pytest.raises(ValueError, match=f"{path}.*another model"):
        training.load(path, ve)
    centres = jax.random.normal(key, (10, 2))
    k1 = kernel.init(key, centres, width=8, depth=3)
    k2 = kernel.init(key, centres, width=8, depth=3, eps=0.5)
    training.save(path, k1)
    with pytest.raises(ValueError, match="another model"):
        training.load(path, k2)
    with pytest.raises(ValueError, match="not a manifold_scores checkpoint"):
        training.from_bytes(vp, b"\x80" * 100)


# ---------------------------------------------------------------------------------------------
# Data parallelism
# ---------------------------------------------------------------------------------------------

_MESH_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np, optax
import manifold_scores as ms
from manifold_scores import losses, training
from manifold_scores.models import mlp
assert len(jax.devices()) == 4
proc = ms.VP()
x = jax.random.normal(jax.random.key(0), (256, 4))
params = mlp.init(jax.random.key(2), 4, proc, width=32, depth=2)
loss = lambda p, k, b: losses.dsm(k, mlp.apply, p, b, proc)
state = training.init_state(params, optax.adam(1e-2))
mesh = jax.make_mesh((4,), ("data",))
one, _ = training.fit(jax.random.key(1), state, loss, x, steps=10, batch_size=64,
                      progress=False)
four, _ = training.fit(jax.random.key(1), state, loss, x, steps=10, batch_size=64,
                       progress=False, mesh=mesh)
err = max(float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))
          for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)))
assert err < 1e-5, err
leaf = jax.tree.leaves(four.params)[0]
assert len(leaf.sharding.device_set) == 4 and leaf.sharding.is_fully_replicated
loop = training.make_loop(loss, batch_size=64, steps_per_call=2, mesh=mesh)
placed = jax.device_put((state, x), jax.sharding.NamedSharding(
    jax.sharding.Mesh(mesh.devices, mesh.axis_names), jax.sharding.PartitionSpec()))
hlo = jax.jit(loop).lower(placed[0], jax.random.key(1), placed[1], 2).compile().as_text()
assert "all-reduce" in hlo  # the batch is split and the gradients are reduced by XLA
print("ok", err)
"""


def test_data_parallel_fit_matches_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _MESH_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]

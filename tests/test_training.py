"""Training loop: progress bar, EMA, post-update hook, bit-exact save/load, no recompilation."""

from __future__ import annotations

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
    err = capsys.readouterr().err
    assert "fit" in err and "40/40" in err  # the tqdm bar


def test_step_is_pure_and_compiled_once():
    step = training.make_step(_quadratic_loss)
    state = training.init_state({"w": jnp.zeros(2)}, optax.adam(0.1))
    s1, l1 = step(state, jax.random.key(0), jnp.ones((4, 2)))
    s1b, l1b = step(state, jax.random.key(0), jnp.ones((4, 2)))  # same input, same output
    np.testing.assert_array_equal(s1.params["w"], s1b.params["w"])
    step(s1, jax.random.key(1), jnp.ones((4, 2)))
    assert step._cache_size() == 1
    assert int(s1.step) == 1


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


@pytest.mark.parametrize("which", ["mlp", "kernel", "lowrank"])
def test_save_load_round_trip_is_bit_exact(tmp_path, which):
    key = jax.random.key(0)
    if which == "mlp":
        params = mlp.init(key, 3, ms.VP(), width=8, depth=2)
    elif which == "kernel":
        params = kernel.init(key, jax.random.normal(key, (10, 2)), width=8, depth=3)
    else:
        params = lowrank.init(key, 6, 2, 2, ms.VE(), learn_weights=True)
    path = tmp_path / "params.msgpack"
    training.save(path, params)
    back = training.load(path, params)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="leaf"):
        training.from_bytes({"w": jnp.zeros(3)}, training.to_bytes({"w": jnp.zeros(2)}))


def test_float64_round_trip(x64, tmp_path):
    params = {"a": jax.random.normal(jax.random.key(0), (5,), jnp.float64), "b": jnp.arange(3)}
    training.save(tmp_path / "p", params)
    back = training.load(tmp_path / "p", params)
    assert back["a"].dtype == jnp.float64
    np.testing.assert_array_equal(back["a"], params["a"])
